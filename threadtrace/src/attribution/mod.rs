//! Who wanted the thread: the library and function behind each failed
//! task creation, from the user stack the kernel copied at the failure.
//!
//! The process has often exited by the time its failure is looked at (it
//! died of that failure), so nothing here reads the process itself unless
//! it happens to be alive: addresses are turned into (file, offset) through
//! the address-space history the kernel's own records keep
//! (`address_spaces`), files are opened safely and read with bounded reads
//! (`files`, `elf`, `modules`), the stack is unwound with .eh_frame
//! (`unwind`), and the first frame past pthread_create (or past the libc
//! that forked) names the library (`classify`).
pub mod address_spaces;
pub mod classify;
pub mod elf;
pub mod files;
pub mod modules;
pub mod runtimes;
pub mod threads;
pub mod unwind;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use threadtrace_common::{Api, StackCopy};

use crate::{
    clock::Clock,
    model::{Frame, Location, ThreadCreateFailed},
};
use address_spaces::{AddressSpaces, MappedFile, Mapping, Snapshot};
use elf::ElfInfo;
use modules::{Modules, Resolution};
use unwind::{lookup_address, StackSnapshot, StackUnwinder};

/// What the kernel captured, carried from decoding to attribution.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// When it happened (CLOCK_MONOTONIC ns): the mappings of that moment.
    pub ktime: u64,
    /// Frame-pointer walk.
    pub ips: Vec<u64>,
    /// Registers and stack bytes, for .eh_frame unwinding.
    pub snapshot: StackSnapshot,
    /// glibc's pthread_create: the new thread's `struct pthread`, and the
    /// words read at each known start_routine offset: (offset, value).
    pub pd: u64,
    pub start_routine: Vec<(u32, u64)>,
    /// A libc thread's clone(2): the word atop the child's stack and the
    /// word it points to (musl: its start arguments, start_routine first).
    pub child_arg: [u64; 2],
}

impl Captured {
    /// Puts back the return addresses other tools' uretprobes replaced
    /// with their trampoline: (stack slot, original), from the kernel.
    pub fn restore_returns(&mut self, pending: &[[u64; 2]]) {
        let s = &mut self.snapshot;
        for &[slot, orig] in pending {
            let Some(off) = slot.checked_sub(s.sp) else {
                continue;
            };
            if let Some(b) = s.bytes.get_mut(off as usize..off as usize + 8) {
                b.copy_from_slice(&orig.to_le_bytes());
            }
        }
    }
}

impl Captured {
    pub fn new(ktime: u64, ips: Vec<u64>, c: &StackCopy) -> Self {
        let len = (c.len as usize).min(c.bytes.len());
        Captured {
            ktime,
            ips,
            snapshot: StackSnapshot {
                ip: c.ip,
                sp: c.sp,
                bp: c.bp,
                bytes: c.bytes[..len].to_vec(),
            },
            pd: 0,
            start_routine: Vec::new(),
            child_arg: [0, 0],
        }
    }
}

/// Deepest stack reported.
const MAX_FRAMES: usize = 48;

/// What attribution concluded about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attributed {
    /// A task-creation failure, attributed or not.
    Creation,
    /// A failed mmap/mprotect outside pthread_create: not ours to report.
    NotCreation,
}

/// State shared by the collector (which feeds it and asks who holds the
/// threads) and the output stage (which attributes).
#[derive(Clone, Default)]
pub struct Shared {
    pub spaces: Arc<Mutex<AddressSpaces>>,
    pub modules: Arc<Mutex<Modules>>,
}

impl Shared {
    /// The file behind a mapping, read (or why not).
    pub fn module(&self, pid: u32, m: &Mapping, snap: &Snapshot, clock: &Clock) -> Resolution {
        let others = || {
            self.spaces
                .lock()
                .expect("not poisoned")
                .live_users(m.file.dev, m.file.ino, 4)
        };
        self.modules.lock().expect("not poisoned").resolve(
            pid,
            m,
            snap.root.as_deref(),
            clock,
            others,
        )
    }
}

impl Shared {
    /// The file mapped at `addr` in `pid` at kernel time `at`, read.
    pub fn module_at(
        &self,
        pid: u32,
        at: u64,
        addr: u64,
        clock: &Clock,
    ) -> Option<Arc<modules::Module>> {
        let snap = self
            .spaces
            .lock()
            .expect("not poisoned")
            .snapshot(pid, at)?;
        let (m, _) = snap.locate(addr)?;
        match self.module(pid, m, &snap, clock) {
            Resolution::Found(f) => Some(f),
            Resolution::Missing(_) => None,
        }
    }
}

/// A live process's /proc maps, its executable's (device, inode), and
/// when it started, if it started before `at` (a later one reuses the
/// pid of the process that failed).
fn live_maps(pid: u32, at: u64) -> Option<LiveMaps> {
    use std::os::unix::fs::MetadataExt;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, start_ticks) = crate::proctable::parse_stat(&stat)?;
    let since = crate::proctable::ticks_to_ns(start_ticks);
    if since > at {
        return None;
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Some(LiveMaps { maps, exe, since })
}

/// What /proc says of a live process, for `space_of`.
struct LiveMaps {
    maps: String,
    /// (device, inode) of its executable.
    exe: Option<(u64, u64)>,
    /// Kernel time it started.
    since: u64,
}

fn is_pthread_create(symbol: &str) -> bool {
    symbol.starts_with("pthread_create") || symbol.starts_with("__pthread_create")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct Attributor {
    shared: Shared,
    clock: Clock,
    unwinder: StackUnwinder,
    /// Whether a (file, offset) call site of mmap/mprotect is inside
    /// pthread_create: decided from detailed failures, asked by the exact
    /// counters.
    sites: HashMap<(Arc<MappedFile>, u64), bool>,
    /// The same, per (pid, return address) as the kernel counts them,
    /// decided when a failure there was attributed: its process may be
    /// gone, its mappings forgotten, by the time the counts are read.
    pid_sites: HashMap<(u32, u64), bool>,
    /// Failures unwound with .eh_frame / from the frame-pointer walk only.
    pub unwound: u64,
    pub fp_only: u64,
    /// Time spent attributing, and in the slowest single event.
    pub busy: Duration,
    pub slowest: Duration,
    pub events: u64,
}

/// Sites remembered at most.
const SITES_KEPT: usize = 65_536;

impl Attributor {
    pub fn new(shared: Shared, clock: Clock) -> Self {
        Attributor {
            shared,
            clock,
            unwinder: StackUnwinder::default(),
            sites: HashMap::new(),
            pid_sites: HashMap::new(),
            unwound: 0,
            fp_only: 0,
            busy: Duration::ZERO,
            slowest: Duration::ZERO,
            events: 0,
        }
    }

    /// Exec maps the program's first code segment where the kernel sees
    /// it; a program with several (Node's binary has three, its text past
    /// a small first one) has the others at the same load bias, added
    /// from its program headers where nothing else is mapped.
    fn complete_program(&self, pid: u32, snap: &mut Snapshot) {
        let Some(exe) = snap.exe.clone() else { return };
        let Some(first) = snap.mappings.iter().find(|m| m.file == exe).cloned() else {
            return;
        };
        let Ok(module) = self.info(pid, &first, snap) else {
            return;
        };
        let info = &module.info;
        if info.segments.iter().filter(|s| s.exec).count() < 2 {
            return;
        }
        // The mapping exec made starts where a segment does (Node also
        // copies part of its text elsewhere, onto huge pages).
        let at_segment = |m: &&Mapping| {
            m.file == exe
                && info
                    .segments
                    .iter()
                    .any(|s| s.exec && s.offset & !0xfff == m.pgoff)
        };
        let Some(m) = snap.mappings.iter().find(at_segment).cloned() else {
            return;
        };
        let Some(bias) = unwind::load_bias(&m, info) else {
            return;
        };
        const PAGE: u64 = 4096;
        for seg in info.segments.iter().filter(|s| s.exec) {
            let start = bias.wrapping_add(seg.vaddr) & !(PAGE - 1);
            let end = bias
                .wrapping_add(seg.vaddr)
                .saturating_add(seg.filesz)
                .saturating_add(PAGE - 1)
                & !(PAGE - 1);
            if start >= end || snap.locate(start).is_some() {
                continue;
            }
            snap.mappings.push(Mapping {
                start,
                end,
                pgoff: seg.offset & !(PAGE - 1),
                file: m.file.clone(),
                since: m.since,
            });
        }
    }

    /// The process's executable, read.
    fn exe_info(&self, pid: u32, snap: &Snapshot) -> Option<Arc<modules::Module>> {
        let exe = snap.exe.as_ref()?;
        let m = snap.mappings.iter().find(|m| m.file == *exe)?;
        self.info(pid, m, snap).ok()
    }

    fn info(
        &self,
        pid: u32,
        m: &Mapping,
        snap: &Snapshot,
    ) -> Result<Arc<modules::Module>, Arc<str>> {
        match self.shared.module(pid, m, snap, &self.clock) {
            Resolution::Found(f) => Ok(f),
            Resolution::Missing(why) => Err(why),
        }
    }

    /// Fills `library`, `module`, `symbol`, `stack`, `caller` and
    /// `start_routine`; for an mmap/mprotect failure, says whether it came
    /// from pthread_create at all.
    pub fn attribute(&mut self, ev: &mut ThreadCreateFailed, captured: &Captured) -> Attributed {
        let t0 = Instant::now();
        let v = self.attribute_inner(ev, captured);
        let spent = t0.elapsed();
        self.events += 1;
        self.busy += spent;
        self.slowest = self.slowest.max(spent);
        v
    }

    /// The process's mappings at `at`. When its start was not seen (its
    /// fork record lost in a storm): its own from /proc, if it still
    /// lives and is the process that failed; else its parent's, which a
    /// forked child shares until it runs another program.
    fn space_of(&self, ev: &ThreadCreateFailed, at: u64) -> Option<Snapshot> {
        let pid = ev.task.pid;
        let mut spaces = self.shared.spaces.lock().expect("not poisoned");
        if let Some(snap) = spaces.snapshot(pid, at) {
            return Some(snap);
        }
        if let Some(LiveMaps { maps, exe, since }) = live_maps(pid, at) {
            spaces.seed(pid, &maps, since, exe, None);
            if let Some(snap) = spaces.snapshot(pid, at) {
                return Some(snap);
            }
        }
        let parent = spaces.snapshot(ev.ppid?, at)?;
        let same_program = match (&parent.exe, ev.exe.as_deref()) {
            (Some(p), Some(exe)) => *p.path == *exe,
            _ => false,
        };
        same_program.then_some(parent)
    }

    fn attribute_inner(&mut self, ev: &mut ThreadCreateFailed, c: &Captured) -> Attributed {
        let pid = ev.task.pid;
        let stack_setup = ev
            .syscall
            .as_deref()
            .is_some_and(|s| s == Api::Mmap.name() || s == Api::Mprotect.name());
        let Some(snap) = self.space_of(ev, c.ktime) else {
            ev.attribution_gap = Some(
                "the code that asked is not known: no mapping of this process is known (it \
                 was neither seen starting nor found in /proc, and its parent's mappings are \
                 not its program's)"
                    .into(),
            );
            ev.stack = c
                .ips
                .iter()
                .map(|&addr| Frame {
                    addr,
                    ..Default::default()
                })
                .collect();
            return if stack_setup {
                Attributed::NotCreation
            } else {
                Attributed::Creation
            };
        };
        let mut snap = snap;
        self.complete_program(pid, &mut snap);
        let mut missing: Vec<(u64, Arc<str>)> = Vec::new();
        let frames = self.frames(pid, &snap, c, &mut missing);
        let first_pthread = frames
            .iter()
            .position(|f| f.symbol.as_deref().is_some_and(is_pthread_create));
        if stack_setup {
            let site = c
                .snapshot
                .bytes
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
            let inside = first_pthread.is_some_and(|p| p <= 2);
            if let Some(s) = site {
                if self.pid_sites.len() >= SITES_KEPT {
                    self.pid_sites.clear();
                }
                self.pid_sites.insert((pid, s), inside);
            }
            if let Some((m, off)) = site.and_then(|s| snap.locate(s.saturating_sub(1))) {
                if self.sites.len() >= SITES_KEPT {
                    self.sites.clear();
                }
                self.sites.insert((m.file.clone(), off), inside);
            }
            if !inside {
                return Attributed::NotCreation;
            }
            ev.api = Api::PthreadCreate.name().into();
        }
        let is_exe = |f: &Frame| {
            snap.exe
                .as_ref()
                .zip(f.module.as_deref())
                .is_some_and(|(e, m)| *e.path == *m)
        };
        let libraries: Vec<Option<String>> = frames
            .iter()
            .map(|f| f.module.as_deref().map(|m| classify::library(m, is_exe(f))))
            .collect();
        let seen: Vec<runtimes::Seen<'_>> = frames
            .iter()
            .zip(&libraries)
            .map(|(f, l)| runtimes::Seen {
                symbol: f.symbol.as_deref(),
                library: l.as_deref(),
            })
            .collect();
        let exe = self.exe_info(pid, &snap);
        let go_program = exe.as_ref().is_some_and(|e| e.info.go);
        let runtime = runtimes::runtime(&seen, go_program);
        ev.runtime = runtime.map(String::from);
        ev.libc = libc_of(&snap, exe.as_deref()).map(String::from);
        if runtime == Some(runtimes::GO) {
            ev.reason = runtimes::go_reason(&seen).map(String::from);
        }
        let spawning = |i: usize| seen[i].symbol.is_some_and(runtimes::spawns);
        let asker = match first_pthread {
            // pthread_create's caller, even when that caller is libc
            // itself, past a runtime's wrappers (std::thread, libuv).
            Some(p) => (p + 1..frames.len())
                .find(|&i| !spawning(i))
                .filter(|&i| frames[i].module.is_some()),
            None => (0..frames.len()).find(|&i| {
                !spawning(i)
                    && libraries[i]
                        .as_deref()
                        .is_some_and(|l| !classify::is_runtime(l))
            }),
        };
        if let Some(i) = asker {
            let f = &frames[i];
            ev.module = f.module.clone();
            ev.caller = Some(f.addr);
            // Stripped libraries name only their exported functions: the
            // asker's own may be unnamed (libgomp's gomp_team_start), then
            // the nearest named function of the same module stands for it.
            ev.symbol = frames[i..]
                .iter()
                .take_while(|g| g.module == f.module)
                .find_map(|g| g.symbol.clone());
            ev.library = libraries[i].clone();
            // Node's executable holds libuv: its thread pool is libuv's.
            if runtime == Some(runtimes::NODE) {
                if let Some(l) = ev.symbol.as_deref().and_then(runtimes::library_in_node) {
                    ev.library = Some(l.into());
                }
            }
            // Named by its path, its file unreadable: the function is not
            // known, and the event says why rather than guess.
            if ev.symbol.is_none() {
                if let Some((_, why)) = missing.iter().find(|(a, _)| *a == f.addr) {
                    ev.attribution_gap =
                        Some(format!("the function that asked is not known: {why}"));
                }
            }
        } else {
            ev.attribution_gap = Some(format!(
                "the code that asked is not known: {}",
                unattributed_reason(&frames, &missing)
            ));
        }
        drop(seen);
        if c.pd != 0 {
            let musl = ev.libc.as_deref() == Some(MUSL);
            ev.start_routine = self.start_routine(pid, &snap, c, musl).map(|(addr, loc)| {
                ev.start_routine_addr = Some(addr);
                loc
            });
        }
        ev.stack = frames;
        Attributed::Creation
    }

    /// The stack, unwound with .eh_frame through the mappings of the
    /// moment; the frame-pointer walk when that gives nothing better.
    fn frames(
        &mut self,
        pid: u32,
        snap: &Snapshot,
        c: &Captured,
        missing: &mut Vec<(u64, Arc<str>)>,
    ) -> Vec<Frame> {
        let shared = self.shared.clone();
        let clock = self.clock;
        let mut load = |m: &Mapping| -> Option<Arc<ElfInfo>> {
            match shared.module(pid, m, snap, &clock) {
                Resolution::Found(f) => Some(f.info.clone()),
                Resolution::Missing(_) => None,
            }
        };
        let unwound = self
            .unwinder
            .unwind(snap, &c.snapshot, MAX_FRAMES, &mut load)
            .filter(|a| a.len() > 1 || c.ips.len() <= 1);
        let addrs = match unwound {
            Some(a) => {
                self.unwound += 1;
                a
            }
            None => {
                self.fp_only += 1;
                c.ips.clone()
            }
        };
        let mut frames: Vec<Frame> = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| self.describe(pid, snap, i, addr, missing))
            .collect();
        if let Some(end) = frames.iter().position(|f| f.module.is_none()) {
            frames.truncate(end.max(1));
        }
        // A libc without unwind tables or frame pointers (musl's) ends the
        // walk inside pthread_create: the caller's return address is then
        // found on the stack.
        if stops_in_libc(&frames, |f| self.is_libc_frame(snap, f)) {
            if let Some(rest) = self.scan_for_caller(pid, snap, c, &mut load) {
                let n = frames.len();
                frames.extend(
                    rest.iter()
                        .enumerate()
                        .map(|(i, &addr)| self.describe(pid, snap, n + i, addr, missing)),
                );
            }
        }
        // Past code without unwind info a walk ends in garbage: cut the
        // stack at the first frame in no mapping.
        if let Some(end) = frames.iter().position(|f| f.module.is_none()) {
            frames.truncate(end.max(1));
        }
        frames
    }

    /// One frame: its file, function and how the file was known.
    fn describe(
        &self,
        pid: u32,
        snap: &Snapshot,
        i: usize,
        addr: u64,
        missing: &mut Vec<(u64, Arc<str>)>,
    ) -> Frame {
        let mut f = Frame {
            addr,
            ..Default::default()
        };
        let at = lookup_address(i, addr);
        let Some((m, off)) = snap.locate(at) else {
            return f;
        };
        f.module = Some(m.file.path.to_string());
        f.file_offset = Some(off + (addr - at));
        match self.info(pid, m, snap) {
            Ok(module) => {
                if let Some((sym, o)) = module.info.symbol_at(off) {
                    f.symbol = Some(sym);
                    f.offset = Some(o + (addr - at));
                }
                f.build_id = module.info.build_id.as_deref().map(hex);
                let by = if f.build_id.is_some() {
                    "build_id"
                } else {
                    "inode"
                };
                f.identified_by = Some(by.into());
            }
            Err(why) => missing.push((addr, why)),
        }
        f
    }

    /// Whether a frame is the C library's own code (its file, or, in a
    /// static program, its pthread_create and internal `__` functions).
    fn is_libc_frame(&self, snap: &Snapshot, f: &Frame) -> bool {
        let Some(m) = f.module.as_deref() else {
            return false;
        };
        let is_exe = snap.exe.as_ref().is_some_and(|e| *e.path == *m);
        classify::is_runtime(&classify::library(m, is_exe))
            || f.symbol
                .as_deref()
                .is_some_and(|s| is_pthread_create(s) || s.starts_with("__"))
    }

    /// The caller of a libc frame without unwind tables: the first word
    /// above the stack pointer that returns into code outside the C
    /// library (inside a named function, past its start: a function
    /// pointer is not a return address) and from which the walk goes on to
    /// where the thread began (`main`, `_start`, a thread's start). Stale
    /// return addresses left in the frame by earlier calls fail the last
    /// test; when none passes, nothing is guessed.
    fn scan_for_caller(
        &mut self,
        pid: u32,
        snap: &Snapshot,
        c: &Captured,
        load: &mut impl FnMut(&Mapping) -> Option<Arc<ElfInfo>>,
    ) -> Option<Vec<u64>> {
        const SCANNED: usize = 4096;
        const TRIED: usize = 16;
        let s = &c.snapshot;
        let words = s
            .bytes
            .chunks_exact(8)
            .take(SCANNED / 8)
            .enumerate()
            .skip(1);
        let mut tried = 0;
        for (i, w) in words {
            let ret = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            let Some(symbol) = self.symbol_of(pid, snap, ret.wrapping_sub(1)) else {
                continue;
            };
            // A call returns inside its caller: a word that is a function's
            // first byte is a pointer to it, not a return address.
            let starts_function = self.symbol_at(pid, snap, ret).is_some_and(|(_, o)| o == 0);
            let (m, _) = snap.locate(ret - 1)?;
            let frame = Frame {
                addr: ret,
                module: Some(m.file.path.to_string()),
                symbol: Some(symbol),
                ..Default::default()
            };
            if starts_function || self.is_libc_frame(snap, &frame) || ret == c.child_arg[1] {
                continue;
            }
            tried += 1;
            if tried > TRIED {
                return None;
            }
            let at = (i + 1) * 8;
            let rest = StackSnapshot {
                ip: ret,
                sp: s.sp + at as u64,
                bp: s.bp,
                bytes: s.bytes[at..].to_vec(),
            };
            let Some(walked) = self
                .unwinder
                .unwind(snap, &rest, MAX_FRAMES / 2, &mut *load)
            else {
                continue;
            };
            let rooted = walked.iter().skip(1).any(|&a| {
                self.symbol_of(pid, snap, a.wrapping_sub(1))
                    .is_some_and(|s| is_root(&s))
            });
            if rooted {
                return Some(walked);
            }
        }
        None
    }

    /// The function at `addr` and the offset into it.
    fn symbol_at(&self, pid: u32, snap: &Snapshot, addr: u64) -> Option<(String, u64)> {
        let (m, off) = snap.locate(addr)?;
        self.info(pid, m, snap).ok()?.info.symbol_at(off)
    }

    fn symbol_of(&self, pid: u32, snap: &Snapshot, addr: u64) -> Option<String> {
        self.symbol_at(pid, snap, addr).map(|(s, _)| s)
    }

    /// start_routine of the thread that could not be created: for glibc,
    /// the word at its libc's offset in the new thread's `struct pthread`;
    /// for musl, the first of the start arguments its pthread_create left
    /// atop the child's stack.
    fn start_routine(
        &mut self,
        pid: u32,
        snap: &Snapshot,
        c: &Captured,
        musl: bool,
    ) -> Option<(u64, Location)> {
        let addr = if musl {
            c.child_arg[1]
        } else {
            let (libc, _) = threads::glibc_mappings(snap);
            let info = self.info(pid, libc?, snap).ok()?;
            let off = info.info.thread_db.pthread_start_routine?;
            c.start_routine
                .iter()
                .find(|(o, _)| *o == off)
                .map_or(0, |&(_, v)| v)
        };
        let addr = Some(addr).filter(|&v| v != 0)?;
        let (m, file_off) = snap.locate(addr)?;
        let symbol = self
            .info(pid, m, snap)
            .ok()
            .and_then(|f| f.info.symbol_at(file_off))
            .map(|s| s.0);
        Some((
            addr,
            Location {
                module: Some(m.file.path.to_string()),
                symbol,
            },
        ))
    }

    /// Whether the failures counted at an mmap/mprotect call site of
    /// process `pid` are pthread_create's: decided by the site's function.
    pub fn site_in_pthread_create(&mut self, pid: u32, site: u64) -> bool {
        if let Some(&inside) = self.pid_sites.get(&(pid, site)) {
            return inside;
        }
        let snap = self
            .shared
            .spaces
            .lock()
            .expect("not poisoned")
            .snapshot(pid, u64::MAX);
        let Some(snap) = snap else { return false };
        let Some((m, off)) = snap.locate(site.saturating_sub(1)) else {
            return false;
        };
        if let Some(&v) = self.sites.get(&(m.file.clone(), off)) {
            return v;
        }
        let inside = self
            .info(pid, m, &snap)
            .ok()
            .and_then(|f| f.info.symbol_at(off))
            .is_some_and(|(s, _)| is_pthread_create(&s));
        if self.sites.len() >= SITES_KEPT {
            self.sites.clear();
        }
        self.sites.insert((m.file.clone(), off), inside);
        inside
    }
}

const GLIBC: &str = "glibc";
const MUSL: &str = "musl";

/// The C library a process runs on: glibc's libc mapped, musl's (its
/// file's path names it: `ld-musl-*`, `libc.musl-*`, Debian's
/// `x86_64-linux-musl/libc.so`), or musl linked into a static executable.
fn libc_of(snap: &Snapshot, exe: Option<&modules::Module>) -> Option<&'static str> {
    if threads::glibc_mappings(snap).0.is_some() {
        return Some(GLIBC);
    }
    let musl_file = snap.mappings.iter().any(|m| {
        let p = m
            .file
            .path
            .rsplit('/')
            .take(2)
            .collect::<Vec<_>>()
            .join("/");
        p.contains("musl")
    });
    let musl_static = exe.is_some_and(|e| e.info.musl);
    (musl_file || musl_static).then_some(MUSL)
}

/// Where a thread's stack begins: the program's entry, main, a libc's
/// thread start.
fn is_root(symbol: &str) -> bool {
    matches!(
        symbol,
        "main"
            | "_start"
            | "_start_c"
            | "__libc_start_main"
            | "__libc_start_call_main"
            | "libc_start_main_stage2"
            | "start"
            | "start_c11"
            | "start_thread"
    )
}

/// Whether a walk ended in the C library: every frame is its code, or
/// the last one is pthread_create.
fn stops_in_libc(frames: &[Frame], is_libc: impl Fn(&Frame) -> bool) -> bool {
    let last_is_pthread = frames
        .last()
        .and_then(|f| f.symbol.as_deref())
        .is_some_and(is_pthread_create);
    !frames.is_empty() && (last_is_pthread || frames.iter().all(is_libc))
}

/// Why no frame named a library: the frames whose files could not be read.
fn unattributed_reason(frames: &[Frame], missing: &[(u64, Arc<str>)]) -> String {
    if let Some((addr, why)) = missing.first() {
        return format!("the code at {addr:#x} could not be read: {why}");
    }
    match frames.first() {
        Some(f) if f.module.is_none() => format!(
            "{:#x} lies in no file this process had mapped (anonymous or JIT code)",
            f.addr
        ),
        _ => "every frame is in libc or the dynamic loader".into(),
    }
}
