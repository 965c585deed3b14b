//! A small SQL summariser for MySQL/MariaDB query text: the operation, the
//! collection, a `db.query.summary` and the text with its literals masked.
//!
//! Deliberately lexical (no grammar): it reads tokens, skips comments, masks
//! string/number/hex literals and finds the tables after FROM / JOIN / INTO /
//! UPDATE / TABLE at the top nesting level. What it cannot place it leaves
//! out rather than guesses. Bounded: the text is truncated before it is read.

/// What [`summarize`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Upper-case operation, e.g. "SELECT", "CREATE TABLE" (None for empty text).
    pub operation: Option<String>,
    /// The one table the statement targets (None when none or several).
    pub collection: Option<String>,
    /// `{operation} {table} {table}...` (semconv `db.query.summary`).
    pub summary: Option<String>,
    /// The text with literals replaced by `?`.
    pub masked: String,
}

/// Longest text read (bytes); longer text is cut at a character boundary.
pub const MAX_TEXT: usize = 2048;
/// Tables listed in a summary.
const MAX_TARGETS: usize = 4;
/// Longest summary (semconv asks for a bounded, low-cardinality value).
const MAX_SUMMARY: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Keyword or bare identifier, as written.
    Word(String),
    /// `quoted` identifier, quotes removed.
    Quoted(String),
    /// A masked literal.
    Lit,
    /// Any other character (punctuation, operators).
    Sym(char),
}

/// Cut `s` to at most `max` bytes at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Tokens of `sql` and the masked text.
fn lex(sql: &str) -> (Vec<Tok>, String) {
    let b = sql.as_bytes();
    let mut toks = Vec::new();
    let mut masked = String::with_capacity(sql.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // Comments: `-- `, `#`, `/* */` (MySQL's `/*! ... */` included: kept in the text, not read).
        if c == b'#'
            || (c == b'-' && b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()))
        {
            let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            masked.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = sql[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            masked.push_str(&sql[i..end]);
            i = end;
            continue;
        }
        if c.is_ascii_whitespace() {
            masked.push(c as char);
            i += 1;
            continue;
        }
        // Strings ('...' and "...": double quotes are strings unless ANSI_QUOTES).
        if c == b'\'' || c == b'"' {
            i = skip_quoted(b, i, c);
            masked.push('?');
            toks.push(Tok::Lit);
            continue;
        }
        if c == b'`' {
            let end = skip_quoted(b, i, b'`');
            let closed = end > i + 1 && b[end - 1] == b'`';
            let inner = &sql[i + 1..if closed { end - 1 } else { end }];
            masked.push_str(&sql[i..end]);
            toks.push(Tok::Quoted(inner.replace("``", "`")));
            i = end;
            continue;
        }
        // Hex/bit literals: X'..', B'..', 0x.., 0b..; introducers like _utf8'..' keep their string masked.
        if matches!(c, b'x' | b'X' | b'b' | b'B') && b.get(i + 1) == Some(&b'\'') {
            i = skip_quoted(b, i + 1, b'\'');
            masked.push('?');
            toks.push(Tok::Lit);
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                // Exponent sign: 1e-5.
                j += 1;
                if (b[j - 1] == b'e' || b[j - 1] == b'E') && j < b.len() && (b[j] == b'-' || b[j] == b'+') {
                    j += 1;
                }
            }
            masked.push('?');
            toks.push(Tok::Lit);
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'@' || c >= 0x80 {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || matches!(b[j], b'_' | b'$' | b'@') || b[j] >= 0x80) {
                j += 1;
            }
            while j < b.len() && !sql.is_char_boundary(j) {
                j += 1;
            }
            masked.push_str(&sql[i..j]);
            toks.push(Tok::Word(sql[i..j].to_string()));
            i = j;
            continue;
        }
        let ch = sql[i..].chars().next().unwrap_or(' ');
        masked.push(ch);
        toks.push(Tok::Sym(ch));
        i += ch.len_utf8().max(1);
    }
    (toks, masked)
}

/// Index after the closing `q` of a quoted run starting at `start` (doubled
/// quotes and backslash escapes stay inside); the end of input if unclosed.
fn skip_quoted(b: &[u8], start: usize, q: u8) -> usize {
    let mut j = start + 1;
    while j < b.len() {
        if b[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

fn word_is(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// A table name at `toks[i..]`: `name`, `` `name` ``, `db.name`. Returns it and the index after it.
fn table_at(toks: &[Tok], mut i: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        match toks.get(i) {
            Some(Tok::Word(w)) if !is_reserved(w) || !name.is_empty() => name.push_str(w),
            Some(Tok::Quoted(w)) => name.push_str(w),
            _ => break,
        }
        i += 1;
        if toks.get(i) == Some(&Tok::Sym('.')) && matches!(toks.get(i + 1), Some(Tok::Word(_) | Tok::Quoted(_))) {
            name.push('.');
            i += 1;
        } else {
            break;
        }
    }
    (!name.is_empty()).then_some((name, i))
}

/// Words that cannot be a table name where one is looked for.
fn is_reserved(w: &str) -> bool {
    const R: &[&str] = &[
        "SELECT",
        "WHERE",
        "SET",
        "VALUES",
        "VALUE",
        "ON",
        "USING",
        "AS",
        "LIMIT",
        "ORDER",
        "GROUP",
        "HAVING",
        "IGNORE",
        "LOW_PRIORITY",
        "DELAYED",
        "HIGH_PRIORITY",
        "QUICK",
        "DUAL",
        "LATERAL",
        "JSON_TABLE",
        "IF",
        "INTO",
    ];
    R.iter().any(|r| r.eq_ignore_ascii_case(w))
}

/// Tables after FROM / JOIN at nesting depth 0, for SELECT and DELETE.
fn from_tables(toks: &[Tok], out: &mut Vec<String>) {
    let mut depth = 0i32;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Sym('(') => depth += 1,
            Tok::Sym(')') => depth -= 1,
            Tok::Word(w) if depth == 0 && (w.eq_ignore_ascii_case("FROM") || w.eq_ignore_ascii_case("JOIN")) => {
                let mut j = i + 1;
                // FROM a, b: a comma list of tables, each with an optional alias.
                while let Some((t, after)) = table_at(toks, j) {
                    push_target(out, t);
                    j = after;
                    if word_is(toks.get(j), "AS") {
                        j += 1;
                    }
                    if matches!(toks.get(j), Some(Tok::Word(w)) if !is_clause(w))
                        || matches!(toks.get(j), Some(Tok::Quoted(_)))
                    {
                        j += 1;
                    }
                    if toks.get(j) == Some(&Tok::Sym(',')) {
                        j += 1;
                    } else {
                        break;
                    }
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Words that end a table reference (so are not its alias).
fn is_clause(w: &str) -> bool {
    const C: &[&str] = &[
        "WHERE",
        "JOIN",
        "INNER",
        "LEFT",
        "RIGHT",
        "CROSS",
        "NATURAL",
        "STRAIGHT_JOIN",
        "ON",
        "USING",
        "GROUP",
        "ORDER",
        "LIMIT",
        "HAVING",
        "UNION",
        "FOR",
        "LOCK",
        "INTO",
        "WINDOW",
        "PARTITION",
        "USE",
        "FORCE",
        "IGNORE",
        "SET",
        "FULL",
        "OUTER",
        "EXCEPT",
        "INTERSECT",
        "RETURNING",
    ];
    C.iter().any(|c| c.eq_ignore_ascii_case(w))
}

fn push_target(out: &mut Vec<String>, t: String) {
    if out.len() < MAX_TARGETS && !out.contains(&t) {
        out.push(t);
    }
}

/// Summarise one statement (see [`Summary`]).
pub fn summarize(sql: &str) -> Summary {
    let sql = truncate(sql, MAX_TEXT);
    let (toks, masked) = lex(sql);
    let mut s = Summary { masked, ..Default::default() };
    // Skip leading parentheses: `(SELECT ...) UNION (...)`.
    let start = toks.iter().position(|t| *t != Tok::Sym('(')).unwrap_or(toks.len());
    let toks = &toks[start..];
    let Some(Tok::Word(first)) = toks.first() else { return s };
    let first = first.to_ascii_uppercase();
    let mut targets = Vec::new();
    let op = match first.as_str() {
        "SELECT" | "WITH" | "TABLE" => {
            // WITH: the statement after the CTEs (their queries are nested in parentheses).
            let main = if first == "WITH" {
                let mut depth = 0;
                toks.iter()
                    .enumerate()
                    .skip(1)
                    .find_map(|(i, t)| {
                        match t {
                            Tok::Sym('(') => depth += 1,
                            Tok::Sym(')') => depth -= 1,
                            Tok::Word(w) if depth == 0 => {
                                let u = w.to_ascii_uppercase();
                                if matches!(u.as_str(), "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "REPLACE") {
                                    return Some((i, u));
                                }
                            }
                            _ => {}
                        }
                        None
                    })
                    .unwrap_or((0, "WITH".to_string()))
            } else {
                (0, first.clone())
            };
            let rest = &toks[main.0..];
            match main.1.as_str() {
                "SELECT" | "DELETE" => from_tables(rest, &mut targets),
                "TABLE" => {
                    if let Some((t, _)) = table_at(rest, 1) {
                        push_target(&mut targets, t);
                    }
                }
                _ => dml_target(rest, &mut targets),
            }
            if main.1 == "TABLE" {
                "SELECT".to_string()
            } else {
                main.1
            }
        }
        "INSERT" | "REPLACE" | "UPDATE" => {
            dml_target(toks, &mut targets);
            if first != "UPDATE" {
                // INSERT ... SELECT reads other tables.
                if let Some(sel) = toks.iter().position(|t| word_is(Some(t), "SELECT")) {
                    from_tables(&toks[sel..], &mut targets);
                }
            }
            first
        }
        "DELETE" => {
            from_tables(toks, &mut targets);
            first
        }
        "CREATE" | "DROP" | "ALTER" | "TRUNCATE" | "RENAME" => {
            // CREATE [OR REPLACE] [TEMPORARY] TABLE [IF NOT EXISTS] t
            let mut i = 1;
            while matches!(toks.get(i), Some(Tok::Word(w)) if ["OR", "REPLACE", "TEMPORARY", "UNIQUE", "FULLTEXT", "SPATIAL", "ONLINE", "IGNORE", "DEFINER", "SQL", "SECURITY", "ALGORITHM"].iter().any(|k| k.eq_ignore_ascii_case(w)))
            {
                i += 1;
            }
            let object = match toks.get(i) {
                Some(Tok::Word(w)) => w.to_ascii_uppercase(),
                _ => String::new(),
            };
            if first == "TRUNCATE" && object != "TABLE" {
                // TRUNCATE t
                if let Some((t, _)) = table_at(toks, 1) {
                    push_target(&mut targets, t);
                }
                "TRUNCATE TABLE".to_string()
            } else if matches!(
                object.as_str(),
                "TABLE"
                    | "TABLES"
                    | "VIEW"
                    | "INDEX"
                    | "DATABASE"
                    | "SCHEMA"
                    | "PROCEDURE"
                    | "FUNCTION"
                    | "TRIGGER"
                    | "EVENT"
                    | "USER"
                    | "SEQUENCE"
            ) {
                let mut j = i + 1;
                // IF [NOT] EXISTS
                if word_is(toks.get(j), "IF") {
                    j += 1;
                    if word_is(toks.get(j), "NOT") {
                        j += 1;
                    }
                    if word_is(toks.get(j), "EXISTS") {
                        j += 1;
                    }
                }
                if matches!(object.as_str(), "TABLE" | "TABLES" | "VIEW") {
                    if let Some((t, _)) = table_at(toks, j) {
                        push_target(&mut targets, t);
                    }
                } else if object == "INDEX" {
                    // CREATE INDEX i ON t
                    if let Some(on) = toks.iter().position(|t| word_is(Some(t), "ON")) {
                        if let Some((t, _)) = table_at(toks, on + 1) {
                            push_target(&mut targets, t);
                        }
                    }
                }
                format!("{first} {object}")
            } else {
                first
            }
        }
        _ => first,
    };
    s.collection = (targets.len() == 1).then(|| targets[0].clone());
    let mut summary = op.clone();
    for t in &targets {
        if summary.len() + 1 + t.len() > MAX_SUMMARY {
            break;
        }
        summary.push(' ');
        summary.push_str(t);
    }
    s.summary = Some(summary);
    s.operation = Some(op);
    s
}

/// INSERT [INTO] t, REPLACE [INTO] t, UPDATE t (the target right after the verb and its modifiers).
fn dml_target(toks: &[Tok], out: &mut Vec<String>) {
    let mut i = 1;
    while matches!(toks.get(i), Some(Tok::Word(w)) if is_reserved(w)) {
        i += 1;
    }
    if let Some((t, _)) = table_at(toks, i) {
        push_target(out, t);
    }
}

/// The database a `USE db` statement selects.
pub fn use_target(sql: &str) -> Option<String> {
    let (toks, _) = lex(truncate(sql, 512));
    if !word_is(toks.first(), "USE") {
        return None;
    }
    match toks.get(1) {
        Some(Tok::Word(w) | Tok::Quoted(w)) => Some(w.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(sql: &str) -> (String, String, String, String) {
        let s = summarize(sql);
        (s.operation.unwrap_or_default(), s.collection.unwrap_or_default(), s.summary.unwrap_or_default(), s.masked)
    }

    #[test]
    fn common_statements() {
        assert_eq!(
            sum("SELECT id, name FROM users WHERE id = 42 AND name = 'bob'"),
            (
                "SELECT".into(),
                "users".into(),
                "SELECT users".into(),
                "SELECT id, name FROM users WHERE id = ? AND name = ?".into()
            )
        );
        assert_eq!(sum("insert into `shop`.`orders` (a,b) values (1, \"x\")").2, "INSERT shop.orders");
        assert_eq!(
            sum("insert into `shop`.`orders` (a,b) values (1, \"x\")").3,
            "insert into `shop`.`orders` (a,b) values (?, ?)"
        );
        assert_eq!(sum("UPDATE LOW_PRIORITY t1 SET a=a+1").2, "UPDATE t1");
        assert_eq!(sum("delete from t2 where x in (1,2,3)").2, "DELETE t2");
        assert_eq!(sum("SELECT * FROM a JOIN b ON a.id=b.id").2, "SELECT a b");
        assert_eq!(sum("SELECT * FROM a JOIN b ON a.id=b.id").1, "");
        assert_eq!(sum("select * from a x, b as y where 1").2, "SELECT a b");
        assert_eq!(sum("SELECT 1").2, "SELECT");
        assert_eq!(sum("select @@version_comment limit 1").3, "select @@version_comment limit ?");
        assert_eq!(sum("SELECT * FROM (SELECT * FROM inner_t) AS d").2, "SELECT");
        assert_eq!(sum("CREATE TABLE IF NOT EXISTS t (id INT)").2, "CREATE TABLE t");
        assert_eq!(sum("drop table if exists `t`").2, "DROP TABLE t");
        assert_eq!(sum("create database shop").2, "CREATE DATABASE");
        assert_eq!(sum("CREATE INDEX ix ON t (a)").2, "CREATE INDEX t");
        assert_eq!(sum("TRUNCATE t").2, "TRUNCATE TABLE t");
        assert_eq!(sum("  /* hint */ SHOW TABLES").2, "SHOW");
        assert_eq!(sum("WITH c AS (SELECT * FROM x) SELECT * FROM c").2, "SELECT c");
        assert_eq!(sum("INSERT INTO t SELECT * FROM s").2, "INSERT t s");
        assert_eq!(sum("set autocommit=0").2, "SET");
        assert_eq!(sum("SELECT x'ff', 0x1F, 1.5e-3, 'it''s', 'a\\'b'").3, "SELECT ?, ?, ?, ?, ?");
        assert_eq!(sum("SELECT 1 -- 'c'\n").3, "SELECT ? -- 'c'\n");
        assert_eq!(sum("").0, "");
        assert_eq!(use_target("USE `shop`"), Some("shop".into()));
        assert_eq!(use_target("use shop"), Some("shop".into()));
        assert_eq!(use_target("select 1"), None);
        assert_eq!(summarize(&"é".repeat(3000)).masked.len(), MAX_TEXT);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_masks(s in "\\PC{0,200}", n in 0u64..1_000_000) {
            let _ = summarize(&s);
            let _ = use_target(&s);
            let q = format!("SELECT a FROM t WHERE b = {n} AND c = 'secret{n}'");
            let m = summarize(&q).masked;
            proptest::prop_assert!(!m.contains(&n.to_string()) && !m.contains("secret"));
        }
    }
}
