//! The command line as an operator meets it: privileges, bad arguments,
//! how a recording starts and ends, the trace file and report, doctor.
use std::{
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

use threadtrace_e2e::*;

fn one_line_error(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr).trim().to_string();
    assert_eq!(s.lines().count(), 1, "one line, no backtrace: {s}");
    assert!(
        !s.contains("panicked") && !s.contains("RUST_BACKTRACE"),
        "{s}"
    );
    s
}

#[test]
fn without_privileges_it_says_use_sudo() {
    if !require_root() {
        return;
    }
    // A copy nobody can reach: the checkout may be in a 0700 directory
    // (a clone into `mktemp -d`).
    let copy = scratch().join("threadtrace");
    std::fs::copy(bin(), &copy).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&copy)
        .args(["record", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = one_line_error(&out.stderr);
    assert!(err.contains("sudo"), "{err}");
}

#[test]
fn bad_arguments_get_clap_errors() {
    for args in [
        &["record", "--bogus"][..],
        &["record", "-d", "soon"],
        &["record", "-p", "abc"],
        &["frobnicate"],
    ] {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error:") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let help = Command::new(bin())
        .args(["record", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--duration"));
}

#[test]
fn duration_ends_it_with_a_summary() {
    if !require_root() {
        return;
    }
    let mut child = Command::new(bin())
        .args(["record", "--json", "-d", "2s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Start-up takes a few seconds here and half a minute in an emulated
    // guest; a duration that did not end it would leave it running.
    let status_code = wait_timeout(&mut child, Duration::from_secs(60)).expect("stops by itself");
    assert!(status_code.success());
    let out = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["kind"], "started");
    let started = &lines[0];
    let probes = started["probes"].as_array().unwrap();
    for p in [
        "oom:mark_victim",
        "sched:sched_process_exec",
        "task:task_newtask (raw)",
        "sched:sched_process_exit (raw)",
    ] {
        assert!(probes.iter().any(|q| q == p), "{p} in {probes:?}");
    }
    // Each hook at fexit where the kernel allows it, else its tracepoints;
    // never both.
    let has = |p: &str| probes.iter().any(|q| q == p);
    assert!(
        has("syscalls:sys_exit_clone3") != has("fexit:kernel_clone"),
        "{probes:?}"
    );
    assert!(
        has("syscalls:sys_exit_mmap") != has("fexit:ksys_mmap_pgoff"),
        "{probes:?}"
    );
    assert!(
        has("syscalls:sys_enter_prlimit64") != has("fentry:do_prlimit"),
        "{probes:?}"
    );
    assert_eq!(has("fentry:do_prlimit"), has("fexit:do_prlimit"));
    let attach = started["attach"].as_array().unwrap();
    assert_eq!(attach.len(), 4, "{attach:?}");
    for h in attach {
        let method = h["method"].as_str().unwrap();
        assert!(
            matches!(method, "fexit" | "fentry_fexit") || h["fexit_refused"].is_string(),
            "{h}"
        );
    }
    // With every hook at a kernel function, no syscall pays for a
    // syscall tracepoint.
    if attach.iter().all(|h| h["method"] != "tracepoints") {
        assert!(
            probes
                .iter()
                .all(|p| !p.as_str().unwrap().starts_with("syscalls:")),
            "{probes:?}"
        );
    }
    assert!(
        probes
            .iter()
            .all(|p| !p.as_str().unwrap().starts_with("uprobe")),
        "no probe on the success path: {probes:?}"
    );
    let summary = lines.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert!(summary["events_lost"].is_u64() && summary["by_api"].is_object());
}

/// While thread creation fails on the host, the tracer must not need a
/// new thread: its threads (collector, output) all exist at `started`.
#[test]
fn no_thread_is_created_after_start_up() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let t = Tracer::start(&[]);
    let at_start = threads_of(t.pid());
    let out = as_nobody(&format!("ulimit -u 4; exec {} 64", burst.display()));
    assert!(field(&out, "failed").unwrap().parse::<u64>().unwrap() > 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(threads_of(t.pid()), at_start);
    assert_eq!(at_start, "2", "the collector and the output stage");
    t.stop();
}

#[test]
fn sigterm_ends_it_cleanly() {
    if !require_root() {
        return;
    }
    let t = Tracer::start(&[]);
    let rec = t.stop_with(libc::SIGTERM);
    rec.summary();
}

#[test]
fn trace_file_is_private_and_report_reads_it() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let file = scratch().join("cli.trace");
    let t = Tracer::start(&["-o", file.to_str().unwrap()]);
    let out = as_nobody(&format!("ulimit -u 6; exec {} 32", burst.display()));
    let rec = t.stop();
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    assert!(failed > 0);
    assert_eq!(rec.counted(pid, "pthread_create"), failed);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let r = report_json(&file);
    assert_eq!(r["ended_cleanly"], true);
    assert_eq!(report_count(&r, pid), failed);
    assert!(r["failure_events"].as_u64().unwrap() >= failed);
    assert!(r["header"]["host"]["kernel"].is_string());

    let text = Command::new(bin())
        .arg("report")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("thread-creation failures") && text.contains("thread_burst"),
        "{text}"
    );

    let junk = scratch().join("junk.trace");
    std::fs::write(&junk, b"definitely not a trace").unwrap();
    let bad = Command::new(bin())
        .arg("report")
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(one_line_error(&bad.stderr).contains("not a threadtrace trace file"));
}

#[test]
fn doctor_passes_here() {
    if !require_root() {
        return;
    }
    let out = Command::new(bin()).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("oom:mark_victim") && text.contains("all checks passed"),
        "{text}"
    );
}
