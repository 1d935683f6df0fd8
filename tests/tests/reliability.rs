//! The tracer survives what is killing everything else, and stays right
//! while processes churn. (Also reliability, elsewhere: a new container
//! root with its own libc, libc_discovery.rs; Ctrl-C and SIGKILL mid-storm,
//! postmortem.rs; a user at its RLIMIT_NPROC, every thread_failures.rs
//! scenario.)
use std::time::Duration;

use threadtrace_e2e::*;

/// An OOM storm in a memory cgroup and a pids cgroup out of pids, at the
/// same time, neither of which holds the tracer: every kill is reported,
/// every failure counted, and the tracer still works afterwards.
#[test]
fn keeps_working_through_an_oom_storm_and_pids_exhaustion() {
    if !require_root() {
        return;
    }
    let hog = compile_c("hog", &[]);
    let burst = compile_c("thread_burst", &["-pthread"]);
    let mem = Cgroup::new("memory", "oomstorm");
    mem.set_memory_max(48 << 20);
    let pids = Cgroup::new("pids", "exhausted");
    pids.set_pids_max(8);
    let t = Tracer::start(&["--storm-threshold", "20"]);
    let tracer = t.pid();

    // Eight hogs in a row, each killed; meanwhile the pids cgroup stays
    // full and a program in it keeps failing.
    let kills = std::thread::spawn({
        let (hog, cg) = (hog.clone(), mem.path.clone());
        move || {
            bash(&format!(
                "echo $$ > {}/cgroup.procs; for i in $(seq 8); do {} 1024 >/dev/null; echo status=$?; done",
                cg.display(),
                hog.display()
            ))
        }
    });
    let mut failed = 0u64;
    let mut pids_of = Vec::new();
    for _ in 0..5 {
        let out = pids.exec("", &format!("{} 200", burst.display()));
        failed += field(&out, "failed").unwrap().parse::<u64>().unwrap();
        pids_of.push(field(&out, "pid").unwrap().parse::<u32>().unwrap());
    }
    let kills = kills.join().unwrap();
    let killed = String::from_utf8_lossy(&kills.stdout)
        .lines()
        .filter(|l| *l == "status=137")
        .count();
    assert_eq!(killed, 8, "every hog was OOM-killed");
    assert!(failed >= 5 * 190, "pids.max held: {failed} failures");
    assert!(
        std::path::Path::new(&format!("/proc/{tracer}")).exists(),
        "the tracer is alive"
    );

    // Still working: a failure after the storms is reported, attributed.
    let after = as_nobody(&format!("ulimit -u 4; exec {} 16", burst.display()));
    let after_pid: u32 = field(&after, "pid").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rec = t.stop();

    let oom = rec
        .kind("oom_kill")
        .filter(|k| k["victim"]["comm"] == "hog")
        .count();
    assert_eq!(oom, 8, "one oom_kill per kill");
    let counted: u64 = pids_of
        .iter()
        .map(|&p| rec.counted(p, "pthread_create"))
        .sum();
    assert_eq!(counted, failed, "exact counts through both storms");
    let last = rec.of_pid("thread_create_failed", after_pid);
    assert!(!last.is_empty(), "the failure after the storms is reported");
    assert_eq!(last[0]["library"], "thread_burst");
    assert_eq!(last[0]["cause"]["kind"], "rlimit_nproc");
}

/// Two processes on one CPU, each failing thread creations and forks in
/// turn: the kernel keeps the last failure's count per CPU and moves it to
/// its table when another comes, which here is at every call. Every
/// failure is counted, under the right process and api.
#[test]
fn failures_that_take_turns_on_one_cpu_are_counted_exactly() {
    if !require_root() {
        return;
    }
    let prog = compile_c("alternate", &["-pthread"]);
    let t = Tracer::start(&[]);
    let run = || {
        let prog = prog.clone();
        std::thread::spawn(move || {
            as_nobody(&format!(
                "ulimit -u 1; exec taskset -c 0 {} 20000",
                prog.display()
            ))
        })
    };
    let (a, b) = (run(), run());
    let outs = [a.join().unwrap(), b.join().unwrap()];
    let rec = t.stop();
    for out in outs {
        let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
        let threads: u64 = field(&out, "thread_failed").unwrap().parse().unwrap();
        let forks: u64 = field(&out, "fork_failed").unwrap().parse().unwrap();
        assert!(threads > 10_000 && forks > 10_000, "{out:?}");
        assert_eq!(rec.counted(pid, "pthread_create"), threads, "pid {pid}");
        assert_eq!(rec.counted(pid, "clone"), forks, "pid {pid}");
    }
}

/// 10,000 short-lived processes come and go while programs fail, and a
/// failing process's pid is reused by a different program that fails too:
/// each failure is attributed to the program that had the pid at the time.
#[test]
fn churn_and_pid_reuse_give_no_wrong_attribution() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let churn = std::thread::spawn(|| {
        bash("for i in $(seq 10000); do /bin/true & done; wait; echo done=1")
    });
    // A libgomp program fails, exits; its pid is handed to thread_burst.
    let first = as_nobody(&format!(
        "ulimit -u 4; echo pid=$$; OMP_NUM_THREADS=16 exec {}",
        omp.display()
    ));
    let pid: u32 = field(&first, "pid").unwrap().parse().unwrap();
    let churned = churn.join().unwrap();
    assert_eq!(field(&churned, "done").as_deref(), Some("1"));
    // runuser forks the command: the next pid is the one handed out.
    let second = bash(&format!(
        "echo {} > /proc/sys/kernel/ns_last_pid; exec runuser -u nobody -- bash -c 'ulimit -u 4; exec {} 16'",
        pid - 1,
        burst.display()
    ));
    let second_pid: u32 = field(&second, "pid").unwrap().parse().unwrap();
    let rec = t.stop();

    eprintln!("pid {pid} reused by thread_burst: {}", second_pid == pid);
    let failures = rec.of_pid("thread_create_failed", pid);
    assert!(!failures.is_empty());
    if second_pid == pid {
        // Reused: each failure names the program that was running.
        for f in &failures {
            let exe = f["exe"].as_str().unwrap_or_default();
            match f["library"].as_str() {
                Some("libgomp") => assert!(exe.ends_with("omp_threads"), "{f}"),
                Some("thread_burst") => assert!(exe.ends_with("thread_burst"), "{f}"),
                other => panic!("{other:?} for pid {pid}: {f}"),
            }
        }
        assert!(failures.iter().any(|f| f["library"] == "libgomp"));
        assert!(failures.iter().any(|f| f["library"] == "thread_burst"));
    } else {
        // Another process on the host took the pid first: both still right.
        assert!(failures.iter().all(|f| f["library"] == "libgomp"));
        let other = rec.of_pid("thread_create_failed", second_pid);
        assert!(!other.is_empty() && other.iter().all(|f| f["library"] == "thread_burst"));
    }
    let summary = rec.summary();
    assert_eq!(summary["decode_errors"], 0);
}
