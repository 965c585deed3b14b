//! What a MySQL/MariaDB exchange carries.
use crate::otel::attr::Str;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct MysqlDetail {
    /// "mysql" or "mariadb" (from the server greeting; "mysql" when the greeting was not seen).
    pub system: Str,
    /// Server version from the greeting (MariaDB's "5.5.5-" prefix removed).
    pub server_version: Option<Str>,
    /// Command name, e.g. "COM_QUERY", "COM_STMT_EXECUTE", "COM_PING".
    pub command: Str,
    /// Upper-case SQL operation ("SELECT", "CREATE TABLE") for statements,
    /// the command without its "COM_" prefix otherwise ("PING", "INIT_DB").
    pub operation: Option<Str>,
    /// The one table the statement targets.
    pub collection: Option<Str>,
    /// `db.query.summary`, e.g. "SELECT users orders".
    pub summary: Option<Str>,
    /// Statement text with literals masked (telemetry may unmask by config).
    pub query_masked: Option<Str>,
    /// Statement text as sent, bounded.
    pub query_raw: Option<Str>,
    /// Current database (schema) of the connection, as selected at login or by COM_INIT_DB / USE.
    pub namespace: Option<Str>,
    /// Login user name (never the auth response).
    pub user: Option<Str>,
    /// Prepared statement id (COM_STMT_*).
    pub statement_id: Option<u32>,
    /// ERR packet: error code, SQL state and message.
    pub error_code: Option<u16>,
    pub sql_state: Option<String>,
    pub error_message: Option<String>,
    /// Rows in the result set(s), when every row packet was seen.
    pub returned_rows: Option<u64>,
    /// Affected rows from the OK packet(s).
    pub affected_rows: Option<u64>,
    /// The connection uses the compressed protocol.
    pub compressed: bool,
}
