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
        let asker = match first_pthread {
            // pthread_create's caller, even when that caller is libc itself.
            Some(p) => frames[p + 1..].first().filter(|f| f.module.is_some()),
            None => frames.iter().find(|f| {
                f.module
                    .as_deref()
                    .is_some_and(|m| !classify::is_runtime(&classify::library(m, is_exe(f))))
            }),
        };
        if let Some(f) = asker {
            ev.module = f.module.clone();
            ev.caller = Some(f.addr);
            // Stripped libraries name only their exported functions: the
            // asker's own may be unnamed (libgomp's gomp_team_start), then
            // the nearest named function of the same module stands for it.
            ev.symbol = frames
                .iter()
                .skip_while(|g| !std::ptr::eq(*g, f))
                .take_while(|g| g.module == f.module)
                .find_map(|g| g.symbol.clone());
            ev.library = f.module.as_deref().map(|m| classify::library(m, is_exe(f)));
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
        if c.pd != 0 {
            ev.start_routine = self.start_routine(pid, &snap, c).map(|(addr, loc)| {
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
        let mut frames: Vec<Frame> = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let mut f = Frame {
                addr,
                ..Default::default()
            };
            let at = lookup_address(i, addr);
            if let Some((m, off)) = snap.locate(at) {
                f.module = Some(m.file.path.to_string());
                f.file_offset = Some(off + (addr - at));
                match self.info(pid, m, snap) {
                    Ok(module) => {
                        if let Some((sym, o)) = module.info.symbol_at(off) {
                            f.symbol = Some(sym);
                            f.offset = Some(o + (addr - at));
                        }
                        f.build_id = module.info.build_id.as_deref().map(hex);
                        f.identified_by = Some(
                            if f.build_id.is_some() {
                                "build_id"
                            } else {
                                "inode"
                            }
                            .into(),
                        );
                    }
                    Err(why) => missing.push((addr, why)),
                }
            }
            frames.push(f);
        }
        // Past code without unwind info a walk ends in garbage: cut the
        // stack at the first frame in no mapping.
        if let Some(end) = frames.iter().position(|f| f.module.is_none()) {
            frames.truncate(end.max(1));
        }
        frames
    }

    /// start_routine of the thread that could not be created: the word at
    /// its libc's offset in the new thread's `struct pthread`.
    fn start_routine(
        &mut self,
        pid: u32,
        snap: &Snapshot,
        c: &Captured,
    ) -> Option<(u64, Location)> {
        let (libc, _) = threads::glibc_mappings(snap);
        let libc = libc?;
        let info = self.info(pid, libc, snap).ok()?;
        let off = info.info.thread_db.pthread_start_routine?;
        let addr = c
            .start_routine
            .iter()
            .find(|(o, _)| *o == off)
            .map(|&(_, v)| v)
            .filter(|&v| v != 0)?;
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
