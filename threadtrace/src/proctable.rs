//! pid → what the process was: seeded from /proc at start and kept current
//! by fork/exec/exit events, so a process that has already exited (an OOM
//! victim, a worker that died) can still be described.
use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    /// Start time in clock ticks since boot (/proc/PID/stat field 22).
    pub start_ticks: Option<u64>,
    pub uid: Option<u32>,
    /// (controllers, path) lines of /proc/PID/cgroup.
    pub cgroups: Vec<(String, String)>,
    /// task_struct.exit_code once exited.
    pub exit_code: Option<i32>,
    pub alive: bool,
}

/// Where each cgroup hierarchy is mounted, to turn /proc/PID/cgroup paths
/// into directories an SRE can `cat`.
#[derive(Debug, Clone, Default)]
pub struct CgroupMounts {
    /// v1 controller → mount point.
    v1: HashMap<String, PathBuf>,
    v2: Option<PathBuf>,
}

impl CgroupMounts {
    pub fn read() -> Self {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::parse(&text)
    }

    pub fn parse(mountinfo: &str) -> Self {
        let mut m = CgroupMounts::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or("");
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let opts = r.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => m.v2 = Some(PathBuf::from(mount_point)),
                "cgroup" => {
                    for o in opts.split(',') {
                        if !matches!(o, "rw" | "ro" | "relatime" | "nosuid" | "nodev" | "noexec") {
                            m.v1.insert(
                                o.trim_start_matches("name=").to_string(),
                                PathBuf::from(mount_point),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        m
    }

    /// Mount points of the hierarchies that can hold pids limits.
    pub fn pids_roots(&self) -> Vec<String> {
        self.v1
            .get("pids")
            .into_iter()
            .chain(self.v2.as_ref())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// The directory of `controller`'s cgroup for these /proc/PID/cgroup
    /// lines: the v1 hierarchy that has the controller, else the v2 one.
    pub fn path(&self, cgroups: &[(String, String)], controller: &str) -> Option<String> {
        for (ctrls, path) in cgroups {
            if ctrls.split(',').any(|c| c == controller) {
                let base = self.v1.get(controller)?;
                return Some(join(base, path));
            }
        }
        let (_, path) = cgroups.iter().find(|(c, _)| c.is_empty())?;
        Some(match &self.v2 {
            Some(base) => join(base, path),
            None => path.clone(),
        })
    }
}

fn join(base: &std::path::Path, rel: &str) -> String {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        base.display().to_string()
    } else {
        base.join(rel).display().to_string()
    }
}

pub fn parse_cgroup_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let _id = p.next()?;
            Some((p.next()?.to_string(), p.next()?.to_string()))
        })
        .collect()
}

/// (ppid, start_ticks) from /proc/PID/stat; comm may hold spaces and ')'.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state): ppid is field 4, starttime field 22.
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

/// When a process started, from its start time in clock ticks since boot.
pub fn started_at(start_ticks: u64) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(btime * 1000 + start_ticks * 1000 / hz),
    )
}

/// A start time in clock ticks since boot as CLOCK_MONOTONIC ns (the same
/// on a host that never suspended; close enough to order mappings).
pub fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks.saturating_mul(1_000_000_000 / hz)
}

/// Threads of a process now (/proc/PID/stat field 20).
pub fn num_threads(pid: u32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split(' ').nth(17)?.parse().ok()
}

pub fn read_proc(pid: u32) -> Option<Proc> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (ppid, start) = parse_stat(&stat)?;
    let comm = std::fs::read_to_string(dir.join("comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string();
    let cmdline = std::fs::read(dir.join("cmdline"))
        .ok()
        .filter(|b| !b.is_empty())
        .map(|b| String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(&b)).replace('\0', " "));
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.display().to_string());
    let uid = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
    let cgroups =
        parse_cgroup_file(&std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default());
    Some(Proc {
        pid,
        ppid,
        comm,
        exe,
        cmdline,
        start_ticks: Some(start),
        uid,
        cgroups,
        exit_code: None,
        alive: true,
    })
}

/// How many exited processes are remembered: enough to describe the
/// victims of a burst of OOM kills, bounded so memory does not grow.
const EXITED_KEPT: usize = 16384;

#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<u32, Proc>,
    /// Exited pids, oldest first, with the start time that identifies them.
    exited: VecDeque<(u32, Option<u64>)>,
    pub mounts: CgroupMounts,
    /// Hierarchy id → its controllers, as /proc/PID/cgroup numbers them.
    hierarchies: HashMap<i32, String>,
}

impl ProcTable {
    pub fn new(mounts: CgroupMounts) -> Self {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let hierarchies = own
            .lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                Some((f.next()?.parse().ok()?, f.next()?.to_string()))
            })
            .collect();
        ProcTable {
            mounts,
            hierarchies,
            ..Default::default()
        }
    }

    pub fn seed(&mut self) {
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                    if let Some(p) = read_proc(pid) {
                        self.procs.insert(pid, p);
                    }
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.procs.get(&pid)
    }

    /// The table's entry, or /proc's if we missed its birth.
    pub fn lookup(&mut self, pid: u32) -> Option<&Proc> {
        match self.procs.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(read_proc(pid)?)),
        }
    }

    #[cfg(test)]
    pub fn insert(&mut self, p: Proc) {
        self.procs.insert(p.pid, p);
    }

    /// A child inherits its parent's program, command line and cgroups
    /// until it execs.
    pub fn on_fork(&mut self, parent: u32, child: u32, uid: u32, comm: &str) {
        let base = self.lookup(parent).cloned();
        let p = match base {
            Some(b) => Proc {
                pid: child,
                ppid: parent,
                uid: Some(uid),
                exit_code: None,
                alive: true,
                start_ticks: None,
                ..b
            },
            None => Proc {
                pid: child,
                ppid: parent,
                comm: comm.into(),
                uid: Some(uid),
                alive: true,
                ..Default::default()
            },
        };
        self.procs.insert(child, p);
        // Read the start time now: it tells this process from a later one
        // with the same pid.
        if let Some(fresh) = read_proc(child) {
            if let Some(p) = self.procs.get_mut(&child) {
                p.start_ticks = fresh.start_ticks;
            }
        }
    }

    pub fn on_exec(&mut self, pid: u32, filename: &str, comm: &str, uid: u32) {
        let ppid = self.get(pid).map(|p| p.ppid).unwrap_or(0);
        let mut p = read_proc(pid).unwrap_or_else(|| Proc {
            pid,
            ppid,
            uid: Some(uid),
            alive: true,
            ..self.get(pid).cloned().unwrap_or_default()
        });
        p.comm = comm.to_string();
        if p.exe.is_none() {
            p.exe = Some(filename.to_string());
        }
        self.procs.insert(pid, p);
    }

    pub fn on_exit(&mut self, pid: u32, exit_code: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.alive = false;
            p.exit_code = Some(exit_code);
            self.exited.push_back((pid, p.start_ticks));
        }
        while self.exited.len() > EXITED_KEPT {
            let Some((old, start)) = self.exited.pop_front() else {
                break;
            };
            // Only forget it if the pid was not reused since.
            if self
                .procs
                .get(&old)
                .is_some_and(|p| !p.alive && p.start_ticks == start)
            {
                self.procs.remove(&old);
            }
        }
    }

    /// Live processes.
    pub fn alive_procs(&self) -> impl Iterator<Item = &Proc> {
        self.procs.values().filter(|p| p.alive)
    }

    /// Live processes as (pid, comm).
    pub fn alive(&self) -> Vec<(u32, String)> {
        self.procs
            .values()
            .filter(|p| p.alive)
            .map(|p| (p.pid, p.comm.clone()))
            .collect()
    }

    /// A process was moved into `path` of hierarchy `root`: returns the
    /// hierarchy's controllers. Threads (not in the table) are ignored: their
    /// process is moved with them.
    pub fn on_cgroup_attach(&mut self, pid: u32, root: i32, path: &str) -> Option<String> {
        let controllers = self.hierarchies.get(&root)?.clone();
        let p = self.procs.get_mut(&pid)?;
        match p.cgroups.iter_mut().find(|(c, _)| *c == controllers) {
            Some(line) => line.1 = path.to_string(),
            None => p.cgroups.push((controllers.clone(), path.to_string())),
        }
        Some(controllers)
    }

    pub fn cgroup(&self, pid: u32, controller: &str) -> Option<String> {
        self.mounts.path(&self.get(pid)?.cgroups, controller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/pids rw,relatime shared:9 - cgroup cgroup rw,pids
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
";

    #[test]
    fn cgroup_paths_v1_and_v2() {
        let m = CgroupMounts::parse(MOUNTINFO);
        let cg = parse_cgroup_file("12:pids:/tt-test\n9:memory:/\n0::/user.slice\n");
        assert_eq!(m.path(&cg, "pids").unwrap(), "/sys/fs/cgroup/pids/tt-test");
        assert_eq!(m.path(&cg, "memory").unwrap(), "/sys/fs/cgroup/memory");
        assert_eq!(
            m.path(&cg, "cpu").unwrap(),
            "/sys/fs/cgroup/unified/user.slice"
        );
    }

    #[test]
    fn a_move_into_a_cgroup_updates_the_process() {
        let mut t = ProcTable::default();
        t.hierarchies.insert(8, "pids".into());
        t.insert(Proc {
            pid: 4_500_000,
            cgroups: parse_cgroup_file("8:pids:/\n0::/user.slice\n"),
            alive: true,
            ..Default::default()
        });
        assert_eq!(
            t.on_cgroup_attach(4_500_000, 8, "/app").as_deref(),
            Some("pids")
        );
        assert_eq!(
            t.get(4_500_000).unwrap().cgroups[0],
            ("pids".to_string(), "/app".to_string())
        );
        assert_eq!(
            t.on_cgroup_attach(4_500_001, 8, "/app"),
            None,
            "a thread, not a process"
        );
        assert_eq!(
            t.on_cgroup_attach(4_500_000, 99, "/x"),
            None,
            "an unknown hierarchy"
        );
    }

    #[test]
    fn stat_with_awkward_comm() {
        let s = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_stat(s), Some((7, 12345)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn remembers_exited_processes_and_forgets_the_oldest() {
        let mut t = ProcTable::default();
        t.insert(Proc {
            pid: 1,
            comm: "init".into(),
            alive: true,
            ..Default::default()
        });
        t.on_fork(1, 4_000_000, 0, "worker");
        assert_eq!(t.get(4_000_000).unwrap().ppid, 1);
        assert_eq!(t.get(4_000_000).unwrap().comm, "init");
        t.on_exit(4_000_000, 9);
        assert_eq!(t.get(4_000_000).unwrap().exit_code, Some(9));
        assert!(!t.get(4_000_000).unwrap().alive);
        for i in 0..EXITED_KEPT as u32 {
            t.on_fork(1, 5_000_000 + i, 0, "x");
            t.on_exit(5_000_000 + i, 0);
        }
        assert!(t.get(4_000_000).is_none(), "oldest exited entry evicted");
        assert!(t.get(5_000_000 + EXITED_KEPT as u32 - 1).is_some());
    }

    #[test]
    fn reads_itself_from_proc() {
        assert!(num_threads(std::process::id()).unwrap() >= 1);
        let p = read_proc(std::process::id()).unwrap();
        assert!(p.alive && p.ppid > 0 && p.start_ticks.is_some() && p.exe.is_some());
    }
}
