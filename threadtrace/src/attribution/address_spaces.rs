//! Which file each code address of each process maps, over time, so that a
//! failure is attributed after its process has exited.
//!
//! Kept from what the kernel reports as it happens: its mapping events
//! (every executable file mapping, dlopen included, with device and
//! inode, from the eBPF `mapping` probe), exec
//! (a new address space) and fork (the child starts with its parent's),
//! plus /proc/PID/maps for the processes that were there before recording.
//! Records from different CPUs and sources arrive in no guaranteed order,
//! so every change is placed by its kernel timestamp: a process's history
//! is a list of generations (one per exec, or per fork before its exec),
//! and a lookup asks for the mappings as they were when the failure
//! happened.
use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::kernel::mappings::SpaceChange;

/// A mapped file, as the kernel identified it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MappedFile {
    pub dev: u64,
    pub ino: u64,
    /// The inode's generation (0: unknown): a file that reuses the inode
    /// number of a deleted one is another file.
    pub generation: u64,
    /// As the process saw it (inside its container), " (deleted)" and all.
    pub path: Arc<str>,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub pgoff: u64,
    pub file: Arc<MappedFile>,
    /// Kernel time (CLOCK_MONOTONIC ns) it was mapped, or the process's
    /// start for mappings found in /proc at start.
    pub since: u64,
}

/// Mappings a generation took over from its parent at fork: the parent's
/// list as of `until`, and what the parent itself had inherited.
#[derive(Debug)]
struct Inherited {
    from: Arc<Vec<Mapping>>,
    until: u64,
    parent: Option<Arc<Inherited>>,
}

#[derive(Debug)]
struct Generation {
    id: u64,
    born: u64,
    mappings: Arc<Vec<Mapping>>,
    inherited: Option<Arc<Inherited>>,
    root: Option<Arc<OwnedFd>>,
    /// The program, for generations not born at an exec (seeded from
    /// /proc, or forked). After an exec it is the first file mapped: the
    /// kernel maps the executable before the dynamic loader.
    exe: Option<Arc<MappedFile>>,
    exec: bool,
    /// When a newer generation or the process's exit ended it: kept a
    /// while after, for failures still being attributed.
    ended: Option<Instant>,
}

/// The executable mappings of a process at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Changes whenever the mappings do: unwinders built for one snapshot
    /// can be reused for the next failure with the same key.
    pub key: (u64, usize),
    /// Innermost generation first, newest mapping first: the first that
    /// covers an address is the one in effect.
    pub mappings: Vec<Mapping>,
    /// The process's root directory when not the tracer's.
    pub root: Option<Arc<OwnedFd>>,
    /// The program's executable file, when known.
    pub exe: Option<Arc<MappedFile>>,
}

impl Snapshot {
    /// The mapping covering `addr`, and the file offset of `addr` in it.
    pub fn locate(&self, addr: u64) -> Option<(&Mapping, u64)> {
        self.mappings
            .iter()
            .find(|m| (m.start..m.end).contains(&addr))
            .map(|m| (m, (addr - m.start).wrapping_add(m.pgoff)))
    }
}

/// Ended generations are kept this long once the output stage has caught
/// up (the collector stops pruning them while it is behind): its queue
/// holds a fraction of a second of failures, and a host that starts a
/// thousand processes a second would otherwise keep tens of thousands of
/// dead address spaces.
const GRACE: Duration = Duration::from_secs(10);
/// Mappings kept in all, about 80 bytes each with their share of files:
/// ~80 MiB at the cap, which 5,000 processes with 50 libraries each do not
/// approach. Past it the oldest ended generations go first, then the
/// mappings of the largest live process (counted in `evicted`).
const MAX_MAPPINGS: usize = 1 << 20;
/// Fork chains deeper than this are flattened.
const MAX_CHAIN: usize = 16;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpaceStats {
    pub processes: usize,
    pub generations: usize,
    pub mappings: usize,
    pub files: usize,
    /// Mappings dropped by the cap while their process was alive.
    pub evicted: u64,
}

#[derive(Default)]
pub struct AddressSpaces {
    pids: HashMap<u32, Vec<Generation>>,
    files: HashMap<(u64, u64, u64, Arc<str>), Arc<MappedFile>>,
    total: usize,
    next_id: u64,
    evicted: u64,
}

impl AddressSpaces {
    fn file(&mut self, dev: u64, ino: u64, generation: u64, path: &str) -> Arc<MappedFile> {
        let path: Arc<str> = Arc::from(path);
        self.files
            .entry((dev, ino, generation, path.clone()))
            .or_insert_with(|| {
                Arc::new(MappedFile {
                    dev,
                    ino,
                    generation,
                    path,
                })
            })
            .clone()
    }

    fn new_generation(&mut self, born: u64) -> Generation {
        self.next_id += 1;
        Generation {
            id: self.next_id,
            born,
            mappings: Arc::new(Vec::new()),
            inherited: None,
            root: None,
            exe: None,
            exec: false,
            ended: None,
        }
    }

    /// The index of `pid`'s generation in effect at `at`.
    fn covering(&self, pid: u32, at: u64) -> Option<usize> {
        let gens = self.pids.get(&pid)?;
        gens.partition_point(|g| g.born <= at).checked_sub(1)
    }

    /// Starts a generation at `born`: the mappings of the one it follows
    /// made at or after `born` belong to it (their records came first).
    fn begin(&mut self, pid: u32, born: u64) -> &mut Generation {
        let g = self.new_generation(born);
        let gens = self.pids.entry(pid).or_default();
        let i = gens.partition_point(|g| g.born <= born);
        if let Some(prev) = i.checked_sub(1).map(|j| &mut gens[j]) {
            if prev.born == born {
                return &mut gens[i - 1];
            }
            let (keep, moved): (Vec<Mapping>, Vec<Mapping>) =
                prev.mappings.iter().cloned().partition(|m| m.since < born);
            prev.mappings = Arc::new(keep);
            prev.ended.get_or_insert_with(Instant::now);
            let mut g = g;
            g.mappings = Arc::new(moved);
            gens.insert(i, g);
        } else {
            gens.insert(i, g);
        }
        if i + 1 < gens.len() {
            gens[i].ended = Some(Instant::now());
        }
        &mut gens[i]
    }

    /// A process found in /proc at start, with its maps and the device
    /// and inode of its executable.
    pub fn seed(
        &mut self,
        pid: u32,
        maps: &str,
        since: u64,
        exe: Option<(u64, u64)>,
        root: Option<Arc<OwnedFd>>,
    ) {
        let parsed: Vec<MapsLine> = parse_maps(maps).filter(|l| l.exec && l.ino != 0).collect();
        let mappings: Vec<Mapping> = parsed
            .iter()
            .map(|l| Mapping {
                start: l.start,
                end: l.end,
                pgoff: l.offset,
                file: self.file(l.dev, l.ino, 0, l.path),
                since,
            })
            .collect();
        self.total += mappings.len();
        let exe = exe.and_then(|(dev, ino)| {
            mappings
                .iter()
                .find(|m| m.file.dev == dev && m.file.ino == ino)
                .map(|m| m.file.clone())
        });
        let g = self.begin(pid, 0);
        // Records that came in while /proc was read are newer: they stay
        // last, where lookups look first.
        Arc::make_mut(&mut g.mappings).splice(0..0, mappings);
        g.root = root;
        if exe.is_some() {
            g.exe = exe;
        }
    }

    /// A record of the kernel's: an executable mapping, or an exec.
    pub fn apply(&mut self, r: &SpaceChange) {
        match r {
            SpaceChange::Mmap {
                pid,
                time,
                start,
                len,
                pgoff,
                dev,
                ino,
                generation,
                path,
            } => self.mmap(
                *pid,
                *time,
                *start,
                *len,
                *pgoff,
                (*dev, *ino, *generation),
                path,
            ),
            SpaceChange::Exec { pid, time } => self.exec(*pid, *time),
        }
    }

    /// An executable mapping of a file.
    #[expect(clippy::too_many_arguments, reason = "one mapping event's fields")]
    fn mmap(
        &mut self,
        pid: u32,
        time: u64,
        start: u64,
        len: u64,
        pgoff: u64,
        (dev, ino, generation): (u64, u64, u64),
        path: &str,
    ) {
        // Anonymous executable memory (JITs) names no file to attribute to.
        // A name the kernel could not take up to the process's root (a
        // mount lazily unmounted, an overlay's layer, too deep) is relative:
        // the file is still found by its device and inode, never by that
        // name.
        if ino == 0 || path.is_empty() {
            return;
        }
        let file = self.file(dev, ino, generation, path);
        let i = match self.covering(pid, time) {
            Some(i) => i,
            None => {
                // Never seen: it began before anything we know of it.
                self.begin(pid, 0);
                0
            }
        };
        let g = &mut self.pids.get_mut(&pid).expect("just found")[i];
        Arc::make_mut(&mut g.mappings).push(Mapping {
            start,
            end: start.saturating_add(len),
            pgoff,
            file,
            since: time,
        });
        self.total += 1;
    }

    /// A new program: perf's COMM record with the exec flag, whose time is
    /// before the new program's first mapping.
    fn exec(&mut self, pid: u32, time: u64) {
        let root = self
            .covering(pid, time)
            .and_then(|i| self.pids[&pid][i].root.clone());
        let g = self.begin(pid, time);
        // exec keeps the root directory (chroot happens before it).
        g.root = root;
        g.exec = true;
    }

    /// A new process: it starts with its parent's mappings as they were.
    pub fn fork(&mut self, parent: u32, child: u32, time: u64) {
        let inherited = self.covering(parent, time).map(|i| {
            let p = &self.pids[&parent][i];
            let mut chain = p.inherited.clone();
            if depth(&chain) >= MAX_CHAIN {
                chain = None;
            }
            (
                Arc::new(Inherited {
                    from: p.mappings.clone(),
                    until: time,
                    parent: chain,
                }),
                p.root.clone(),
                p.exe.clone(),
            )
        });
        let g = self.begin(child, time);
        if let Some((inherited, root, exe)) = inherited {
            g.inherited = Some(inherited);
            g.root = root;
            g.exe = exe;
        }
    }

    /// The root directory a process sees, learned at its exec.
    pub fn set_root(&mut self, pid: u32, at: u64, root: Option<Arc<OwnedFd>>) {
        if let Some(i) = self.covering(pid, at) {
            self.pids.get_mut(&pid).expect("found")[i].root = root;
        }
    }

    pub fn exit(&mut self, pid: u32, time: u64) {
        if let Some(i) = self.covering(pid, time) {
            self.pids.get_mut(&pid).expect("found")[i]
                .ended
                .get_or_insert_with(Instant::now);
        }
    }

    /// The executable mappings of `pid` at kernel time `at`.
    pub fn snapshot(&self, pid: u32, at: u64) -> Option<Snapshot> {
        let g = &self.pids.get(&pid)?[self.covering(pid, at)?];
        let mut mappings: Vec<Mapping> = g
            .mappings
            .iter()
            .rev()
            .filter(|m| m.since <= at)
            .cloned()
            .collect();
        let mut inh = g.inherited.as_deref();
        while let Some(i) = inh {
            mappings.extend(
                i.from
                    .iter()
                    .rev()
                    .filter(|m| m.since <= i.until.min(at))
                    .cloned(),
            );
            inh = i.parent.as_deref();
        }
        Some(Snapshot {
            key: (g.id, g.mappings.len()),
            mappings,
            root: g.root.clone(),
            exe: if g.exec {
                g.mappings
                    .iter()
                    .min_by_key(|m| m.since)
                    .map(|m| m.file.clone())
            } else {
                g.exe.clone()
            },
        })
    }

    /// The key a snapshot of `pid` now would have: it changes whenever its
    /// mappings do.
    pub fn key(&self, pid: u32) -> Option<(u64, usize)> {
        let g = self.pids.get(&pid)?.last()?;
        Some((g.id, g.mappings.len()))
    }

    /// Processes whose current generation maps this file now: another way
    /// in through /proc/PID/map_files once the failing process is gone.
    pub fn live_users(&self, dev: u64, ino: u64, limit: usize) -> Vec<(u32, u64, u64)> {
        let mut out = Vec::new();
        for (&pid, gens) in &self.pids {
            let Some(g) = gens.last().filter(|g| g.ended.is_none()) else {
                continue;
            };
            if let Some(m) = g
                .mappings
                .iter()
                .find(|m| m.file.dev == dev && m.file.ino == ino)
            {
                out.push((pid, m.start, m.end));
                if out.len() >= limit {
                    break;
                }
            }
        }
        out
    }

    /// Forgets generations ended more than GRACE ago (unless `behind`: the
    /// output stage may still attribute their failures), ends those of
    /// processes that no longer exist (their exit record may have been
    /// lost), and enforces the cap.
    pub fn prune(&mut self, alive: impl Fn(u32) -> bool, behind: bool) {
        let now = Instant::now();
        for (&pid, gens) in self.pids.iter_mut() {
            if let Some(last) = gens.last_mut() {
                if last.ended.is_none() && !alive(pid) {
                    last.ended = Some(now);
                }
            }
        }
        let mut dropped = 0;
        self.pids.retain(|_, gens| {
            gens.retain(|g| {
                let old = !behind && g.ended.is_some_and(|e| now.duration_since(e) > GRACE);
                if old {
                    dropped += g.mappings.len();
                }
                !old
            });
            !gens.is_empty()
        });
        self.total -= dropped.min(self.total);
        while self.total > MAX_MAPPINGS {
            if !self.evict_one() {
                break;
            }
        }
        self.files.retain(|_, f| Arc::strong_count(f) > 1);
    }

    /// Drops the oldest ended generation, else the mappings of the live
    /// generation that has the most.
    fn evict_one(&mut self) -> bool {
        let oldest = self
            .pids
            .iter()
            .flat_map(|(&pid, gens)| gens.iter().enumerate().map(move |(i, g)| (pid, i, g)))
            .filter_map(|(pid, i, g)| g.ended.map(|e| (e, pid, i)))
            .min();
        if let Some((_, pid, i)) = oldest {
            let gens = self.pids.get_mut(&pid).expect("found");
            self.total -= gens.remove(i).mappings.len().min(self.total);
            if gens.is_empty() {
                self.pids.remove(&pid);
            }
            return true;
        }
        let largest = self
            .pids
            .iter_mut()
            .flat_map(|(_, gens)| gens.iter_mut())
            .max_by_key(|g| g.mappings.len());
        match largest {
            Some(g) if !g.mappings.is_empty() => {
                let n = g.mappings.len();
                self.evicted += n as u64;
                self.total -= n.min(self.total);
                g.mappings = Arc::new(Vec::new());
                true
            }
            _ => false,
        }
    }

    pub fn stats(&self) -> SpaceStats {
        SpaceStats {
            processes: self.pids.len(),
            generations: self.pids.values().map(Vec::len).sum(),
            mappings: self.total,
            files: self.files.len(),
            evicted: self.evicted,
        }
    }
}

fn depth(mut chain: &Option<Arc<Inherited>>) -> usize {
    let mut n = 0;
    while let Some(c) = chain {
        n += 1;
        chain = &c.parent;
    }
    n
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: u64,
    pub end: u64,
    pub exec: bool,
    pub offset: u64,
    pub dev: u64,
    pub ino: u64,
    /// Everything after the inode, spaces included; the kernel escapes
    /// newlines, and appends " (deleted)" to unlinked files.
    pub path: &'a str,
}

/// Parses /proc/PID/maps lines; malformed lines are skipped.
pub fn parse_maps(maps: &str) -> impl Iterator<Item = MapsLine<'_>> {
    maps.lines().filter_map(parse_maps_line)
}

fn parse_maps_line(line: &str) -> Option<MapsLine<'_>> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let (range, perms, offset, dev, ino) = (field()?, field()?, field()?, field()?, field()?);
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(MapsLine {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        exec: perms.as_bytes().get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        ino: ino.parse().ok()?,
        path: rest.trim_start_matches(' '),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spaces() -> AddressSpaces {
        AddressSpaces::default()
    }

    impl AddressSpaces {
        #[expect(clippy::too_many_arguments, reason = "a record's fields")]
        fn map(
            &mut self,
            pid: u32,
            time: u64,
            start: u64,
            len: u64,
            pgoff: u64,
            dev: u64,
            ino: u64,
            path: &str,
        ) {
            self.apply(&SpaceChange::Mmap {
                pid,
                time,
                start,
                len,
                pgoff,
                dev,
                ino,
                generation: 0,
                path: path.into(),
            });
        }

        fn exec_at(&mut self, pid: u32, time: u64) {
            self.apply(&SpaceChange::Exec { pid, time });
        }
    }

    fn at(s: &AddressSpaces, pid: u32, t: u64, addr: u64) -> Option<(String, u64)> {
        let snap = s.snapshot(pid, t)?;
        let (m, off) = snap.locate(addr)?;
        Some((m.file.path.to_string(), off))
    }

    #[test]
    fn a_dlopened_library_is_found_after_the_process_exits() {
        let mut s = spaces();
        s.fork(1, 100, 10);
        s.exec_at(100, 20);
        s.map(100, 21, 0x1000, 0x1000, 0, 8, 1, "/bin/prog");
        s.map(100, 30, 0x7000, 0x2000, 0x3000, 8, 2, "/opt/libx.so");
        s.exit(100, 40);
        assert_eq!(
            at(&s, 100, 35, 0x7010),
            Some(("/opt/libx.so".into(), 0x3010))
        );
        // Before the dlopen the address was not mapped.
        assert_eq!(at(&s, 100, 25, 0x7010), None);
    }

    #[test]
    fn records_out_of_order_land_in_the_right_generation() {
        // The new program's mappings (from another CPU's buffer) arrive
        // before the exec that precedes them, which arrives before the fork
        // (the parent's own mappings are applied before any fork: the
        // collector drains the kernel's records first).
        let mut s = spaces();
        s.map(1, 5, 0x1000, 0x1000, 0, 8, 9, "/bin/parent");
        s.map(100, 21, 0x1000, 0x1000, 0, 8, 1, "/bin/new");
        s.exec_at(100, 20);
        s.fork(1, 100, 10);
        assert_eq!(at(&s, 100, 22, 0x1010), Some(("/bin/new".into(), 0x10)));
        // Between fork and exec the child runs its parent's program.
        assert_eq!(at(&s, 100, 15, 0x1010), Some(("/bin/parent".into(), 0x10)));
        assert_eq!(at(&s, 100, 22, 0x1010), Some(("/bin/new".into(), 0x10)));
    }

    #[test]
    fn a_forked_child_sees_its_parent_mappings_as_of_the_fork() {
        let mut s = spaces();
        s.seed(
            1,
            "00400000-00401000 r-xp 00000000 08:01 11 /usr/bin/python3\n",
            0,
            Some((libc::makedev(8, 1), 11)),
            None,
        );
        s.fork(1, 2, 100);
        // The parent maps a library after the fork: not the child's.
        s.map(1, 150, 0x9000, 0x1000, 0, 8, 12, "/lib/after.so");
        assert!(at(&s, 2, 200, 0x400010).is_some());
        assert_eq!(
            &*s.snapshot(2, 200).unwrap().exe.unwrap().path,
            "/usr/bin/python3"
        );
        assert_eq!(at(&s, 2, 200, 0x9010), None);
        assert!(at(&s, 1, 200, 0x9010).is_some());
        // A grandchild, forked without exec, still sees the first program.
        s.fork(2, 3, 300);
        assert!(at(&s, 3, 400, 0x400010).is_some());
    }

    #[test]
    fn a_reused_pid_is_a_new_generation() {
        let mut s = spaces();
        s.fork(1, 50, 10);
        s.exec_at(50, 11);
        s.map(50, 12, 0x1000, 0x1000, 0, 8, 1, "/bin/first");
        s.exit(50, 20);
        s.fork(1, 50, 30);
        s.exec_at(50, 31);
        s.map(50, 32, 0x1000, 0x1000, 0, 8, 2, "/bin/second");
        assert_eq!(at(&s, 50, 15, 0x1000).unwrap().0, "/bin/first");
        assert_eq!(at(&s, 50, 35, 0x1000).unwrap().0, "/bin/second");
    }

    #[test]
    fn prune_forgets_the_dead_after_the_grace_period_only() {
        let mut s = spaces();
        s.map(7, 1, 0x1000, 0x1000, 0, 8, 1, "/bin/x");
        s.prune(|_| false, false);
        assert!(at(&s, 7, 2, 0x1000).is_some(), "kept for late failures");
        assert_eq!(s.stats().mappings, 1);
        s.pids.get_mut(&7).unwrap()[0].ended = Some(Instant::now() - GRACE * 2);
        s.prune(|_| false, true);
        assert_eq!(
            s.stats().mappings,
            1,
            "kept while the output stage is behind"
        );
        s.prune(|_| false, false);
        assert_eq!(s.stats(), SpaceStats::default());
    }

    #[test]
    fn anonymous_executable_memory_is_not_kept() {
        let mut s = spaces();
        s.map(7, 1, 0x1000, 0x1000, 0, 0, 0, "//anon");
        s.map(7, 1, 0x2000, 0x1000, 0, 0, 0, "[vdso]");
        assert_eq!(s.stats().mappings, 0);
    }

    #[test]
    fn a_mapping_named_short_of_the_root_is_kept() {
        let mut s = spaces();
        s.map(7, 1, 0x1000, 0x1000, 0, 8, 5, "d/prog");
        s.map(7, 1, 0x3000, 0x1000, 0, 8, 6, "");
        assert_eq!(at(&s, 7, 2, 0x1010), Some(("d/prog".into(), 0x10)));
        assert_eq!(at(&s, 7, 2, 0x3010), None, "no name at all: not kept");
        assert_eq!(s.stats().mappings, 1);
    }

    #[test]
    fn maps_lines_are_parsed_whole() {
        let maps = "\
7f0000000000-7f0000100000 r-xp 00026000 fd:01 456   /opt/my libs/libx.so (deleted)\n\
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n\
garbage\n\
55d0c0000000-55d0c0021000 r-xp 00002000 08:01 123 /usr/bin/prog\n";
        let v: Vec<MapsLine> = parse_maps(maps).collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].path, "/opt/my libs/libx.so (deleted)");
        assert_eq!(v[0].dev, libc::makedev(0xfd, 1));
        assert_eq!((v[0].ino, v[0].offset, v[0].exec), (456, 0x26000, true));
        assert_eq!(v[1].path, "[stack]");
        assert!(!v[1].exec);
        assert_eq!(v[2].path, "/usr/bin/prog");
    }
}
