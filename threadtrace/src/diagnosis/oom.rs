//! What an OOM kill did: the memory cgroup that ran out, who held the
//! memory, and whether the victim was a pool worker whose parent now waits
//! for a result that will never come (seeds/002, seeds/004).
use crate::{
    model::{MemHolder, OomKill, Pool},
    proctable::{Proc, ProcTable},
    words::growth::{grew, verdict, GrowthVerdict},
};

/// Scopes up to this size are all read at a kill; larger ones (a global
/// OOM on a busy host) only their likeliest largest, by the samples.
const READ_ALL: usize = 64;

/// The largest resident processes among `procs`, read now (`read`: their
/// resident memory, None once exited, and then `sampled`, the last sampled
/// size, stands). In a large scope, `sampled` picks the READ_ALL
/// likeliest: a kill on a host of thousands of processes reads tens of
/// files, not thousands.
pub fn top_holders(
    procs: &[&Proc],
    n: usize,
    sampled: impl Fn(&Proc) -> Option<u64>,
    mut read: impl FnMut(u32) -> Option<u64>,
) -> Vec<MemHolder> {
    let mut order: Vec<(u64, &Proc)> = procs
        .iter()
        .map(|p| {
            let size = if procs.len() > READ_ALL {
                sampled(p).unwrap_or(u64::MAX)
            } else {
                0
            };
            (size, *p)
        })
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.pid.cmp(&b.1.pid)));
    let mut v: Vec<MemHolder> = order
        .into_iter()
        .take(READ_ALL)
        .filter_map(|(_, p)| {
            Some(MemHolder {
                pid: p.pid,
                comm: p.comm.clone(),
                // Exited since the kill: its last sample stands.
                rss_bytes: read(p.pid).or_else(|| sampled(p))?,
            })
        })
        .collect();
    v.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    v.truncate(n);
    v
}

/// The victim's size among the holders is the kernel's at the kill: read
/// later, its memory may already be freed by the OOM reaper.
pub fn victim_as_killed(k: &mut OomKill) {
    let Some(rss) = k.victim.rss_bytes else {
        return;
    };
    let n = k.top_holders.len().max(1);
    k.top_holders.retain(|h| h.pid != k.victim.pid);
    k.top_holders.push(MemHolder {
        pid: k.victim.pid,
        comm: k.victim.comm.clone(),
        rss_bytes: rss,
    });
    k.top_holders
        .sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    k.top_holders.truncate(n);
}

fn is_python(p: &Proc) -> bool {
    p.exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .is_some_and(|n| n.starts_with("python"))
        || p.comm.starts_with("python")
}

/// The victim as a pool worker: its parent is alive and has other live
/// children running the same program. `dies_with`: the processes killed
/// with the victim (memory.oom.group): a parent among them waits for
/// nothing, and workers among them are not still alive.
pub fn pool_of(procs: &ProcTable, victim: u32, dies_with: impl Fn(&Proc) -> bool) -> Option<Pool> {
    let v = procs.get(victim)?;
    let parent = procs.get(v.ppid).filter(|p| {
        p.alive && !dies_with(p) && std::path::Path::new(&format!("/proc/{}", p.pid)).exists()
    })?;
    let same = |p: &Proc| p.exe == v.exe && p.cmdline == v.cmdline;
    let (siblings, dying) = procs
        .alive_procs()
        .filter(|p| p.ppid == parent.pid && p.pid != victim && same(p))
        .fold((0u32, 0u32), |(n, d), p| (n + 1, d + dies_with(p) as u32));
    if siblings == 0 {
        return None;
    }
    let siblings = siblings - dying;
    let mp = |c: &Option<std::sync::Arc<str>>| {
        c.as_deref().is_some_and(|c| c.contains("multiprocessing"))
    };
    // fork workers are copies of the parent; spawn/forkserver ones say so.
    let kind =
        if is_python(v) && (mp(&v.cmdline) || (v.cmdline == parent.cmdline && is_python(parent))) {
            "python-multiprocessing"
        } else {
            "generic"
        };
    Some(Pool {
        parent_pid: parent.pid,
        parent_comm: parent.comm.clone(),
        parent_cmdline: parent.cmdline.as_deref().map(String::from),
        siblings_alive: siblings,
        kind: kind.into(),
    })
}

/// Signals that end a worker against its will: a crash or SIGKILL.
pub fn is_violent(signal: &str) -> bool {
    matches!(
        signal,
        "SIGKILL" | "SIGSEGV" | "SIGBUS" | "SIGABRT" | "SIGILL" | "SIGFPE"
    )
}

/// What the kill did to the pool, in one sentence.
pub fn consequence(pool: &Pool) -> String {
    match pool.kind.as_str() {
        "python-multiprocessing" => format!(
            "{}[{}] is a multiprocessing pool: it is not told that the task died with its worker; \
             map/map_async/join on it will wait forever",
            pool.parent_comm, pool.parent_pid
        ),
        _ => format!(
            "{}[{}] lost a worker ({} still alive): if it waits for that worker's result, it waits forever",
            pool.parent_comm, pool.parent_pid, pool.siblings_alive
        ),
    }
}

/// What to do: aimed at the process that grew when it is not the victim,
/// else at the largest holder; then at the pool left waiting.
pub fn remedy(k: &OomKill) -> String {
    let mib = |b: u64| b >> 20;
    let v = &k.victim;
    let ran_out = match &k.memory_cgroup {
        Some(c) => format!(
            "the memory limit of {} ({} MiB) was reached",
            c.path,
            mib(c.limit_bytes)
        ),
        None => "the host ran out of memory".into(),
    };
    let mut r = match (verdict(k), &k.memory_cgroup, k.top_holders.first()) {
        (GrowthVerdict::NotTheGrower(o), _, _) => format!(
            "{ran_out}; {}[{}] {} while {}[{}] (killed) did not: cut {}[{}]'s memory or find its leak (it is still running); \
             to have the OOM killer take it rather than {}[{}], `choom -n 500 -p {}` (or lower {}'s oom_score_adj when it restarts: OOMScoreAdjust= in a systemd unit){}",
            o.comm, o.pid, grew(o), v.comm, v.pid, o.comm, o.pid, v.comm, v.pid, o.pid, v.comm,
            if k.memory_cgroup.is_some() { "; raise the limit if both need that memory" } else { "" }
        ),
        (GrowthVerdict::Grower(g), cg, _) => format!(
            "{ran_out}; {}[{}] grew the most ({}) and was killed: cut its memory or find its leak{}",
            v.comm,
            v.pid,
            grew(g).trim_start_matches("grew "),
            if cg.is_some() { ", or raise the limit" } else { "" }
        ),
        (GrowthVerdict::Unknown | GrowthVerdict::NoGrowth(_), Some(_), Some(t)) => format!(
            "{ran_out}; the largest holder is {}[{}] with {} MiB: raise the limit or cut that process's memory",
            t.comm, t.pid, mib(t.rss_bytes)
        ),
        (GrowthVerdict::Unknown | GrowthVerdict::NoGrowth(_), Some(_), None) => format!("{ran_out}: raise it or use less"),
        (GrowthVerdict::Unknown | GrowthVerdict::NoGrowth(_), None, Some(t)) => format!(
            "{ran_out}; the largest holder is {}[{}] with {} MiB",
            t.comm, t.pid, mib(t.rss_bytes)
        ),
        (GrowthVerdict::Unknown | GrowthVerdict::NoGrowth(_), None, None) => ran_out,
    };
    if let Some(g) = k.group_kill.as_ref().filter(|g| !g.killed_with_group()) {
        r.push_str(&format!(
            "; memory.oom.group of {} is 1, so every other process in it was killed with {}[{}]: \
             `echo 0 > {}` to lose only the process the OOM killer chooses, if the others can run without it",
            g.cgroup,
            v.comm,
            v.pid,
            crate::sanitize::shell(&format!("{}/memory.oom.group", g.cgroup))
        ));
    }
    if let Some(p) = &k.pool {
        r.push_str(&format!(
            "; restart {}[{}] (its pool will not recover the lost task){}",
            p.parent_comm,
            p.parent_pid,
            if p.kind == "python-multiprocessing" {
                ", and use concurrent.futures.ProcessPoolExecutor, which raises BrokenProcessPool instead of hanging"
            } else {
                ""
            }
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_(pid: u32, ppid: u32, comm: &str, cmd: &str) -> Proc {
        Proc {
            pid,
            ppid,
            comm: comm.into(),
            exe: Some("/usr/bin/python3.11".into()),
            cmdline: Some(cmd.into()),
            alive: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_forked_multiprocessing_worker_is_recognized() {
        let mut t = ProcTable::default();
        // The parent is this test process, so that it is really alive.
        let me = std::process::id();
        t.insert(proc_(me, 1, "python3", "python3 consumer.py"));
        t.insert(proc_(4_300_001, me, "python3", "python3 consumer.py"));
        t.insert(proc_(4_300_002, me, "python3", "python3 consumer.py"));
        t.insert(proc_(4_300_003, me, "python3", "python3 consumer.py"));
        let p = pool_of(&t, 4_300_001, |_| false).unwrap();
        assert_eq!(
            (p.parent_pid, p.siblings_alive, p.kind.as_str()),
            (me, 2, "python-multiprocessing")
        );
        assert!(consequence(&p).contains("wait forever"));
        let mut k = crate::model::fixtures::kill(4_300_001, "python3");
        k.pool = Some(p);
        let r = remedy(&k);
        assert!(
            r.contains("ProcessPoolExecutor") && r.contains(&format!("restart python3[{me}]")),
            "{r}"
        );
    }

    #[test]
    fn a_large_scope_reads_only_its_likeliest_largest() {
        let procs: Vec<Proc> = (0..1000)
            .map(|i| proc_(4_400_000 + i, 1, "x", "x"))
            .collect();
        let refs: Vec<&Proc> = procs.iter().collect();
        let size = |pid: u32| u64::from(pid - 4_400_000) << 20;
        // Sampled: the 64 largest by their samples are read, and the
        // largest of those come first.
        let mut read = Vec::new();
        let h = top_holders(
            &refs,
            3,
            |p| Some(size(p.pid)),
            |pid| {
                read.push(pid);
                Some(size(pid))
            },
        );
        assert_eq!(read.len(), READ_ALL);
        assert_eq!(
            h.iter().map(|h| h.pid).collect::<Vec<_>>(),
            [4_400_999, 4_400_998, 4_400_997]
        );
        // A small scope is read whole, samples or not.
        let mut n = 0;
        top_holders(
            &refs[..10],
            3,
            |_| None,
            |_| {
                n += 1;
                Some(1)
            },
        );
        assert_eq!(n, 10);
    }

    /// memory.oom.group killed the workers with the victim: none is
    /// still alive; and a parent killed with them waits for nothing.
    #[test]
    fn workers_killed_with_the_group_are_not_alive_and_a_parent_killed_too_waits_for_nothing() {
        let mut t = ProcTable::default();
        let me = std::process::id();
        t.insert(proc_(me, 1, "python3", "python3 consumer.py"));
        for pid in [4_300_021, 4_300_022, 4_300_023] {
            t.insert(proc_(pid, me, "python3", "python3 consumer.py"));
        }
        let p = pool_of(&t, 4_300_021, |p| p.pid == 4_300_022).unwrap();
        assert_eq!(p.siblings_alive, 1);
        let p = pool_of(&t, 4_300_021, |p| p.pid != me).unwrap();
        assert_eq!(p.siblings_alive, 0);
        assert!(pool_of(&t, 4_300_021, |_| true).is_none());
    }

    #[test]
    fn the_remedy_of_a_group_kill_says_memory_oom_group() {
        let mut k = crate::model::fixtures::kill(692, "python3");
        k.group_kill = Some(crate::model::GroupKill {
            cgroup: "/sys/fs/cgroup/app".into(),
            chosen: 692,
            chosen_comm: "python3".into(),
            role: "chosen".into(),
        });
        let r = remedy(&k);
        assert!(
            r.ends_with("; memory.oom.group of /sys/fs/cgroup/app is 1, so every other process in it was killed with python3[692]: \
                 `echo 0 > /sys/fs/cgroup/app/memory.oom.group` to lose only the process the OOM killer chooses, if the others can run without it"),
            "{r}"
        );
    }

    #[test]
    fn an_only_child_is_not_a_pool() {
        let mut t = ProcTable::default();
        let me = std::process::id();
        t.insert(proc_(me, 1, "bash", "bash"));
        t.insert(proc_(4_300_010, me, "hog", "./hog 1024"));
        assert!(pool_of(&t, 4_300_010, |_| false).is_none());
    }
}
