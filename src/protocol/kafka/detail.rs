//! What a Kafka exchange carries.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct KafkaDetail {
    pub api_key: i16,
    /// "Produce", "Fetch", "Metadata", ...
    pub api_name: String,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub topics: Vec<String>,
    /// First non-zero error code found in the response (0 = none found).
    pub error_code: i16,
    /// Name for `error_code`, e.g. "UNKNOWN_TOPIC_OR_PARTITION".
    pub error_name: Option<String>,
    /// Records in the record sets of a Produce request or a Fetch response
    /// (0 when they were empty). None for other APIs, and when the body was
    /// not decoded to its end (snap length, lost bytes, or record sets beyond
    /// the bounded message prefix the decoder keeps).
    pub record_count: Option<u64>,
    /// Size of those record sets in bytes, as sent (compressed if they were).
    pub record_bytes: Option<u64>,
    /// Body decoding failed or was skipped; header-level only.
    pub header_only: bool,
}
