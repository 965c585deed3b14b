//! What a memcached exchange carries.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemcachedDetail {
    /// "text", "meta" or "binary".
    pub protocol: &'static str,
    /// Command as sent ("get", "set", "mg"); binary opcodes by their text
    /// name ("get" for Get/GetQ/GetK/GetKQ, "incr", "flush_all", ...).
    pub command: String,
    /// Binary opcode (None for the text protocol).
    pub opcode: Option<u8>,
    /// Keys named by the request (a multi-get counts each).
    pub key_count: u32,
    /// Command with every argument shown as `?` ("get ? ?", "set ? ? ? ?"),
    /// as Redis does: keys are never shown unless unmasked by config.
    pub query_masked: String,
    /// Request line (text) or opcode and key (binary), bounded; shown only
    /// when unmasked by config. Values are never kept.
    pub query_raw: String,
    /// The request asked for no reply (`noreply`): it has no response.
    pub noreply: bool,
    /// Quiet request (meta `q` flag, binary quiet opcode) whose reply the
    /// server left out because it succeeded (or missed, for a get).
    pub quiet_suppressed: bool,
    /// Meta opaque token (`O...`) or binary opaque, when one was sent.
    pub opaque: Option<String>,
    /// Reply status: "STORED", "END", "NOT_FOUND", "HD", "EN", "VA", a
    /// number for incr/decr, or the binary status name ("success", "key_not_found").
    pub response: Option<String>,
    /// Items returned by a retrieval (get/gets/gat/gats, mg, binary gets).
    pub hits: Option<u32>,
    /// Error reply: "ERROR", "CLIENT_ERROR", "SERVER_ERROR" or a binary
    /// status in hex ("0x0081"); None for normal outcomes such as a miss,
    /// NOT_STORED or EXISTS.
    pub error_code: Option<String>,
    /// Error text sent by the server (bounded).
    pub error: Option<String>,
}
