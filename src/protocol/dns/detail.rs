//! What a DNS exchange carries.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsDetail {
    pub id: u16,
    /// Question name without trailing dot, e.g. "example.com".
    pub question_name: Option<String>,
    /// "A", "AAAA", "CNAME", ... (IANA registry names; "TYPE{n}" when unassigned).
    pub question_type: Option<String>,
    pub question_class: Option<String>,
    /// "NOERROR", "NXDOMAIN", "SERVFAIL", ...
    pub rcode: Option<String>,
    pub answer_count: u16,
    /// Answers as "TYPE data", e.g. "A 10.0.0.1", "CNAME foo.example.com".
    pub answers: Vec<String>,
    /// TC bit of the response.
    pub truncated: bool,
    /// "udp" or "tcp".
    pub transport: String,
    /// Opcode when not a standard query: "UPDATE", "NOTIFY", ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opcode: Option<String>,
    /// UPDATE: owner name and type of the first record of the update section
    /// (the question is the zone, RFC 2136 §2.3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_type: Option<String>,
}
