//! What a Redis exchange carries.
use crate::otel::attr::Str;
use serde::Serialize;

// The texts are `Str`s (serialized as the text): a command name, a short
// masked or raw statement and an error prefix are inline, so building an
// exchange and copying them into span and metric attributes allocates
// nothing for them.

#[derive(Debug, Clone, Default, Serialize)]
pub struct RedisDetail {
    /// Upper-case command name, e.g. "SET".
    pub command: Str,
    /// Upper-case sub-command for container commands, e.g. "SETNAME" for CLIENT SETNAME.
    pub subcommand: Option<Str>,
    /// Number of arguments after the command name.
    pub arg_count: u32,
    /// Command text with arguments masked ("SET ? ?") – telemetry may unmask by config.
    pub query_masked: Str,
    /// Command text unmasked, truncated to a bounded length.
    pub query_raw: Str,
    /// Error reply text ("ERR wrong number of arguments ...") when the reply was an error.
    pub error: Option<String>,
    /// Error prefix, e.g. "ERR", "WRONGTYPE".
    pub error_prefix: Option<Str>,
    /// RESP type of the reply: "simple", "error", "integer", "bulk", "array", "null", "map", ...;
    /// "none" for a command the server does not answer by design (CLIENT REPLY OFF/SKIP).
    pub response_type: Option<&'static str>,
    /// 2 or 3.
    pub resp_version: u8,
    /// Selected database index when a SELECT was seen on the connection.
    pub db_index: Option<i64>,
}
