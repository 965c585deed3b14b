//! Fields of MySQL/MariaDB packets: length-encoded integers, the server
//! greeting, the client's handshake response, OK / ERR / EOF packets.
//! Every reader works on a packet's bounded head and returns None when the
//! bytes it needs are not there.

/// Capability flags used by the decoder.
pub mod cap {
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const COMPRESS: u32 = 0x0000_0020;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
    pub const DEPRECATE_EOF: u32 = 0x0100_0000;
    /// MySQL 8 zstd compression (the frames are zstd, not zlib).
    pub const ZSTD: u32 = 0x0400_0000;
}

/// Server status flag: another result set follows.
pub const MORE_RESULTS_EXISTS: u16 = 0x0008;

/// Length-encoded integer at `b[*at..]`; advances `at`.
pub fn lenenc(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    let (n, v) = match first {
        0..=0xfa => (1, first as u64),
        0xfc => (3, u16::from_le_bytes([*b.get(*at + 1)?, *b.get(*at + 2)?]) as u64),
        0xfd => (4, u32::from_le_bytes([*b.get(*at + 1)?, *b.get(*at + 2)?, *b.get(*at + 3)?, 0]) as u64),
        0xfe => {
            let s = b.get(*at + 1..*at + 9)?;
            (9, u64::from_le_bytes(s.try_into().ok()?))
        }
        // 0xfb is NULL, 0xff an error marker: not integers.
        _ => return None,
    };
    *at += n;
    Some(v)
}

fn cstr(b: &[u8], at: &mut usize) -> Option<String> {
    let rest = b.get(*at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    *at += end + 1;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Server greeting (HandshakeV10).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Greeting {
    /// As sent, e.g. "5.5.5-10.11.6-MariaDB-0+deb12u1" or "8.0.36".
    pub version: String,
    pub capabilities: u32,
}

impl Greeting {
    pub fn mariadb(&self) -> bool {
        self.version.to_ascii_lowercase().contains("mariadb")
    }
    /// The version without MariaDB's "5.5.5-" replication prefix.
    pub fn display_version(&self) -> &str {
        self.version.strip_prefix("5.5.5-").unwrap_or(&self.version)
    }
}

/// Longest version string believed.
const MAX_VERSION: usize = 64;

/// Parse a greeting payload; None if it is not protocol 10 with a printable version.
pub fn greeting(p: &[u8]) -> Option<Greeting> {
    if p.first() != Some(&10) {
        return None;
    }
    let end = p[1..].iter().take(MAX_VERSION + 1).position(|&c| c == 0)?;
    let v = &p[1..1 + end];
    if v.is_empty() || !v[0].is_ascii_digit() || !v.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        return None;
    }
    let mut at = 1 + end + 1;
    // connection id, auth data part 1, filler.
    at += 4 + 8 + 1;
    let lo = u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]) as u32;
    at += 2;
    // charset, status, upper capabilities (absent in very old servers).
    let hi = match p.get(at + 3..at + 5) {
        Some(h) => u16::from_le_bytes([h[0], h[1]]) as u32,
        None => 0,
    };
    Some(Greeting { version: String::from_utf8_lossy(v).into_owned(), capabilities: lo | (hi << 16) })
}

/// What the client's handshake response tells (the auth response is skipped, never kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    pub capabilities: u32,
    pub user: Option<String>,
    pub database: Option<String>,
    /// Only an SSL request (32 bytes): TLS follows.
    pub ssl_request: bool,
}

pub fn handshake_response(p: &[u8]) -> Option<Login> {
    let c = u32::from_le_bytes(p.get(..4)?.try_into().ok()?);
    if c & cap::PROTOCOL_41 == 0 {
        // HandshakeResponse320: 2-byte capabilities, 3-byte max packet, user, auth.
        let c = u16::from_le_bytes([p[0], p[1]]) as u32;
        let mut at = 5;
        return Some(Login {
            capabilities: c,
            user: cstr(p, &mut at),
            ssl_request: p.len() == 5 && c & cap::SSL != 0,
            database: None,
        });
    }
    let mut l = Login { capabilities: c, ..Default::default() };
    if p.len() == 32 && c & cap::SSL != 0 {
        l.ssl_request = true;
        return Some(l);
    }
    let mut at = 32;
    l.user = Some(cstr(p, &mut at)?);
    let auth_len = if c & cap::PLUGIN_AUTH_LENENC_DATA != 0 {
        lenenc(p, &mut at)?
    } else if c & cap::SECURE_CONNECTION != 0 {
        let n = *p.get(at)? as u64;
        at += 1;
        n
    } else {
        cstr(p, &mut at)?;
        0
    };
    at = at.checked_add(auth_len as usize)?;
    if c & cap::CONNECT_WITH_DB != 0 {
        l.database = cstr(p, &mut at).filter(|d| !d.is_empty());
    }
    Some(l)
}

/// OK packet (0x00, or 0xfe ending a result set with DEPRECATE_EOF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ok {
    pub affected_rows: u64,
    pub status: u16,
}

pub fn ok(p: &[u8]) -> Option<Ok> {
    let mut at = 1;
    let affected_rows = lenenc(p, &mut at)?;
    lenenc(p, &mut at)?;
    let status = u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]);
    Some(Ok { affected_rows, status })
}

/// Status flags of an EOF packet (0xfe, shorter than an OK).
pub fn eof_status(p: &[u8]) -> u16 {
    match p.get(3..5) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// ERR packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Err {
    pub code: u16,
    pub sql_state: Option<String>,
    pub message: String,
}

/// MariaDB progress reports use this code and are not errors.
pub const PROGRESS_REPORT: u16 = 0xffff;

/// Longest error message kept.
const MAX_MESSAGE: usize = 512;

pub fn err(p: &[u8]) -> Option<Err> {
    if p.first() != Some(&0xff) {
        return None;
    }
    let code = u16::from_le_bytes([*p.get(1)?, *p.get(2)?]);
    let (state, msg) = match p.get(3) {
        Some(b'#') if p.len() >= 9 => (Some(String::from_utf8_lossy(&p[4..9]).into_owned()), &p[9..]),
        _ => (None, p.get(3..).unwrap_or(&[])),
    };
    let msg = &msg[..msg.len().min(MAX_MESSAGE)];
    Some(Err { code, sql_state: state, message: String::from_utf8_lossy(msg).into_owned() })
}

/// Command bytes and their names (MySQL's COM_*; 0xfa is MariaDB's COM_STMT_BULK_EXECUTE).
pub fn command_name(c: u8) -> Option<&'static str> {
    Some(match c {
        0x00 => "COM_SLEEP",
        0x01 => "COM_QUIT",
        0x02 => "COM_INIT_DB",
        0x03 => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x09 => "COM_STATISTICS",
        0x0a => "COM_PROCESS_INFO",
        0x0b => "COM_CONNECT",
        0x0c => "COM_PROCESS_KILL",
        0x0d => "COM_DEBUG",
        0x0e => "COM_PING",
        0x0f => "COM_TIME",
        0x10 => "COM_DELAYED_INSERT",
        0x11 => "COM_CHANGE_USER",
        0x12 => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x14 => "COM_CONNECT_OUT",
        0x15 => "COM_REGISTER_SLAVE",
        0x16 => "COM_STMT_PREPARE",
        0x17 => "COM_STMT_EXECUTE",
        0x18 => "COM_STMT_SEND_LONG_DATA",
        0x19 => "COM_STMT_CLOSE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1c => "COM_STMT_FETCH",
        0x1d => "COM_DAEMON",
        0x1e => "COM_BINLOG_DUMP_GTID",
        0x1f => "COM_RESET_CONNECTION",
        0xfa => "COM_STMT_BULK_EXECUTE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_forms() {
        for (b, v, n) in [
            (&b"\x05"[..], 5u64, 1usize),
            (b"\xfc\x10\x27", 10000, 3),
            (b"\xfd\x01\x00\x01", 65537, 4),
            (b"\xfe\x01\x00\x00\x00\x00\x00\x00\x00", 1, 9),
        ] {
            let mut at = 0;
            assert_eq!(lenenc(b, &mut at), Some(v));
            assert_eq!(at, n);
        }
        assert_eq!(lenenc(b"\xfc\x01", &mut 0), None);
        assert_eq!(lenenc(b"\xfb", &mut 0), None);
    }

    #[test]
    fn err_with_and_without_state() {
        let e = err(b"\xff\x7a\x04#42S02Table 't' doesn't exist").unwrap();
        assert_eq!(
            (e.code, e.sql_state.as_deref(), e.message.as_str()),
            (1146, Some("42S02"), "Table 't' doesn't exist")
        );
        let e = err(b"\xff\x10\x04Too many connections").unwrap();
        assert_eq!((e.code, e.sql_state), (1040, None));
    }
}
