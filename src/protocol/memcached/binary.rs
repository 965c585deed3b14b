//! The binary protocol: 24-byte headers (magic 0x80 request, 0x81 response),
//! opcodes, quiet variants and status codes, from memcached's
//! protocol_binary.h and the "Memcache Binary Protocol" draft.

pub const REQ_MAGIC: u8 = 0x80;
pub const RESP_MAGIC: u8 = 0x81;
pub const HEADER: usize = 24;
/// Largest body believed (memcached's item size limit is at most 1 GiB).
pub const MAX_BODY: u32 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: u8,
    pub opcode: u8,
    pub key_len: u16,
    pub extras_len: u8,
    pub data_type: u8,
    /// vbucket id (request) or status (response).
    pub status: u16,
    pub body_len: u32,
    pub opaque: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER)?;
        Some(Header {
            magic: b[0],
            opcode: b[1],
            key_len: u16::from_be_bytes([b[2], b[3]]),
            extras_len: b[4],
            data_type: b[5],
            status: u16::from_be_bytes([b[6], b[7]]),
            body_len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            opaque: u32::from_be_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Consistent with memcached's framing: known magic and opcode, raw
    /// data type, key and extras inside the body, a bounded body, and
    /// for requests the extras length the opcode takes.
    pub fn plausible(&self) -> bool {
        let Some(op) = opcode(self.opcode) else { return false };
        let inside = self.key_len as u64 + self.extras_len as u64 <= self.body_len as u64;
        let magic_ok = match self.magic {
            REQ_MAGIC => op.extras.is_none_or(|e| e == self.extras_len) && self.key_len as usize <= 250,
            RESP_MAGIC => status_name(self.status).is_some(),
            _ => false,
        };
        magic_ok && self.data_type == 0 && inside && self.body_len <= MAX_BODY
    }
}

/// One opcode: its text-protocol name, whether it is a quiet variant, and
/// the extras length a request carries (None: varies).
#[derive(Debug, Clone, Copy)]
pub struct Opcode {
    pub name: &'static str,
    pub quiet: bool,
    /// A get: a hit returns one item.
    pub retrieval: bool,
    pub extras: Option<u8>,
}

const fn op(name: &'static str, quiet: bool, retrieval: bool, extras: Option<u8>) -> Option<Opcode> {
    Some(Opcode { name, quiet, retrieval, extras })
}

pub fn opcode(code: u8) -> Option<Opcode> {
    match code {
        0x00 => op("get", false, true, Some(0)),
        0x01 => op("set", false, false, Some(8)),
        0x02 => op("add", false, false, Some(8)),
        0x03 => op("replace", false, false, Some(8)),
        0x04 => op("delete", false, false, Some(0)),
        0x05 => op("incr", false, false, Some(20)),
        0x06 => op("decr", false, false, Some(20)),
        0x07 => op("quit", false, false, Some(0)),
        0x08 => op("flush_all", false, false, None),
        0x09 => op("get", true, true, Some(0)),
        0x0a => op("noop", false, false, Some(0)),
        0x0b => op("version", false, false, Some(0)),
        0x0c => op("get", false, true, Some(0)),
        0x0d => op("get", true, true, Some(0)),
        0x0e => op("append", false, false, Some(0)),
        0x0f => op("prepend", false, false, Some(0)),
        0x10 => op("stats", false, false, Some(0)),
        0x11 => op("set", true, false, Some(8)),
        0x12 => op("add", true, false, Some(8)),
        0x13 => op("replace", true, false, Some(8)),
        0x14 => op("delete", true, false, Some(0)),
        0x15 => op("incr", true, false, Some(20)),
        0x16 => op("decr", true, false, Some(20)),
        0x17 => op("quit", true, false, Some(0)),
        0x18 => op("flush_all", true, false, None),
        0x19 => op("append", true, false, Some(0)),
        0x1a => op("prepend", true, false, Some(0)),
        0x1b => op("verbosity", false, false, Some(4)),
        0x1c => op("touch", false, false, Some(4)),
        0x1d => op("gat", false, true, Some(4)),
        0x1e => op("gat", true, true, Some(4)),
        0x20 => op("sasl_list_mechs", false, false, Some(0)),
        0x21 => op("sasl_auth", false, false, Some(0)),
        0x22 => op("sasl_step", false, false, Some(0)),
        _ => None,
    }
}

/// Status names; None for a status memcached does not send.
pub fn status_name(s: u16) -> Option<&'static str> {
    Some(match s {
        0x0000 => "success",
        0x0001 => "key_not_found",
        0x0002 => "key_exists",
        0x0003 => "value_too_large",
        0x0004 => "invalid_arguments",
        0x0005 => "item_not_stored",
        0x0006 => "non_numeric_value",
        0x0007 => "wrong_vbucket",
        0x0008 => "auth_error",
        0x0009 => "auth_continue",
        0x0020 => "auth_error",
        0x0021 => "auth_continue",
        0x0081 => "unknown_command",
        0x0082 => "out_of_memory",
        0x0083 => "not_supported",
        0x0084 => "internal_error",
        0x0085 => "busy",
        0x0086 => "temporary_failure",
        _ => return None,
    })
}

/// Normal outcomes (a miss, an add of an existing key, a failed cas) are
/// answers, not errors; the rest are.
pub fn is_error(status: u16) -> bool {
    !matches!(status, 0x0000 | 0x0001 | 0x0002 | 0x0005 | 0x0009 | 0x0021)
}

/// Offset of the first plausible header with `magic` in `buf`.
pub fn find_header(buf: &[u8], magic: u8) -> Option<usize> {
    (0..buf.len().saturating_sub(HEADER - 1))
        .find(|&i| buf[i] == magic && Header::parse(&buf[i..]).is_some_and(|h| h.plausible()))
}
