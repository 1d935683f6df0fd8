//! A process allocating past its memory cgroup's limit is OOM-killed.
use threadtrace_e2e::*;

#[test]
fn oom_kill_in_a_memory_cgroup() {
    if !require_root() {
        return;
    }
    let hog = compile_c("hog", &[]);
    let cg = Cgroup::new("memory", "oom");
    cg.set("memory.limit_in_bytes", &(64u64 << 20).to_string());
    let t = Tracer::start(&["--lifecycle"]);
    // bash stays alive as the parent while its child is killed.
    let out = bash(&format!(
        "echo $$ > {}/cgroup.procs; echo parent=$$; {} 1024; echo status=$?",
        cg.path.display(),
        hog.display()
    ));
    let rec = t.stop();
    let parent: u32 = field(&out, "parent").unwrap().parse().unwrap();
    let victim: u32 = field(&out, "pid")
        .expect("hog printed its pid")
        .parse()
        .unwrap();
    assert_eq!(
        field(&out, "status").as_deref(),
        Some("137"),
        "hog was SIGKILLed"
    );

    let kills: Vec<_> = rec
        .kind("oom_kill")
        .filter(|k| k["victim"]["pid"] == victim)
        .collect();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    let k = kills[0];
    assert_eq!(k["pid"], victim);
    assert_eq!(k["victim"]["comm"], "hog");
    assert_eq!(k["victim"]["ppid"], parent);
    assert_eq!(k["victim"]["parent_comm"], "bash");
    assert_eq!(k["victim"]["cgroup"], cg.path.display().to_string());
    assert!(k["victim"]["cmdline"]
        .as_str()
        .unwrap()
        .ends_with("hog 1024"));
    let rss = k["victim"]["rss_bytes"].as_u64().unwrap();
    assert!(
        rss > 32 << 20 && rss <= 80 << 20,
        "rss {rss} near the 64 MiB limit"
    );
    // It was its own allocation that pushed the cgroup over.
    assert_eq!(k["trigger"]["pid"], victim);

    let exits = rec.of_pid("process_exit", victim);
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0]["signal"], "SIGKILL");
}

/// Runs `cmd` in `cg` with a time limit; its output goes through a file,
/// so that workers it leaves behind cannot hold the test's pipe open.
fn run_in_cgroup(cg: &Cgroup, cmd: &str) -> std::process::Output {
    let out = scratch().join(format!(
        "out-{}",
        cg.path.file_name().unwrap().to_string_lossy()
    ));
    bash(&format!(
        "echo $$ > {}/cgroup.procs; timeout -s KILL 60 {cmd} > {} 2>&1; cat {}",
        cg.path.display(),
        out.display(),
        out.display()
    ))
}

/// Incident 3 (docs/incidents.md): a multiprocessing.Pool worker is OOM-killed in its memory
/// cgroup while the parent waits in map_async, forever.
#[test]
fn oom_killed_pool_worker_leaves_its_parent_waiting() {
    if !require_root() {
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/pool_oom.py");
    let cg = Cgroup::new("memory", "pool");
    cg.set("memory.limit_in_bytes", &(200u64 << 20).to_string());
    let t = Tracer::start(&[]);
    let out = run_in_cgroup(&cg, &format!("/usr/bin/python3 {}", script.display()));
    let rec = t.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hung"),
        "map_async must not complete: {stdout}"
    );
    let parent: u32 = field(&out, "parent").unwrap().parse().unwrap();
    let kills: Vec<_> = rec
        .kind("oom_kill")
        .filter(|k| k["victim"]["ppid"] == parent)
        .collect();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    let k = kills[0];
    assert_eq!(k["memory_cgroup"]["path"], cg.path.display().to_string());
    assert_eq!(k["memory_cgroup"]["limit_bytes"], 200u64 << 20);
    assert!(!k["top_holders"].as_array().unwrap().is_empty());
    assert_eq!(k["pool"]["parent_pid"], parent, "{k:#}");
    assert_eq!(k["pool"]["kind"], "python-multiprocessing");
    assert!(k["pool"]["siblings_alive"].as_u64().unwrap() >= 2, "{k:#}");
    assert!(k["consequence"].as_str().unwrap().contains("wait forever"));
    assert!(
        k["remedy"]
            .as_str()
            .unwrap()
            .contains(&format!("restart python3[{parent}]")),
        "{k:#}"
    );
}

/// A pool worker killed by another signal is a finding too.
#[test]
fn pool_worker_killed_by_a_signal_is_reported() {
    if !require_root() {
        return;
    }
    let cg = Cgroup::new("pids", "segv");
    let t = Tracer::start(&[]);
    let out = run_in_cgroup(
        &cg,
        "/usr/bin/python3 -c 'import multiprocessing as mp, os, time, signal
p = mp.Pool(3); time.sleep(0.5)
w = p._pool[0].pid; print(\"victim=%d\" % w, flush=True); os.kill(w, signal.SIGSEGV); time.sleep(0.5)
[os.kill(x.pid, 9) for x in p._pool]; os._exit(0)'",
    );
    let rec = t.stop();
    let victim: u32 = field(&out, "victim")
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    let exits = rec.of_pid("process_exit", victim);
    assert_eq!(
        exits.len(),
        1,
        "printed without --lifecycle because it is a pool worker"
    );
    assert_eq!(exits[0]["signal"], "SIGSEGV");
    assert_eq!(exits[0]["pool"]["kind"], "python-multiprocessing");
}
