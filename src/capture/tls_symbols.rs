//! Finding OpenSSL's (or BoringSSL's) `SSL_read` / `SSL_write` and their
//! `_ex` variants in an ELF file's symbol tables, for files that are not a
//! `libssl.so*`: executables (and other libraries) that link the TLS library
//! statically, where the symbols are still present in `.dynsym` (exported)
//! or `.symtab` (not stripped).
//!
//! Only what the lookup needs is read from the file (ELF header, section
//! headers, the symbol tables and their string tables, each bounded by
//! [`MAX_TABLE_BYTES`]), through `pread`s rather than a mapping: a file
//! truncated while it is read gives an error, not a SIGBUS. The walk over the
//! symbols compares names only for defined functions starting with `SSL_`.
use object::elf::{FileHeader64, Sym64, SHN_LORESERVE, SHN_UNDEF, SHT_DYNSYM, SHT_NOBITS, SHT_SYMTAB, STT_FUNC};
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::read::{ReadCache, ReadCacheOps, SectionIndex};
use object::Endianness;
use std::path::Path;

/// The functions the TLS uprobes attach to, in [`Lookup::Found`]'s order
/// (`SSL_new` only until the socket tracepoints are attached; optional).
pub const SYMBOLS: [&str; 5] = ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex", "SSL_new"];

/// Files larger than this are not looked at (counted): no real executable
/// is, and the size is cheap to know before anything is read.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// A symbol or string table larger than this is not read (counted): it bounds
/// the memory and time one lookup takes (a large Go or Rust binary with
/// symbols has a few MiB).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;

/// A function's code in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func {
    /// File offset of its first byte (what a uprobe's offset is).
    pub offset: u64,
    /// Its size from the symbol table (0 when the table does not say).
    pub size: u64,
}

/// What a file's symbol tables say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Where [`SYMBOLS`] are (None: not defined in this file); at least one
    /// read and one write function is present.
    Found([Option<Func>; 5]),
    /// An ELF file without a defined read/write pair (most files; a file
    /// that only imports `SSL_write` from a libssl is one of them).
    NoSymbols,
    /// Not a 64-bit ELF file, or a malformed one.
    NotElf,
    /// Larger than [`MAX_FILE_BYTES`], or a table larger than [`MAX_TABLE_BYTES`].
    TooLarge,
    /// Cannot be opened or read (gone, permissions).
    Unreadable,
}

impl Lookup {
    /// The `result` label of `cnflow.tls.symbol_lookups`.
    pub fn label(&self) -> &'static str {
        match self {
            Lookup::Found(_) => "found",
            Lookup::NoSymbols => "no_symbols",
            Lookup::NotElf => "not_elf",
            Lookup::TooLarge => "too_large",
            Lookup::Unreadable => "unreadable",
        }
    }
}

/// Looks up [`SYMBOLS`] in the file at `path`.
pub fn lookup_file(path: &Path) -> Lookup {
    let Ok(f) = std::fs::File::open(path) else { return Lookup::Unreadable };
    let Ok(meta) = f.metadata() else { return Lookup::Unreadable };
    if !meta.is_file() {
        return Lookup::NotElf;
    }
    if meta.len() > MAX_FILE_BYTES {
        return Lookup::TooLarge;
    }
    lookup(f)
}

/// Looks up [`SYMBOLS`] in an ELF image read through `r`.
pub fn lookup<R: ReadCacheOps>(r: R) -> Lookup {
    let cache = ReadCache::new(r);
    let data = &cache;
    let Ok(header) = FileHeader64::<Endianness>::parse(data) else { return Lookup::NotElf };
    let Ok(endian) = header.endian() else { return Lookup::NotElf };
    let Ok(sections) = header.sections(endian, data) else { return Lookup::NotElf };
    let mut found: [Option<Func>; 5] = [None; 5];
    let mut too_large = false;
    // Exported symbols first: they are what the linker keeps for others to call.
    for table_type in [SHT_DYNSYM, SHT_SYMTAB] {
        for table in sections.iter().filter(|s| s.sh_type(endian) == table_type) {
            let Ok(strsec) = sections.section(SectionIndex(table.sh_link(endian) as usize)) else { continue };
            if table.sh_size(endian) > MAX_TABLE_BYTES || strsec.sh_size(endian) > MAX_TABLE_BYTES {
                too_large = true;
                continue;
            }
            let Ok(strings) = strsec.data(endian, data) else { continue };
            let Ok(syms) = table.data_as_array::<Sym64<Endianness>, _>(endian, data) else { continue };
            for sym in syms {
                let shndx = sym.st_shndx(endian);
                // Imported (undefined) or absolute symbols have no code here.
                if shndx == SHN_UNDEF || shndx >= SHN_LORESERVE || sym.st_type() != STT_FUNC {
                    continue;
                }
                let Some(i) = symbol_at(strings, sym.st_name(endian)) else { continue };
                if found[i].is_some() {
                    continue;
                }
                found[i] = file_offset(&sections, endian, shndx, sym.st_value(endian))
                    .map(|offset| Func { offset, size: sym.st_size(endian) });
            }
        }
    }
    let write = found[0].is_some() || found[1].is_some();
    let read = found[2].is_some() || found[3].is_some();
    match (read && write, too_large) {
        (true, _) => Lookup::Found(found),
        (false, true) => Lookup::TooLarge,
        (false, false) => Lookup::NoSymbols,
    }
}

/// Where the code at virtual address `value` of section `shndx` is in the
/// file (what a uprobe's offset is): the same translation aya does for a
/// symbol it resolves by name.
fn file_offset<'data, R: object::ReadRef<'data>>(
    sections: &object::read::elf::SectionTable<'data, FileHeader64<Endianness>, R>,
    endian: Endianness,
    shndx: u16,
    value: u64,
) -> Option<u64> {
    let sec = sections.section(SectionIndex(shndx as usize)).ok()?;
    if sec.sh_type(endian) == SHT_NOBITS {
        return None;
    }
    let (addr, off, size) = (sec.sh_addr(endian), sec.sh_offset(endian), sec.sh_size(endian));
    let rel = value.checked_sub(addr)?;
    (rel < size).then(|| off.checked_add(rel)).flatten()
}

/// Which of [`SYMBOLS`] the NUL-terminated name at `offset` of a string
/// table is (a few byte compares per symbol: tables have 10^5 entries).
fn symbol_at(strings: &[u8], offset: u32) -> Option<usize> {
    let rest = strings.get(offset as usize..)?;
    if !rest.starts_with(b"SSL_") {
        return None;
    }
    SYMBOLS.iter().position(|n| rest.starts_with(n.as_bytes()) && rest.get(n.len()) == Some(&0))
}

#[cfg(test)]
/// A 64-bit ELF object with functions `defined` (16 bytes of code each,
/// in this order) and `imported` as undefined symbols.
pub(crate) fn elf_with(defined: &[&str], imported: &[&str]) -> Vec<u8> {
    use object::write::{Object, StandardSection, Symbol, SymbolFlags, SymbolKind, SymbolScope, SymbolSection};
    let mut obj = Object::new(object::BinaryFormat::Elf, object::Architecture::X86_64, object::Endianness::Little);
    let text = obj.section_id(StandardSection::Text);
    // Padding first, so a function's offset is not 0.
    obj.append_section_data(text, &[0x90; 64], 16);
    for name in defined {
        let off = obj.append_section_data(text, &[0xc3; 16], 16);
        obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: off,
            size: 16,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Section(text),
            flags: SymbolFlags::None,
        });
    }
    for name in imported {
        obj.add_symbol(Symbol {
            name: name.as_bytes().to_vec(),
            value: 0,
            size: 0,
            kind: SymbolKind::Text,
            scope: SymbolScope::Dynamic,
            weak: false,
            section: SymbolSection::Undefined,
            flags: SymbolFlags::None,
        });
    }
    obj.write().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn text_offset(bytes: &[u8]) -> u64 {
        use object::{Object as _, ObjectSection as _};
        let f = object::File::parse(bytes).unwrap();
        f.section_by_name(".text").unwrap().file_range().unwrap().0
    }

    #[test]
    fn defined_functions_are_found_at_their_file_offsets() {
        let bytes = elf_with(&["SSL_write", "SSL_read", "MY_SSL_write_ex"], &[]);
        let base = text_offset(&bytes);
        let Lookup::Found(offs) = lookup(Cursor::new(&bytes)) else { panic!("not found") };
        // The code of each function is where the offset points.
        let f = |offset| Some(Func { offset, size: 16 });
        assert_eq!(offs, [f(base + 64), None, f(base + 80), None, None]);
        assert_eq!(bytes[(base + 64) as usize], 0xc3);
    }

    #[test]
    fn only_ex_variants_or_boringssl_subsets_are_enough() {
        // OpenSSL 3 has all four; BoringSSL only SSL_read/SSL_write; a build
        // could keep only the _ex pair.
        let bytes = elf_with(&["SSL_read_ex", "SSL_write_ex"], &[]);
        assert!(matches!(lookup(Cursor::new(&bytes)), Lookup::Found([None, Some(_), None, Some(_), _])));
        // A read without a write is no TLS library we can follow.
        assert_eq!(lookup(Cursor::new(elf_with(&["SSL_read"], &[]))), Lookup::NoSymbols);
        // SSL_new is optional (it only brings the socket tracepoints in sooner) and not enough alone.
        let bytes = elf_with(&["SSL_read", "SSL_write", "SSL_new"], &[]);
        assert!(matches!(lookup(Cursor::new(&bytes)), Lookup::Found([Some(_), None, Some(_), None, Some(_)])));
        assert_eq!(lookup(Cursor::new(elf_with(&["SSL_new"], &[]))), Lookup::NoSymbols);
    }

    #[test]
    fn imported_symbols_are_not_code_of_this_file() {
        // curl, Python's _ssl: SSL_write is undefined here and lives in libssl.
        let bytes = elf_with(&["main"], &["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex"]);
        assert_eq!(lookup(Cursor::new(&bytes)), Lookup::NoSymbols);
    }

    #[test]
    fn garbage_truncated_and_non_elf_input() {
        assert_eq!(lookup(Cursor::new(b"#!/bin/sh\necho hi\n".to_vec())), Lookup::NotElf);
        assert_eq!(lookup(Cursor::new(Vec::new())), Lookup::NotElf);
        let bytes = elf_with(&["SSL_write", "SSL_read"], &[]);
        // Every truncation either still finds them (only the tail lost) or says no.
        for cut in (0..bytes.len()).step_by(7) {
            let r = lookup(Cursor::new(&bytes[..cut]));
            assert!(matches!(r, Lookup::NotElf | Lookup::NoSymbols | Lookup::Found(_)), "{cut}: {r:?}");
        }
        // Flipped bytes anywhere: no panic.
        for i in (0..bytes.len()).step_by(3) {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = lookup(Cursor::new(b));
        }
        assert_eq!(lookup_file(Path::new("/nonexistent/cnflow")), Lookup::Unreadable);
        assert_eq!(lookup_file(Path::new("/")), Lookup::NotElf);
    }

    /// Real files of this machine: this test executable (a large Rust ELF
    /// that does not link OpenSSL) and, when present, the system libssl
    /// (found) and the openssl tool (imports SSL_write: not found).
    #[test]
    fn real_files() {
        let me = std::env::current_exe().unwrap();
        let t = std::time::Instant::now();
        assert_eq!(lookup_file(&me), Lookup::NoSymbols);
        eprintln!("lookup of {} ({} bytes): {:?}", me.display(), me.metadata().unwrap().len(), t.elapsed());
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        if lib.exists() {
            assert!(matches!(lookup_file(lib), Lookup::Found([Some(_), Some(_), Some(_), Some(_), Some(_)])));
        }
        let tool = Path::new("/usr/bin/openssl");
        if tool.exists() {
            assert_eq!(lookup_file(tool), Lookup::NoSymbols);
        }
        // Opt-in: a BoringSSL libssl (no package on Debian 12; e.g. the
        // libssl.so of PyPI's bssl-build 0.0.1) defines SSL_read/SSL_write
        // and no _ex variants.
        if let Some(p) = std::env::var_os("TLS_TEST_BORINGSSL_LIB") {
            assert_eq!(lookup_file(Path::new(&p)).label(), "found");
            assert!(matches!(lookup_file(Path::new(&p)), Lookup::Found([Some(_), None, Some(_), None, _])));
        }
    }
}
