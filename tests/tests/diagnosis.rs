//! Why thread creation failed: the limit, from evidence, where it came
//! from, who holds the threads, and what to do. Incidents reproduced for
//! real (docs/incidents.md).
use threadtrace_e2e::*;

fn cause_of(rec: &Records, pid: u32) -> serde_json::Value {
    let fails = rec.of_pid("thread_create_failed", pid);
    assert!(!fails.is_empty(), "no failure for pid {pid}");
    fails[0]["cause"].clone()
}

/// Incident 1: a long-lived parent (the supervisor) holds a low
/// RLIMIT_NPROC that its workers inherit; an OpenMP worker fails.
#[test]
fn rlimit_nproc_inherited_from_a_long_lived_parent() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let t = Tracer::start(&[]);
    let out = as_nobody(&format!(
        "ulimit -u 6; echo sup=$$; sleep 0.2; OMP_NUM_THREADS=16 {} & echo pid=$!; wait",
        omp.display()
    ));
    let rec = t.stop();
    let sup: u32 = field(&out, "sup").unwrap().parse().unwrap();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let c = cause_of(&rec, pid);
    assert_eq!(c["kind"], "rlimit_nproc", "{c:#}");
    assert_eq!(c["limit"], 6);
    assert_eq!(
        c["current"], 6,
        "the user's task count at the failure, from the kernel"
    );
    assert_eq!(c["inherited_from"]["pid"], sup, "{c:#}");
    assert_eq!(c["inherited_from"]["comm"], "bash");
    assert!(c["inherited_from"]["started"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        c["set_by"]["pid"], sup,
        "bash's `ulimit -u 6` was seen: {c:#}"
    );
    assert_eq!(c["set_by"]["soft"], 6);
    assert!(
        c["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["pid"] == sup),
        "{c:#}"
    );
    let remedy = c["remedy"].as_str().unwrap();
    assert!(remedy.starts_with("OMP_NUM_THREADS=1"), "{remedy}");
    assert!(
        remedy.contains(&format!("restart bash[{sup}], which still has nproc 6")),
        "{remedy}"
    );
}

/// A pids cgroup at pids.max: the cgroup, its limit, the remedy.
#[test]
fn cgroup_pids_limit() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let cg = Cgroup::new("pids", "diag");
    cg.set_pids_max(4);
    let t = Tracer::start(&[]);
    let out = cg.exec("OMP_NUM_THREADS=16", &omp.display().to_string());
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let c = cause_of(&rec, pid);
    assert_eq!(c["kind"], "cgroup_pids", "{c:#}");
    assert_eq!(c["cgroup"], cg.path.display().to_string());
    assert_eq!(c["limit"], 4);
    let remedy = c["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!("raise pids.max of {}", cg.path.display())),
        "{remedy}"
    );
    assert!(remedy.contains("OMP_NUM_THREADS=1"), "{remedy}");
}

/// Thread stacks that cannot be mapped under `ulimit -v`: no clone was
/// tried, and the address-space limit is named.
#[test]
fn stack_alloc_under_rlimit_as() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let out = bash(&format!("ulimit -v 300000; exec {} 64", burst.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let c = cause_of(&rec, pid);
    assert_eq!(c["kind"], "stack_alloc", "{c:#}");
    assert_eq!(c["limit"], 300000u64 * 1024);
    assert!(c["detail"].as_str().unwrap().contains("RLIMIT_AS"), "{c:#}");
    assert!(
        c["remedy"]
            .as_str()
            .unwrap()
            .contains("raise RLIMIT_AS (ulimit -v, now 292 MiB)"),
        "{c:#}"
    );
}

/// A storm: thousands of failures in a second are summarized, not printed
/// one by one, and its end carries the exact count.
#[test]
fn a_storm_is_summarized_with_an_exact_count() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&["--storm-threshold", "20"]);
    let out = as_nobody(&format!("ulimit -u 4; exec {} 3000", burst.display()));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    assert!(failed > 1000);
    assert_eq!(rec.counted(pid, "pthread_create"), failed);
    let printed = rec.of_pid("thread_create_failed", pid).len();
    assert_eq!(printed, 20, "failures up to the one that started the storm");
    let storms: Vec<_> = rec.kind("storm").filter(|s| s["uid"] == 65534).collect();
    assert_eq!(storms.first().unwrap()["state"], "start", "{storms:#?}");
    assert_eq!(storms.first().unwrap()["scope"], "uid 65534");
    let end = storms
        .iter()
        .find(|s| s["state"] == "end")
        .expect("the storm ended");
    assert_eq!(end["failures"], failed, "{end:#}");
    assert!(end["peak_rate_per_s"].as_u64().unwrap() >= 20);
    assert_eq!(end["processes"][0]["pid"], pid);
    assert_eq!(end["libraries"][0], "thread_burst");
    assert_eq!(end["causes"][0], "rlimit_nproc");
}

/// Incident 2: an OpenMP team sized for more CPUs than the process's
/// cgroup quota allows.
#[test]
fn oversubscription_against_a_cpu_quota() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let cg = Cgroup::new("cpu", "oversub");
    cg.set_cpu_quota(100_000, 100_000);
    let t = Tracer::start(&[]);
    let out = cg.exec("OMP_NUM_THREADS=4", &format!("{} 3", omp.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert_eq!(field(&out, "threads").as_deref(), Some("4"));
    let o: Vec<_> = rec
        .kind("oversubscribed")
        .filter(|o| o["pid"] == pid)
        .collect();
    assert_eq!(o.len(), 1, "{o:#?}");
    assert_eq!(o[0]["library"], "libgomp");
    assert_eq!(o[0]["threads"], 4);
    assert_eq!(o[0]["cpus_allowed"], 1);
    assert_eq!(o[0]["source"], Cgroup::cpu_quota_source());
    assert!(
        o[0]["remedy"]
            .as_str()
            .unwrap()
            .starts_with("set OMP_NUM_THREADS=1"),
        "{:#}",
        o[0]
    );
}
