//! Stdout formats: `text` (one readable line per span), `otlp-json` (the
//! protobuf JSON mapping of each export request on one line, as the OTel
//! Collector file exporter writes it: camelCase keys, hex ids, 64-bit
//! integers as strings, enums as numbers) and `otlp` (binary protobuf for
//! files: a stream of length-delimited [`OtlpRecord`]s).
use super::attr::{Attrs, V};
use super::span::SpanParts;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OtlpJson,
    /// Length-delimited protobuf records (see [`OtlpRecord`]).
    Otlp,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "text" => Ok(Format::Text),
            "otlp-json" => Ok(Format::OtlpJson),
            "otlp" => Ok(Format::Otlp),
            other => anyhow::bail!("unknown telemetry format {other:?} (expected text, otlp-json or otlp)"),
        }
    }
}

/// One record of the `otlp` format. The file is a sequence of these, each
/// preceded by its length as a protobuf varint (what protobuf's
/// `writeDelimitedTo` / prost's `encode_length_delimited` write). A record
/// holds one export request, traces or metrics: the envelope says which,
/// since the two requests cannot be told apart on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OtlpRecord {
    #[prost(message, optional, tag = "1")]
    pub traces: Option<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>,
}

/// Envelope field numbers of [`OtlpRecord`].
pub const OTLP_RECORD_TRACES: u8 = 1;
pub const OTLP_RECORD_METRICS: u8 = 2;

/// The record length prefix and envelope field header for a request of `len` bytes.
pub fn otlp_record_header(buf: &mut Vec<u8>, field: u8, len: usize) {
    let inner = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
    prost::encoding::encode_varint(inner as u64, buf);
    buf.push((field << 3) | 2);
    prost::encoding::encode_varint(len as u64, buf);
}

/// Read an `otlp` file back (tests, tools).
pub fn read_otlp_records(mut data: &[u8]) -> Result<Vec<OtlpRecord>, prost::DecodeError> {
    use prost::Message;
    let mut out = Vec::new();
    while !data.is_empty() {
        out.push(OtlpRecord::decode_length_delimited(&mut data)?);
    }
    Ok(out)
}

/// RFC 3339 UTC with microseconds, from ns since the epoch.
pub fn rfc3339(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let micros = (ts_ns % 1_000_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

/// Attributes already shown in the fixed columns of the text line (and the
/// wire-key attributes, meant for the gateway rather than readers).
fn shown_elsewhere(key: &str) -> bool {
    if crate::exchange::wire_attr::PREFIXES.iter().any(|p| key.starts_with(p)) {
        return true;
    }
    matches!(
        key,
        "client.address"
            | "client.port"
            | "network.peer.address"
            | "network.peer.port"
            | "network.local.address"
            | "network.local.port"
            | "network.type"
            | "url.scheme"
            | "server.port"
    )
}

/// `TIME KIND NAME STATUS DURATION CLIENT -> SERVER key=value... trace=.. span=.. [parent=..]`;
/// `reason` is the HTTP/1 reason phrase, printed after the status code.
pub fn text_line(
    parts: &SpanParts,
    start_ns: u64,
    end_ns: u64,
    client: &std::net::SocketAddr,
    server: &std::net::SocketAddr,
    ids: (&[u8], &[u8], &[u8]),
    reason: Option<&str>,
) -> String {
    let mut s = String::with_capacity(256);
    let status = if parts.error.is_some() { "ERROR" } else { "OK" };
    let _ = write!(
        s,
        "{} {:<6} {:?} {status} {} {client} -> {server}",
        rfc3339(start_ns),
        parts.kind.as_str(),
        parts.name,
        duration(end_ns.saturating_sub(start_ns)),
    );
    let attrs: &Attrs = &parts.attrs;
    for (k, v) in attrs.iter().filter(|(k, _)| !shown_elsewhere(k)) {
        let _ = write!(s, " {k}={v}");
        // The HTTP/1 reason phrase reads with its code ("404 Not Found"); it is
        // shown here only, as semconv has no span attribute for it.
        if let (true, Some(r)) = (*k == "http.response.status_code", reason) {
            let _ = write!(s, " reason={}", V::from(r.to_string()));
        }
    }
    for (k, v) in &parts.peer {
        let _ = write!(s, " {k}={}", V::from(v.clone()));
    }
    if let Some(msg) = parts.error.as_deref().filter(|m| !m.is_empty()) {
        let _ = write!(s, " status.message={}", V::from(msg.to_string()));
    }
    let _ = write!(s, " trace={} span={}", hex::encode(ids.0), hex::encode(ids.1));
    if !ids.2.is_empty() {
        let _ = write!(s, " parent={}", hex::encode(ids.2));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn time_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_700_000_000_123_456_789), "2023-11-14T22:13:20.123456Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
    }
    #[test]
    fn durations() {
        assert_eq!(duration(1_500), "1.5µs");
        assert_eq!(duration(2_345_678), "2.346ms");
        assert_eq!(duration(3_000_000_000), "3.000s");
    }
}
