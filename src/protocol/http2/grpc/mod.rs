//! gRPC over HTTP/2: message framing inside DATA and the fields gRPC puts
//! in headers and trailers.
mod detail;
pub mod semconv;

pub use detail::GrpcDetail;

use crate::flow::{Conn, StreamDir, Transport};
use crate::protocol::{ConnDecoder, DecodeConfig, Probe};

/// gRPC: a label, not a detector. The HTTP/2 decoder marks a stream gRPC by
/// its content-type; nothing probes for gRPC on its own.
pub struct Grpc;

impl crate::protocol::registry::L7Protocol for Grpc {
    const NAME: &'static str = "grpc";
    const TRANSPORTS: &'static [Transport] = &[];
    fn probe(_conn: &Conn, _dir: StreamDir, _data: &[u8]) -> Probe {
        Probe::No
    }
    fn new_decoder(cfg: &DecodeConfig) -> Box<dyn ConnDecoder> {
        super::new_decoder(cfg)
    }
}

/// Counts length-prefixed messages (1 byte flags + 4 bytes length) in one
/// direction of a stream, streaming: message bodies are never buffered.
#[derive(Debug, Default, Clone)]
pub struct Framer {
    hdr: [u8; 5],
    hdr_n: usize,
    body_left: u64,
    pub messages: u32,
    /// Bytes were lost across a message prefix: counting stopped.
    pub lost: bool,
}

impl Framer {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !self.lost && !data.is_empty() {
            if self.body_left > 0 {
                let n = (self.body_left.min(data.len() as u64)) as usize;
                self.body_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.hdr_n).min(data.len());
            self.hdr[self.hdr_n..self.hdr_n + n].copy_from_slice(&data[..n]);
            self.hdr_n += n;
            data = &data[n..];
            if self.hdr_n == 5 {
                self.hdr_n = 0;
                self.messages = self.messages.saturating_add(1);
                self.body_left = u32::from_be_bytes([self.hdr[1], self.hdr[2], self.hdr[3], self.hdr[4]]) as u64;
            }
        }
    }

    /// `n` bytes were not captured. Returns false when that broke counting.
    pub fn skip(&mut self, n: u64) -> bool {
        if self.lost {
            return false;
        }
        if n <= self.body_left && self.hdr_n == 0 {
            self.body_left -= n;
            return true;
        }
        self.lost = true;
        false
    }
}

/// "/package.Service/Method" → ("package.Service", "Method").
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (svc, method) = rest.split_once('/')?;
    if svc.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((svc, method))
}

/// grpc-message is percent-encoded (gRPC over HTTP/2 spec).
pub fn decode_message(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex_val(raw[i + 1]), hex_val(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

pub fn is_grpc(content_type: &str) -> bool {
    content_type.starts_with("application/grpc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_split_anywhere() {
        let mut msgs = Vec::new();
        for len in [0u32, 3, 70000] {
            msgs.push(0u8);
            msgs.extend_from_slice(&len.to_be_bytes());
            msgs.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for chunk in [1, 2, 5, 7, 1000] {
            let mut f = Framer::default();
            for c in msgs.chunks(chunk) {
                f.feed(c);
            }
            assert_eq!(f.messages, 3);
            assert!(!f.lost);
        }
        let mut f = Framer::default();
        f.feed(&msgs[..20]);
        assert!(f.skip(100));
        assert!(!f.skip(100_000));
    }

    #[test]
    fn paths_and_messages() {
        assert_eq!(split_path("/helloworld.Greeter/SayHello"), Some(("helloworld.Greeter", "SayHello")));
        assert_eq!(split_path("/index.html"), None);
        assert_eq!(decode_message(b"bad%20thing%3a%"), "bad thing:%");
        assert_eq!(decode_message(b"%zz"), "%zz");
    }
}
