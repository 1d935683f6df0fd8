//! What is known about the limits when a thread creation failed: the
//! kernel's own snapshot of RLIMIT_NPROC, and what /proc and the cgroup
//! files say right after.
use std::{
    collections::{HashMap, VecDeque},
    path::Path,
};

use crate::clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nproc {
    pub soft: u64,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pids {
    /// The cgroup directory that hit its limit (or the process's own).
    pub cgroup: String,
    pub current: u64,
    /// None for "max".
    pub max: Option<u64>,
    /// Its pids.events "max" counter moved since before the failure.
    pub max_events_moved: bool,
    /// The failing process's own cgroup was not known (it was gone before
    /// it could be read): this is a cgroup that refused tasks then.
    pub process_cgroup_unknown: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub uid: u32,
    pub nproc: Option<Nproc>,
    pub pids: Option<Pids>,
    /// Soft RLIMIT_AS in bytes, when finite.
    pub rlimit_as: Option<u64>,
    pub map_count: Option<u64>,
    pub max_map_count: Option<u64>,
    pub threads_total: Option<u64>,
    pub threads_max: Option<u64>,
    pub pid_max: Option<u64>,
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A limit from /proc/PID/limits ("Max processes", "Max address space"):
/// its soft value, None when unlimited or unreadable.
pub fn proc_limit(pid: u32, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

fn max_events(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("pids.events")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse().ok())
}

/// pids.events "max" counters as read, per cgroup directory, with when
/// each was read: a counter higher now than at a read taken before a
/// failure is proof that this cgroup refused a task since, however late
/// the failure is looked at (in a storm, many failures are handled after
/// later ones already moved the counter).
#[derive(Default)]
pub struct PidsWatch {
    /// Directory → reads (CLOCK_MONOTONIC ns, counter), oldest first.
    reads: HashMap<String, VecDeque<(u64, u64)>>,
    /// Cgroups seen refusing tasks lately, newest last.
    refusing: VecDeque<String>,
}

/// Cgroups remembered as refusing tasks lately.
const REFUSING_KEPT: usize = 16;

/// Directories of a cgroup tree whose counters are read at start at most;
/// directories watched at most.
const SEED_MAX: usize = 10_000;
/// Reads kept per directory, at least READ_GAP_NS apart: a storm's
/// failures are handled up to seconds after they happen.
const READS_KEPT: usize = 256;
const READ_GAP_NS: u64 = 10_000_000;
/// The kernel counts a refused task in pids.events inside copy_process,
/// before the failing syscall returns and is timestamped: a read taken
/// just before that timestamp may already include the failure. Only reads
/// older than this are "before" (seen on an emulated kernel: 4 of 459 storm
/// failures were judged unexplained without it).
const COUNTED_EARLY_NS: u64 = 50_000_000;

impl PidsWatch {
    /// Records every pids cgroup's counter now, so that later movement is
    /// exact for cgroups that already exist.
    pub fn seed(&mut self, roots: &[&str]) {
        let now = clock::monotonic_ns();
        let mut stack: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
        while let Some(dir) = stack.pop() {
            if self.reads.len() >= SEED_MAX {
                break;
            }
            if let Some(n) = max_events(&dir) {
                self.reads
                    .insert(dir.display().to_string(), VecDeque::from([(now, n)]));
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
    }

    /// Whether the counter `n`, read now, moved since a read taken before
    /// `at_ns`; the read is remembered.
    fn moved(&mut self, key: &str, n: u64, at_ns: u64) -> bool {
        let now = clock::monotonic_ns();
        if !self.reads.contains_key(key) && self.reads.len() >= SEED_MAX {
            // Past the bound: only a non-zero counter is news.
            return n > 0;
        }
        let reads = self.reads.entry(key.to_string()).or_default();
        // The last read before the failure; a cgroup first read after it
        // (born after start) has refused nothing before it was seen.
        let before = reads
            .iter()
            .rev()
            .find(|&&(at, _)| at < at_ns.saturating_sub(COUNTED_EARLY_NS))
            .map_or(0, |&(_, v)| v);
        if reads.back().is_none_or(|&(at, _)| now >= at + READ_GAP_NS) {
            reads.push_back((now, n));
            if reads.len() > READS_KEPT {
                reads.pop_front();
            }
        }
        n > before
    }

    /// From the process's pids cgroup up to the hierarchy's root: the
    /// deepest cgroup whose max counter moved since before the failure at
    /// `at_ns`, else the process's own.
    pub fn check(&mut self, cgroup_dir: &str, at_ns: u64) -> Option<Pids> {
        let mut dir = Path::new(cgroup_dir);
        let mut own: Option<Pids> = None;
        while let Some(n) = max_events(dir) {
            let key = dir.display().to_string();
            let moved = self.moved(&key, n, at_ns);
            let max = std::fs::read_to_string(dir.join("pids.max"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let here = Pids {
                cgroup: key,
                current: read_u64(dir.join("pids.current")).unwrap_or(0),
                max,
                max_events_moved: moved,
                process_cgroup_unknown: false,
            };
            if moved {
                self.note_refusing(&here.cgroup);
                return Some(here);
            }
            own.get_or_insert(here);
            dir = match dir.parent() {
                Some(p) => p,
                None => break,
            };
        }
        own
    }
}

impl PidsWatch {
    fn note_refusing(&mut self, cgroup: &str) {
        if self.refusing.back().is_some_and(|c| c == cgroup) {
            return;
        }
        self.refusing.retain(|c| c != cgroup);
        self.refusing.push_back(cgroup.to_string());
        if self.refusing.len() > REFUSING_KEPT {
            self.refusing.pop_front();
        }
    }

    /// For a failure whose process's cgroup is not known (the process was
    /// gone before it could be read): a cgroup seen refusing tasks lately
    /// whose counter moved since before the failure, newest first.
    pub fn check_refusing(&mut self, at_ns: u64) -> Option<Pids> {
        let candidates: Vec<String> = self.refusing.iter().rev().cloned().collect();
        for cg in candidates {
            let dir = Path::new(&cg);
            let Some(n) = max_events(dir) else { continue };
            if !self.moved(&cg, n, at_ns) {
                continue;
            }
            return Some(Pids {
                current: read_u64(dir.join("pids.current")).unwrap_or(0),
                max: std::fs::read_to_string(dir.join("pids.max"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok()),
                cgroup: cg,
                max_events_moved: true,
                process_cgroup_unknown: true,
            });
        }
        None
    }
}

/// Host-wide task counts and limits.
pub fn host(e: &mut Evidence) {
    // /proc/loadavg: "0.00 0.01 0.05 2/312 4242": 312 tasks.
    e.threads_total = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok());
    e.threads_max = read_u64("/proc/sys/kernel/threads-max");
    e.pid_max = read_u64("/proc/sys/kernel/pid_max");
}

/// What can explain a thread's stack not being mapped.
pub fn stack(pid: u32, e: &mut Evidence) {
    e.rlimit_as = proc_limit(pid, "Max address space");
    e.map_count = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .map(|m| m.lines().count() as u64);
    e.max_map_count = read_u64("/proc/sys/vm/max_map_count");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_limits_and_the_host() {
        // This test process has a finite open-files limit.
        assert!(proc_limit(std::process::id(), "Max open files").is_some());
        assert_eq!(proc_limit(std::process::id(), "No such limit"), None);
        let mut e = Evidence::default();
        host(&mut e);
        assert!(
            e.threads_total.unwrap() > 0 && e.threads_max.unwrap() > 0 && e.pid_max.unwrap() > 0
        );
    }

    #[test]
    fn pids_counter_movement_is_relative_to_what_was_seen() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("app");
        let path = cg.to_str().unwrap();
        std::fs::create_dir(&cg).unwrap();
        std::fs::write(cg.join("pids.events"), "max 2\n").unwrap();
        std::fs::write(cg.join("pids.max"), "4\n").unwrap();
        std::fs::write(cg.join("pids.current"), "3\n").unwrap();
        let mut w = PidsWatch::default();
        w.seed(&[path]);
        let pause = std::time::Duration::from_nanos(2 * COUNTED_EARLY_NS);
        std::thread::sleep(pause);
        let p = w.check(path, clock::monotonic_ns()).unwrap();
        assert!(!p.max_events_moved, "2 was there before");
        assert_eq!((p.current, p.max), (3, Some(4)));
        std::fs::write(cg.join("pids.events"), "max 3\n").unwrap();
        std::thread::sleep(pause);
        assert!(
            w.check(path, clock::monotonic_ns())
                .unwrap()
                .max_events_moved
        );
        std::fs::write(cg.join("pids.max"), "max\n").unwrap();
        assert_eq!(w.check(path, clock::monotonic_ns()).unwrap().max, None);
    }

    /// The counter moves before the failing syscall returns: a read
    /// between the two already holds the failure, and must not hide it.
    #[test]
    fn a_read_just_before_the_failure_returned_does_not_hide_it() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("tail");
        let path = cg.to_str().unwrap();
        std::fs::create_dir(&cg).unwrap();
        std::fs::write(cg.join("pids.events"), "max 7\n").unwrap();
        std::fs::write(cg.join("pids.max"), "20\n").unwrap();
        std::fs::write(cg.join("pids.current"), "20\n").unwrap();
        let mut w = PidsWatch::default();
        w.seed(&[path]);
        std::thread::sleep(std::time::Duration::from_nanos(2 * COUNTED_EARLY_NS));
        // The kernel counts the refusal; another failure's check reads it;
        // then the syscall returns.
        std::fs::write(cg.join("pids.events"), "max 8\n").unwrap();
        w.check(path, clock::monotonic_ns());
        std::thread::sleep(std::time::Duration::from_millis(15));
        let returned = clock::monotonic_ns();
        assert!(w.check(path, returned).unwrap().max_events_moved);
    }

    /// A storm: failures handled after later ones moved the counter, and
    /// after pids.current fell below pids.max again, are still told as
    /// the cgroup's; a failure after the counter stopped moving is not.
    #[test]
    fn a_failure_handled_late_is_judged_by_the_counter_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("storm");
        let path = cg.to_str().unwrap();
        std::fs::create_dir(&cg).unwrap();
        std::fs::write(cg.join("pids.events"), "max 0\n").unwrap();
        std::fs::write(cg.join("pids.max"), "200\n").unwrap();
        std::fs::write(cg.join("pids.current"), "150\n").unwrap();
        let mut w = PidsWatch::default();
        w.seed(&[path]);
        let failures: Vec<u64> = (0..5).map(|_| clock::monotonic_ns()).collect();
        std::fs::write(cg.join("pids.events"), "max 5\n").unwrap();
        for at in failures {
            let p = w.check(path, at).unwrap();
            assert!(p.max_events_moved, "{p:?}");
            assert!(p.current < p.max.unwrap(), "the cgroup has room again");
        }
        let pause = std::time::Duration::from_nanos(2 * COUNTED_EARLY_NS);
        std::thread::sleep(pause);
        let after = clock::monotonic_ns();
        std::thread::sleep(pause);
        w.check(path, after);
        std::thread::sleep(pause);
        let later = clock::monotonic_ns();
        assert!(
            !w.check(path, later).unwrap().max_events_moved,
            "read at 5 before this failure, 5 now"
        );
    }
}
