//! What a MongoDB exchange carries.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct MongodbDetail {
    /// Request opcode ("OP_MSG", "OP_QUERY", legacy "OP_INSERT", …), the
    /// original one when the message was compressed.
    pub op_code: &'static str,
    /// OP_COMPRESSED compressor of the request ("snappy", "zlib", "zstd", "noop").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressor: Option<&'static str>,
    pub request_id: i32,
    /// `db.operation.name`: the command (first key of the command document).
    pub operation: Option<String>,
    /// `db.collection.name`: the command's string value (`collection` for getMore).
    pub collection: Option<String>,
    /// `db.namespace`: `$db`, or the database of a legacy "db.collection".
    pub database: Option<String>,
    /// The command with its values replaced by `?`; never kept for
    /// authentication commands.
    pub query_masked: Option<String>,
    /// The request asked for no reply (OP_MSG moreToCome, legacy writes).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_reply: bool,
    /// The reply's `ok` (None: no reply, or its document was cut).
    pub ok: Option<bool>,
    /// Error code (`ok: 0`, or the first write error / write-concern error).
    pub error_code: Option<i32>,
    pub error_name: Option<String>,
    /// Error message (bounded).
    pub error_message: Option<String>,
    /// Documents in `cursor.firstBatch`/`nextBatch`, else `n`.
    pub returned_rows: Option<u64>,
    /// The reply announced more replies without a new request (exhaust).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exhaust: bool,
}

impl MongodbDetail {
    /// `db.query.summary`: "find orders", or the command alone.
    pub fn summary(&self) -> Option<String> {
        let op = self.operation.as_deref()?;
        Some(match &self.collection {
            Some(c) => format!("{op} {c}"),
            None => op.to_string(),
        })
    }
}
