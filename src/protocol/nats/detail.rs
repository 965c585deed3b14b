//! What a NATS exchange carries. Built from the protocol lines only: the
//! CONNECT options are read field by field, so credentials (`pass`,
//! `auth_token`, `token`, `sig`, `jwt`, `nkey`) are never stored.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct NatsDetail {
    /// Protocol operation as sent: "PUB", "HPUB", "MSG", "HMSG", "SUB",
    /// "UNSUB", "CONNECT", "PING".
    pub op: String,
    /// A PUB/HPUB with a reply subject answered by a message on that subject
    /// on the same connection (request-reply); the exchange lasts until the
    /// reply arrived.
    pub request: bool,
    /// Subject published to, delivered on or subscribed to (UNSUB: the
    /// subject of the subscription, when its SUB was seen).
    pub subject: Option<String>,
    pub reply_to: Option<String>,
    /// Subscription id (SUB, UNSUB, MSG, HMSG).
    pub sid: Option<String>,
    /// SUB queue group.
    pub queue_group: Option<String>,
    /// Message body size (payload without the header block).
    pub payload_bytes: Option<u64>,
    /// Size of the NATS header block (HPUB/HMSG).
    pub header_bytes: Option<u64>,
    /// The client asked for +OK acknowledgements (CONNECT "verbose").
    pub verbose: bool,
    /// CONNECT "name", repeated on every exchange of the connection once known.
    pub client_name: Option<String>,
    /// CONNECT "lang" and "version" (the client library).
    pub client_lang: Option<String>,
    pub client_version: Option<String>,
    /// What answered it: "+OK", "PONG", "-ERR", or for a request the
    /// "MSG"/"HMSG" reply. None for operations nothing answers (PUB, SUB,
    /// UNSUB without verbose; deliveries) and for unanswered ones.
    pub response: Option<String>,
    /// Text of the -ERR that answered the operation, quotes removed.
    pub error: Option<String>,
    /// Status of a header block ("NATS/1.0 503" = no responders).
    pub status: Option<u16>,
    /// `traceparent`, `tracestate` and B3 headers of the header block, lower-case names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace_headers: Vec<(String, String)>,
}
