//! Where a failing process's limit came from, and who holds the threads
//! that count against it.
use super::evidence::proc_limit;
use crate::{
    clock,
    model::{Ancestor, Holder, LimitSet, ThreadGroup},
    proctable,
};

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

/// A process's threads: per creating library, and in groups (a name
/// pattern, a library, Go's Ms), each with its count.
pub struct Census {
    pub libraries: Vec<(String, i64)>,
    pub groups: Vec<(String, i64)>,
}

/// The processes with the most threads among `pids`, with the libraries
/// that created their threads and their groups (`census(pid, threads)`,
/// asked only of the `n` kept: reading them costs a walk of the process's
/// memory).
pub fn top(
    pids: impl Iterator<Item = (u32, String)>,
    n: usize,
    mut census: impl FnMut(u32, i64) -> Census,
) -> Vec<Holder> {
    let mut out: Vec<(u32, String, i64)> = pids
        .filter_map(|(pid, comm)| Some((pid, comm, proctable::num_threads(pid)?)))
        .collect();
    out.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    out.truncate(n);
    out.into_iter()
        .map(|(pid, comm, threads)| {
            let Census {
                mut libraries,
                groups,
            } = census(pid, threads);
            libraries.retain(|(_, n)| *n > 0);
            libraries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            Holder {
                pid,
                comm,
                threads: threads as u64,
                libraries: libraries.into_iter().map(|(l, _)| l).collect(),
                groups: groups
                    .into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(name, n)| ThreadGroup {
                        name,
                        threads: n as u64,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The failing process among the holders with the threads the kernel
/// counted at its failure, when it is gone before it could be looked at (a
/// process that dies of its failure usually is).
pub fn add_gone(holders: &mut Vec<Holder>, pid: u32, comm: &str, threads_at_failure: u32) {
    if threads_at_failure == 0 || holders.iter().any(|h| h.pid == pid) {
        return;
    }
    holders.push(Holder {
        pid,
        comm: comm.to_string(),
        threads: threads_at_failure.into(),
        libraries: Vec::new(),
        groups: Vec::new(),
    });
    holders.sort_by(|a, b| b.threads.cmp(&a.threads).then(a.pid.cmp(&b.pid)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_gone_before_it_was_counted_holds_what_the_kernel_counted() {
        let mut held = vec![Holder {
            pid: 10,
            comm: "java".into(),
            threads: 3,
            libraries: vec![],
            groups: vec![],
        }];
        add_gone(&mut held, 20, "musl_app", 4);
        assert_eq!((held[0].pid, held[0].threads), (20, 4), "largest first");
        // Listed already, or no count: nothing added.
        add_gone(&mut held, 10, "java", 9);
        add_gone(&mut held, 30, "x", 0);
        assert_eq!(held.len(), 2);
    }
}
