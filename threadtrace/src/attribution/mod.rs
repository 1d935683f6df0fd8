//! Who wanted the thread: the library and function behind each failed
//! thread creation, by symbolizing the stack the kernel captured.
//!
//! Frames arrive normalized to (build id, file offset) by the kernel, so a
//! process that has already exited is still attributed. They are resolved
//! to files through `modules`, symbolized with blazesym (cached; this type
//! lives on one thread: blazesym's Symbolizer is not Sync), and the first
//! frame outside libc names the library (`classify`).
pub mod classify;
pub mod elf;
pub mod live_threads;
pub mod modules;
pub mod unwind;

use std::collections::{HashMap, HashSet};

use blazesym::{
    normalize::{Normalizer, UserMeta},
    symbolize::{source::Elf, source::Source, Input, Symbolized, Symbolizer},
    Pid,
};
use serde::{Deserialize, Serialize};
use threadtrace_common::{BuildIdStack, StackCopy, BUILD_ID_VALID};

use crate::events::ThreadCreateFailed;
use modules::{hex, ModuleIndex};
use unwind::{StackSnapshot, StackUnwinder};

/// One stack frame, innermost first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Frame {
    /// The address in the process.
    pub addr: u64,
    /// The file, as the process sees it.
    pub module: Option<String>,
    pub symbol: Option<String>,
    /// Offset of `addr` from the start of `symbol`.
    pub offset: Option<u64>,
    /// Offset in `module`'s file: with `build_id`, enough to symbolize again
    /// offline.
    pub file_offset: Option<u64>,
    pub build_id: Option<String>,
}

/// A function in a module (pthread_create's start_routine).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Location {
    pub module: Option<String>,
    pub symbol: Option<String>,
}

/// What the kernel captured, carried from decoding to attribution.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// Frame-pointer walk.
    pub ips: Vec<u64>,
    /// The same frames as (status, build id, file offset).
    pub resolved: Vec<(i32, [u8; 20], u64)>,
    /// Registers and stack bytes, for .eh_frame unwinding.
    pub snapshot: StackSnapshot,
    /// /proc/PID/maps as read when the event arrived: the process may be
    /// gone by the time it is attributed.
    pub maps: Option<std::sync::Arc<str>>,
    /// The process's root directory as the tracer sees it, when not "/"
    /// (a container, a chroot): module paths are shown inside it.
    pub root: Option<std::sync::Arc<str>>,
}

impl Captured {
    pub fn new(ips: Vec<u64>, r: &BuildIdStack, c: &StackCopy) -> Self {
        let n = (r.len as usize).min(r.frames.len());
        let len = (c.len as usize).min(c.bytes.len());
        Captured {
            ips,
            resolved: r.frames[..n]
                .iter()
                .map(|f| (f.status, f.build_id, f.offset_or_ip))
                .collect(),
            snapshot: StackSnapshot {
                ip: c.ip,
                sp: c.sp,
                bp: c.bp,
                bytes: c.bytes[..len].to_vec(),
            },
            maps: None,
            root: None,
        }
    }
}

/// `path` as a process whose root is `root` sees it.
pub fn inside_root(path: &str, root: Option<&str>) -> String {
    match root.and_then(|r| path.strip_prefix(r)) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// A function name and the offset into it.
type SymbolAt = (String, u64);

/// Deepest stack reported.
const MAX_FRAMES: usize = 48;

/// Symbols are looked up once per (build id, file offset); the cache is
/// dropped whole when it grows past this, to keep memory bounded.
const CACHE_MAX: usize = 65536;

pub struct Attributor {
    symbolizer: Symbolizer,
    normalizer: Normalizer,
    pub modules: ModuleIndex,
    cache: HashMap<(Vec<u8>, u64), Option<SymbolAt>>,
    indexed_pids: HashSet<u32>,
    unwinder: StackUnwinder,
    /// Failures unwound with .eh_frame / from the frame-pointer walk only.
    pub unwound: u64,
    pub fp_only: u64,
    /// Time spent attributing, and in the slowest single event.
    pub busy: std::time::Duration,
    pub slowest: std::time::Duration,
    pub events: u64,
    pub lookups: u64,
    pub cache_hits: u64,
}

impl Default for Attributor {
    fn default() -> Self {
        Self::new()
    }
}

impl Attributor {
    pub fn new() -> Self {
        Attributor {
            symbolizer: Symbolizer::new(),
            normalizer: Normalizer::new(),
            modules: ModuleIndex::default(),
            cache: HashMap::new(),
            indexed_pids: HashSet::new(),
            unwinder: StackUnwinder::default(),
            unwound: 0,
            fp_only: 0,
            busy: std::time::Duration::ZERO,
            slowest: std::time::Duration::ZERO,
            events: 0,
            lookups: 0,
            cache_hits: 0,
        }
    }

    /// (symbol, offset into it) at a file offset of a module.
    fn symbol(
        &mut self,
        build_id: &[u8],
        open_path: &std::path::Path,
        file_offset: u64,
    ) -> Option<(String, u64)> {
        self.lookups += 1;
        let key = (build_id.to_vec(), file_offset);
        if let Some(hit) = self.cache.get(&key) {
            self.cache_hits += 1;
            return hit.clone();
        }
        let src = Source::Elf(Elf::new(open_path));
        let found = match self
            .symbolizer
            .symbolize_single(&src, Input::FileOffset(file_offset))
        {
            Ok(Symbolized::Sym(s)) => Some((s.name.into_owned(), s.offset as u64)),
            _ => None,
        };
        if self.cache.len() >= CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, found.clone());
        found
    }

    /// The stack: unwound with .eh_frame while the process runs (deeper and
    /// right through code without frame pointers), else the kernel's
    /// frame-pointer walk, already normalized to build ids.
    fn frames(&mut self, pid: u32, c: &Captured) -> Vec<Frame> {
        let maps = c.maps.as_deref().unwrap_or("");
        if let Some(addrs) = self.unwinder.unwind(pid, &c.snapshot, maps, MAX_FRAMES) {
            let kernel_depth = c.ips.len();
            if addrs.len() > 1 || kernel_depth <= 1 {
                let frames = self.frames_in(pid, maps, &addrs);
                if frames.first().is_some_and(|f| f.module.is_some()) {
                    self.unwound += 1;
                    return frames;
                }
            }
        }
        self.fp_only += 1;
        self.kernel_frames(pid, c)
    }

    /// Frames for addresses, through a maps snapshot of the process.
    fn frames_in(&mut self, pid: u32, maps: &str, addrs: &[u64]) -> Vec<Frame> {
        let located = self.unwinder.locate_all(pid, maps, addrs);
        let mut frames: Vec<Frame> = Vec::with_capacity(addrs.len());
        for (&addr, at) in addrs.iter().zip(located) {
            let mut f = Frame {
                addr,
                ..Default::default()
            };
            if let Some((path, offset)) = at {
                if let Some(id) = self.modules.id_of_path(&path) {
                    f.build_id = Some(hex(&id));
                    f.file_offset = Some(offset);
                    f.module = Some(path);
                    self.fill(&mut f, &id, offset);
                }
            }
            frames.push(f);
        }
        if let Some(end) = frames.iter().position(|f| f.module.is_none()) {
            frames.truncate(end.max(1));
        }
        frames
    }

    fn kernel_frames(&mut self, pid: u32, c: &Captured) -> Vec<Frame> {
        let mut frames: Vec<Frame> = Vec::with_capacity(c.ips.len().max(c.resolved.len()));
        let n = c.ips.len().max(c.resolved.len());
        let mut unresolved = Vec::new();
        for i in 0..n {
            let addr = c
                .ips
                .get(i)
                .copied()
                .or_else(|| c.resolved.get(i).map(|r| r.2))
                .unwrap_or(0);
            let mut f = Frame {
                addr,
                ..Default::default()
            };
            match c.resolved.get(i) {
                Some(&(status, id, offset)) if status == BUILD_ID_VALID => {
                    f.build_id = Some(hex(&id));
                    f.file_offset = Some(offset);
                    self.fill(&mut f, &id, offset);
                }
                _ => unresolved.push(i),
            }
            frames.push(f);
        }
        if !unresolved.is_empty() {
            let addrs: Vec<u64> = unresolved.iter().map(|&i| frames[i].addr).collect();
            for (i, norm) in unresolved.iter().zip(self.normalize(pid, &addrs)) {
                if let Some((id, path, offset)) = norm {
                    frames[*i].build_id = Some(hex(&id));
                    frames[*i].file_offset = Some(offset);
                    frames[*i].module = Some(path);
                    let mut f = frames[*i].clone();
                    self.fill(&mut f, &id, offset);
                    frames[*i] = f;
                }
            }
        }
        // A frame-pointer walk through code built without frame pointers
        // ends in garbage: cut the stack at the first frame in no module.
        if let Some(end) = frames.iter().position(|f| f.module.is_none()) {
            frames.truncate(end.max(1));
        }
        frames
    }

    fn fill(&mut self, f: &mut Frame, build_id: &[u8], offset: u64) {
        let Some(m) = self.modules.find(build_id).cloned() else {
            return;
        };
        // A frame whose mapping named its file keeps that name: another file
        // with the same build id (a container's copy) only lends symbols.
        if f.module.is_none() {
            f.module = Some(m.path.clone());
        }
        if let Some((sym, off)) = self.symbol(build_id, &m.open_path, offset) {
            f.symbol = Some(sym);
            f.offset = Some(off);
        }
    }

    /// (build id, path, file offset) per address from the live process's
    /// maps; None for each when it has exited.
    fn normalize(&mut self, pid: u32, addrs: &[u64]) -> Vec<Option<(Vec<u8>, String, u64)>> {
        let Ok(out) = self.normalizer.normalize_user_addrs(Pid::from(pid), addrs) else {
            return vec![None; addrs.len()];
        };
        let mut to_index = Vec::new();
        let result = out
            .outputs
            .iter()
            .map(|&(offset, meta_idx)| match out.meta.get(meta_idx) {
                Some(UserMeta::Elf(e)) => {
                    let path = e.path.display().to_string();
                    let id = e.build_id.as_ref().map(|b| b.to_vec())?;
                    to_index.push((e.path.clone(), path.clone()));
                    Some((id, path, offset))
                }
                _ => None,
            })
            .collect();
        for (open, path) in to_index {
            self.modules.add(open, path);
        }
        result
    }

    /// Fills `library`, `module`, `symbol`, `stack` and `start_routine`.
    pub fn attribute(&mut self, ev: &mut ThreadCreateFailed, captured: &Captured) {
        let t0 = std::time::Instant::now();
        self.attribute_inner(ev, captured);
        let spent = t0.elapsed();
        self.events += 1;
        self.busy += spent;
        self.slowest = self.slowest.max(spent);
    }

    fn attribute_inner(&mut self, ev: &mut ThreadCreateFailed, captured: &Captured) {
        let pid = ev.task.pid;
        // Index the process while it may still be alive: its libraries are
        // then known for its next failure, even after it exits.
        if self.indexed_pids.len() >= CACHE_MAX {
            self.indexed_pids.clear();
        }
        if self.indexed_pids.insert(pid) {
            self.modules.add_process(pid);
            // The executable outlives the process: code in it is found even
            // when the process is gone.
            if let Some(exe) = &ev.exe {
                self.modules.add(exe.into(), exe.clone());
            }
        }
        let frames = self.frames(pid, captured);
        let exe = ev.exe.clone();
        let asker = frames.iter().find(|f| {
            f.module
                .as_deref()
                .is_some_and(|m| !classify::is_runtime(&classify::library(m, exe.as_deref())))
        });
        // pthread_create's frame 0 is its caller, even when that caller is
        // libc itself; a clone is looked past libc's wrappers.
        let asker = if ev.api == "pthread_create" {
            frames.first().filter(|f| f.module.is_some())
        } else {
            asker
        };
        if let Some(f) = asker {
            ev.module = f.module.clone();
            // Stripped libraries name only their exported functions: the
            // asker's own may be unnamed (libgomp's gomp_team_start), then
            // the nearest named function of the same module stands for it.
            ev.symbol = frames
                .iter()
                .skip_while(|g| !std::ptr::eq(*g, f))
                .take_while(|g| g.module == f.module)
                .find_map(|g| g.symbol.clone());
            ev.library = f
                .module
                .as_deref()
                .map(|m| classify::library(m, exe.as_deref()));
        }
        if let Some(start) = ev.start_routine_addr {
            ev.start_routine = Some(self.locate(pid, start, frames.first()));
        }
        ev.stack = frames;
        if let Some(root) = captured.root.as_deref() {
            let show = |p: &mut Option<String>| {
                if let Some(path) = p {
                    *path = inside_root(path, Some(root));
                }
            };
            show(&mut ev.module);
            if let Some(s) = ev.start_routine.as_mut() {
                show(&mut s.module);
            }
            for f in &mut ev.stack {
                show(&mut f.module);
            }
        }
    }

    /// Where a code address is: through the live process's maps, else, when
    /// it lies in the same executable segment as a resolved frame, through
    /// that frame's file.
    fn locate(&mut self, pid: u32, addr: u64, near: Option<&Frame>) -> Location {
        if let Some(Some((id, path, offset))) = self.normalize(pid, &[addr]).into_iter().next() {
            let mut f = Frame {
                module: Some(path.clone()),
                ..Default::default()
            };
            self.fill(&mut f, &id, offset);
            return Location {
                module: Some(path),
                symbol: f.symbol,
            };
        }
        let Some(near) = near else {
            return Location::default();
        };
        let (Some(id_hex), Some(near_off)) = (&near.build_id, near.file_offset) else {
            return Location::default();
        };
        let Some(id) = unhex(id_hex) else {
            return Location::default();
        };
        let Some(m) = self.modules.find(&id).cloned() else {
            return Location::default();
        };
        let Some(offset) =
            elf::same_segment_offset(&m.open_path, near_off, addr.wrapping_sub(near.addr) as i64)
        else {
            return Location::default();
        };
        let symbol = self.symbol(&id, &m.open_path, offset).map(|s| s.0);
        Location {
            module: Some(m.path),
            symbol,
        }
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure of a process that no longer exists, whose frames the
    /// kernel normalized: attributed through the build id alone.
    #[test]
    fn attributes_a_process_that_has_exited() {
        let libc = modules::host_libc();
        let id = blazesym::helper::read_elf_build_id(&libc)
            .unwrap()
            .unwrap()
            .to_vec();
        let mut build_id = [0u8; 20];
        build_id[..id.len()].copy_from_slice(&id);
        // The file offset of an exported libc function, as the kernel would
        // report a return address into it.
        let sym = blazesym::inspect::source::Elf::new(libc);
        let inspector = blazesym::inspect::Inspector::new();
        let found = inspector
            .lookup(&blazesym::inspect::source::Source::Elf(sym), &["qsort"])
            .unwrap();
        let offset = found[0][0].file_offset.unwrap() + 4;
        let mut ev = match crate::events::enrich(
            crate::events::decode::Raw::PthreadCreateFailed(
                crate::events::decode::tests::pthread_failed(4_190_000, 4_190_000, 11, 11),
            ),
            &mut crate::events::Context::new(crate::proctable::ProcTable::default()),
        ) {
            crate::events::Record::ThreadCreateFailed(e) => e,
            _ => unreachable!(),
        };
        let captured = Captured {
            ips: vec![0x7f00_0000_1234],
            resolved: vec![(BUILD_ID_VALID, build_id, offset)],
            ..Default::default()
        };
        let mut a = Attributor::new();
        a.attribute(&mut ev, &captured);
        assert_eq!(ev.library.as_deref(), Some("libc"));
        assert_eq!(ev.symbol.as_deref(), Some("qsort"));
        assert!(ev.module.unwrap().ends_with("libc.so.6"));
        assert_eq!(ev.stack[0].file_offset, Some(offset));
        assert_eq!(ev.stack[0].build_id.as_deref(), Some(hex(&id).as_str()));
    }

    #[test]
    fn paths_are_shown_inside_the_process_root() {
        assert_eq!(
            inside_root(
                "/srv/c1/rootfs/usr/lib/libgomp.so.1",
                Some("/srv/c1/rootfs")
            ),
            "/usr/lib/libgomp.so.1"
        );
        assert_eq!(
            inside_root("/usr/lib/libgomp.so.1", Some("/srv/c1/rootfs")),
            "/usr/lib/libgomp.so.1"
        );
        assert_eq!(
            inside_root("/srv/c1/rootfsX/lib", Some("/srv/c1/rootfs")),
            "/srv/c1/rootfsX/lib"
        );
        assert_eq!(inside_root("/lib/x", None), "/lib/x");
    }

    #[test]
    fn symbolizes_a_live_address_of_this_process() {
        let mut a = Attributor::new();
        let addr = symbolizes_a_live_address_of_this_process as fn() as usize as u64;
        let loc = a.locate(std::process::id(), addr, None);
        let exe = std::fs::read_link("/proc/self/exe")
            .unwrap()
            .display()
            .to_string();
        assert_eq!(loc.module.as_deref(), Some(exe.as_str()));
        assert!(loc
            .symbol
            .unwrap()
            .contains("symbolizes_a_live_address_of_this_process"));
        assert_eq!(unhex("0aff"), Some(vec![0x0a, 0xff]));
    }
}
