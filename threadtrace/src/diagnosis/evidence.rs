//! What is known about the limits when a thread creation failed: the
//! kernel's own snapshot of RLIMIT_NPROC, and what /proc and the cgroup
//! files say right after.
use std::{collections::HashMap, path::Path};

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
    /// Its pids.events "max" counter moved since we last looked.
    pub max_events_moved: bool,
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

/// pids.events "max" counters as last seen, per cgroup directory: a
/// counter that moved is proof that this cgroup refused a task.
#[derive(Default)]
pub struct PidsWatch {
    seen: HashMap<String, u64>,
}

/// Directories of a cgroup tree whose counters are read at start at most.
const SEED_MAX: usize = 10_000;

impl PidsWatch {
    /// Records every pids cgroup's counter now, so that later movement is
    /// exact for cgroups that already exist.
    pub fn seed(&mut self, roots: &[&str]) {
        let mut stack: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
        while let Some(dir) = stack.pop() {
            if self.seen.len() >= SEED_MAX {
                break;
            }
            if let Some(n) = max_events(&dir) {
                self.seen.insert(dir.display().to_string(), n);
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

    /// From the process's pids cgroup up to the hierarchy's root: the
    /// deepest cgroup whose max counter moved, else the process's own.
    pub fn check(&mut self, cgroup_dir: &str) -> Option<Pids> {
        let mut dir = Path::new(cgroup_dir);
        let mut own: Option<Pids> = None;
        while let Some(n) = max_events(dir) {
            let key = dir.display().to_string();
            // A cgroup born after start: a non-zero counter is its first news.
            let moved = self.seen.get(&key).map_or(n > 0, |&before| n > before);
            self.seen.insert(key.clone(), n);
            let max = std::fs::read_to_string(dir.join("pids.max"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let here = Pids {
                cgroup: key,
                current: read_u64(dir.join("pids.current")).unwrap_or(0),
                max,
                max_events_moved: moved,
            };
            if moved {
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
        std::fs::create_dir(&cg).unwrap();
        std::fs::write(cg.join("pids.events"), "max 2\n").unwrap();
        std::fs::write(cg.join("pids.max"), "4\n").unwrap();
        std::fs::write(cg.join("pids.current"), "3\n").unwrap();
        let mut w = PidsWatch::default();
        w.seed(&[cg.to_str().unwrap()]);
        let p = w.check(cg.to_str().unwrap()).unwrap();
        assert!(!p.max_events_moved, "2 was there before");
        assert_eq!((p.current, p.max), (3, Some(4)));
        std::fs::write(cg.join("pids.events"), "max 3\n").unwrap();
        assert!(w.check(cg.to_str().unwrap()).unwrap().max_events_moved);
        std::fs::write(cg.join("pids.max"), "max\n").unwrap();
        assert_eq!(w.check(cg.to_str().unwrap()).unwrap().max, None);
    }
}
