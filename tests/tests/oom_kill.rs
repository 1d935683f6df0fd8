//! A process allocating past its memory cgroup's limit is OOM-killed.
use threadtrace_e2e::*;

#[test]
fn oom_kill_in_a_memory_cgroup() {
    if !require_root() {
        return;
    }
    let hog = compile_c("hog", &[]);
    let cg = Cgroup::new("memory", "oom");
    cg.set_memory_max(64 << 20);
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
    cg.set_memory_max(200 << 20);
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

/// memory.oom.group (cgroup v2): the kernel kills the victim it chose,
/// then every other process of the cgroup. The chosen victim keeps the
/// story (who grew, the limit, the remedy); the others are said to be
/// killed with their cgroup, each once, ranked under it, with no pool of
/// their own.
#[test]
fn oom_group_kill_tells_the_chosen_victim_from_those_killed_with_it() {
    if !require_root() {
        return;
    }
    let root = std::path::Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        eprintln!(
            "skipped: memory.oom.group exists only on cgroup v2, and /sys/fs/cgroup is cgroup v1 here"
        );
        return;
    }
    // By hand: the shared Cgroup helper is being reworked for v2.
    let subtree = root.join("cgroup.subtree_control");
    if !std::fs::read_to_string(&subtree)
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "memory")
    {
        std::fs::write(&subtree, "+memory").expect("+memory in the root's subtree_control");
    }
    struct Group(std::path::PathBuf);
    impl Drop for Group {
        fn drop(&mut self) {
            // Whatever is left (a sleep the kernel spared), then the cgroup.
            let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
            for _ in 0..40 {
                if std::fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
    let cg = Group(root.join(format!("threadtrace-e2e-oomgroup-{}", std::process::id())));
    std::fs::create_dir(&cg.0).unwrap();
    let set = |file: &str, v: &str| std::fs::write(cg.0.join(file), v);
    set("memory.max", &(100u64 << 20).to_string()).unwrap();
    // No swap, so that the limit is reached at once.
    let _ = set("memory.swap.max", "0");
    set("memory.oom.group", "1").unwrap();
    let path = cg.0.display().to_string();

    let t = Tracer::start(&[]);
    let out = bash(&format!(
        r#"bash -c "echo \$\$ > {path}/cgroup.procs; exec sleep 600" >/dev/null 2>&1 & S1=$!
bash -c "echo \$\$ > {path}/cgroup.procs; exec sleep 600" >/dev/null 2>&1 & S2=$!
sleep 1
bash -c "echo \$\$ > {path}/cgroup.procs; exec python3 -c '
import time
held = []
while True:
    held.append(b\"x\" * (5 << 20)); time.sleep(0.05)
'" >/dev/null 2>&1 & P=$!
echo s1=$S1; echo s2=$S2; echo grower=$P
wait $P; echo grower_status=$?
for s in $S1 $S2; do
  for i in $(seq 40); do kill -0 $s 2>/dev/null || break; sleep 0.25; done
  kill $s 2>/dev/null; wait $s; echo status_$s=$?
done"#
    ));
    let rec = t.stop();
    let pid = |k: &str| -> u32 {
        field(&out, k)
            .unwrap_or_else(|| panic!("no {k} in {out:?}"))
            .parse()
            .unwrap()
    };
    let (s1, s2, grower) = (pid("s1"), pid("s2"), pid("grower"));
    assert_eq!(
        field(&out, "grower_status").as_deref(),
        Some("137"),
        "{out:?}"
    );
    for s in [s1, s2] {
        assert_eq!(
            field(&out, &format!("status_{s}")).as_deref(),
            Some("137"),
            "the kernel killed sleep[{s}] with its cgroup: {out:?}"
        );
    }

    let kills: Vec<_> = rec.kind("oom_kill").collect();
    for k in &kills {
        eprintln!("{k}");
    }
    // Each process once: the chosen victim, taken again by the sweep, too.
    let of = |pid: u32| -> &serde_json::Value {
        let mine: Vec<_> = kills.iter().filter(|k| k["pid"] == pid).collect();
        assert_eq!(mine.len(), 1, "one oom_kill of {pid}: {kills:#?}");
        mine[0]
    };
    let chosen = of(grower);
    assert_eq!(chosen["victim"]["comm"], "python3");
    assert_eq!(chosen["group_kill"]["role"], "chosen", "{chosen:#}");
    assert_eq!(chosen["group_kill"]["cgroup"], path.as_str());
    assert_eq!(chosen["group_kill"]["chosen"], grower);
    assert_eq!(chosen["memory_cgroup"]["path"], path.as_str());
    assert_eq!(chosen["memory_cgroup"]["limit_bytes"], 100u64 << 20);
    let remedy = chosen["remedy"].as_str().unwrap();
    assert!(remedy.contains("memory.oom.group"), "{remedy}");
    assert!(
        chosen["growers"][0]["pid"] == grower,
        "the grower grew the most: {chosen:#}"
    );
    for s in [s1, s2] {
        let k = of(s);
        assert_eq!(k["victim"]["comm"], "sleep");
        assert_eq!(k["group_kill"]["role"], "killed_with_group", "{k:#}");
        assert_eq!(k["group_kill"]["chosen"], grower);
        assert_eq!(k["group_kill"]["chosen_comm"], "python3");
        assert_eq!(k["group_kill"]["cgroup"], path.as_str());
        // No story of its own: its parent loses nothing it waits for.
        assert!(k["pool"].is_null() && k["consequence"].is_null(), "{k:#}");
        assert!(k["growers"].as_array().unwrap().is_empty(), "{k:#}");
    }

    // One finding, the chosen victim's, first among the kills, naming the
    // processes killed with it.
    let findings: Vec<_> = rec.summary()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "oom_kill")
        .collect();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = findings[0];
    let title = f["title"].as_str().unwrap();
    assert!(
        title.starts_with(&format!("OOM kill of python3[{grower}]"))
            && title.contains("2 processes killed with its memory cgroup (memory.oom.group)"),
        "{title}"
    );
    let evidence: Vec<&str> = f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let head = format!("killed with its memory cgroup {path} (memory.oom.group): ");
    let line = evidence
        .iter()
        .find_map(|e| e.strip_prefix(head.as_str()))
        .unwrap_or_else(|| panic!("{evidence:#?}"));
    let mut named: Vec<&str> = line.split(", ").collect();
    named.sort();
    let mut expected = [format!("sleep[{s1}]"), format!("sleep[{s2}]")];
    expected.sort();
    assert_eq!(named, expected, "{line}");
    assert!(
        !format!("{f}").contains("wait"),
        "no pool left waiting: {f:#}"
    );
}
