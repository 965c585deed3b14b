//! What an MQTT exchange carries. The CONNECT payload is read up to the
//! client identifier: the will message, user name and password that follow
//! are never read.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct MqttDetail {
    /// Control packet that started the exchange: "CONNECT", "PUBLISH",
    /// "SUBSCRIBE", "UNSUBSCRIBE", "PINGREQ", "DISCONNECT".
    pub packet: String,
    /// A PUBLISH the server sent to this client (a delivery), not one the client sent.
    pub delivery: bool,
    /// Protocol level from CONNECT: 3 (3.1), 4 (3.1.1), 5 (5.0); 0 unknown.
    pub protocol_level: u8,
    pub client_id: Option<String>,
    /// PUBLISH topic (resolved from a v5 topic alias when the alias was seen set).
    pub topic: Option<String>,
    /// SUBSCRIBE/UNSUBSCRIBE topic filters (at most 16).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    pub qos: Option<u8>,
    pub retain: bool,
    pub dup: bool,
    pub packet_id: Option<u16>,
    /// PUBLISH application message size.
    pub payload_bytes: Option<u64>,
    /// The packet that ended the exchange: "CONNACK", "PUBACK", "PUBREC"
    /// (QoS 2 refused), "PUBCOMP", "SUBACK", "UNSUBACK", "PINGRESP". None
    /// for packets nothing answers (QoS 0 PUBLISH, DISCONNECT) and unanswered ones.
    pub response: Option<String>,
    /// CONNACK return/reason code, or the first failing (>= 0x80) reason code
    /// of a PUBACK/PUBREC/SUBACK/UNSUBACK.
    pub reason_code: Option<u8>,
    /// SUBACK return codes (granted QoS or failure), at most 16.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub granted: Vec<u8>,
    /// MQTT 5 user properties `traceparent`/`tracestate` of a PUBLISH.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace_headers: Vec<(String, String)>,
}
