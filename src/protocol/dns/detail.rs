//! What a DNS exchange carries.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct DnsDetail {
    pub id: u16,
    /// Question name without trailing dot, e.g. "example.com".
    pub question_name: Option<String>,
    /// "A", "AAAA", "CNAME", ... (numeric as "TYPE65" style when unknown).
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
}
