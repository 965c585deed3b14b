//! SQL text → what telemetry needs: operation, main collection, a
//! low-cardinality `db.query.summary` and the text with its literals masked.
//! Shared by the SQL database protocols (PostgreSQL, MySQL/MariaDB), which
//! differ only in lexical rules ([`Dialect`]).
//!
//! A small tokenizer, not a parser: it knows the lexical rules that matter
//! for masking (quoted strings in their SQL, PostgreSQL `E'…'` and
//! `$tag$…$tag$` forms, MySQL `"…"` strings, backslash escapes, `#` comments
//! and `` `…` `` identifiers, numbers, quoted identifiers, comments, `$1`/`?`
//! parameters) and a handful of keywords that introduce table names (FROM,
//! JOIN, INTO, UPDATE, TABLE, …). Anything it does not understand is kept
//! as text and simply yields no collection: a missing attribute is better
//! than a wrong one. Bounded work and output, never panics.

use crate::otel::attr::Str;

/// Lexical rules of the server's SQL: where they differ, reading a MySQL
/// string with PostgreSQL's rules (or the reverse) would leave a literal
/// unmasked or mask an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `"…"` identifiers, `E'…'` and `$tag$…$tag$` strings, `$1` parameters, nested `/* */`.
    Postgres,
    /// `"…"` and `'…'` strings with backslash escapes, `` `…` `` identifiers,
    /// `#` and `-- ` comments, `/* */` not nested.
    MySql,
}

/// What [`summarize`] found in one query text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlSummary {
    /// Upper-case operation of the (first) statement: "SELECT", "INSERT",
    /// "CREATE TABLE", "BEGIN", … None when the text has no leading keyword.
    pub operation: Option<String>,
    /// First table named by the statement (as written, schema prefix kept,
    /// identifier quotes removed).
    pub collection: Option<String>,
    /// `db.query.summary`: the operation followed by the tables it touches,
    /// e.g. "SELECT orders customers", "INSERT archive SELECT orders".
    pub summary: Option<String>,
    /// The text with string and numeric literals replaced by `?` and
    /// comments removed, at most [`MAX_MASKED`] bytes ("..." marks a cut).
    pub masked_text: String,
}

impl SqlSummary {
    /// The statement text to keep when unmasked text is asked for: the
    /// masked text instead when the statement sets a password
    /// (`ALTER ROLE … PASSWORD '…'`, `CREATE USER … IDENTIFIED BY '…'`,
    /// `SET PASSWORD = …`), so credentials never leave the agent.
    pub fn unmasked_text(&self, raw: &str) -> String {
        unmasked_text(raw, &self.masked_text).to_string()
    }
}

/// The statement text to keep when unmasked text is asked for (see
/// [`SqlSummary::unmasked_text`]): `raw`, or `masked` when it sets a password.
pub fn unmasked_text<'a>(raw: &'a str, masked: &'a str) -> &'a str {
    if sets_password(masked) {
        masked
    } else {
        raw
    }
}

/// A masked statement text names a password (`PASSWORD`, `IDENTIFIED`, any case).
fn sets_password(masked: &str) -> bool {
    // Without an upper-case copy of the text: only the `P`/`I` bytes start
    // a comparison.
    let b = masked.as_bytes();
    b.iter().enumerate().any(|(i, c)| match c {
        b'p' | b'P' => b.get(i..i + 8).is_some_and(|w| w.eq_ignore_ascii_case(b"PASSWORD")),
        b'i' | b'I' => b.get(i..i + 10).is_some_and(|w| w.eq_ignore_ascii_case(b"IDENTIFIED")),
        _ => false,
    })
}

/// The database a `USE db` statement selects (MySQL).
pub fn use_target(sql: &str) -> Option<String> {
    let mut toks = Vec::new();
    tokenize(truncate_str(sql, 512), Dialect::MySql, |t, _| {
        if t != Tok::Punct(b' ') {
            toks.push(t);
        }
        toks.len() < 2
    });
    match toks.as_slice() {
        [first, Tok::Word(w) | Tok::Quoted(w)] if kw(first, "USE") => Some(w.to_string()),
        _ => None,
    }
}

/// Longest masked text kept (bytes).
pub const MAX_MASKED: usize = 2048;
/// Longest summary (semconv: db.query.summary SHOULD NOT exceed 255 characters).
pub const MAX_SUMMARY: usize = 255;
/// Tables listed in a summary.
const MAX_TABLES: usize = 8;
/// Tokens looked at for the summary (the masked text covers everything up to MAX_MASKED).
const MAX_TOKENS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// Unquoted identifier or keyword.
    Word(&'a str),
    /// `"quoted identifier"` (quotes removed, `""` left doubled).
    Quoted(&'a str),
    /// A literal (string, number): masked.
    Literal,
    /// `$1`, `?`, `:name`: kept as written.
    Param,
    Punct(u8),
}

/// Byte classes, one table load per byte in the tokenizer's loops (the
/// `is_ascii_*` chains were a third of its instructions).
const WORD_START: u8 = 1;
const WORD_BYTE: u8 = 2;
const SPACE: u8 = 4;
/// A byte that goes on a number: alphanumeric, `_` or `.`.
const NUM_BYTE: u8 = 8;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let alpha = b.is_ascii_alphabetic();
        let alnum = b.is_ascii_alphanumeric();
        if alpha || b == b'_' || b >= 0x80 {
            t[i] |= WORD_START;
        }
        if alnum || b == b'_' || b == b'$' || b >= 0x80 {
            t[i] |= WORD_BYTE;
        }
        if b.is_ascii_whitespace() {
            t[i] |= SPACE;
        }
        if alnum || b == b'_' || b == b'.' {
            t[i] |= NUM_BYTE;
        }
        i += 1;
    }
    t
};

#[inline(always)]
fn is_word_start(b: u8) -> bool {
    CLASS[usize::from(b)] & WORD_START != 0
}
#[inline(always)]
fn is_word_byte(b: u8) -> bool {
    CLASS[usize::from(b)] & WORD_BYTE != 0
}
#[inline(always)]
fn is_space(b: u8) -> bool {
    CLASS[usize::from(b)] & SPACE != 0
}

/// Splits `sql` into tokens, calling `out(token, text_to_emit)`; comments
/// produce nothing. Every split is at an ASCII byte, so slices stay UTF-8.
fn tokenize<'a>(sql: &'a str, dialect: Dialect, mut out: impl FnMut(Tok<'a>, &'a str) -> bool) {
    let mysql = dialect == Dialect::MySql;
    let b = sql.as_bytes();
    let n = b.len();
    let mut i = 0;
    while i < n {
        let c = b[i];
        let start = i;
        let tok;
        if is_space(c) {
            while i < n && is_space(b[i]) {
                i += 1;
            }
            if !out(Tok::Punct(b' '), &sql[start..i]) {
                return;
            }
            continue;
        } else if (c == b'-'
            && b.get(i + 1) == Some(&b'-')
            // MySQL needs a space after `--` (`1--1` is arithmetic there).
            && (!mysql || b.get(i + 2).is_none_or(|d| d.is_ascii_whitespace())))
            || (mysql && c == b'#')
        {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // PostgreSQL block comments nest; MySQL's end at the first `*/`.
            let mut depth = 0usize;
            while i < n {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') && (depth == 0 || !mysql) {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            if !out(Tok::Punct(b' '), " ") {
                return;
            }
            continue;
        } else if c == b'\'' || (mysql && c == b'"') {
            // MySQL reads backslash escapes in both quote forms (unless NO_BACKSLASH_ESCAPES).
            i = skip_string(b, i + 1, c, mysql);
            tok = Tok::Literal;
        } else if matches!(c, b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N') && b.get(i + 1) == Some(&b'\'') {
            i = skip_string(b, i + 2, b'\'', mysql || matches!(c, b'e' | b'E'));
            tok = Tok::Literal;
        } else if !mysql && matches!(c, b'u' | b'U') && b.get(i + 1) == Some(&b'&') && b.get(i + 2) == Some(&b'\'') {
            i = skip_string(b, i + 3, b'\'', false);
            tok = Tok::Literal;
        } else if c == if mysql { b'`' } else { b'"' } {
            // Quoted identifier (MySQL's `"…"` is a string, read above); a doubled quote stays inside.
            let end = skip_string(b, i + 1, c, false);
            let closed = end > i + 1 && b[end - 1] == c;
            i = end;
            tok = Tok::Quoted(&sql[start + 1..if closed { end - 1 } else { end }]);
        } else if c == b'$' && !mysql {
            let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
            if digits > 0 {
                i += 1 + digits;
                tok = Tok::Param;
            } else {
                // $tag$ … $tag$ (tag empty or an identifier).
                let tag_len = b[i + 1..].iter().take_while(|&&d| is_word_byte(d) && d != b'$').count();
                if b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &b[i..i + 2 + tag_len];
                    let body = i + tag.len();
                    i = match b[body..].windows(tag.len()).position(|w| w == tag) {
                        Some(p) => body + p + tag.len(),
                        None => n,
                    };
                    tok = Tok::Literal;
                } else {
                    i += 1;
                    tok = Tok::Punct(b'$');
                }
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < n {
                let d = b[i];
                if CLASS[usize::from(d)] & NUM_BYTE != 0 {
                    // 1e+5 / 1E-3: the sign belongs to the number.
                    if matches!(d, b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    i += 1;
                } else {
                    break;
                }
            }
            tok = Tok::Literal;
        } else if is_word_start(c) {
            while i < n && is_word_byte(b[i]) {
                i += 1;
            }
            tok = Tok::Word(&sql[start..i]);
        } else if c == b'?' {
            i += 1;
            tok = Tok::Param;
        } else if c == b':' && b.get(i + 1).is_some_and(|&d| is_word_start(d)) && (i == 0 || b[i - 1] != b':') {
            i += 1;
            while i < n && is_word_byte(b[i]) {
                i += 1;
            }
            tok = Tok::Param;
        } else {
            // Multi-byte UTF-8 never reaches here (>= 0x80 starts a word).
            i += 1;
            tok = Tok::Punct(c);
        }
        let text = match tok {
            Tok::Literal => "?",
            _ => &sql[start..i.min(n)],
        };
        if !out(tok, text) {
            return;
        }
    }
}

/// End of a string quoted by `q` whose body starts at `i` (after the quote);
/// a doubled quote stays inside, and so does an escaped one with `backslash`.
fn skip_string(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            c if c == q && b.get(i + 1) == Some(&q) => i += 2,
            c if c == q => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

fn kw(t: &Tok, k: &str) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(k))
}

/// `w` in upper case in `buf` when it is at most 16 bytes long (every
/// keyword looked for is shorter), else None: a keyword check without the
/// `String` `to_ascii_uppercase` allocates for every word of a statement.
fn upper16<'b>(w: &str, buf: &'b mut [u8; 16]) -> Option<&'b [u8]> {
    let b = w.as_bytes();
    if b.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(b) {
        *d = s.to_ascii_uppercase();
    }
    Some(&buf[..b.len()])
}

/// Words that end a table reference or cannot be one (`w` upper case).
fn is_not_table_upper(w: &[u8]) -> bool {
    matches!(
        w,
        b"SELECT"
            | b"LATERAL"
            | b"ONLY"
            | b"WHERE"
            | b"GROUP"
            | b"ORDER"
            | b"LIMIT"
            | b"OFFSET"
            | b"JOIN"
            | b"INNER"
            | b"LEFT"
            | b"RIGHT"
            | b"FULL"
            | b"CROSS"
            | b"NATURAL"
            | b"ON"
            | b"USING"
            | b"SET"
            | b"VALUES"
            | b"DEFAULT"
            | b"RETURNING"
            | b"WINDOW"
            | b"HAVING"
            | b"UNION"
            | b"EXCEPT"
            | b"INTERSECT"
            | b"FOR"
            | b"AS"
            | b"IF"
            | b"NOT"
            | b"EXISTS"
            | b"WITH"
            | b"STDIN"
            | b"STDOUT"
            | b"DUAL"
    )
}

fn is_not_table(w: &str) -> bool {
    let mut buf = [0u8; 16];
    upper16(w, &mut buf).is_some_and(is_not_table_upper)
}

/// Modifiers between CREATE/DROP/ALTER and the object type (PostgreSQL and MySQL).
const DDL_MODIFIERS: &[&str] = &[
    "OR",
    "REPLACE",
    "TEMP",
    "TEMPORARY",
    "UNLOGGED",
    "UNIQUE",
    "GLOBAL",
    "LOCAL",
    "RECURSIVE",
    "TRUSTED",
    "FULLTEXT",
    "SPATIAL",
    "ONLINE",
];

/// MySQL modifiers between INSERT/REPLACE/UPDATE/DELETE and the table.
const DML_MODIFIERS: &[&str] = &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "QUICK"];

struct Names {
    tables: Vec<String>,
    parts: Vec<String>,
}

impl Names {
    fn add_table(&mut self, t: String) {
        if !t.is_empty() && self.tables.len() < MAX_TABLES && !self.tables.contains(&t) {
            self.parts.push(t.clone());
            self.tables.push(t);
        }
    }
}

/// A possibly qualified name at `toks[i]` (`a`, `"A"`, `s.a`): its text and
/// the index after it. None when `toks[i]` is not a name, or (`call_ends`)
/// is a function call rather than a table (`FROM f(x)`; `INTO t (a, b)` is a table).
fn name_at(toks: &[Tok], mut i: usize, call_ends: bool) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        match toks.get(i) {
            Some(Tok::Word(w)) if name.is_empty() && is_not_table(w) => return None,
            Some(Tok::Word(w)) => name.push_str(w),
            Some(Tok::Quoted(q)) => name.push_str(q),
            _ => return None,
        }
        i += 1;
        if toks.get(i) == Some(&Tok::Punct(b'.')) {
            name.push('.');
            i += 1;
            continue;
        }
        break;
    }
    // `generate_series(...)`: a function, not a table.
    if call_ends && toks.get(i) == Some(&Tok::Punct(b'(')) {
        return None;
    }
    Some((name, i))
}

/// The operation, first collection and summary of the first statement.
fn analyse(toks: &[Tok]) -> (Option<String>, Option<String>, Option<String>) {
    let mut i = 0;
    while toks.get(i) == Some(&Tok::Punct(b'(')) {
        i += 1;
    }
    let Some(Tok::Word(first)) = toks.get(i) else { return (None, None, None) };
    let mut op = first.to_ascii_uppercase();
    let mut names = Names { tables: Vec::new(), parts: Vec::new() };
    let mut depth = 0usize;
    // WITH cte AS (...), ...: the statement proper starts after the last CTE.
    if op == "WITH" {
        let mut j = i + 1;
        let mut after_paren = false;
        let mut found = None;
        while j < toks.len() {
            match toks[j] {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => {
                    depth = depth.saturating_sub(1);
                    after_paren = depth == 0;
                    j += 1;
                    continue;
                }
                Tok::Punct(b';') if depth == 0 => break,
                Tok::Word(w) if depth == 0 && after_paren && !w.eq_ignore_ascii_case("AS") => {
                    found = Some(j);
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let Some(j) = found else { return (Some(op), None, None) };
        let Tok::Word(w) = toks[j] else { return (Some(op), None, None) };
        op = w.to_ascii_uppercase();
        // Tables read by the CTEs still count (after the main statement's).
        let main = analyse(&toks[j..]);
        let mut cte = Names { tables: Vec::new(), parts: Vec::new() };
        scan_tables(&toks[i + 1..j], &mut cte, false);
        let mut parts: Vec<String> = main.2.map(|s| vec![s]).unwrap_or_else(|| vec![op.clone()]);
        for t in cte.tables {
            if main.1.as_ref().is_none_or(|m| *m != t) {
                parts.push(t);
            }
        }
        let summary = parts.join(" ");
        return (main.0, main.1, Some(summary));
    }
    let rest = &toks[i + 1..];
    match op.as_str() {
        "SELECT" | "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE" | "COPY" | "TABLE" | "VALUES"
        | "LOCK" => {
            names.parts.push(op.clone());
            // MySQL allows `INSERT t …` / `REPLACE t …` without INTO.
            let insert_without_into = matches!(op.as_str(), "INSERT" | "REPLACE")
                && !rest.iter().find(|t| !DML_MODIFIERS.iter().any(|m| kw(t, m))).is_some_and(|t| kw(t, "INTO"));
            if insert_without_into || matches!(op.as_str(), "UPDATE" | "TABLE" | "COPY" | "TRUNCATE" | "LOCK") {
                let mut k = 0;
                while rest
                    .get(k)
                    .is_some_and(|t| kw(t, "ONLY") || kw(t, "TABLE") || DML_MODIFIERS.iter().any(|m| kw(t, m)))
                {
                    k += 1;
                }
                if let Some((n, _)) = name_at(rest, k, false) {
                    names.add_table(n);
                }
            }
            scan_tables(rest, &mut names, matches!(op.as_str(), "INSERT" | "REPLACE" | "MERGE"));
        }
        "CREATE" | "DROP" | "ALTER" => {
            let mut k = 0;
            while rest.get(k).is_some_and(|t| DDL_MODIFIERS.iter().any(|m| kw(t, m))) {
                k += 1;
            }
            let Some(Tok::Word(obj)) = rest.get(k) else { return (Some(op), None, None) };
            let mut obj = obj.to_ascii_uppercase();
            k += 1;
            if obj == "MATERIALIZED" || obj == "FOREIGN" {
                if let Some(Tok::Word(w)) = rest.get(k) {
                    obj = format!("{obj} {}", w.to_ascii_uppercase());
                    k += 1;
                }
            }
            op = format!("{op} {obj}");
            names.parts.push(op.clone());
            while rest.get(k).is_some_and(|t| ["IF", "NOT", "EXISTS", "CONCURRENTLY", "ONLY"].iter().any(|m| kw(t, m)))
            {
                k += 1;
            }
            if obj == "INDEX" {
                // CREATE INDEX [name] ON table: the collection is the table.
                if let Some(on) = rest.iter().position(|t| kw(t, "ON")) {
                    let mut m = on + 1;
                    if rest.get(m).is_some_and(|t| kw(t, "ONLY")) {
                        m += 1;
                    }
                    if let Some((n, _)) = name_at(rest, m, false) {
                        names.add_table(n);
                    }
                }
            } else if matches!(obj.as_str(), "TABLE" | "VIEW" | "MATERIALIZED VIEW" | "FOREIGN TABLE" | "SEQUENCE") {
                if let Some((n, _)) = name_at(rest, k, false) {
                    names.add_table(n);
                }
                if obj.contains("VIEW") || rest.iter().any(|t| kw(t, "AS")) {
                    scan_tables(&rest[k..], &mut names, false);
                }
            }
        }
        _ => {
            // BEGIN, COMMIT, SET, SHOW, LISTEN, NOTIFY, EXPLAIN, VACUUM, ...: the keyword alone.
            let op2 = match rest.first() {
                Some(Tok::Punct(b' ')) => rest.get(1),
                t => t,
            };
            if op == "START" && op2.is_some_and(|t| kw(t, "TRANSACTION")) {
                op = "START TRANSACTION".to_string();
            }
            names.parts.push(op.clone());
        }
    }
    let summary = names.parts.join(" ");
    (Some(op), names.tables.into_iter().next(), Some(summary))
}

/// Tables after FROM / JOIN / INTO / USING (any depth), comma lists after
/// FROM; a SELECT at depth 0 inside an INSERT/MERGE adds "SELECT".
fn scan_tables(toks: &[Tok], names: &mut Names, nested_select_op: bool) {
    let mut depth = 0usize;
    let mut i = 0;
    let mut in_from = false;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct(b'(') => {
                depth += 1;
                in_from = false;
            }
            Tok::Punct(b')') => {
                depth = depth.saturating_sub(1);
                in_from = false;
            }
            Tok::Punct(b';') if depth == 0 => return,
            Tok::Punct(b',') if in_from => {
                if let Some((n, next)) = name_at(toks, i + 1, true) {
                    names.add_table(n);
                    i = next;
                    continue;
                }
            }
            Tok::Word(w) => {
                let mut buf = [0u8; 16];
                match upper16(w, &mut buf) {
                    Some(word @ (b"FROM" | b"JOIN" | b"INTO" | b"USING")) => {
                        let (into, from) = (word == b"INTO", word == b"FROM");
                        let mut k = i + 1;
                        while toks.get(k).is_some_and(|t| kw(t, "ONLY") || kw(t, "LATERAL")) {
                            k += 1;
                        }
                        if let Some((n, next)) = name_at(toks, k, !into) {
                            names.add_table(n);
                            in_from = from;
                            i = next;
                            continue;
                        }
                    }
                    Some(b"SELECT")
                        if depth == 0
                            && nested_select_op
                            && names.parts.last().map(String::as_str) != Some("SELECT") =>
                    {
                        names.parts.push("SELECT".to_string());
                    }
                    Some(u) if is_not_table_upper(u) => in_from = false,
                    _ => {}
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Operation, first collection, summary and masked text of `sql`.
pub fn summarize(sql: &str, dialect: Dialect) -> SqlSummary {
    let mut masked = String::with_capacity(sql.len().min(MAX_MASKED + 3));
    let mut toks: Vec<Tok> = Vec::with_capacity(64);
    if tokenize_masked(sql, dialect, &mut toks, &mut masked) {
        masked.push_str("...");
    }
    let (operation, collection, summary) = analyse_bounded(&toks);
    SqlSummary { operation, collection, summary, masked_text: masked }
}

/// [`analyse`] with the summary cut at [`MAX_SUMMARY`] bytes.
fn analyse_bounded(toks: &[Tok]) -> (Option<String>, Option<String>, Option<String>) {
    let (operation, collection, mut summary) = analyse(toks);
    if let Some(s) = summary.as_mut() {
        truncate_at_char(s, MAX_SUMMARY);
    }
    (operation, collection, summary)
}

/// Tokens of `sql` (at most [`MAX_TOKENS`], blanks left out) into `toks`
/// and its masked text into `masked`: literals as `?`, blank runs and
/// comments as one space, cut at [`MAX_MASKED`] bytes (true: cut; the
/// caller adds the "..."), trailing blanks trimmed.
fn tokenize_masked<'a>(sql: &'a str, dialect: Dialect, toks: &mut Vec<Tok<'a>>, masked: &mut String) -> bool {
    let mut cut = false;
    let mut last_space = true;
    tokenize(sql, dialect, |t, text| {
        if toks.len() < MAX_TOKENS && t != Tok::Punct(b' ') {
            toks.push(t);
        }
        if !cut {
            // Whitespace runs (and removed comments) become one space.
            let text = if t == Tok::Punct(b' ') {
                if last_space {
                    ""
                } else {
                    " "
                }
            } else {
                text
            };
            last_space = t == Tok::Punct(b' ');
            if masked.len() + text.len() > MAX_MASKED {
                cut = true;
            } else {
                masked.push_str(text);
            }
        }
        !cut || toks.len() < MAX_TOKENS
    });
    let trimmed = masked.trim_end().len();
    masked.truncate(trimmed);
    cut
}

/// What [`summarize`] reads from a statement besides its masked text, as
/// texts its exchanges share (clones are reference counts or inline copies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub operation: Option<Str>,
    pub collection: Option<Str>,
    pub summary: Option<Str>,
}

/// Masked texts whose shape is remembered, per thread and dialect.
const SHAPES: usize = 512;
/// Longest masked text remembered (bytes): statements with literals inline
/// (`WHERE id = 42`) differ only by those, and their masked texts repeat.
const MAX_SHAPE_KEY: usize = 512;

type ShapeCache = lru::LruCache<Box<str>, Shape, foldhash::fast::FixedState>;

thread_local! {
    /// The shape of recently seen masked texts: a statement's operation,
    /// collection and summary depend only on its tokens, and its masked
    /// text spells them (literals all read `?`, which the analysis does not
    /// look into), so statements that differ only by literals share one.
    static SHAPE_CACHE: std::cell::RefCell<[ShapeCache; 2]> = std::cell::RefCell::new([
        lru::LruCache::with_hasher(std::num::NonZeroUsize::new(SHAPES).expect("non-zero"), Default::default()),
        lru::LruCache::with_hasher(std::num::NonZeroUsize::new(SHAPES).expect("non-zero"), Default::default()),
    ]);
}

/// [`summarize`] as the decoders use it: the shape (remembered by masked
/// text, so the analysis runs once per distinct statement) and the masked
/// text, which only spans show (`texts` false: left empty).
pub fn summarize_shared(sql: &str, dialect: Dialect, texts: bool) -> (Shape, String) {
    let mut masked = String::with_capacity(sql.len().min(MAX_MASKED + 3));
    let mut toks: Vec<Tok> = Vec::with_capacity(64);
    let cut = tokenize_masked(sql, dialect, &mut toks, &mut masked);
    let slot = usize::from(dialect == Dialect::MySql);
    let key_ok = !cut && masked.len() <= MAX_SHAPE_KEY;
    let hit = if key_ok {
        SHAPE_CACHE.try_with(|c| c.borrow_mut()[slot].get(masked.as_str()).cloned()).ok().flatten()
    } else {
        None
    };
    let shape = hit.unwrap_or_else(|| {
        let (operation, collection, summary) = analyse_bounded(&toks);
        let shape = Shape {
            operation: operation.map(Str::compact),
            collection: collection.map(Str::compact),
            summary: summary.as_deref().map(Str::shared),
        };
        if key_ok {
            let _ = SHAPE_CACHE.try_with(|c| c.borrow_mut()[slot].put(masked.as_str().into(), shape.clone()));
        }
        shape
    });
    if !texts {
        masked = String::new();
    } else if cut {
        masked.push_str("...");
    }
    (shape, masked)
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub fn truncate_at_char(s: &mut String, max: usize) {
    let len = truncate_str(s, max).len();
    s.truncate(len);
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(sql: &str) -> (String, String, String, String) {
        let r = summarize(sql, Dialect::Postgres);
        (
            r.operation.unwrap_or_default(),
            r.collection.unwrap_or_default(),
            r.summary.unwrap_or_default(),
            r.masked_text,
        )
    }

    #[test]
    fn selects() {
        assert_eq!(
            s("SELECT * FROM orders WHERE id = 42 AND name = 'bob''s'"),
            (
                "SELECT".into(),
                "orders".into(),
                "SELECT orders".into(),
                "SELECT * FROM orders WHERE id = ? AND name = ?".into()
            )
        );
        assert_eq!(
            s("select a.x from public.orders a join \"Customers\" c on c.id = a.cid").2,
            "SELECT public.orders Customers"
        );
        assert_eq!(s("SELECT 1").2, "SELECT");
        assert_eq!(s("SELECT 1").3, "SELECT ?");
        assert_eq!(s("SELECT * FROM a, b x, c WHERE a.id IN (SELECT id FROM d)").2, "SELECT a b c d");
        assert_eq!(s("SELECT * FROM generate_series(1, 10)").1, "");
        assert_eq!(s("  (SELECT x FROM t)").2, "SELECT t");
    }

    #[test]
    fn dml_ddl_and_others() {
        assert_eq!(s("INSERT INTO t (a, b) VALUES ($1, $2)").2, "INSERT t");
        assert_eq!(s("INSERT INTO t (a, b) VALUES ($1, $2)").3, "INSERT INTO t (a, b) VALUES ($1, $2)");
        assert_eq!(s("INSERT INTO archive SELECT * FROM orders").2, "INSERT archive SELECT orders");
        assert_eq!(
            s("UPDATE pgbench_accounts SET abalance = abalance + -1 WHERE aid = 5").2,
            "UPDATE pgbench_accounts"
        );
        assert_eq!(s("DELETE FROM ONLY t WHERE x < 3").1, "t");
        assert_eq!(s("CREATE TABLE IF NOT EXISTS items (id int)").0, "CREATE TABLE");
        assert_eq!(s("CREATE TABLE IF NOT EXISTS items (id int)").2, "CREATE TABLE items");
        assert_eq!(s("create unique index on items (id)").2, "CREATE INDEX items");
        assert_eq!(s("DROP TABLE t").2, "DROP TABLE t");
        assert_eq!(s("COPY items (id, name) FROM STDIN").2, "COPY items");
        assert_eq!(s("COPY (SELECT * FROM items) TO STDOUT").2, "COPY items");
        assert_eq!(s("TRUNCATE TABLE a").2, "TRUNCATE a");
        assert_eq!(s("begin").2, "BEGIN");
        assert_eq!(s("NOTIFY news, 'hello'").3, "NOTIFY news, ?");
        assert_eq!(s("START TRANSACTION ISOLATION LEVEL SERIALIZABLE").0, "START TRANSACTION");
        assert_eq!(
            s("WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN b ON true"),
            (
                "SELECT".into(),
                "x".into(),
                "SELECT x b a".into(),
                "WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN b ON true".into()
            )
        );
        assert_eq!(s("").0, "");
        assert_eq!(s("-- just a comment").3, "");
    }

    #[test]
    fn masks_every_literal_form() {
        assert_eq!(
            summarize("SELECT E'it\\'s', $$a 'b' c$$, $x$q$x$, B'101', X'ff', U&'d', 1.5e-3, .5, 0x1F, -- c\n x::int /* a /* b */ */", Dialect::Postgres).masked_text,
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, x::int"
        );
        assert_eq!(
            summarize("SELECT \"a''b\", col1 FROM t2", Dialect::Postgres).masked_text,
            "SELECT \"a''b\", col1 FROM t2"
        );
        assert_eq!(summarize("SELECT 'unterminated", Dialect::Postgres).masked_text, "SELECT ?");
        let long = format!("SELECT '{}', 1", "x".repeat(5000));
        assert_eq!(summarize(&long, Dialect::Postgres).masked_text, "SELECT ?, ?");
        let long = format!("SELECT {}", "a, ".repeat(2000));
        let m = summarize(&long, Dialect::Postgres).masked_text;
        assert!(m.len() <= MAX_MASKED + 3 && m.ends_with("..."));
    }

    fn my(sql: &str) -> (String, String, String, String) {
        let r = summarize(sql, Dialect::MySql);
        (
            r.operation.unwrap_or_default(),
            r.collection.unwrap_or_default(),
            r.summary.unwrap_or_default(),
            r.masked_text,
        )
    }

    #[test]
    fn mysql_statements() {
        assert_eq!(
            my("SELECT id, name FROM users WHERE id = 42 AND name = 'bob'"),
            (
                "SELECT".into(),
                "users".into(),
                "SELECT users".into(),
                "SELECT id, name FROM users WHERE id = ? AND name = ?".into()
            )
        );
        assert_eq!(my("insert into `shop`.`orders` (a,b) values (1, \"x\")").2, "INSERT shop.orders");
        assert_eq!(
            my("insert into `shop`.`orders` (a,b) values (1, \"x\")").3,
            "insert into `shop`.`orders` (a,b) values (?, ?)"
        );
        assert_eq!(my("INSERT IGNORE INTO t VALUES (1)").2, "INSERT t");
        assert_eq!(my("insert t (a) values (1)").2, "INSERT t");
        assert_eq!(my("REPLACE LOW_PRIORITY INTO t SELECT * FROM s").2, "REPLACE t SELECT s");
        assert_eq!(my("UPDATE LOW_PRIORITY t1 SET a=a+1").2, "UPDATE t1");
        assert_eq!(my("delete from t2 where x in (1,2,3)").2, "DELETE t2");
        // Semconv: db.collection.name is the first collection of the query.
        assert_eq!(my("SELECT * FROM a JOIN b ON a.id=b.id").1, "a");
        assert_eq!(my("SELECT * FROM a JOIN b ON a.id=b.id").2, "SELECT a b");
        assert_eq!(my("select * from a x, b as y where 1").2, "SELECT a b");
        assert_eq!(my("SELECT 1 FROM DUAL").1, "");
        assert_eq!(my("select @@version_comment limit 1").3, "select @@version_comment limit ?");
        assert_eq!(my("CREATE TABLE IF NOT EXISTS t (id INT)").2, "CREATE TABLE t");
        assert_eq!(my("drop table if exists `t`").2, "DROP TABLE t");
        assert_eq!(my("create fulltext index ix ON t (a)").2, "CREATE INDEX t");
        assert_eq!(my("  /* hint */ SHOW TABLES").2, "SHOW");
        assert_eq!(my("WITH c AS (SELECT * FROM x) SELECT * FROM c").1, "c");
        assert_eq!(my("set autocommit=0").2, "SET");
        // Backslash escapes in both quote forms, `#` and `-- ` comments, `1--1` is arithmetic.
        assert_eq!(my("SELECT x'ff', 0x1F, 1.5e-3, 'it''s', 'a\\'b', \"c\\\"d\"").3, "SELECT ?, ?, ?, ?, ?, ?");
        assert_eq!(my("SELECT 1 -- 'c'\n").3, "SELECT ?");
        assert_eq!(my("SELECT 1 # 'c'\n, 2").3, "SELECT ? , ?");
        assert_eq!(my("SELECT 1--1").3, "SELECT ?--?");
        assert_eq!(my("SELECT /* a /* b */ 1").3, "SELECT ?");
        assert_eq!(my("").0, "");
        assert_eq!(use_target("USE `shop`"), Some("shop".into()));
        assert_eq!(use_target("use shop"), Some("shop".into()));
        assert_eq!(use_target("select 1"), None);
    }

    #[test]
    fn password_statements_stay_masked_when_unmasked_text_is_asked_for() {
        for (d, sql) in [
            (Dialect::Postgres, "ALTER ROLE app PASSWORD 'hunter2'"),
            (Dialect::MySql, "CREATE USER 'app'@'%' IDENTIFIED BY 'hunter2'"),
            (Dialect::MySql, "SET PASSWORD FOR app = 'hunter2'"),
        ] {
            let s = summarize(sql, d);
            assert!(!s.unmasked_text(sql).contains("hunter2"), "{sql}");
        }
        let s = summarize("SELECT 'x'", Dialect::MySql);
        assert_eq!(s.unmasked_text("SELECT 'x'"), "SELECT 'x'");
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(sql in ".{0,300}") {
            for d in [Dialect::Postgres, Dialect::MySql] {
                let r = summarize(&sql, d);
                prop_assert!(r.masked_text.len() <= MAX_MASKED + 3);
                prop_assert!(r.summary.as_ref().is_none_or(|s| s.len() <= MAX_SUMMARY));
            }
            let _ = use_target(&sql);
        }

        // The shape remembered for a masked text is the one each statement's
        // own tokens give: statements built from fragments that often mask
        // alike (literals, parameters, blanks and comments, quoting, case),
        // each summarised fresh and through the cache, twice.
        #[test]
        fn remembered_shapes_are_each_statements_own(
            stmts in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        "SELECT", "select", "FROM", "from", "t", "T", "\"t\"", "`t`", "s.t", "x", "'lit'", "42", "1.5e-3", "?",
                        "$1", ",", "(", ")", ";", "INSERT", "INTO", "VALUES", "WITH", "AS", "JOIN", "UPDATE", "SET", "=", "*",
                        " ", "  ", "\n", "/* c */", "-- c\n", "# c\n", "E'x'", "$$a$$", "\"s\"", "CREATE", "TABLE", "INDEX",
                        "ON", "DELETE", "ONLY", "LATERAL", "generate_series", "USE", "db", "BEGIN", "ALTER", "USER", "PASSWORD",
                    ]),
                    0..16,
                ),
                1..24,
            ),
            sep in proptest::sample::select(vec!["", " "]),
        ) {
            for _ in 0..2 {
                for parts in &stmts {
                    let sql = parts.join(sep);
                    for d in [Dialect::Postgres, Dialect::MySql] {
                        let fresh = summarize(&sql, d);
                        let (shape, masked) = summarize_shared(&sql, d, true);
                        prop_assert_eq!(shape.operation.as_deref(), fresh.operation.as_deref(), "{}", sql);
                        prop_assert_eq!(shape.collection.as_deref(), fresh.collection.as_deref(), "{}", sql);
                        prop_assert_eq!(shape.summary.as_deref(), fresh.summary.as_deref(), "{}", sql);
                        prop_assert_eq!(&masked, &fresh.masked_text);
                        let (again, none) = summarize_shared(&sql, d, false);
                        prop_assert_eq!(again, shape);
                        prop_assert!(none.is_empty());
                        // MySQL looks for `USE db` only in statements whose operation is USE.
                        if d == Dialect::MySql && use_target(&sql).is_some() {
                            prop_assert_eq!(fresh.operation.as_deref(), Some("USE"), "{}", sql);
                        }
                    }
                }
            }
        }

        #[test]
        fn mysql_literals_never_survive_masking(a in "[a-z]{6,12}", n in 100000u32..999999) {
            let sql = format!("SELECT * FROM t WHERE a = '{a}' AND n = {n} AND e = \"{a}\\\"\" AND h = x'{n}'");
            let r = summarize(&sql, Dialect::MySql);
            prop_assert!(!r.masked_text.contains(&a) && !r.masked_text.contains(&n.to_string()), "{}", r.masked_text);
            prop_assert_eq!(r.summary.as_deref(), Some("SELECT t"));
        }

        #[test]
        fn literals_never_survive_masking(a in "[a-z]{6,12}", n in 100000u32..999999) {
            let sql = format!("SELECT * FROM t WHERE a = '{a}' AND n = {n} AND e = E'{a}\\'' AND d = $${a}$$");
            let r = summarize(&sql, Dialect::Postgres);
            prop_assert!(!r.masked_text.contains(&a) && !r.masked_text.contains(&n.to_string()), "{}", r.masked_text);
            prop_assert_eq!(r.summary.as_deref(), Some("SELECT t"));
        }
    }
}
