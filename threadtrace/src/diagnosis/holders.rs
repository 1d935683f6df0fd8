//! Where a failing process's limit came from, and who holds the threads
//! that count against it.
use super::{evidence::proc_limit, Ancestor, Holder, LimitSet};
use crate::{clock, events::session::ThreadCount, proctable};

/// The oldest living ancestor of `pid` with the same soft RLIMIT_NPROC,
/// through an unbroken chain of ancestors that all have it.
pub fn inherited_from(procs: &mut proctable::ProcTable, pid: u32, limit: u64) -> Option<Ancestor> {
    let mut cur = procs.lookup(pid)?.ppid;
    let mut best = None;
    for _ in 0..64 {
        if cur <= 1 {
            break;
        }
        let Some(p) = procs.lookup(cur).filter(|p| p.alive).cloned() else {
            break;
        };
        let soft = proc_limit(cur, "Max processes").unwrap_or(u64::MAX);
        if soft != limit {
            break;
        }
        best = Some(Ancestor {
            pid: cur,
            comm: p.comm.clone(),
            started: p
                .start_ticks
                .and_then(proctable::started_at)
                .map(clock::rfc3339),
        });
        cur = p.ppid;
    }
    best
}

/// The change seen during the recording that set `limit` on `pid` or one
/// of its ancestors.
pub fn set_by<'a>(
    procs: &proctable::ProcTable,
    sets: impl Fn(u32) -> Option<&'a LimitSet>,
    pid: u32,
    limit: u64,
) -> Option<LimitSet> {
    let mut cur = pid;
    for _ in 0..64 {
        if let Some(s) = sets(cur).filter(|s| s.soft == limit) {
            return Some(s.clone());
        }
        cur = procs.get(cur)?.ppid;
        if cur <= 1 {
            return None;
        }
    }
    None
}

/// The processes with the most threads among `pids`, with the libraries
/// that created their live threads.
pub fn top(
    pids: impl Iterator<Item = (u32, String)>,
    threads: &[ThreadCount],
    n: usize,
) -> Vec<Holder> {
    let mut out: Vec<Holder> = pids
        .filter_map(|(pid, comm)| {
            let t = proctable::num_threads(pid)? as u64;
            let mut libs: Vec<&ThreadCount> = threads.iter().filter(|r| r.pid == pid).collect();
            libs.sort_by_key(|r| std::cmp::Reverse(r.live));
            Some(Holder {
                pid,
                comm,
                threads: t,
                libraries: libs.iter().map(|r| r.library.clone()).collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.threads.cmp(&a.threads).then(a.pid.cmp(&b.pid)));
    out.truncate(n);
    out
}
