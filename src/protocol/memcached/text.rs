//! The text protocol (classic and meta commands): line parsing for both
//! directions, with data blocks skipped by their announced length so a large
//! value costs no memory.

/// Longest line accepted (memcached itself allows 2048 for a key line; meta
/// lines carry more flags).
pub const MAX_LINE: usize = 8 * 1024;
/// Longest key memcached accepts.
pub const MAX_KEY: usize = 250;
/// Largest data block believed (memcached's item size limit is at most 1 GiB).
pub const MAX_BLOCK: u64 = 1 << 30;

/// Classic storage commands: `<cmd> <key> <flags> <exptime> <bytes> [noreply]`.
const STORAGE: [&str; 5] = ["set", "add", "replace", "append", "prepend"];
/// Meta commands: `<cmd> <key> [<datalen>] <flags>*`.
pub const META: [&str; 6] = ["mg", "ms", "md", "ma", "mn", "me"];
/// Commands without a key whose syntax is still checked.
const OTHER: [&str; 12] = [
    "version",
    "stats",
    "flush_all",
    "verbosity",
    "quit",
    "shutdown",
    "cache_memlimit",
    "lru_crawler",
    "slabs",
    "lru",
    "watch",
    "misbehave",
];

/// The line starts with a memcached command word (its arguments unchecked).
pub fn known_command(line: &[u8]) -> bool {
    let Some(w) = words(line).next() else { return false };
    let Ok(w) = std::str::from_utf8(w) else { return false };
    STORAGE.contains(&w)
        || META.contains(&w)
        || OTHER.contains(&w)
        || matches!(w, "cas" | "get" | "gets" | "gat" | "gats" | "delete" | "incr" | "decr" | "touch")
}

/// One request line, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReqLine {
    pub cmd: String,
    /// Arguments after the command (count, bounded capture below).
    pub argc: u32,
    pub keys: u32,
    /// Length of the data block that follows the line (storage, cas, ms).
    pub data_len: Option<u64>,
    /// Classic `noreply`: the server sends nothing back.
    pub noreply: bool,
    /// Meta `q`: the server leaves out the reply on success (a miss for mg).
    pub quiet: bool,
    pub opaque: Option<String>,
    /// Argument shapes checked beyond the command word (numbers where
    /// numbers go, meta flags): specific enough to claim a flow.
    pub strict: bool,
}

fn is_num(w: &[u8]) -> bool {
    !w.is_empty() && w.len() <= 20 && w.iter().all(u8::is_ascii_digit)
}
fn is_int(w: &[u8]) -> bool {
    is_num(w.strip_prefix(b"-").unwrap_or(w))
}
fn num(w: &[u8]) -> Option<u64> {
    std::str::from_utf8(w).ok()?.parse().ok()
}
fn is_key(w: &[u8]) -> bool {
    !w.is_empty() && w.len() <= MAX_KEY && w.iter().all(|&b| b > 0x20 && b != 0x7f)
}
/// A meta flag: one letter, then an optional token.
fn is_meta_flag(w: &[u8]) -> bool {
    w.first().is_some_and(u8::is_ascii_alphabetic) && w.iter().all(|&b| b > 0x20 && b != 0x7f)
}

pub fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|w| !w.is_empty())
}

/// Parse a request line (without its CRLF). None: not a memcached request.
pub fn parse_request(line: &[u8]) -> Option<ReqLine> {
    if line.iter().any(|&b| b < 0x20 && b != b'\t') {
        return None;
    }
    let mut it = words(line);
    let cmd = it.next()?;
    let cmd = std::str::from_utf8(cmd).ok()?;
    let args: Vec<&[u8]> = it.take(64).collect();
    let n = args.len();
    let mut r = ReqLine { cmd: cmd.to_string(), argc: n as u32, ..Default::default() };
    let noreply_at = |i: usize| args.get(i).is_some_and(|w| *w == b"noreply");
    match cmd {
        c if STORAGE.contains(&c) || c == "cas" => {
            let fixed = if c == "cas" { 5 } else { 4 };
            if !(fixed..=fixed + 1).contains(&n) || !is_key(args[0]) {
                return None;
            }
            if !(is_num(args[1]) && is_int(args[2]) && is_num(args[3])) || (c == "cas" && !is_num(args[4])) {
                return None;
            }
            if n == fixed + 1 && !noreply_at(fixed) {
                return None;
            }
            r.data_len = Some(num(args[3])?.min(MAX_BLOCK));
            r.noreply = n == fixed + 1;
            r.keys = 1;
            r.strict = true;
        }
        "get" | "gets" => {
            if n == 0 || !args.iter().all(|k| is_key(k)) {
                return None;
            }
            r.keys = n as u32;
            // A single-key get is also how other line protocols start.
            r.strict = n > 1;
        }
        "gat" | "gats" => {
            if n < 2 || !is_int(args[0]) || !args[1..].iter().all(|k| is_key(k)) {
                return None;
            }
            r.keys = n as u32 - 1;
            r.strict = true;
        }
        "delete" => {
            // `delete <key> [0] [noreply]` (the 0 is a legacy hold time).
            if n == 0 || n > 3 || !is_key(args[0]) {
                return None;
            }
            let rest = &args[1..];
            let ok = match rest {
                [] => true,
                [w] => *w == b"noreply" || *w == b"0",
                [z, w] => *z == b"0" && *w == b"noreply",
                _ => false,
            };
            if !ok {
                return None;
            }
            r.noreply = rest.last().is_some_and(|w| *w == b"noreply");
            r.keys = 1;
        }
        "incr" | "decr" | "touch" => {
            let ok_val = if cmd == "touch" { n >= 2 && is_int(args[1]) } else { n >= 2 && is_num(args[1]) };
            if !(2..=3).contains(&n) || !is_key(args[0]) || !ok_val || (n == 3 && !noreply_at(2)) {
                return None;
            }
            r.noreply = n == 3;
            r.keys = 1;
            r.strict = true;
        }
        c if META.contains(&c) => {
            if c == "mn" {
                if n != 0 {
                    return None;
                }
                r.strict = true;
                return Some(r);
            }
            if n == 0 || !is_key(args[0]) {
                return None;
            }
            let mut flags = &args[1..];
            if c == "ms" {
                let (len, rest) = flags.split_first()?;
                if !is_num(len) {
                    return None;
                }
                r.data_len = Some(num(len)?.min(MAX_BLOCK));
                flags = rest;
            }
            if !flags.iter().all(|f| is_meta_flag(f)) {
                return None;
            }
            for f in flags {
                match f[0] {
                    b'q' => r.quiet = true,
                    b'O' => r.opaque = Some(String::from_utf8_lossy(&f[1..f.len().min(33)]).into_owned()),
                    _ => {}
                }
            }
            r.keys = 1;
            r.strict = true;
        }
        c if OTHER.contains(&c) => {
            match c {
                "version" | "quit" | "shutdown" if n > 1 => return None,
                "verbosity" if n == 0 || n > 2 || !is_num(args[0]) || (n == 2 && !noreply_at(1)) => return None,
                "flush_all" if n > 2 || (n >= 1 && !is_num(args[0]) && !noreply_at(0)) => return None,
                _ => {}
            }
            r.noreply = args.last().is_some_and(|w| *w == b"noreply");
            r.strict = matches!(c, "flush_all" | "verbosity" | "stats" | "version");
        }
        _ => return None,
    }
    Some(r)
}

/// Replies whose first word is one of these, alone on their line.
const SIMPLE: [&str; 18] = [
    "END",
    "STORED",
    "NOT_STORED",
    "EXISTS",
    "NOT_FOUND",
    "DELETED",
    "TOUCHED",
    "OK",
    "ERROR",
    "HD",
    "EN",
    "NF",
    "NS",
    "EX",
    "MN",
    "RESET",
    "BUSY",
    "BADCLASS",
];

/// Kind of a reply line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespLine {
    /// `VALUE <key> <flags> <bytes> [<cas>]`: a data block of `bytes` follows;
    /// more VALUE lines or END come after it.
    Value(u64),
    /// `VA <size> <flags>*`: a data block of `size` follows; the reply ends with it.
    Va(u64),
    /// `STAT <name> <value>`: more STAT lines until END.
    Stat,
    /// A whole reply on one line.
    Single,
}

/// Classify a reply line (without its CRLF). None: not memcached.
pub fn parse_response(line: &[u8]) -> Option<RespLine> {
    if line.iter().any(|&b| b < 0x20 && b != b'\t') {
        return None;
    }
    let mut it = words(line);
    let first = it.next()?;
    let rest: Vec<&[u8]> = it.take(8).collect();
    let w = std::str::from_utf8(first).ok()?;
    match w {
        "VALUE" => {
            if !(3..=4).contains(&rest.len()) || !is_key(rest[0]) || !is_num(rest[1]) || !is_num(rest[2]) {
                return None;
            }
            Some(RespLine::Value(num(rest[2])?.min(MAX_BLOCK)))
        }
        "VA" => {
            let len = rest.first().filter(|l| is_num(l))?;
            Some(RespLine::Va(num(len)?.min(MAX_BLOCK)))
        }
        "STAT" if !rest.is_empty() => Some(RespLine::Stat),
        "VERSION" if rest.len() == 1 => Some(RespLine::Single),
        "CLIENT_ERROR" | "SERVER_ERROR" => Some(RespLine::Single),
        "ME" if !rest.is_empty() => Some(RespLine::Single),
        // Meta status codes carry flags after them (`HD O1`, `EN O3`).
        "HD" | "EN" | "NF" | "NS" | "EX" => rest.iter().all(|f| is_meta_flag(f)).then_some(RespLine::Single),
        w if SIMPLE.contains(&w) && rest.is_empty() => Some(RespLine::Single),
        // incr/decr: the new value.
        _ if rest.is_empty() && is_num(first) => Some(RespLine::Single),
        _ => None,
    }
}
