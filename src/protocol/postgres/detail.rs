//! What a PostgreSQL exchange carries.
use crate::otel::attr::Str;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct PostgresDetail {
    /// Protocol message that ran the statement: "query" (simple query),
    /// "execute" (extended query), "parse" (a Parse/Bind/Describe that failed
    /// before any Execute), "function_call".
    pub message: &'static str,
    /// `db.operation.name`: from the statement text, else from the command tag.
    pub operation: Option<Str>,
    /// `db.collection.name`: first table the statement names.
    pub collection: Option<Str>,
    /// `db.query.summary`, e.g. "SELECT orders".
    pub summary: Option<Str>,
    /// Statement text with literals masked; None when the Parse was not seen.
    pub query_masked: Option<Str>,
    /// Statement text as sent (bounded); telemetry shows it only when unmasking is configured.
    pub query_raw: Option<Str>,
    /// Name of a named prepared statement (Execute of a statement prepared earlier).
    pub statement: Option<Str>,
    /// Database from the StartupMessage (`db.namespace`); the user name when no database was given.
    pub database: Option<Str>,
    pub user: Option<Str>,
    /// Last CommandComplete tag, e.g. "SELECT 3", "INSERT 0 1".
    pub command_tag: Option<Str>,
    /// Rows sent back (SELECT, FETCH, COPY TO, DML … RETURNING), from the tag or, lacking one, the DataRows seen.
    pub returned_rows: Option<u64>,
    /// Rows changed (INSERT, UPDATE, DELETE, MERGE, COPY FROM), from the tag.
    pub affected_rows: Option<u64>,
    /// SQLSTATE of an ErrorResponse, e.g. "42P01".
    pub sqlstate: Option<String>,
    /// Its severity ("ERROR", "FATAL") and message (bounded).
    pub error_severity: Option<String>,
    pub error_message: Option<String>,
    /// "in" (COPY FROM STDIN) or "out" (COPY TO STDOUT).
    pub copy: Option<&'static str>,
}
