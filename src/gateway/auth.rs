//! Bearer-token check shared by the gRPC and HTTP receivers.
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Auth {
    tokens: Arc<Vec<String>>,
}

impl Auth {
    pub fn new(tokens: Vec<String>) -> Self {
        Self { tokens: Arc::new(tokens) }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether an `authorization` header value is acceptable.
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        if self.tokens.is_empty() {
            return true;
        }
        let Some(h) = header else { return false };
        let Some(token) = h.strip_prefix(b"Bearer ").or_else(|| h.strip_prefix(b"bearer ")) else { return false };
        self.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token))
    }
}

/// Comparison time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bearer_tokens() {
        let a = Auth::new(vec!["s3cret".into(), "other".into()]);
        assert!(a.check(Some(b"Bearer s3cret")));
        assert!(a.check(Some(b"Bearer other")));
        assert!(!a.check(Some(b"Bearer s3cre")));
        assert!(!a.check(Some(b"Basic s3cret")));
        assert!(!a.check(None));
        assert!(Auth::default().check(None));
    }
}
