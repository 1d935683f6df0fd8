//! Before the limit: `limit_near` records for a user's RLIMIT_NPROC, a pids
//! cgroup and a memory cgroup climbing to their limits, each before the
//! first failure or kill; nothing for root under nproc (it does not bind
//! root); one record, not a stream, for a limit hovering at a threshold.
use serde_json::Value;
use threadtrace_e2e::*;

/// The `limit_near` records of one limit: `kind` and the user or cgroup.
fn near<'a>(rec: &'a Records, kind: &str, matches: impl Fn(&Value) -> bool) -> Vec<&'a Value> {
    rec.kind("limit_near")
        .filter(|e| e["limit"]["kind"] == kind && matches(&e["limit"]))
        .collect()
}

fn thresholds(events: &[&Value]) -> Vec<f64> {
    events
        .iter()
        .map(|e| e["threshold"].as_f64().unwrap())
        .collect()
}

/// Each event at a higher threshold than the last, with less time left,
/// all before `before` (an RFC 3339 time).
fn climbing(events: &[&Value], before: &str) {
    assert_eq!(thresholds(events), vec![0.8, 0.9, 0.95], "{events:#?}");
    let left: Vec<f64> = events
        .iter()
        .map(|e| {
            e["exhausted_in_s"]
                .as_f64()
                .unwrap_or_else(|| panic!("rising, so an estimate: {e:#}"))
        })
        .collect();
    assert!(left.windows(2).all(|w| w[1] < w[0]), "falling: {left:?}");
    for e in events {
        assert!(e["rate_per_min"].as_f64().unwrap() > 0.0, "{e:#}");
        assert!(
            e["time"].as_str().unwrap() < before,
            "before the failure at {before}: {e:#}"
        );
        assert!(!e["remedy"].as_str().unwrap().is_empty(), "{e:#}");
        assert_words_for_people(e);
    }
}

/// Python adding a thread every 100 ms as nobody under `ulimit -u 60`:
/// 80%, 90% and 95% of the limit are announced, each with less time left,
/// before pthread_create fails; the holder and the command to raise it are
/// named.
#[test]
fn a_users_nproc_is_announced_at_each_threshold_before_it_runs_out() {
    if !require_root() {
        return;
    }
    let t = Tracer::start(&[]);
    let out = as_nobody(
        "ulimit -u 60; echo pid=$$; exec /usr/bin/python3 -c '
import threading, time
for i in range(100):
    try:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    except RuntimeError:
        print(\"failed at\", i); break
    time.sleep(0.1)
'",
    );
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("failed at"),
        "the workload reached its limit: {out:?}"
    );
    let failed = rec.of_pid("thread_create_failed", pid);
    let first = failed
        .iter()
        .map(|e| e["time"].as_str().unwrap())
        .min()
        .expect("the failure was seen");
    let events = near(&rec, "rlimit_nproc", |l| l["uid"] == 65534);
    climbing(&events, first);
    let last = events.last().unwrap();
    assert_eq!(last["limit"]["max"], 60, "{last:#}");
    assert_eq!(last["limit"]["pid"], pid, "the process with the limit");
    assert_eq!(last["holders"][0]["pid"], pid, "{last:#}");
    assert!(
        last["remedy"]
            .as_str()
            .unwrap()
            .contains(&format!("prlimit --pid {pid} --nproc=120:120")),
        "{last:#}"
    );
    // The readable line says the same.
    let findings = &rec.summary()["findings"];
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "limit_near"
                && f["title"].as_str().unwrap().contains("RLIMIT_NPROC 60")),
        "{findings:#}"
    );
}

/// A process forking every 100 ms in a pids cgroup with pids.max 40:
/// `cgroup_pids` with the cgroup's path before its fork fails.
#[test]
fn a_pids_cgroup_is_announced_before_fork_fails() {
    if !require_root() {
        return;
    }
    let cg = Cgroup::new("pids", "near");
    cg.set_pids_max(40);
    let t = Tracer::start(&[]);
    let out = cg.exec(
        "",
        "/usr/bin/python3 -c '
import os, time
for i in range(100):
    try:
        pid = os.fork()
    except OSError:
        print(\"failed at\", i, flush=True); break
    if pid == 0:
        time.sleep(60); os._exit(0)
    time.sleep(0.1)
'",
    );
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let failed = rec.of_pid("thread_create_failed", pid);
    let first = failed
        .iter()
        .map(|e| e["time"].as_str().unwrap())
        .min()
        .unwrap_or_else(|| panic!("the fork failure was seen: {out:?}"));
    let path = cg.path.display().to_string();
    let events = near(&rec, "cgroup_pids", |l| l["cgroup"] == path.as_str());
    climbing(&events, first);
    assert_eq!(events[0]["limit"]["max"], 40);
    assert!(
        events[2]["remedy"]
            .as_str()
            .unwrap()
            .contains(&format!("echo 80 > {path}/pids.max")),
        "{:#}",
        events[2]
    );
}

/// A memory cgroup filled 2 MiB every 50 ms to its 200 MiB limit:
/// `memory_cgroup` at 90% before the OOM kill.
#[test]
fn a_memory_cgroup_is_announced_before_the_oom_kill() {
    if !require_root() {
        return;
    }
    let cg = Cgroup::new("memory", "near");
    cg.set_memory_max(200 << 20);
    let t = Tracer::start(&[]);
    let out = cg.exec(
        "",
        "/usr/bin/python3 -c '
import time
held = []
while True:
    held.append(b\"x\" * (2 << 20))
    time.sleep(0.05)
'",
    );
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let kill = rec
        .kind("oom_kill")
        .find(|k| k["victim"]["pid"] == pid)
        .unwrap_or_else(|| panic!("the OOM kill of {pid} was seen: {out:?}"));
    let path = cg.path.display().to_string();
    let events = near(&rec, "memory_cgroup", |l| l["cgroup"] == path.as_str());
    let ninety = events
        .iter()
        .find(|e| e["threshold"].as_f64().unwrap() >= 0.9)
        .unwrap_or_else(|| panic!("90% announced: {events:#?}"));
    assert!(
        ninety["time"].as_str().unwrap() < kill["time"].as_str().unwrap(),
        "before the kill at {}: {ninety:#}",
        kill["time"]
    );
    assert_eq!(ninety["limit"]["max"], 200u64 << 20);
    assert_eq!(ninety["memory_holders"][0]["pid"], pid, "{ninety:#}");
    assert_words_for_people(ninety);
}

/// Root is not bound by RLIMIT_NPROC: 55 threads under `ulimit -u 60`
/// are not announced.
#[test]
fn root_near_its_nproc_is_not_announced() {
    if !require_root() {
        return;
    }
    let t = Tracer::start(&[]);
    let out = bash(
        "ulimit -u 60; echo pid=$$; exec /usr/bin/python3 -c '
import threading, time
for i in range(55):
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
    time.sleep(0.02)
print(\"held\", threading.active_count(), flush=True)
time.sleep(2.5)
'",
    );
    let rec = t.stop();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("held 56"),
        "{out:?}"
    );
    let root = near(&rec, "rlimit_nproc", |l| l["uid"] == 0);
    assert!(root.is_empty(), "{root:#?}");
}

/// 18 of 20 tasks, then 17, then 18 again, for five seconds: 90% is
/// announced once, not at every return.
#[test]
fn a_limit_hovering_at_a_threshold_is_announced_once() {
    if !require_root() {
        return;
    }
    let t = Tracer::start(&[]);
    let out = as_nobody(
        "ulimit -u 20; echo pid=$$; exec /usr/bin/python3 -c '
import threading, time
for i in range(16):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
time.sleep(1.5)
end = time.time() + 5
while time.time() < end:
    t = threading.Thread(target=time.sleep, args=(0.25,))
    t.start(); t.join()
    time.sleep(0.25)
'",
    );
    assert!(out.status.success(), "{out:?}");
    let rec = t.stop();
    let events = near(&rec, "rlimit_nproc", |l| l["uid"] == 65534);
    let at_ninety = events
        .iter()
        .filter(|e| e["threshold"].as_f64() == Some(0.9))
        .count();
    assert_eq!(at_ninety, 1, "{events:#?}");
    assert!(
        rec.of_pid(
            "thread_create_failed",
            field(&out, "pid").unwrap().parse().unwrap()
        )
        .is_empty(),
        "it never failed"
    );
}
