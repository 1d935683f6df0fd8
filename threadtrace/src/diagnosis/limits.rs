//! The limits the busiest processes run under, for the dashboard: threads
//! against the user's RLIMIT_NPROC, the pids cgroup's pids.max and the CPUs
//! a pool may use. Read once a second on the collector's thread, for a
//! bounded number of processes, with each cgroup read once per pass.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::{oversubscription, remedy::pool_variable};
use crate::{
    model::{Oversubscribed, ProcessFailures, ThreadCount},
    proctable::ProcTable,
};

/// A pids cgroup's use: `max` is None for "max".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsUse {
    pub cgroup: String,
    pub current: u64,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessLimits {
    pub pid: u32,
    pub comm: String,
    pub uid: Option<u32>,
    /// Threads now, the main thread included.
    pub threads: i64,
    /// Creating library → its live threads, largest first.
    pub libraries: Vec<(String, i64)>,
    /// Failed thread creations, exact (kernel counters).
    pub failures: u64,
    /// Soft RLIMIT_NPROC; u64::MAX for unlimited, None when unreadable.
    pub nproc_soft: Option<u64>,
    /// Threads of all the processes of this uid: what RLIMIT_NPROC counts.
    pub user_tasks: Option<u64>,
    pub pids: Option<PidsUse>,
    /// CPUs it may use and what limits them (cgroup quota or affinity).
    pub cpus: Option<(u64, String)>,
    /// Set when a pool library runs more threads than those CPUs.
    pub oversubscribed: Option<Oversubscribed>,
}

/// Soft "Max processes" of /proc/PID/limits, u64::MAX for unlimited.
fn nproc_soft(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max processes"))?;
    match line["Max processes".len()..].split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// How long a process's RLIMIT_NPROC and affinity read from /proc are
/// trusted: they rarely change, and reading them for a hundred processes
/// every second would cost the collector about 5 ms a second (measured:
/// some 50 µs a process here).
const KEEP: Duration = Duration::from_secs(5);

/// RLIMIT_NPROC and affinity per process, as last read.
#[derive(Default)]
pub struct PerProcess {
    read: HashMap<u32, (Instant, Option<u64>, Option<u64>)>,
}

impl PerProcess {
    fn get(&mut self, pid: u32, now: Instant) -> (Option<u64>, Option<u64>) {
        match self.read.get(&pid) {
            Some(&(at, nproc, cpus)) if now.saturating_duration_since(at) < KEEP => (nproc, cpus),
            _ => {
                let (nproc, cpus) = (nproc_soft(pid), oversubscription::affinity_cpus(pid));
                self.read.insert(pid, (now, nproc, cpus));
                (nproc, cpus)
            }
        }
    }

    /// A limit of `pid` changed: read it again next time.
    pub fn forget(&mut self, pid: u32) {
        self.read.remove(&pid);
    }
}

fn pids_use(cgroup: &str) -> Option<PidsUse> {
    let dir = std::path::Path::new(cgroup);
    let current = std::fs::read_to_string(dir.join("pids.current")).ok()?;
    let max = std::fs::read_to_string(dir.join("pids.max")).ok()?;
    Some(PidsUse {
        cgroup: cgroup.to_string(),
        current: current.trim().parse().ok()?,
        max: max.trim().parse().ok(),
    })
}

/// The processes shown: the `n` with the most threads, then those that
/// failed (the point of the recording), up to `n` more. Kernel threads
/// are not processes anybody limits.
fn chosen(
    scan: &[(u32, String, i64)],
    failing: &[ProcessFailures],
    procs: &ProcTable,
    n: usize,
) -> Vec<usize> {
    let kernel = |pid: u32| pid == 2 || procs.get(pid).is_some_and(|p| p.ppid == 2);
    let mut by_threads: Vec<usize> = (0..scan.len()).filter(|&i| !kernel(scan[i].0)).collect();
    by_threads.sort_by(|&a, &b| scan[b].2.cmp(&scan[a].2).then(scan[a].0.cmp(&scan[b].0)));
    by_threads.truncate(n);
    let mut taken: HashSet<u32> = by_threads.iter().map(|&i| scan[i].0).collect();
    let index: HashMap<u32, usize> = scan.iter().enumerate().map(|(i, p)| (p.0, i)).collect();
    for f in failing {
        if taken.len() >= 2 * n {
            break;
        }
        if let Some(&i) = index.get(&f.pid) {
            if taken.insert(f.pid) {
                by_threads.push(i);
            }
        }
    }
    by_threads
}

/// Limits of the processes worth showing: those that failed first (most
/// failures first), then by threads.
///
/// - `scan`: (pid, comm, threads) of the live processes, read this second;
/// - `threads`: live threads per (process, creating library);
/// - `failing`: exact failures per process.
pub fn gather(
    scan: &[(u32, String, i64)],
    threads: &[ThreadCount],
    failing: &[ProcessFailures],
    procs: &ProcTable,
    n: usize,
    time: &str,
    known: &mut PerProcess,
) -> Vec<ProcessLimits> {
    let now = Instant::now();
    let mut per_uid: HashMap<u32, u64> = HashMap::new();
    for (pid, _, t) in scan {
        if let Some(uid) = procs.get(*pid).and_then(|p| p.uid) {
            *per_uid.entry(uid).or_default() += (*t).max(0) as u64;
        }
    }
    let mut pids_of: HashMap<String, Option<PidsUse>> = HashMap::new();
    let mut quota_of: HashMap<String, Option<(u64, &'static str)>> = HashMap::new();
    let mut out: Vec<ProcessLimits> = chosen(scan, failing, procs, n)
        .into_iter()
        .map(|i| {
            let (pid, comm, t) = &scan[i];
            let pid = *pid;
            let uid = procs.get(pid).and_then(|p| p.uid);
            let mut libraries: Vec<(String, i64)> = threads
                .iter()
                .filter(|r| r.pid == pid)
                .map(|r| (r.library.clone(), r.live))
                .collect();
            libraries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let pids = procs.cgroup(pid, "pids").and_then(|cg| {
                pids_of
                    .entry(cg)
                    .or_insert_with_key(|cg| pids_use(cg))
                    .clone()
            });
            let quota = procs.cgroup(pid, "cpu").and_then(|cg| {
                *quota_of
                    .entry(cg)
                    .or_insert_with_key(|cg| oversubscription::quota_cpus(cg))
            });
            let (nproc_soft, affinity) = known.get(pid, now);
            let cpus = oversubscription::fewest(quota, affinity);
            let oversubscribed = cpus.as_ref().and_then(|c| {
                libraries
                    .iter()
                    .filter(|(l, _)| pool_variable(l).is_some())
                    .find_map(|(l, live)| {
                        oversubscription::check(pid, comm, l, *live, c.clone(), time)
                    })
            });
            ProcessLimits {
                pid,
                comm: comm.clone(),
                uid,
                threads: *t,
                libraries,
                failures: failing
                    .iter()
                    .filter(|f| f.pid == pid)
                    .map(|f| f.count)
                    .sum(),
                nproc_soft,
                user_tasks: uid.and_then(|u| per_uid.get(&u).copied()),
                pids,
                cpus,
                oversubscribed,
            }
        })
        .collect();
    // Only the processes shown are remembered: bounded by 2n.
    known
        .read
        .retain(|pid, _| out.iter().any(|p| p.pid == *pid));
    out.sort_by(|a, b| {
        b.failures
            .cmp(&a.failures)
            .then(b.threads.cmp(&a.threads))
            .then(a.pid.cmp(&b.pid))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proctable::Proc;

    fn failures(pid: u32, count: u64) -> ProcessFailures {
        crate::model::fixtures::eagain(pid, count)
    }

    #[test]
    fn busiest_then_failing_processes_with_their_user_totals() {
        let me = std::process::id();
        let mut procs = ProcTable::default();
        for (pid, uid, ppid) in [
            (me, 7, 1),
            (4_500_001, 7, 1),
            (4_500_002, 8, 1),
            (4_500_003, 7, 1),
            (4_500_004, 0, 2),
        ] {
            procs.insert(Proc {
                pid,
                ppid,
                comm: format!("p{pid}"),
                uid: Some(uid),
                alive: true,
                ..Default::default()
            });
        }
        let scan = vec![
            (me, "me".to_string(), 3),
            (4_500_001, "big".to_string(), 50),
            (4_500_002, "other".to_string(), 40),
            (4_500_003, "failing".to_string(), 1),
            (4_500_004, "kworker/0:1".to_string(), 99),
        ];
        let threads = vec![ThreadCount {
            pid: 4_500_001,
            comm: "big".into(),
            library: "libopenblas".into(),
            live: 48,
        }];
        let mut known = PerProcess::default();
        let rows = gather(
            &scan,
            &threads,
            &[failures(4_500_003, 9)],
            &procs,
            2,
            "t",
            &mut known,
        );
        let pids: Vec<u32> = rows.iter().map(|r| r.pid).collect();
        assert_eq!(
            pids,
            vec![4_500_003, 4_500_001, 4_500_002],
            "the failing one, then the 2 busiest, most threads first"
        );
        assert_eq!(rows[1].user_tasks, Some(3 + 50 + 1), "uid 7's threads");
        assert_eq!(rows[2].user_tasks, Some(40));
        assert_eq!(rows[1].libraries, vec![("libopenblas".to_string(), 48)]);
        assert_eq!(rows[0].failures, 9);
        // Gone processes: nothing readable, nothing invented.
        assert_eq!((rows[1].nproc_soft, rows[1].cpus.clone()), (None, None));
        let mine = gather(&scan, &[], &[], &procs, 10, "t", &mut known);
        let mine = mine.iter().find(|r| r.pid == me).unwrap();
        assert!(mine.nproc_soft.is_some() && mine.cpus.is_some());
        assert_eq!(known.read.len(), 4, "the processes shown, no more");
        // Kept: a value planted in the cache is what the next pass shows,
        // until the limit is said to have changed.
        known.read.insert(me, (Instant::now(), Some(7), Some(1)));
        let again = gather(&scan, &[], &[], &procs, 10, "t", &mut known);
        assert_eq!(
            again.iter().find(|r| r.pid == me).unwrap().nproc_soft,
            Some(7)
        );
        known.forget(me);
        let fresh = gather(&scan, &[], &[], &procs, 10, "t", &mut known);
        assert_eq!(
            fresh.iter().find(|r| r.pid == me).unwrap().nproc_soft,
            mine.nproc_soft
        );
    }

    #[test]
    fn pids_cgroup_use_is_read_from_its_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pids.current"), "4\n").unwrap();
        std::fs::write(d.path().join("pids.max"), "max\n").unwrap();
        let p = pids_use(d.path().to_str().unwrap()).unwrap();
        assert_eq!((p.current, p.max), (4, None));
        std::fs::write(d.path().join("pids.max"), "4\n").unwrap();
        assert_eq!(pids_use(d.path().to_str().unwrap()).unwrap().max, Some(4));
    }
}
