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
/// each was read. Every refusal the kernel counted explains one failure:
/// a failure whose syscall returned after the read before the counter
/// moved, and not long after the read that saw it move. However late a
/// failure is looked at (in a storm, many are handled after later ones
/// moved the counter), and however long its task waited between the
/// kernel's count and the syscall's return (on a loaded machine, longer
/// than any fixed margin), it is judged by the counter around it, and an
/// old storm's refusals do not explain a new failure.
#[derive(Default)]
pub struct PidsWatch {
    /// Directory → reads, oldest first.
    reads: HashMap<String, VecDeque<Read>>,
    /// Cgroups seen refusing tasks lately, newest last.
    refusing: VecDeque<String>,
}

/// A read of a cgroup's counter: when (CLOCK_MONOTONIC ns), its value,
/// and how many of the refusals counted since the read before are not yet
/// matched to a failure.
#[derive(Debug, Clone, Copy)]
struct Read {
    at: u64,
    value: u64,
    unclaimed: u64,
}

/// Cgroups remembered as refusing tasks lately.
const REFUSING_KEPT: usize = 16;

/// Directories of a cgroup tree whose counters are read at start at most;
/// directories watched at most.
const SEED_MAX: usize = 10_000;
/// Reads kept per directory, at least READ_GAP_NS apart (a closer read is
/// merged into the last): a storm's failures are handled up to seconds
/// after they happen.
const READS_KEPT: usize = 256;
const READ_GAP_NS: u64 = 10_000_000;
/// The longest a refused task is taken to wait between the kernel's count
/// (inside copy_process) and its syscall's return, when the timestamp is
/// taken. In an emulated guest's fork storm, 200 runnable processes on two
/// CPUs, a failure came more than 50 ms after its count.
const COUNTED_BEFORE_RETURN_NS: u64 = 10_000_000_000;

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
                // What was counted before the recording explains nothing.
                let read = Read {
                    at: now,
                    value: n,
                    unclaimed: 0,
                };
                self.reads
                    .insert(dir.display().to_string(), VecDeque::from([read]));
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

    /// Whether a refusal counted in `key` explains the failure at `at_ns`,
    /// with the counter `n` read now; the read is remembered, and the
    /// refusal, once it explains a failure, explains no other. A failure
    /// that cannot be a refusal (`refusal` false) takes none.
    fn moved(&mut self, key: &str, n: u64, at_ns: u64, refusal: bool) -> bool {
        let now = clock::monotonic_ns();
        if !self.reads.contains_key(key) && self.reads.len() >= SEED_MAX {
            // Past the bound: only a non-zero counter is news.
            return n > 0;
        }
        let reads = self.reads.entry(key.to_string()).or_default();
        // A cgroup first read after the start (born since) had refused
        // nothing before: all it counted is news.
        let new = n.saturating_sub(reads.back().map_or(0, |r| r.value));
        match reads.back_mut() {
            Some(last) if now < last.at + READ_GAP_NS => {
                last.at = now;
                last.value = last.value.max(n);
                last.unclaimed += new;
            }
            _ => {
                reads.push_back(Read {
                    at: now,
                    value: n,
                    unclaimed: new,
                });
                if reads.len() > READS_KEPT {
                    reads.pop_front();
                }
            }
        }
        if !refusal {
            return false;
        }
        // The newest refusals first that were counted after a read taken
        // before the failure returned, and at most a while before it.
        for i in (0..reads.len()).rev() {
            let r = reads[i];
            if r.at + COUNTED_BEFORE_RETURN_NS < at_ns {
                break;
            }
            let after = if i == 0 { 0 } else { reads[i - 1].at };
            if r.unclaimed > 0 && after < at_ns {
                reads[i].unclaimed -= 1;
                return true;
            }
        }
        false
    }

    /// From the process's pids cgroup up to the hierarchy's root: the
    /// deepest cgroup with a refusal counted around the failure at `at_ns`
    /// (taken by it, when `refusal`), else the process's own.
    pub fn check(&mut self, cgroup_dir: &str, at_ns: u64, refusal: bool) -> Option<Pids> {
        let mut dir = Path::new(cgroup_dir);
        let mut own: Option<Pids> = None;
        while let Some(n) = max_events(dir) {
            let key = dir.display().to_string();
            let moved = self.moved(&key, n, at_ns, refusal);
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
            if !self.moved(&cg, n, at_ns, true) {
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

    /// A fake pids cgroup `name` under `root`, with its counter, limit and
    /// task count, and a watch seeded with it.
    fn watched_cgroup(
        root: &Path,
        name: &str,
        events: u64,
        max: u64,
        current: u64,
    ) -> (std::path::PathBuf, PidsWatch) {
        let cg = root.join(name);
        std::fs::create_dir(&cg).unwrap();
        std::fs::write(cg.join("pids.events"), format!("max {events}\n")).unwrap();
        std::fs::write(cg.join("pids.max"), format!("{max}\n")).unwrap();
        std::fs::write(cg.join("pids.current"), format!("{current}\n")).unwrap();
        let mut w = PidsWatch::default();
        w.seed(&[cg.to_str().unwrap()]);
        (cg, w)
    }

    #[test]
    fn pids_counter_movement_is_relative_to_what_was_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (cg, mut w) = watched_cgroup(dir.path(), "app", 2, 4, 3);
        let path = cg.to_str().unwrap();
        let pause = std::time::Duration::from_nanos(2 * READ_GAP_NS);
        std::thread::sleep(pause);
        let p = w.check(path, clock::monotonic_ns(), true).unwrap();
        assert!(!p.max_events_moved, "2 was there before");
        assert_eq!((p.current, p.max), (3, Some(4)));
        std::fs::write(cg.join("pids.events"), "max 3\n").unwrap();
        std::thread::sleep(pause);
        assert!(
            w.check(path, clock::monotonic_ns(), true)
                .unwrap()
                .max_events_moved
        );
        std::fs::write(cg.join("pids.max"), "max\n").unwrap();
        assert_eq!(
            w.check(path, clock::monotonic_ns(), true).unwrap().max,
            None
        );
    }

    /// The counter moves before the failing syscall returns, and a loaded
    /// machine can keep the task from returning for long: reads between
    /// the two already hold the refusal, and must not hide it.
    #[test]
    fn a_read_before_the_failure_returned_does_not_hide_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cg, mut w) = watched_cgroup(dir.path(), "tail", 7, 20, 20);
        let path = cg.to_str().unwrap();
        let pause = std::time::Duration::from_nanos(2 * READ_GAP_NS);
        std::thread::sleep(pause);
        // The kernel counts two refusals; the first failure returns and
        // its check reads both; the second is still on its way.
        std::fs::write(cg.join("pids.events"), "max 9\n").unwrap();
        assert!(
            w.check(path, clock::monotonic_ns(), true)
                .unwrap()
                .max_events_moved
        );
        // The second returns long after that read.
        std::thread::sleep(5 * pause);
        let returned = clock::monotonic_ns();
        assert!(w.check(path, returned, true).unwrap().max_events_moved);
        // Two refusals explain two failures, not a third.
        assert!(
            !w.check(path, clock::monotonic_ns(), true)
                .unwrap()
                .max_events_moved
        );
    }

    /// A storm: failures handled after later ones moved the counter, and
    /// after pids.current fell below pids.max again, are still told as
    /// the cgroup's, one per refusal; a failure after the counter stopped
    /// moving is not.
    #[test]
    fn a_failure_handled_late_is_judged_by_the_counter_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cg, mut w) = watched_cgroup(dir.path(), "storm", 0, 200, 150);
        let path = cg.to_str().unwrap();
        let failures: Vec<u64> = (0..5).map(|_| clock::monotonic_ns()).collect();
        std::fs::write(cg.join("pids.events"), "max 5\n").unwrap();
        for at in failures {
            let p = w.check(path, at, true).unwrap();
            assert!(p.max_events_moved, "{p:?}");
            assert!(p.current < p.max.unwrap(), "the cgroup has room again");
        }
        let pause = std::time::Duration::from_nanos(2 * READ_GAP_NS);
        std::thread::sleep(pause);
        let later = clock::monotonic_ns();
        assert!(
            !w.check(path, later, true).unwrap().max_events_moved,
            "5 refusals, 5 failures told already"
        );
    }

    /// Refusals older than a failure by more than any task waits to return
    /// are another incident's, even when no failure claimed them.
    #[test]
    fn an_old_storms_refusals_do_not_explain_a_new_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (cg, mut w) = watched_cgroup(dir.path(), "old", 0, 10, 3);
        let path = cg.to_str().unwrap();
        std::fs::write(cg.join("pids.events"), "max 40\n").unwrap();
        assert!(
            w.check(path, clock::monotonic_ns(), true)
                .unwrap()
                .max_events_moved
        );
        let much_later = clock::monotonic_ns() + 2 * COUNTED_BEFORE_RETURN_NS;
        assert!(!w.check(path, much_later, true).unwrap().max_events_moved);
    }
}
