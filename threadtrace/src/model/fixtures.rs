//! Model values for the unit tests of every layer: one failure, one kill,
//! one storm, built the same way everywhere.
use super::*;

pub const MIB: u64 = 1 << 20;

pub fn task(pid: u32, comm: &str, uid: u32) -> Task {
    Task {
        time: "2026-11-22T03:00:00.123456Z".into(),
        pid,
        tid: pid,
        comm: comm.into(),
        uid,
    }
}

/// A libgomp-shaped pthread_create EAGAIN of `comm[pid]`, attributed to
/// `library`, with a `cause` of that kind.
pub fn failure(pid: u32, comm: &str, library: &str, cause: &str) -> ThreadCreateFailed {
    ThreadCreateFailed {
        task: task(pid, comm, 65534),
        api: "pthread_create".into(),
        creates: None,
        errno: 11,
        error: "EAGAIN".into(),
        library: Some(library.into()),
        module: Some(format!("/usr/lib/x86_64-linux-gnu/{library}.so.0")),
        symbol: Some("GOMP_parallel".into()),
        runtime: None,
        libc: None,
        reason: None,
        syscall: Some("clone3".into()),
        syscall_errno: Some(11),
        cgroup: Some("/sys/fs/cgroup/pids".into()),
        ppid: Some(1),
        exe: None,
        cmdline: None,
        caller: Some(0x7f00_0000_1234),
        start_routine: None,
        start_routine_addr: None,
        stack: vec![Frame {
            addr: 0x7f00_0000_1234,
            module: Some(format!("/usr/lib/x86_64-linux-gnu/{library}.so.0")),
            symbol: Some("GOMP_parallel".into()),
            offset: Some(0x131),
            file_offset: Some(0x1234),
            build_id: None,
            identified_by: Some("inode".into()),
        }],
        attribution_gap: None,
        cause: Some(Box::new(Cause {
            kind: cause.into(),
            limit: Some(6),
            current: Some(6),
            detail: "user 65534 had 6 tasks (threads count) at the failure, the soft RLIMIT_NPROC of the failing process is 6".into(),
            cgroup: None,
            inherited_from: None,
            set_by: None,
            holders: vec![],
            remedy: "OMP_NUM_THREADS=1; or raise RLIMIT_NPROC (now 6) for this user".into(),
        })),
        k8s: None,
    }
}

/// A kill of `comm[victim]` at 180 MiB in a 256 MiB cgroup, its own
/// allocation the trigger, nothing else known.
pub fn kill(victim: u32, comm: &str) -> OomKill {
    OomKill {
        task: Task {
            time: "2026-11-22T03:00:00.000000Z".into(),
            pid: victim,
            tid: victim,
            comm: comm.into(),
            uid: 1000,
        },
        victim: Victim {
            pid: victim,
            comm: comm.into(),
            cmdline: None,
            exe: None,
            uid: Some(1000),
            rss_bytes: Some(180 << 20),
            anon_rss_bytes: None,
            total_vm_bytes: None,
            oom_score_adj: Some(0),
            ppid: None,
            parent_comm: None,
            cgroup: Some("/sys/fs/cgroup/memory/app".into()),
        },
        trigger: Trigger {
            pid: victim,
            tid: victim,
            comm: comm.into(),
            uid: 1000,
        },
        memory_cgroup: Some(MemoryCgroup {
            path: "/sys/fs/cgroup/memory/app".into(),
            limit_bytes: 256 << 20,
            usage_bytes: None,
            grew_bytes: None,
            window_s: None,
        }),
        top_holders: Vec::new(),
        growers: Vec::new(),
        victim_growth: None,
        growth_unknown: 0,
        k8s: None,
        pool: None,
        consequence: None,
        remedy: String::new(),
        group_kill: None,
    }
}

/// A multiprocessing worker of 198 MiB killed in a 200 MiB cgroup; its
/// pool (parent `victim - 3`) left waiting when `pool`.
pub fn pool_kill(victim: u32, pool: bool) -> Record {
    Record::OomKill(OomKill {
        task: task(victim, "python3", 1000),
        victim: Victim {
            pid: victim,
            comm: "python3".into(),
            cmdline: Some("python3 consumer.py".into()),
            exe: None,
            uid: Some(1000),
            rss_bytes: Some(198 << 20),
            anon_rss_bytes: None,
            total_vm_bytes: None,
            oom_score_adj: Some(0),
            ppid: Some(victim - 3),
            parent_comm: Some("python3".into()),
            cgroup: Some("/sys/fs/cgroup/memory/consumer".into()),
        },
        trigger: Trigger {
            pid: victim,
            tid: victim,
            comm: "python3".into(),
            uid: 1000,
        },
        memory_cgroup: Some(MemoryCgroup {
            path: "/sys/fs/cgroup/memory/consumer".into(),
            limit_bytes: 200 << 20,
            usage_bytes: None,
            grew_bytes: None,
            window_s: None,
        }),
        top_holders: vec![],
        growers: vec![],
        victim_growth: None,
        growth_unknown: 0,
        pool: pool.then(|| Pool {
            parent_pid: victim - 3,
            parent_comm: "python3".into(),
            parent_cmdline: None,
            siblings_alive: 2,
            kind: "python-multiprocessing".into(),
        }),
        consequence: pool.then(|| {
            format!(
                "python3[{}] is a multiprocessing pool: map/map_async/join on it will wait forever",
                victim - 3
            )
        }),
        remedy: "raise the limit of /sys/fs/cgroup/memory/consumer".into(),
        group_kill: None,
        k8s: None,
    })
}

pub fn grower(pid: u32, comm: &str, rss: u64, grew: u64, window_s: f64) -> Grower {
    Grower {
        pid,
        comm: comm.into(),
        rss_bytes: rss,
        grew_bytes: grew,
        window_s,
        started_in_window: false,
        visible_s: None,
    }
}

pub fn holder(pid: u32, rss: u64) -> MemHolder {
    MemHolder {
        pid,
        comm: "python3".into(),
        rss_bytes: rss,
    }
}

/// Incident 5's shape: the largest process is killed, another grew.
pub fn not_the_grower() -> OomKill {
    let mut k = kill(100, "python3");
    k.top_holders = vec![holder(100, 180 * MIB), holder(200, 60 * MIB)];
    k.victim_growth = Some(Box::new(grower(100, "python3", 180 * MIB, 0, 60.0)));
    k.growers = vec![grower(200, "python3", 60 * MIB, 150 * MIB, 60.0)];
    k
}

pub fn storm(state: &str, library: &str) -> Storm {
    Storm {
        time: "2026-11-22T03:00:01.000000Z".into(),
        state: state.into(),
        scope: "uid 65534".into(),
        uid: 65534,
        started: "2026-11-22T03:00:00.000000Z".into(),
        duration_s: 1.0,
        failures: 5000,
        events: 900,
        events_in_file: 2,
        peak_rate_per_s: 4800,
        processes: vec![StormProcess {
            pid: 4242,
            comm: "omp".into(),
        }],
        libraries: vec![library.into()],
        causes: vec!["rlimit_nproc".into()],
        remedy: "OMP_NUM_THREADS=1".into(),
        creates: vec![],
    }
}

/// A summary row of `count` pthread_create EAGAIN failures.
pub fn eagain(pid: u32, count: u64) -> ProcessFailures {
    ProcessFailures {
        pid,
        comm: "x".into(),
        api: "pthread_create".into(),
        errno: 11,
        error: "EAGAIN".into(),
        count,
    }
}
