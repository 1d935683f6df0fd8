//! Thread creation failing for real, three ways: RLIMIT_NPROC, a pids
//! cgroup, and a thread stack that cannot be mapped.
use threadtrace_e2e::*;

/// libgomp (`gcc -fopenmp`) as nobody under `ulimit -u 4`: its pool cannot
/// grow, it prints "libgomp: Thread creation failed" and exits. Exactly one
/// event for that one failed pthread_create, with the clone3 folded in.
#[test]
fn openmp_under_rlimit_nproc() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!(
        "echo pid=$$; ulimit -u 4; OMP_NUM_THREADS=16 exec {}",
        omp.display()
    ));
    let rec = t.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("libgomp: Thread creation failed"),
        "workload did not fail as expected: {stderr}"
    );
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();

    let fails = rec.of_pid("thread_create_failed", pid);
    assert_eq!(
        fails.len(),
        1,
        "exactly one event per failed pthread_create: {fails:#?}"
    );
    let f = fails[0];
    assert_eq!(f["api"], "pthread_create");
    assert_eq!(f["errno"], 11);
    assert_eq!(f["error"], "EAGAIN");
    assert_eq!(f["syscall"], "clone3");
    assert_eq!(f["uid"], 65534);
    assert_eq!(f["comm"], "omp_threads");
    assert!(f["time"].as_str().unwrap().ends_with('Z'));
    assert!(f["tid"].as_u64().unwrap() > 0);
    assert!(
        f["caller"].as_u64().unwrap() > 0,
        "return address into libgomp"
    );
    assert!(f["cgroup"].is_string());
    assert_eq!(rec.counted(pid, "pthread_create"), 1);
    assert_eq!(
        rec.counted(pid, "clone3"),
        0,
        "the clone3 failure is not counted twice"
    );

    // The limit that made it fail was set by bash's `ulimit -u 4`.
    let changes = rec.of_pid("rlimit_change", pid);
    let nproc = changes
        .iter()
        .find(|c| c["resource"] == "RLIMIT_NPROC")
        .expect("ulimit -u seen");
    assert_eq!(nproc["new"]["soft"], 4);
    assert_eq!(nproc["result"], 0);
}

/// A program that asks for 64 threads under `ulimit -u 8` and counts its
/// own failures: the summary's exact count must equal that count.
#[test]
fn summary_counts_equal_what_the_workload_saw() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!("ulimit -u 8; exec {} 64", burst.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid")
        .expect("thread_burst output")
        .parse()
        .unwrap();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    assert!(
        failed > 0,
        "the workload must have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(rec.counted(pid, "pthread_create"), failed);
    assert_eq!(rec.of_pid("thread_create_failed", pid).len() as u64, failed);
    assert_eq!(rec.summary()["events_lost"], 0);
}

/// pids.max = 4 in a pids cgroup: EAGAIN from clone3 even for root, and the
/// event names the cgroup.
#[test]
fn pids_cgroup_limit() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let cg = Cgroup::new("pids", "pids");
    cg.set_pids_max(4);
    let t = Tracer::start(&[]);
    let out = cg.exec("OMP_NUM_THREADS=16", &omp.display().to_string());
    let rec = t.stop();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Thread creation failed"));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let fails = rec.of_pid("thread_create_failed", pid);
    assert_eq!(fails.len(), 1, "{fails:#?}");
    assert_eq!(fails[0]["syscall"], "clone3");
    assert_eq!(fails[0]["errno"], 11);
    assert_eq!(fails[0]["uid"], 0);
    assert_eq!(fails[0]["cgroup"], cg.path.display().to_string());
    assert!(
        cg.pids_max_events().is_some_and(|n| n >= 1),
        "pids.events: {}",
        cg.read("pids.events")
    );
}

/// `ulimit -v` too low for 64 thread stacks: pthread_create fails with
/// EAGAIN before any clone, in the mmap of the thread's stack. Still one
/// pthread_create event per failure, with that syscall.
#[test]
fn thread_stack_cannot_be_mapped() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let out = bash(&format!("ulimit -v 300000; exec {} 64", burst.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid")
        .expect("thread_burst output")
        .parse()
        .unwrap();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    assert!(failed > 0);
    let fails = rec.of_pid("thread_create_failed", pid);
    assert_eq!(fails.len() as u64, failed);
    for f in &fails {
        assert_eq!(f["api"], "pthread_create");
        assert_eq!(f["errno"], 11);
        assert_eq!(f["syscall"], "mmap", "no clone was attempted: {f}");
        assert_eq!(f["syscall_errno"], 12);
        assert_eq!(f["library"], "thread_burst", "{f}");
        assert_eq!(f["cause"]["kind"], "stack_alloc", "{f}");
    }
    assert_eq!(rec.counted(pid, "pthread_create"), failed);
    for api in ["clone", "clone3"] {
        assert_eq!(rec.counted(pid, api), 0);
    }
}

/// A thread stack that could not be mapped is counted by its call site,
/// decided inside pthread_create when the failure is attributed. Before,
/// the site was looked up again in the process's mappings at each count,
/// and once they were forgotten (10 s after the process exited) its
/// failures left the exact counts.
#[test]
fn a_stack_failure_stays_counted_after_its_process_is_forgotten() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let out = bash(&format!("ulimit -v 300000; exec {} 64", burst.display()));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    assert!(failed > 0);
    std::thread::sleep(std::time::Duration::from_secs(13));
    let rec = t.stop();
    assert_eq!(rec.counted(pid, "pthread_create"), failed);
}

/// A process that moves itself into a pids cgroup and fails within
/// milliseconds may be gone before /proc can say where it was: moves are
/// learned from the kernel (cgroup:cgroup_attach_task), in order with the
/// failures.
#[test]
fn moves_into_cgroups_are_learned_from_the_kernel() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let cg = Cgroup::new("pids", "moved");
    cg.set_pids_max(4);
    let t = Tracer::start(&["--lifecycle"]);
    let mut pids = Vec::new();
    for _ in 0..3 {
        let out = bash(&format!(
            "echo $$ > {}/cgroup.procs; echo pid=$$; exec env OMP_NUM_THREADS=16 {}",
            cg.path.display(),
            omp.display()
        ));
        pids.push(field(&out, "pid").unwrap().parse::<u32>().unwrap());
    }
    let rec = t.stop();
    // Relative to the hierarchy's root; on cgroup v2 the one hierarchy
    // has no controllers in /proc/PID/cgroup, and threadtrace names it "".
    let rel = cg.relative();
    for pid in pids {
        let moves: Vec<_> = rec
            .kind("process_cgroup")
            .filter(|m| m["moved_pid"] == pid)
            .collect();
        assert_eq!(moves.len(), 1, "{moves:#?}");
        assert_eq!(moves[0]["hierarchy"], cgroup_hierarchy_name("pids"));
        assert_eq!(moves[0]["path"], rel);
        assert_eq!(rec.of_pid("thread_create_failed", pid).len(), 1);
    }
}
