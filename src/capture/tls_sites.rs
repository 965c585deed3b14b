//! Where on the TLS library's read and write functions the uprobes go.
//!
//! A uprobe is an `int3` over the first byte of an instruction. After the
//! programs ran, the kernel has to carry out the instruction it covered: a
//! few kinds it emulates (on x86_64 a push of a register, since Linux 4.18;
//! nops, relative calls and jumps), any other it copies out of line and
//! single-steps, which takes a second trap. On the VMs this project is
//! measured on, that second trap is most of what a probe costs: 15.8–17.1 µs
//! per hit on a `sub $0x18,%rsp` or an `endbr64`, 0.5 µs on a `push %rbp`,
//! 0.84 µs for a `push %r13` with a return probe (README, "Session 34").
//! Debian's OpenSSL 3.0 starts `SSL_read` and `SSL_write` with `sub`, so
//! every SSL call paid it, at both ends of a connection.
//!
//! So each probe goes, where the code allows it, on an instruction the
//! kernel emulates and where the function's arguments and its return
//! address are still where they were at its first byte:
//! - after a leading `endbr64` (a landing marker for indirect branches that
//!   changes no register and not the stack) when a push follows it;
//! - on the function an `_ex` wrapper hands its own arguments to, unchanged
//!   (OpenSSL's `ssl_read_internal` / `ssl_write_internal`: the `_ex`
//!   arguments, 1 on success with the byte count through the pointer), when
//!   that function starts with a push. The evidence that the arguments pass
//!   unchanged is the wrapper's whole code up to the call: `[endbr64]
//!   [sub $n,%rsp | push %reg] call|jmp target`, none of which writes rdi,
//!   rsi, rdx or rcx. `SSL_read` / `SSL_write` then need no probe of their
//!   own when their code calls that function or the wrapper; otherwise they
//!   keep theirs (if they ever were probed both ways, the eBPF side keeps
//!   one record per call: the inner return clears the thread's call).
//!
//! Anything else keeps its probe on the symbol's first byte.
use super::tls_symbols::Func;

/// How CNFLOW_TLS_PROBE_PLACEMENT places the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// On instructions the kernel emulates where the code allows it (above).
    #[default]
    Emulated,
    /// On each symbol's first byte.
    Entry,
}

impl Placement {
    /// CNFLOW_TLS_PROBE_PLACEMENT's value.
    pub fn parse(s: &str) -> anyhow::Result<Placement> {
        match s {
            "emulated" => Ok(Placement::Emulated),
            "entry" => Ok(Placement::Entry),
            other => anyhow::bail!("CNFLOW_TLS_PROBE_PLACEMENT must be emulated or entry (got {other:?})"),
        }
    }
}

/// One uprobe to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The eBPF program.
    pub program: &'static str,
    /// File offset of the probed instruction.
    pub offset: u64,
    /// Where, for the log (`SSL_read`, `SSL_read+4`, `SSL_read_ex→0x35290`).
    pub site: String,
}

/// The probe pairs of one direction, with the indexes of their symbols in
/// [`super::tls_symbols::SYMBOLS`].
struct Direction {
    /// `SSL_write` / `SSL_read`: an int byte count in, an int byte count out.
    plain: (usize, &'static str, &'static str),
    /// The `_ex` variant: the count through a pointer (4th argument).
    ex: (usize, &'static str, &'static str),
}

const DIRECTIONS: [Direction; 2] = [
    Direction {
        plain: (0, "cnflow_ssl_write", "cnflow_ssl_write_ret"),
        ex: (1, "cnflow_ssl_write_ex", "cnflow_ssl_write_ex_ret"),
    },
    Direction {
        plain: (2, "cnflow_ssl_read", "cnflow_ssl_read_ret"),
        ex: (3, "cnflow_ssl_read_ex", "cnflow_ssl_read_ex_ret"),
    },
];

/// Every program [`plan`] may name (loaded once, attached per file).
pub fn programs() -> impl Iterator<Item = &'static str> {
    DIRECTIONS.iter().flat_map(|d| [d.plain.1, d.plain.2, d.ex.1, d.ex.2])
}

/// Code bytes looked at per function: the wrappers are a few dozen bytes.
pub const MAX_CODE: usize = 256;

/// The probes for a file whose [`super::tls_symbols::SYMBOLS`] are `funcs`;
/// `code(offset, len)` reads up to `len` bytes of the file at `offset`.
pub fn plan(
    funcs: &[Option<Func>; 5],
    placement: Placement,
    code: impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> Vec<Probe> {
    let names = super::tls_symbols::SYMBOLS;
    let emulated = placement == Placement::Emulated && cfg!(target_arch = "x86_64");
    let body = |f: Func| code(f.offset, if f.size == 0 { MAX_CODE } else { (f.size as usize).min(MAX_CODE) });
    let mut probes = Vec::new();
    let mut pair = |(_, entry, ret): (usize, &'static str, &'static str), offset: u64, site: String| {
        probes.push(Probe { program: entry, offset, site: site.clone() });
        probes.push(Probe { program: ret, offset, site });
    };
    for d in DIRECTIONS {
        let (plain, ex) = (funcs[d.plain.0], funcs[d.ex.0]);
        if emulated {
            // The function the _ex wrapper passes its arguments to, when a probe there is emulated.
            let callee = ex.and_then(|f| Some((f, wrapper_target(f.offset, &body(f)?)?))).and_then(|(f, t)| {
                let skip = emulated_site(&code(t, 16)?)?;
                Some((f, t, skip))
            });
            if let Some((exf, target, skip)) = callee {
                pair(d.ex, target + skip, format!("{}→{target:#x}", names[d.ex.0]));
                // SSL_read/SSL_write: covered when they call the same function or the wrapper.
                if let Some(p) = plain {
                    let c = body(p);
                    if !c.as_deref().is_some_and(|c| calls_any(p.offset, c, &[target, exf.offset])) {
                        let skip = c.as_deref().and_then(emulated_site).unwrap_or(0);
                        pair(d.plain, p.offset + skip, site(names[d.plain.0], skip));
                    }
                }
                continue;
            }
        }
        for (sym, f) in [(d.plain, plain), (d.ex, ex)] {
            let Some(f) = f else { continue };
            let skip = if emulated { body(f).and_then(|c| emulated_site(&c)).unwrap_or(0) } else { 0 };
            pair(sym, f.offset + skip, site(names[sym.0], skip));
        }
    }
    probes
}

fn site(name: &str, skip: u64) -> String {
    if skip == 0 {
        name.to_string()
    } else {
        format!("{name}+{skip}")
    }
}

/// `endbr64`: changes no register, not the stack.
fn is_endbr64(c: &[u8]) -> bool {
    c.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa])
}

/// The length of a push of a general register (`push %rbx`, `push %r13`)
/// at the start of `c`: what the kernel emulates in a function's prologue.
fn push_len(c: &[u8]) -> Option<usize> {
    match c {
        [0x50..=0x57, ..] => Some(1),
        [0x41, 0x50..=0x57, ..] => Some(2),
        _ => None,
    }
}

/// Where in a function starting with `c` a probe is emulated and still sees
/// the arguments and the return address as at its first byte: 0, 4 (after
/// `endbr64`), or None.
fn emulated_site(c: &[u8]) -> Option<u64> {
    let skip = if is_endbr64(c) { 4 } else { 0 };
    push_len(c.get(skip..)?).map(|_| skip as u64)
}

/// The function (file offset) that a wrapper at `off`, starting with `c`,
/// calls or jumps to with its own arguments: its code up to there is
/// `[endbr64] [sub $imm8,%rsp | push %reg] call|jmp rel32`.
fn wrapper_target(off: u64, c: &[u8]) -> Option<u64> {
    let mut i = if is_endbr64(c) { 4 } else { 0 };
    match c.get(i..)? {
        [0x48, 0x83, 0xec, _, ..] => i += 4,
        rest => i += push_len(rest).unwrap_or(0),
    }
    if !matches!(c.get(i)?, 0xe8 | 0xe9) {
        return None;
    }
    rel_target(off + i as u64, c.get(i + 1..i + 5)?)
}

/// The target of a 5-byte relative call or jump at `insn` (file offsets:
/// the caller and the callee are in the same section).
fn rel_target(insn: u64, rel: &[u8]) -> Option<u64> {
    let rel = i32::from_le_bytes(rel.try_into().ok()?);
    (insn + 5).checked_add_signed(rel as i64)
}

/// Whether function code `c` at `off` has a relative call or jump to one of
/// `targets`. The bytes are not decoded: a 0xe8 inside another instruction
/// would have to be followed by exactly a target's displacement.
fn calls_any(off: u64, c: &[u8], targets: &[u64]) -> bool {
    c.windows(5).enumerate().any(|(i, w)| {
        matches!(w[0], 0xe8 | 0xe9) && rel_target(off + i as u64, &w[1..]).is_some_and(|t| targets.contains(&t))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's libssl.so.3 (OpenSSL 3.0.19), as objdump shows it.
    const SSL_WRITE: (u64, &[u8]) = (
        0x35980,
        &[
            0x48, 0x83, 0xec, 0x18, // sub $0x18,%rsp
            0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, // mov %fs:0x28,%rax
            0x48, 0x89, 0x44, 0x24, 0x08, // mov %rax,0x8(%rsp)
            0x31, 0xc0, // xor %eax,%eax
            0x85, 0xd2, // test %edx,%edx
            0x78, 0x2f, // js
            0x48, 0x89, 0xe1, // mov %rsp,%rcx
            0x48, 0x63, 0xd2, // movslq %edx,%rdx
            0xe8, 0xfd, 0xfb, 0xff, 0xff, // call 355a0
            0x85, 0xc0, 0xc3,
        ],
    );
    const SSL_WRITE_EX: (u64, &[u8]) = (
        0x35a10,
        &[
            0x48, 0x83, 0xec, 0x08, // sub $0x8,%rsp
            0xe8, 0x87, 0xfb, 0xff, 0xff, // call 355a0
            0x31, 0xd2, 0xc3,
        ],
    );
    /// ssl_write_internal: push %r14; push %r13.
    const INTERNAL: (u64, &[u8]) = (0x355a0, &[0x41, 0x56, 0x41, 0x55, 0x41, 0x54, 0x55, 0x53]);

    fn reader(parts: &'static [(u64, &'static [u8])]) -> impl Fn(u64, usize) -> Option<Vec<u8>> {
        move |off, len| {
            let (start, bytes) = parts.iter().find(|(s, b)| (*s..*s + b.len() as u64).contains(&off))?;
            let from = (off - start) as usize;
            Some(bytes[from..(from + len).min(bytes.len())].to_vec())
        }
    }

    fn func((offset, bytes): (u64, &[u8])) -> Option<Func> {
        Some(Func { offset, size: bytes.len() as u64 })
    }

    fn sites(p: &[Probe]) -> Vec<(&'static str, u64)> {
        p.iter().map(|p| (p.program, p.offset)).collect()
    }

    #[test]
    fn debian_openssl_writes_are_probed_on_the_internal_function() {
        const PARTS: &[(u64, &[u8])] = &[SSL_WRITE, SSL_WRITE_EX, INTERNAL];
        let funcs = [func(SSL_WRITE), func(SSL_WRITE_EX), None, None, None];
        let p = plan(&funcs, Placement::Emulated, reader(PARTS));
        // SSL_write calls it too: one pair, with the _ex programs.
        assert_eq!(sites(&p), [("cnflow_ssl_write_ex", 0x355a0), ("cnflow_ssl_write_ex_ret", 0x355a0)]);
        assert_eq!(p[0].site, "SSL_write_ex→0x355a0");
        // CNFLOW_TLS_PROBE_PLACEMENT=entry: every symbol's first byte.
        let p = plan(&funcs, Placement::Entry, reader(PARTS));
        assert_eq!(
            sites(&p),
            [
                ("cnflow_ssl_write", 0x35980),
                ("cnflow_ssl_write_ret", 0x35980),
                ("cnflow_ssl_write_ex", 0x35a10),
                ("cnflow_ssl_write_ex_ret", 0x35a10)
            ]
        );
    }

    #[test]
    fn a_plain_function_that_does_not_call_the_internal_one_keeps_its_probe() {
        // SSL_write's call displaced by one byte: it calls something else.
        const OTHER: (u64, &[u8]) =
            (0x35980, &[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0xe8, 0xfe, 0xfb, 0xff, 0xff, 0xc3]);
        const PARTS: &[(u64, &[u8])] = &[OTHER, SSL_WRITE_EX, INTERNAL];
        let funcs = [func(OTHER), func(SSL_WRITE_EX), None, None, None];
        let p = plan(&funcs, Placement::Emulated, reader(PARTS));
        assert_eq!(
            sites(&p),
            [
                ("cnflow_ssl_write_ex", 0x355a0),
                ("cnflow_ssl_write_ex_ret", 0x355a0),
                // After its endbr64, on the push.
                ("cnflow_ssl_write", 0x35984),
                ("cnflow_ssl_write_ret", 0x35984)
            ]
        );
        assert_eq!(p[2].site, "SSL_write+4");
    }

    #[test]
    fn wrappers_that_touch_argument_registers_or_callees_without_a_push_stay_on_the_symbol() {
        // SSL_write_ex that sets rcx before its call (OpenSSL 3.2's flags argument).
        const EX2: (u64, &[u8]) = (0x35a10, &[0x48, 0x83, 0xec, 0x08, 0x31, 0xc9, 0xe8, 0x85, 0xfb, 0xff, 0xff, 0xc3]);
        const PARTS: &[(u64, &[u8])] = &[SSL_WRITE, EX2, INTERNAL];
        let p = plan(&[func(SSL_WRITE), func(EX2), None, None, None], Placement::Emulated, reader(PARTS));
        assert_eq!(sites(&p).iter().map(|s| s.1).collect::<Vec<_>>(), [0x35980, 0x35980, 0x35a10, 0x35a10]);
        // A callee that starts with `sub`: no gain there, the symbols keep theirs.
        const SUB: (u64, &[u8]) = (0x355a0, &[0x48, 0x83, 0xec, 0x18, 0xc3]);
        const PARTS2: &[(u64, &[u8])] = &[SSL_WRITE, SSL_WRITE_EX, SUB];
        let p = plan(&[func(SSL_WRITE), func(SSL_WRITE_EX), None, None, None], Placement::Emulated, reader(PARTS2));
        assert_eq!(sites(&p).iter().map(|s| s.1).collect::<Vec<_>>(), [0x35980, 0x35980, 0x35a10, 0x35a10]);
    }

    #[test]
    fn sites_never_panic_on_short_or_odd_code() {
        for c in [&[][..], &[0xf3], &[0xf3, 0x0f, 0x1e, 0xfa], &[0x41], &[0xe8, 1, 2], &[0x48, 0x83, 0xec]] {
            assert_eq!(emulated_site(c), None);
            assert_eq!(wrapper_target(10, c), None);
            assert!(!calls_any(0, c, &[0]));
        }
        // A call backwards past offset 0.
        assert_eq!(wrapper_target(0, &[0xe8, 0x00, 0x00, 0x00, 0x80]), None);
        assert_eq!(emulated_site(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x57]), Some(4));
        assert_eq!(emulated_site(&[0x53]), Some(0));
    }
}
