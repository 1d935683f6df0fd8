//! The trace file after the incident: exports other tools open, a file
//! that survives its recorder being killed, and one of bounded size.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use threadtrace_e2e::*;

fn export(file: &std::path::Path, format: &str) -> std::process::Output {
    Command::new(bin())
        .args(["export", "--format", format])
        .arg(file)
        .output()
        .unwrap()
}

/// What `record --json` printed is in the jsonl export, object for object;
/// the Chrome export carries the failure with its library, cause, remedy.
#[test]
fn exports_round_trip() {
    if !require_root() {
        return;
    }
    let omp = compile_c("omp_threads", &["-fopenmp"]);
    let file = scratch().join("roundtrip.trace");
    let t = Tracer::start(&["-o", file.to_str().unwrap()]);
    let out = as_nobody(&format!(
        "ulimit -u 6; echo pid=$$; OMP_NUM_THREADS=16 exec {}",
        omp.display()
    ));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();

    let jsonl = export(&file, "jsonl");
    assert!(
        jsonl.status.success(),
        "{}",
        String::from_utf8_lossy(&jsonl.stderr)
    );
    let exported: Vec<serde_json::Value> = String::from_utf8_lossy(&jsonl.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for printed in rec.0.iter().filter(|r| r["kind"] != "summary") {
        assert!(exported.contains(printed), "not exported: {printed}");
    }
    assert!(
        exported.iter().any(|e| e["kind"] == "process_exec"),
        "the file keeps lifecycle events too"
    );
    assert_eq!(exported.last().unwrap()["kind"], "summary");

    let chrome = export(&file, "chrome");
    assert!(chrome.status.success());
    let c: serde_json::Value = serde_json::from_slice(&chrome.stdout).unwrap();
    let events = c["traceEvents"].as_array().unwrap();
    let failure = events
        .iter()
        .find(|e| e["ph"] == "i" && e["cat"] == "failure" && e["pid"] == pid)
        .expect("the failure as an instant event");
    assert_eq!(failure["args"]["library"], "libgomp", "{failure}");
    assert_eq!(failure["args"]["cause"], "rlimit_nproc");
    assert!(failure["args"]["remedy"]
        .as_str()
        .unwrap()
        .contains("OMP_NUM_THREADS=1"));
    assert!(failure["ts"].as_u64().unwrap() > 1_700_000_000_000_000);
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "C" && e["name"] == "threads"),
        "thread counters"
    );

    let pf = export(&file, "perfetto");
    assert!(pf.status.success());
    perfetto_has_the_failure(&pf.stdout, pid);
}

/// Decoded with Perfetto's official protos: a track for the process, the
/// failure on it with its library, cause and remedy, live-thread counters.
fn perfetto_has_the_failure(bytes: &[u8], pid: u32) {
    use perfetto_protos::{trace::Trace, track_event::track_event::Type};
    use protobuf::Message;
    let trace = Trace::parse_from_bytes(bytes).expect("a perfetto.protos.Trace");
    let track = trace
        .packet
        .iter()
        .filter(|p| p.has_track_descriptor())
        .map(|p| p.track_descriptor())
        .find(|t| t.process.pid() == pid as i32)
        .expect("a track for the failing process");
    let failure = trace
        .packet
        .iter()
        .filter(|p| p.has_track_event())
        .map(|p| p.track_event())
        .find(|e| {
            e.type_() == Type::TYPE_INSTANT
                && e.track_uuid() == track.uuid()
                && e.categories == ["failure"]
        })
        .expect("the failure on the process's track");
    let arg = |name: &str| {
        failure
            .debug_annotations
            .iter()
            .find(|a| a.name() == name)
            .map(|a| a.string_value().to_string())
    };
    assert_eq!(arg("library").as_deref(), Some("libgomp"));
    assert_eq!(arg("cause").as_deref(), Some("rlimit_nproc"));
    assert!(arg("remedy").unwrap().contains("OMP_NUM_THREADS=1"));
    assert!(
        trace
            .packet
            .iter()
            .any(|p| p.has_track_event() && p.track_event().type_() == Type::TYPE_COUNTER),
        "live-thread counters"
    );
}

/// SIGKILL of the recorder in the middle of a storm: what it flushed reads
/// back, and report says the recording did not end cleanly.
#[test]
fn a_recorder_killed_mid_storm_leaves_a_readable_file() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let file = scratch().join("killed.trace");
    let mut t = Tracer::start(&["-o", file.to_str().unwrap(), "--storm-threshold", "20"]);
    let mut storm = Command::new("runuser")
        .args(["-u", "nobody", "--", "bash", "-c"])
        .arg(format!(
            "ulimit -u 4; for i in $(seq 40); do {} 2000 >/dev/null; done",
            burst.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    t.kill();
    let _ = storm.kill();
    let _ = storm.wait();
    let r = report_json(&file);
    assert_eq!(r["ended_cleanly"], false);
    assert!(r["failure_events"].as_u64().unwrap() > 0, "{r:#}");
    assert!(
        r["counters"]["failures_total"].as_u64().unwrap() > 0,
        "a counters snapshot was flushed: {r:#}"
    );
}

/// --max-size: a storm fills the cap, detail stops, counters go on, and
/// the summary says how many events were left out.
#[test]
fn max_size_bounds_the_file() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let file = scratch().join("capped.trace");
    let t = Tracer::start(&["-o", file.to_str().unwrap(), "--max-size", "256K"]);
    let out = as_nobody(&format!("ulimit -u 4; exec {} 5000", burst.display()));
    let rec = t.stop();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(
        size < 512 << 10,
        "{size} bytes: the cap plus a few counter snapshots"
    );
    let s = rec.summary();
    assert!(s["trace_events_dropped"].as_u64().unwrap() > 0, "{s:#}");
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert_eq!(
        rec.counted(pid, "pthread_create"),
        failed,
        "counts stay exact"
    );
    let r = report_json(&file);
    assert_eq!(r["ended_cleanly"], true);
    assert_eq!(report_count(&r, pid), failed);
}

/// In a sustained storm the ring buffer never runs dry: the recorder must
/// still take its counter snapshots each second and obey Ctrl-C, leaving an
/// intact file.
#[test]
fn ctrl_c_during_a_storm_ends_cleanly() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let file = scratch().join("ctrlc.trace");
    let t = Tracer::start(&["-o", file.to_str().unwrap(), "--storm-threshold", "20"]);
    let mut storm = Command::new("runuser")
        .args(["-u", "nobody", "--", "bash", "-c"])
        .arg(format!("ulimit -u 4; end=$((SECONDS+8)); while [ $SECONDS -lt $end ]; do {} 5000 >/dev/null; done", burst.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let started = std::time::Instant::now();
    let rec = t.stop();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "Ctrl-C took {:?}",
        started.elapsed()
    );
    let _ = storm.kill();
    let _ = storm.wait();
    let updates: Vec<&str> = rec
        .kind("storm")
        .filter(|s| s["state"] == "update")
        .map(|s| s["time"].as_str().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&str> = updates.iter().map(|t| &t[..19]).collect();
    assert!(
        distinct.len() >= 2,
        "updates came each second, during the storm: {updates:?}"
    );
    rec.summary();
    let r = report_json(&file);
    assert_eq!(r["ended_cleanly"], true);
}
