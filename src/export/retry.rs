//! What to do after one send attempt, and how long to wait before the next.
use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Accepted; `rejected` items were refused by the backend (partial success).
    Delivered { rejected: u64, message: String },
    /// Transient failure: try again, no sooner than `after` when the backend said so.
    Retry { after: Option<Duration>, reason: String },
    /// Permanent failure: retrying the same data cannot help.
    Fail { reason: String },
}

/// Exponential backoff with ±50% jitter, so many exporters recovering from
/// the same outage do not retry in lockstep.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    /// Delay before the next attempt; a server-provided delay wins when longer.
    pub fn delay(&mut self, hint: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = rand::rng().random_range(0.5..1.5);
        let d = base.mul_f64(jitter).min(self.max);
        match hint {
            Some(h) if h > d => h.min(Duration::from_secs(300)),
            _ => d,
        }
    }
}

/// Retryable HTTP status codes per the OTLP specification.
pub fn http_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// `Retry-After` as delay-seconds (the HTTP-date form is rare for OTLP backends and treated as absent).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn backoff_grows_bounded_and_honours_hints() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d1 = b.delay(None);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(150), "{d1:?}");
        for _ in 0..10 {
            assert!(b.delay(None) <= Duration::from_millis(1000));
        }
        assert_eq!(b.delay(Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert!(http_retryable(503) && !http_retryable(400));
    }
}
