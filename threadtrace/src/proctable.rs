//! pid → what the process was: seeded from /proc at start and kept current
//! by fork/exec/exit events, so a process that has already exited (an OOM
//! victim, a worker that died) can still be described.
//!
//! Its memory is bounded in bytes: a command line is kept up to
//! [`CMDLINE_MAX`] bytes and shared by the children that inherit it, and
//! exited processes are forgotten, oldest first, past [`EXITED_KEPT`] or
//! [`EXITED_BYTES`]; what was cut or forgotten is counted ([`Bounds`]).
use std::{
    collections::{HashMap, VecDeque},
    io::Read as _,
    path::PathBuf,
    sync::Arc,
};

/// Bytes of a command line kept at most. Any user can make one of 2 MiB;
/// the first 4 KiB tell the program and its arguments apart.
pub const CMDLINE_MAX: usize = 4096;

/// Ends a command line cut at CMDLINE_MAX.
pub const CMDLINE_CUT: &str = " …(command line cut at 4096 bytes)";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// At most CMDLINE_MAX bytes (then it ends with CMDLINE_CUT); a
    /// forked child shares its parent's until it execs.
    pub cmdline: Option<Arc<str>>,
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

/// The /proc/PID/cgroup path of `controller`'s line (the v1 hierarchy that
/// has it, else the v2 one), as `CgroupMounts::path` chooses it: processes
/// with the same line are in the same cgroup.
pub fn cgroup_line<'a>(cgroups: &'a [(String, String)], controller: &str) -> Option<&'a str> {
    cgroups
        .iter()
        .find(|(ctrls, _)| ctrls.split(',').any(|c| c == controller))
        .or_else(|| cgroups.iter().find(|(c, _)| c.is_empty()))
        .map(|(_, p)| p.as_str())
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

/// What keeping the table bounded cost, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Command lines longer than CMDLINE_MAX, cut.
    pub cmdlines_cut: u64,
    /// Exited processes forgotten to stay under EXITED_KEPT or EXITED_BYTES.
    pub exited_evicted: u64,
}

/// /proc/PID/cmdline, its first CMDLINE_MAX bytes only (a 2 MiB one is not
/// read), arguments joined by spaces; true when it was cut.
fn read_cmdline(dir: &std::path::Path) -> Option<(Arc<str>, bool)> {
    let mut buf = Vec::with_capacity(256);
    std::fs::File::open(dir.join("cmdline"))
        .ok()?
        .take(CMDLINE_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .ok()?;
    Some(cmdline_of(buf)).filter(|(c, _)| !c.is_empty())
}

fn cmdline_of(mut buf: Vec<u8>) -> (Arc<str>, bool) {
    let cut = buf.len() > CMDLINE_MAX;
    buf.truncate(CMDLINE_MAX);
    let buf = buf.strip_suffix(&[0]).unwrap_or(&buf);
    let mut s = String::from_utf8_lossy(buf).replace('\0', " ");
    if cut {
        s.push_str(CMDLINE_CUT);
    }
    (s.into(), cut)
}

/// A file of /proc read up to `max` bytes: what the tracer keeps from it
/// is bounded whatever its owner put there.
fn read_bounded(path: &std::path::Path, max: u64) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// /proc/PID/cgroup: one line per hierarchy, each path under PATH_MAX
/// (the kernel refuses longer ones).
const CGROUP_FILE_MAX: u64 = 64 << 10;

/// Heap bytes an entry holds, its shared command line counted whole.
fn weight(p: &Proc) -> usize {
    std::mem::size_of::<Proc>()
        + p.comm.len()
        + p.exe.as_ref().map_or(0, String::len)
        + p.cmdline.as_ref().map_or(0, |c| c.len())
        + p.cgroups
            .iter()
            .map(|(c, p)| c.len() + p.len() + 48)
            .sum::<usize>()
}

/// Threads of a process now (/proc/PID/stat field 20).
pub fn num_threads(pid: u32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split(' ').nth(17)?.parse().ok()
}

/// The process a thread belongs to (/proc/TID/status `Tgid:`): the
/// kernel names some tasks by their thread id. None once it is reaped.
pub fn tgid(tid: u32) -> Option<u32> {
    let status = read_bounded(std::path::Path::new(&format!("/proc/{tid}/status")), 4096)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// (ppid, start_ticks) of a live process.
fn read_stat(pid: u32) -> Option<(u32, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The process, and whether its command line was cut.
pub(crate) fn read_proc_counted(pid: u32) -> Option<(Proc, bool)> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (ppid, start) = parse_stat(&stat)?;
    let comm = std::fs::read_to_string(dir.join("comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string();
    let (cmdline, cut) = match read_cmdline(&dir) {
        Some((c, cut)) => (Some(c), cut),
        None => (None, false),
    };
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
        parse_cgroup_file(&read_bounded(&dir.join("cgroup"), CGROUP_FILE_MAX).unwrap_or_default());
    let p = Proc {
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
    };
    Some((p, cut))
}

/// How many exited processes are remembered: enough to describe the
/// victims of a burst of OOM kills, bounded so memory does not grow.
pub const EXITED_KEPT: usize = 16384;
/// And their bytes at most: 16,384 of them with 4 KiB command lines of
/// their own would be 70 MiB.
pub const EXITED_BYTES: usize = 16 << 20;

#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<u32, Proc>,
    /// Exited pids, oldest first, with the start time that identifies them
    /// and their weight.
    exited: VecDeque<(u32, Option<u64>, usize)>,
    exited_bytes: usize,
    pub bounds: Bounds,
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
                    if let Some(p) = self.read(pid) {
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

    /// A process from /proc, its cut command line counted.
    fn read(&mut self, pid: u32) -> Option<Proc> {
        let (p, cut) = read_proc_counted(pid)?;
        self.bounds.cmdlines_cut += cut as u64;
        Some(p)
    }

    /// The table's entry, or /proc's if we missed its birth.
    pub fn lookup(&mut self, pid: u32) -> Option<&Proc> {
        if !self.procs.contains_key(&pid) {
            let p = self.read(pid)?;
            self.procs.insert(pid, p);
        }
        self.procs.get(&pid)
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
        // with the same pid. Only stat: the command line is the parent's.
        if let Some((_, start)) = read_stat(child) {
            if let Some(p) = self.procs.get_mut(&child) {
                p.start_ticks = Some(start);
            }
        }
    }

    pub fn on_exec(&mut self, pid: u32, filename: &str, comm: &str, uid: u32) {
        let ppid = self.get(pid).map(|p| p.ppid).unwrap_or(0);
        let fresh = self.read(pid);
        // Gone already (it failed and exited): what the exec says is all
        // there is; the old program's executable and arguments are not
        // the new one's.
        let mut p = fresh.unwrap_or_else(|| Proc {
            pid,
            ppid,
            uid: Some(uid),
            alive: true,
            exe: Some(filename.to_string()),
            cmdline: None,
            ..self.get(pid).cloned().unwrap_or_default()
        });
        // Read while it was exiting: its stat was there, not the rest. An
        // exec keeps the cgroups, and the kernel said who and what it is.
        if p.cgroups.is_empty() {
            if let Some(known) = self.get(pid) {
                p.cgroups.clone_from(&known.cgroups);
            }
        }
        p.exe.get_or_insert_with(|| filename.to_string());
        p.uid.get_or_insert(uid);
        p.comm = comm.to_string();
        self.procs.insert(pid, p);
    }

    pub fn on_exit(&mut self, pid: u32, exit_code: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            if p.alive {
                p.alive = false;
                p.exit_code = Some(exit_code);
                let w = weight(p);
                self.exited.push_back((pid, p.start_ticks, w));
                self.exited_bytes += w;
            }
        }
        while self.exited.len() > EXITED_KEPT || self.exited_bytes > EXITED_BYTES {
            let Some((old, start, w)) = self.exited.pop_front() else {
                break;
            };
            self.exited_bytes -= w;
            // Only forget it if the pid was not reused since.
            if self
                .procs
                .get(&old)
                .is_some_and(|p| !p.alive && p.start_ticks == start)
            {
                self.procs.remove(&old);
                self.bounds.exited_evicted += 1;
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
    fn a_long_command_line_is_cut_and_says_so() {
        let mut argv = b"prog\0".to_vec();
        argv.extend(std::iter::repeat_n(b'a', 2 << 20));
        argv.push(0);
        let (c, cut) = cmdline_of(argv);
        assert!(cut);
        assert_eq!(c.len(), CMDLINE_MAX + CMDLINE_CUT.len(), "the first 4 KiB");
        assert!(c.starts_with("prog aaa") && c.ends_with(CMDLINE_CUT));
        let (c, cut) = cmdline_of(b"python3\0-c\0import numpy\0".to_vec());
        assert!(!cut);
        assert_eq!(&*c, "python3 -c import numpy");
    }

    /// A parent with a long command line forking thousands of children:
    /// they share one copy, and exited ones are forgotten by bytes too.
    #[test]
    fn children_share_the_command_line_and_exited_ones_are_bounded_in_bytes() {
        let mut t = ProcTable::default();
        let long: Arc<str> = format!("{}{CMDLINE_CUT}", "x".repeat(CMDLINE_MAX)).into();
        t.insert(Proc {
            pid: 1,
            cmdline: Some(long.clone()),
            alive: true,
            ..Default::default()
        });
        for i in 0..10_000 {
            t.on_fork(1, 5_000_000 + i, 0, "x");
        }
        assert_eq!(Arc::strong_count(&long), 10_002, "one copy, shared");
        for i in 0..10_000 {
            t.on_exit(5_000_000 + i, 0);
        }
        assert!(t.exited_bytes <= EXITED_BYTES, "{}", t.exited_bytes);
        let kept = t.procs.len() - 1;
        assert!(
            kept < 10_000 && kept * (CMDLINE_MAX + 64) > EXITED_BYTES / 2,
            "{kept}"
        );
        assert_eq!(t.bounds.exited_evicted, 10_000 - kept as u64);
        assert!(t.get(5_000_000 + 9_999).is_some(), "the newest are kept");
    }

    #[test]
    fn reads_itself_from_proc() {
        assert!(num_threads(std::process::id()).unwrap() >= 1);
        let (p, _) = read_proc_counted(std::process::id()).unwrap();
        assert!(p.alive && p.ppid > 0 && p.start_ticks.is_some() && p.exe.is_some());
    }
}
