//! Who grew before an OOM kill (incident 5): the OOM killer takes the
//! largest process, which is not always the one whose memory grew.
use std::process::Command;

use serde_json::Value;
use threadtrace_e2e::*;

const MIB: u64 = 1 << 20;

fn threadtrace(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("threadtrace")
}

/// The kill of `victim` among what the tracer printed: exactly one.
fn the_kill(rec: &Records, victim: u32) -> &Value {
    let kills: Vec<_> = rec
        .kind("oom_kill")
        .filter(|k| k["victim"]["pid"] == victim)
        .collect();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    kills[0]
}

/// The summary's finding about the kill of `victim`.
fn finding_of(summary: &Value, victim: u32) -> Value {
    summary["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| {
            f["kind"] == "oom_kill"
                && f["title"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("[{victim}]"))
        })
        .unwrap_or_else(|| panic!("no finding for the kill of {victim}: {summary:#}"))
        .clone()
}

/// Two processes in one 256 MiB memory cgroup: one takes 160 MiB at once
/// and sleeps; the other waits until that block is older than the
/// window, then grows 4 MiB every 100 ms. The kernel kills the large one
/// (its badness is its size), and the event names the other as the one
/// that grew, on every surface of the trace file.
#[test]
fn the_largest_is_killed_but_another_grew() {
    if !require_root() {
        return;
    }
    let grow = compile_c("grow", &[]);
    let cg = Cgroup::new("memory", "growers");
    cg.set_memory_max(256 * MIB);
    let file = scratch().join("growers.trace");
    let dir = scratch();
    let t = Tracer::start(&[
        "-o",
        file.to_str().unwrap(),
        "--rss-interval",
        "500ms",
        "--rss-window",
        "5s",
    ]);
    let out = bash(&format!(
        "echo $$ > {cg}/cgroup.procs
        {grow} block 160 > {dir}/large.out &
        large=$!
        timeout -s KILL 40 {grow} steady 200 4 100 7000 > {dir}/grower.out &
        waiting=$!
        echo large=$large
        wait $waiting; echo grower_status=$?
        echo grower=$(sed -n 's/^pid=//p' {dir}/grower.out)
        kill -0 $large 2>/dev/null && echo large_survived=1
        kill -9 $large 2>/dev/null; wait $large
        cat {dir}/large.out {dir}/grower.out",
        cg = cg.path.display(),
        grow = grow.display(),
        dir = dir.display(),
    ));
    let rec = t.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    let large: u32 = field(&out, "large").unwrap().parse().unwrap();
    let grower: u32 = field(&out, "grower").unwrap().parse().unwrap();
    // What the kernel did, seen without the tracer: one kill, the large
    // process taken, the growing one survived to its 200 MiB.
    assert!(text.contains("ready"), "{text}");
    assert_eq!(cg.oom_kills(), Some(1), "one OOM kill in the cgroup");
    assert_eq!(
        field(&out, "large_survived"),
        None,
        "the kernel took the grower: {text}"
    );
    assert_eq!(field(&out, "grower_status").as_deref(), Some("0"), "{text}");
    assert!(text.contains("survived"), "{text}");

    let k = the_kill(&rec, large);
    assert_eq!(
        k["top_holders"][0]["pid"], large,
        "the victim was the largest: {k:#}"
    );
    let g = &k["growers"][0];
    assert_eq!(g["pid"], grower, "{k:#}");
    assert_eq!(g["comm"], "grow");
    assert!(g["grew_bytes"].as_u64().unwrap() >= 50 * MIB, "{k:#}");
    assert_eq!(
        g["started_in_window"], false,
        "it started 9 s before: {k:#}"
    );
    let window = g["window_s"].as_f64().unwrap();
    assert!(window > 3.5 && window <= 5.0, "{k:#}");
    // It grew for about 2 s before the kill; samples every 500 ms showed it.
    let visible = g["visible_s"]
        .as_f64()
        .expect("seen growing before the kill");
    assert!(visible > 0.0 && visible < 5.0, "{k:#}");
    let v = &k["victim_growth"];
    if v.is_null() {
        // Seen once in five CI runs, not yet understood: the victim's
        // history was not found at the kill. The event must then say that
        // a process's growth is unknown, never claim a figure.
        assert!(k["growth_unknown"].as_u64().unwrap() >= 1, "{k:#}");
        eprintln!("the victim's growth was not known at the kill: {k:#}");
    } else {
        assert_eq!(v["pid"], large);
        assert!(v["rss_bytes"].as_u64().unwrap() >= 150 * MIB, "{k:#}");
        assert!(v["grew_bytes"].as_u64().unwrap() < 8 * MIB, "{k:#}");
    }
    assert!(
        k["growers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["pid"] != large),
        "the victim did not grow: {k:#}"
    );
    assert!(k["memory_cgroup"]["grew_bytes"].as_u64().unwrap() >= 50 * MIB);
    let remedy = k["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!("cut grow[{grower}]'s memory or find its leak"))
            && remedy.contains(&format!("`choom -n 500 -p {grower}`")),
        "{remedy}"
    );

    let f = finding_of(rec.summary(), large);
    let title = f["title"].as_str().unwrap();
    assert!(
        title.contains(&format!("not the process that grew: grow[{grower}] grew ")),
        "{title}"
    );
    let first = f["evidence"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!("killed grow[{large}] (largest, "))
            && first.contains(&format!("); grow[{grower}] grew ")),
        "{first}"
    );

    // report, as text and JSON.
    let report = threadtrace(&["report", file.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(report.contains(title), "{report}");
    assert!(report.contains(&format!("    growth: {first}")), "{report}");
    let rj = report_json(&file);
    assert_eq!(rj["oom_kills"][0]["growers"][0]["pid"], grower);
    assert_eq!(finding_of(&rj["counters"], large)["title"], title);

    // export: jsonl is what was printed; chrome and perfetto carry the
    // growers in the kill's args and mark the grower's track.
    let jsonl = threadtrace(&["export", "--format", "jsonl", file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&jsonl.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .any(|e| &e == k));
    let chrome = threadtrace(&["export", "--format", "chrome", file.to_str().unwrap()]);
    let c: Value = serde_json::from_slice(&chrome.stdout).unwrap();
    let events = c["traceEvents"].as_array().unwrap();
    let kill = events
        .iter()
        .find(|e| e["cat"] == "oom" && e["pid"] == large)
        .expect("the kill on the victim's track");
    assert_eq!(kill["args"]["growers"][0]["pid"], grower);
    assert_eq!(kill["args"]["growth"], first);
    assert!(events
        .iter()
        .any(|e| e["cat"] == "oom" && e["pid"] == grower && e["args"]["grower"]["pid"] == grower));
    let pf = threadtrace(&["export", "--format", "perfetto", file.to_str().unwrap()]);
    perfetto_marks_the_grower(&pf.stdout, grower, first);
}

/// Decoded with Perfetto's protos: an instant on the grower's track whose
/// `growth` annotation is the finding's sentence.
fn perfetto_marks_the_grower(bytes: &[u8], grower: u32, sentence: &str) {
    use perfetto_protos::trace::Trace;
    use protobuf::Message;
    let trace = Trace::parse_from_bytes(bytes).expect("a perfetto.protos.Trace");
    let track = trace
        .packet
        .iter()
        .filter(|p| p.has_track_descriptor())
        .map(|p| p.track_descriptor())
        .find(|t| t.process.pid() == grower as i32)
        .expect("a track for the grower");
    let marked = trace
        .packet
        .iter()
        .filter(|p| p.has_track_event())
        .map(|p| p.track_event())
        .filter(|e| e.track_uuid() == track.uuid() && e.categories == ["oom"])
        .any(|e| {
            e.debug_annotations
                .iter()
                .any(|a| a.name() == "growth" && a.string_value() == sentence)
        });
    assert!(marked, "no growth mark on the grower's track");
}

/// seeds/002: a multiprocessing.Pool worker grows until its cgroup's limit
/// and is killed. It is its own top grower: nothing says otherwise.
#[test]
fn a_pool_worker_that_grew_is_its_own_top_grower() {
    if !require_root() {
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/pool_oom.py");
    let cg = Cgroup::new("memory", "poolgrow");
    cg.set_memory_max(200 * MIB);
    let out_file = scratch().join("poolgrow.out");
    // Default sampling: every 2 s over 60 s.
    let t = Tracer::start(&[]);
    let out = bash(&format!(
        "echo $$ > {}/cgroup.procs; timeout -s KILL 60 /usr/bin/python3 {} > {out} 2>&1; cat {out}",
        cg.path.display(),
        script.display(),
        out = out_file.display()
    ));
    let rec = t.stop();
    let parent: u32 = field(&out, "parent")
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    let k = rec
        .kind("oom_kill")
        .find(|k| k["victim"]["ppid"] == parent)
        .unwrap_or_else(|| panic!("no kill of a worker of {parent}"));
    let victim = k["victim"]["pid"].as_u64().unwrap() as u32;
    assert_eq!(k["pool"]["kind"], "python-multiprocessing", "{k:#}");
    let g = &k["growers"][0];
    assert_eq!(g["pid"], victim, "{k:#}");
    assert_eq!(k["victim_growth"], *g, "{k:#}");
    assert!(g["grew_bytes"].as_u64().unwrap() >= 100 * MIB, "{k:#}");
    assert_eq!(g["started_in_window"], true, "{k:#}");
    let others: Vec<u64> = k["growers"].as_array().unwrap()[1..]
        .iter()
        .map(|g| g["grew_bytes"].as_u64().unwrap())
        .collect();
    assert!(others.iter().all(|&o| o < 50 * MIB), "{k:#}");
    let remedy = k["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!("python3[{victim}] grew the most (")),
        "{remedy}"
    );

    let f = finding_of(rec.summary(), victim);
    let first = f["evidence"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!("killed python3[{victim}] ("))
            && first.contains(": it grew the most"),
        "{f:#}"
    );
    let all = f.to_string();
    assert!(
        !all.contains("not the process that grew") && !all.contains("did not:"),
        "{f:#}"
    );
    assert!(
        f["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .take(3)
            .any(|e| e.as_str().unwrap().contains("wait forever")),
        "the hang stays among the lines printed: {f:#}"
    );
}
