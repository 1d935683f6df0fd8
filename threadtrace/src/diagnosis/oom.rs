//! What an OOM kill did: the memory cgroup that ran out, who held the
//! memory, and whether the victim was a pool worker whose parent now waits
//! for a result that will never come (seeds/002, seeds/004).
use serde::{Deserialize, Serialize};

use crate::proctable::{Proc, ProcTable};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemoryCgroup {
    pub path: String,
    pub limit_bytes: u64,
    pub usage_bytes: Option<u64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MemHolder {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Pool {
    pub parent_pid: u32,
    pub parent_comm: String,
    pub parent_cmdline: Option<String>,
    /// Other live children of the parent running the same program.
    pub siblings_alive: u32,
    /// "python-multiprocessing" when recognizable, else "generic".
    pub kind: String,
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

fn read_u64(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The memory cgroup whose limit applies: the victim's own or the nearest
/// ancestor with a finite limit; None when no limit applies (a global OOM).
pub fn memory_cgroup(victim_cgroup: &str) -> Option<MemoryCgroup> {
    let mut dir = std::path::Path::new(victim_cgroup);
    loop {
        let (limit, usage) = if dir.join("memory.limit_in_bytes").exists() {
            (
                read_u64(&dir.join("memory.limit_in_bytes")),
                read_u64(&dir.join("memory.usage_in_bytes")),
            )
        } else if dir.join("memory.max").exists() {
            (
                read_u64(&dir.join("memory.max")),
                read_u64(&dir.join("memory.current")),
            )
        } else {
            return None;
        };
        if let Some(l) = limit.filter(|&l| l < V1_UNLIMITED) {
            return Some(MemoryCgroup {
                path: dir.display().to_string(),
                limit_bytes: l,
                usage_bytes: usage,
            });
        }
        dir = dir.parent()?;
    }
}

/// Resident memory of a process now (/proc/PID/statm), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    Some(pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64)
}

/// The largest resident processes among `procs`.
pub fn top_holders<'a>(procs: impl Iterator<Item = &'a Proc>, n: usize) -> Vec<MemHolder> {
    let mut v: Vec<MemHolder> = procs
        .filter_map(|p| {
            Some(MemHolder {
                pid: p.pid,
                comm: p.comm.clone(),
                rss_bytes: rss_bytes(p.pid)?,
            })
        })
        .collect();
    v.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));
    v.truncate(n);
    v
}

fn is_python(p: &Proc) -> bool {
    p.exe
        .as_deref()
        .and_then(|e| e.rsplit('/').next())
        .is_some_and(|n| n.starts_with("python"))
        || p.comm.starts_with("python")
}

/// The victim as a pool worker: its parent is alive and has other live
/// children running the same program.
pub fn pool_of(procs: &ProcTable, victim: u32) -> Option<Pool> {
    let v = procs.get(victim)?;
    let parent = procs
        .get(v.ppid)
        .filter(|p| p.alive && std::path::Path::new(&format!("/proc/{}", p.pid)).exists())?;
    let same = |p: &Proc| p.exe == v.exe && p.cmdline == v.cmdline;
    let siblings = procs
        .alive_procs()
        .filter(|p| p.ppid == parent.pid && p.pid != victim && same(p))
        .count() as u32;
    if siblings == 0 {
        return None;
    }
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

pub fn remedy(cg: Option<&MemoryCgroup>, top: &[MemHolder], pool: Option<&Pool>) -> String {
    let mib = |b: u64| b >> 20;
    let mut r = match (cg, top.first()) {
        (Some(c), Some(t)) => format!(
            "the memory limit of {} ({} MiB) was reached; the largest holder is {}[{}] with {} MiB: raise the limit or cut that process's memory",
            c.path, mib(c.limit_bytes), t.comm, t.pid, mib(t.rss_bytes)
        ),
        (Some(c), None) => format!("the memory limit of {} ({} MiB) was reached: raise it or use less", c.path, mib(c.limit_bytes)),
        (None, Some(t)) => format!("the host ran out of memory; the largest holder is {}[{}] with {} MiB", t.comm, t.pid, mib(t.rss_bytes)),
        (None, None) => "the host ran out of memory".into(),
    };
    if let Some(p) = pool {
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
        let p = pool_of(&t, 4_300_001).unwrap();
        assert_eq!(
            (p.parent_pid, p.siblings_alive, p.kind.as_str()),
            (me, 2, "python-multiprocessing")
        );
        assert!(consequence(&p).contains("wait forever"));
        let r = remedy(None, &[], Some(&p));
        assert!(
            r.contains("ProcessPoolExecutor") && r.contains(&format!("restart python3[{me}]")),
            "{r}"
        );
    }

    #[test]
    fn an_only_child_is_not_a_pool() {
        let mut t = ProcTable::default();
        let me = std::process::id();
        t.insert(proc_(me, 1, "bash", "bash"));
        t.insert(proc_(4_300_010, me, "hog", "./hog 1024"));
        assert!(pool_of(&t, 4_300_010).is_none());
    }
}
