//! Feeding the address spaces: every process's executable mappings over
//! time, from the kernel's mapping, fork, exec and exit records (and from
//! /proc for the processes alive at start), so that a failure is
//! attributed through the mappings of its moment, after its process is
//! gone. A libc seen for the first time gives the offset at which the
//! kernel is to read each new thread's start routine.
use std::{
    collections::{HashMap, HashSet},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, MutexGuard},
};

use crate::{
    attribution::{self, address_spaces::AddressSpaces, files, threads, Shared},
    clock::{self, Clock},
    diagnosis::remedy,
    kernel::{decode::Raw, mappings},
    proctable::{self, ProcTable},
};

/// Entries kept at most in each per-process table here.
const KEPT: usize = 4096;

pub struct SpaceFeeder {
    /// Address spaces and the files behind them, shared with attribution.
    shared: Shared,
    /// libc files whose start_routine offset the kernel already reads.
    libcs_seen: HashSet<(u64, u64)>,
    /// Root directories of other mount namespaces and chroots, held open
    /// while a process of theirs is tracked (their files are found by path
    /// after the process exits).
    roots: HashMap<(u64, PathBuf), Arc<OwnedFd>>,
    own_mount_ns: Option<u64>,
    /// Whether a process maps a pool library, per version of its mappings.
    pool_mappers: HashMap<u32, ((u64, usize), bool)>,
}

impl SpaceFeeder {
    pub fn new(shared: Shared) -> Self {
        SpaceFeeder {
            shared,
            libcs_seen: HashSet::new(),
            roots: HashMap::new(),
            own_mount_ns: files::mount_ns(std::process::id()),
            pool_mappers: HashMap::new(),
        }
    }

    pub fn spaces(&self) -> MutexGuard<'_, AddressSpaces> {
        self.shared.spaces.lock().expect("not poisoned")
    }

    /// What a kernel record changes in the address spaces, before the
    /// record is enriched: a failure is attributed through the mappings of
    /// its moment, which the ring buffer delivered before it. Returns a
    /// start_routine offset for the kernel to read at, from a libc seen
    /// for the first time.
    pub fn on_raw(&mut self, raw: &Raw, clock: &Clock) -> Option<u32> {
        match raw {
            Raw::Mapping(e) => return self.apply(mappings::from_event(e), clock),
            Raw::ProcessFork(e) => {
                self.spaces()
                    .fork(e.header.tgid, e.payload.child_pid, e.header.ktime_ns);
            }
            Raw::ProcessExec(e) => {
                let (pid, time) = (e.header.tgid, e.header.ktime_ns);
                let learned = self.apply(mappings::SpaceChange::Exec { pid, time }, clock);
                let root = self.root_of(pid);
                self.spaces().set_root(pid, time, root);
                return learned;
            }
            Raw::ProcessExit(e) => self.spaces().exit(e.header.tgid, e.header.ktime_ns),
            _ => {}
        }
        None
    }

    /// Applies a mapping or an exec to the address spaces; a libc mapped
    /// for the first time gives its start_routine offset.
    fn apply(&mut self, r: mappings::SpaceChange, clock: &Clock) -> Option<u32> {
        self.spaces().apply(&r);
        let mappings::SpaceChange::Mmap {
            pid,
            time,
            start,
            dev,
            ino,
            path,
            ..
        } = &r
        else {
            return None;
        };
        if !threads::is_glibc(path) || self.libcs_seen.contains(&(*dev, *ino)) {
            return None;
        }
        self.learn_libc(*pid, *time, *start, (*dev, *ino), clock)
    }

    /// A libc's start_routine offset (glibc publishes it), once per file.
    fn learn_libc(
        &mut self,
        pid: u32,
        at: u64,
        addr: u64,
        id: (u64, u64),
        clock: &Clock,
    ) -> Option<u32> {
        if self.libcs_seen.contains(&id) {
            return None;
        }
        // Not seen until read: another process's mapping of the same libc
        // may be readable where this one's was not (mapped before a change
        // of the file's metadata, or the process gone).
        let module = self.shared.module_at(pid, at, addr, clock)?;
        self.libcs_seen.insert(id);
        module.info.thread_db.pthread_start_routine
    }

    /// The root directory `pid` sees, held open, when it is not ours.
    fn root_of(&mut self, pid: u32) -> Option<Arc<OwnedFd>> {
        let ns = files::mount_ns(pid)?;
        let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
        if Some(ns) == self.own_mount_ns && root == Path::new("/") {
            return None;
        }
        if let Some(fd) = self.roots.get(&(ns, root.clone())) {
            return Some(fd.clone());
        }
        let fd = Arc::new(files::open_root(pid).ok()?);
        if self.roots.len() >= KEPT {
            self.roots.retain(|_, fd| Arc::strong_count(fd) > 1);
        }
        self.roots.insert((ns, root), fd.clone());
        Some(fd)
    }

    /// Every process alive now, with its executable mappings: their
    /// failures are attributed even if they exit right after. Returns the
    /// start_routine offsets of the libcs they map.
    pub fn seed(&mut self, procs: &ProcTable, clock: &Clock) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let now = clock::monotonic_ns();
        let alive: Vec<(u32, Option<u64>)> = procs
            .alive_procs()
            .map(|p| (p.pid, p.start_ticks))
            .collect();
        let mut libcs = Vec::new();
        for (pid, start_ticks) in alive {
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
                .ok()
                .map(|m| (m.dev(), m.ino()));
            // The mappings are at least as old as the process (files changed
            // since are not the ones mapped).
            let since = start_ticks.map_or(now, |t| proctable::ticks_to_ns(t).min(now));
            let root = self.root_of(pid);
            for l in attribution::address_spaces::parse_maps(&maps) {
                if l.exec && threads::is_glibc(l.path) {
                    libcs.push((pid, l.start, (l.dev, l.ino)));
                }
            }
            self.spaces().seed(pid, &maps, since, exe, root);
        }
        libcs
            .into_iter()
            .filter_map(|(pid, start, id)| self.learn_libc(pid, now, start, id, clock))
            .collect()
    }

    /// Whether the process maps a library that runs a thread pool
    /// (libgomp, OpenBLAS, MKL, ...), per version of its mappings.
    pub fn maps_a_pool_library(&mut self, pid: u32) -> bool {
        let Some(key) = self.spaces().key(pid) else {
            return false;
        };
        if let Some(&(k, yes)) = self.pool_mappers.get(&pid) {
            if k == key {
                return yes;
            }
        }
        let Some(snap) = self.spaces().snapshot(pid, u64::MAX) else {
            return false;
        };
        let yes = snap.mappings.iter().any(|m| {
            remedy::pool_variable(&attribution::classify::library(&m.file.path, false)).is_some()
        });
        if self.pool_mappers.len() >= KEPT {
            self.pool_mappers.clear();
        }
        self.pool_mappers.insert(pid, (snap.key, yes));
        yes
    }

    /// Once a second: forgets the address spaces of processes that are
    /// gone (checking /proc too when `check_alive`, for exits the ring
    /// buffer lost), later while the output stage is `behind`.
    pub fn prune(&mut self, check_alive: bool, behind: bool) {
        self.spaces().prune(
            |pid| !check_alive || Path::new(&format!("/proc/{pid}")).exists(),
            behind,
        );
        self.roots.retain(|_, fd| Arc::strong_count(fd) > 1);
    }
}
