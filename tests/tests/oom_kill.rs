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
