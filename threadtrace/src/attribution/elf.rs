//! What attribution needs from an ELF file, read with bounded `pread`s:
//! headers, the build id, the loadable segments, the unwind sections, the
//! function symbols, and glibc's thread_db descriptors.
//!
//! The files are any user's (a library in a container, a memfd): nothing
//! is mapped (truncating a mapped file would SIGBUS the tracer), no section
//! is read past a size cap, and malformed input is an error, not a panic.
use std::{fs::File, io, ops::Range, os::unix::fs::FileExt, sync::Arc};

use object::{elf, read::ReadCache, Endianness, Object, ObjectSection, ObjectSegment};

/// Largest section read (.eh_frame, a symbol table, its strings). The
/// biggest real libraries (libtorch_cuda) stay well below.
pub const MAX_SECTION: u64 = 64 << 20;
/// Function symbols kept per file, and bytes of their names.
const MAX_SYMBOLS: usize = 1 << 21;
const MAX_NAMES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file: {0}")]
    Parse(#[from] object::Error),
    #[error("not a 64-bit little-endian ELF file")]
    Unsupported,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One PT_LOAD. Its numbers are the file's, any user's: arithmetic on
/// them never trusts them not to overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub filesz: u64,
    pub vaddr: u64,
    pub exec: bool,
}

impl Segment {
    /// Whether the file offset lies in the segment's bytes.
    pub fn holds_offset(&self, off: u64) -> bool {
        off >= self.offset && off - self.offset < self.filesz
    }

    /// Whether the address lies in the segment's file-backed bytes.
    pub fn holds_vaddr(&self, vaddr: u64) -> bool {
        vaddr >= self.vaddr && vaddr - self.vaddr < self.filesz
    }
}

/// A section's address range and bytes.
#[derive(Debug, Clone)]
pub struct Section {
    pub svma: Range<u64>,
    pub data: Arc<[u8]>,
}

/// glibc's own description of its thread structures (the `_thread_db_*`
/// symbols libthread_db reads): offsets that change between builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadDb {
    pub pthread_start_routine: Option<u32>,
    pub pthread_tid: Option<u32>,
    pub pthread_list: Option<u32>,
    pub list_next: Option<u32>,
    pub stack_used: Option<u32>,
    pub stack_user: Option<u32>,
}

/// Function symbols sorted by address: (address, size, offset of the name
/// in `names`), names NUL-terminated.
#[derive(Debug, Default)]
pub struct Symbols {
    entries: Vec<(u64, u64, u32)>,
    names: Vec<u8>,
}

impl Symbols {
    /// The function containing `vaddr`, and the offset into it.
    pub fn lookup(&self, vaddr: u64) -> Option<(String, u64)> {
        let i = self
            .entries
            .partition_point(|e| e.0 <= vaddr)
            .checked_sub(1)?;
        // Several symbols may start at the same address (aliases): any one
        // covering `vaddr` names it.
        self.entries[..=i]
            .iter()
            .rev()
            .take_while(|e| e.0 == self.entries[i].0 || e.0.saturating_add(e.1) > vaddr)
            .find(|e| vaddr < e.0.saturating_add(e.1))
            .map(|e| (demangle(self.name(e.2)), vaddr - e.0))
    }

    /// Where a function is, by name.
    #[cfg(test)]
    pub fn address_of(&self, name: &str) -> Option<(u64, u64)> {
        self.entries
            .iter()
            .find(|e| self.name(e.2) == name.as_bytes())
            .map(|e| (e.0, e.1))
    }

    /// Whether a function of this name is in the table.
    pub fn has(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| self.name(e.2) == name.as_bytes())
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.names.get(off as usize..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn bytes(&self) -> usize {
        self.entries.len() * 24 + self.names.len()
    }
}

/// A symbol name as people read it: Rust and C++ names demangled.
pub fn demangle(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if let Ok(d) = rustc_demangle::try_demangle(&s) {
        return format!("{d:#}");
    }
    if s.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(raw) {
            let opts = cpp_demangle::DemangleOptions::new().no_params();
            if let Ok(d) = sym.demangle(&opts) {
                return d;
            }
        }
    }
    s.into_owned()
}

/// Everything attribution keeps of one file.
#[derive(Debug, Default)]
pub struct ElfInfo {
    pub build_id: Option<Vec<u8>>,
    pub segments: Vec<Segment>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub text: Option<Range<u64>>,
    pub got: Option<Range<u64>>,
    pub symbols: Symbols,
    /// Present in a glibc libc.
    pub thread_db: ThreadDb,
    /// `_rtld_global`'s address, in glibc's dynamic loader.
    pub rtld_global: Option<u64>,
    /// A Go program: its runtime makes the threads (Ms) itself.
    pub go: bool,
    /// musl linked in (a static musl program, or musl's libc itself when
    /// it kept its symbol table): it has musl's start-up `__init_libc`.
    pub musl: bool,
}

impl ElfInfo {
    /// The address a file offset is loaded at (before the load bias).
    pub fn vaddr_of(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.holds_offset(file_offset))
            .map(|s| (file_offset - s.offset).wrapping_add(s.vaddr))
    }

    /// The function at a file offset.
    pub fn symbol_at(&self, file_offset: u64) -> Option<(String, u64)> {
        self.symbols.lookup(self.vaddr_of(file_offset)?)
    }

    /// Memory this keeps, for the cache's byte budget.
    pub fn bytes(&self) -> usize {
        let sec = |s: &Option<Section>| s.as_ref().map_or(0, |s| s.data.len());
        256 + sec(&self.eh_frame) + sec(&self.eh_frame_hdr) + self.symbols.bytes()
    }
}

/// `ReadCache`'s source: positioned reads on a file we opened and checked.
struct Reader<'a> {
    file: &'a File,
    len: u64,
    pos: u64,
}

impl io::Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Reader<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.pos = match pos {
            io::SeekFrom::Start(p) => p,
            io::SeekFrom::End(d) => self.len.saturating_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

/// Reads `len` bytes at `offset`, refusing more than `MAX_SECTION`.
fn read_range(file: &File, file_len: u64, offset: u64, len: u64) -> Option<Vec<u8>> {
    if len > MAX_SECTION || offset.checked_add(len)? > file_len {
        return None;
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

/// Reads what attribution needs of `file` (`len` is its size, from the
/// fstat that checked it).
pub fn read(file: &File, len: u64) -> Result<ElfInfo, ElfError> {
    let cache = ReadCache::new(Reader { file, len, pos: 0 });
    let obj = object::File::parse(&cache)?;
    if !matches!(obj, object::File::Elf64(_)) || obj.endianness() != Endianness::Little {
        return Err(ElfError::Unsupported);
    }
    let mut info = ElfInfo {
        build_id: obj.build_id().ok().flatten().map(<[u8]>::to_vec),
        ..Default::default()
    };
    for seg in obj.segments() {
        let object::SegmentFlags::Elf { p_flags } = seg.flags() else {
            continue;
        };
        let (offset, filesz) = seg.file_range();
        info.segments.push(Segment {
            offset,
            filesz,
            vaddr: seg.address(),
            exec: p_flags & elf::PF_X != 0,
        });
    }
    let section = |name: &str| -> Option<Section> {
        let s = obj.section_by_name(name)?;
        let (offset, size) = s.file_range()?;
        let data = read_range(file, len, offset, size)?;
        Some(Section {
            svma: s.address()..s.address().checked_add(size)?,
            data: data.into(),
        })
    };
    info.eh_frame = section(".eh_frame");
    info.eh_frame_hdr = section(".eh_frame_hdr");
    let range = |name: &str| {
        let s = obj.section_by_name(name)?;
        Some(s.address()..s.address().checked_add(s.size())?)
    };
    info.text = range(".text");
    info.go = [".go.buildinfo", ".gopclntab", ".note.go.buildid"]
        .iter()
        .any(|n| obj.section_by_name(n).is_some());
    info.got = range(".got");
    let mut symbols = Vec::new();
    let mut names = Vec::new();
    let mut dynamic = Vec::new();
    for (table, strings) in [(".symtab", ".strtab"), (".dynsym", ".dynstr")] {
        let (Some(t), Some(s)) = (obj.section_by_name(table), obj.section_by_name(strings)) else {
            continue;
        };
        let (Some((toff, tlen)), Some((soff, slen))) = (t.file_range(), s.file_range()) else {
            continue;
        };
        let (Some(tbytes), Some(sbytes)) = (
            read_range(file, len, toff, tlen),
            read_range(file, len, soff, slen),
        ) else {
            continue;
        };
        collect_symbols(
            &tbytes,
            &sbytes,
            &mut symbols,
            &mut names,
            (table == ".dynsym").then_some(&mut dynamic),
        );
    }
    symbols.sort_unstable_by_key(|e: &(u64, u64, u32)| (e.0, std::cmp::Reverse(e.1)));
    symbols.dedup_by_key(|e| (e.0, e.1));
    info.symbols = Symbols {
        entries: symbols,
        names,
    };
    info.musl = info.symbols.has("__init_libc");
    // glibc's thread_db descriptors: {size in bits, count, offset}.
    let descriptor = |name: &str| -> Option<u32> {
        let &(_, vaddr) = dynamic.iter().find(|(n, _)| n == name)?;
        let seg = info.segments.iter().find(|s| s.holds_vaddr(vaddr))?;
        let bytes = read_range(file, len, (vaddr - seg.vaddr).checked_add(seg.offset)?, 12)?;
        Some(u32::from_le_bytes(bytes[8..12].try_into().ok()?))
    };
    info.thread_db = ThreadDb {
        pthread_start_routine: descriptor("_thread_db_pthread_start_routine"),
        pthread_tid: descriptor("_thread_db_pthread_tid"),
        pthread_list: descriptor("_thread_db_pthread_list"),
        list_next: descriptor("_thread_db_list_t_next"),
        stack_used: descriptor("_thread_db_rtld_global__dl_stack_used"),
        stack_user: descriptor("_thread_db_rtld_global__dl_stack_user"),
    };
    info.rtld_global = dynamic
        .iter()
        .find(|(n, _)| n == "_rtld_global")
        .map(|&(_, v)| v);
    Ok(info)
}

/// Appends the function symbols of one table; `dynamic` also collects the
/// data symbols glibc describes itself with.
fn collect_symbols(
    table: &[u8],
    strings: &[u8],
    out: &mut Vec<(u64, u64, u32)>,
    names: &mut Vec<u8>,
    mut dynamic: Option<&mut Vec<(String, u64)>>,
) {
    let Ok(syms) = object::pod::slice_from_all_bytes::<elf::Sym64<Endianness>>(
        &table[..table.len() - table.len() % std::mem::size_of::<elf::Sym64<Endianness>>()],
    ) else {
        return;
    };
    let e = Endianness::Little;
    for sym in syms {
        let name_at = sym.st_name.get(e) as usize;
        let Some(rest) = strings.get(name_at..) else {
            continue;
        };
        let name = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
        let kind = sym.st_info & 0xf;
        let value = sym.st_value.get(e);
        if name.is_empty() || sym.st_shndx.get(e) == elf::SHN_UNDEF {
            continue;
        }
        if kind == elf::STT_OBJECT {
            if let Some(d) = dynamic.as_deref_mut() {
                if name.starts_with(b"_thread_db_") || name == b"_rtld_global" {
                    d.push((String::from_utf8_lossy(name).into_owned(), value));
                }
            }
            continue;
        }
        if kind != elf::STT_FUNC && kind != elf::STT_GNU_IFUNC {
            continue;
        }
        if out.len() >= MAX_SYMBOLS || names.len() + name.len() + 1 > MAX_NAMES {
            return;
        }
        let off = names.len() as u32;
        names.extend_from_slice(name);
        names.push(0);
        out.push((value, sym.st_size.get(e), off));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc() -> File {
        File::open(crate::attribution::files::tests::host_libc()).unwrap()
    }

    #[test]
    fn reads_glibc_symbols_segments_and_thread_db() {
        let f = libc();
        let len = f.metadata().unwrap().len();
        let info = read(&f, len).unwrap();
        assert!(info.build_id.as_ref().is_some_and(|b| b.len() == 20));
        assert!(info.segments.iter().any(|s| s.exec));
        assert!(info.eh_frame.is_some() && info.eh_frame_hdr.is_some());
        let (addr, size) = info.symbols.address_of("pthread_create").unwrap();
        let (name, off) = info.symbols.lookup(addr + size / 2).unwrap();
        assert_eq!((name.as_str(), off), ("pthread_create", size / 2));
        let db = info.thread_db;
        assert!(db.pthread_start_routine.is_some_and(|o| o > 0), "{db:?}");
        assert!(db.pthread_tid.is_some() && db.stack_used.is_some() && db.list_next.is_some());
    }

    #[test]
    fn the_dynamic_loader_has_rtld_global() {
        let ld = File::open("/lib64/ld-linux-x86-64.so.2").unwrap();
        let info = read(&ld, ld.metadata().unwrap().len()).unwrap();
        assert!(info.rtld_global.is_some());
    }

    #[test]
    fn refuses_what_is_not_elf_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("empty", &b""[..]),
            ("magic", b"\x7fELF"),
            ("short", b"\x7fELF\x02\x01\x01\x00\x00"),
            ("text", b"#!/bin/sh\necho hi\n"),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let f = File::open(&p).unwrap();
            assert!(read(&f, bytes.len() as u64).is_err(), "{name}");
        }
    }

    #[test]
    fn a_header_claiming_huge_sections_reads_nothing_huge() {
        // This binary, with its section header table pointing far past the
        // end: the parse fails or ignores it; it never allocates that much.
        let mut exe = std::fs::read("/proc/self/exe").unwrap();
        exe[0x28..0x30].copy_from_slice(&(u64::MAX - 64).to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad");
        std::fs::write(&p, &exe).unwrap();
        let f = File::open(&p).unwrap();
        let _ = read(&f, exe.len() as u64);
    }

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(demangle(b"blas_thread_init"), "blas_thread_init");
        assert_eq!(
            demangle(b"_ZN3std6thread5spawn17h0123456789abcdefE"),
            "std::thread::spawn"
        );
        assert_eq!(
            demangle(b"_ZN5boost6thread12start_threadEv"),
            "boost::thread::start_thread"
        );
    }
}
