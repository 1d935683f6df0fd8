//! Hostile input from unprivileged processes, made real as `nobody`: names
//! that are terminal escapes, a cgroup name that is a shell command, a
//! 2 MiB command line forked thousands of times, and a stdout nobody
//! reads. After each, the tracer's memory, fds and answer to SIGTERM.
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use threadtrace_e2e::*;

/// The two process names: an OSC that retitles the terminal plus a
/// clear-screen, and an 8-bit CSI (U+009B) with a right-to-left override.
const ESCAPES: &[u8] = b"\x1b]0;PWNED\x07\x1b[2J";
const C1_BIDI: &str = "\u{9b}31m\u{202e}gpj";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Characters no output of threadtrace may carry raw (newlines apart):
/// controls (C0, DEL, C1), bidirectional controls, invisible ones.
fn hostile(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn assert_clean(bytes: &[u8], what: &str) {
    let text = String::from_utf8_lossy(bytes);
    if let Some((i, c)) = text.char_indices().find(|&(_, c)| hostile(c)) {
        let before: Vec<char> = text[..i].chars().rev().take(80).collect();
        let before: String = before.into_iter().rev().collect();
        panic!("{what}: raw {c:?} at byte {i}, after: {before:?}");
    }
}

/// `record ARGS` with stdout and stderr in files, once it has started.
struct Recording {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Recording {
    fn start(name: &str, args: &[&str], started: &str) -> Recording {
        let out = scratch().join(format!("{name}.out"));
        let err = scratch().join(format!("{name}.err"));
        let child = Command::new(bin())
            .arg("record")
            .args(args)
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("threadtrace");
        let r = Recording { child, out, err };
        let t0 = Instant::now();
        while !String::from_utf8_lossy(&r.stdout()).contains(started) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name} not started: {}",
                String::from_utf8_lossy(&r.stderr())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn stdout(&self) -> Vec<u8> {
        std::fs::read(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> Vec<u8> {
        std::fs::read(&self.err).unwrap_or_default()
    }

    /// SIGTERM; how long it took to exit, successfully.
    fn stop(&mut self) -> Duration {
        let (rss, hwm, fds) = footprint(self.child.id());
        eprintln!(
            "tracer {}: RSS {rss} KiB, peak {hwm} KiB, {fds} fds",
            self.child.id()
        );
        assert!(hwm < 256 << 10, "peak RSS {hwm} KiB");
        assert!(fds < 256, "{fds} fds");
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(10))
            .expect("no exit within 10 s of SIGTERM");
        assert!(
            status.success(),
            "{status}: {}",
            String::from_utf8_lossy(&self.stderr())
        );
        t0.elapsed()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], path: &Path) -> Vec<u8> {
    let out = Command::new(bin()).args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&out.stderr, &format!("{args:?} stderr"));
    out.stdout
}

/// Processes named with escapes fail for real; every sink shows the
/// names escaped (JSON exactly, as \u escapes), none passes a control on.
#[test]
fn escapes_in_names_and_paths_reach_no_output_raw() {
    if !require_root() {
        return;
    }
    let prog = compile_c("hostile", &["-pthread"]);
    // An executable whose path holds an 8-bit CSI and a bidi override: it
    // is the "library" that asked for its threads.
    let bidi_prog = scratch().join("evil\u{9b}2J\u{202e}gpj.sh");
    std::fs::copy(&prog, &bidi_prog).unwrap();
    // A libc in a directory named with escapes (no ';': the loader splits
    // library paths there): the tracer reads it to attribute the failure,
    // and logs its path (-vv).
    let libc_dir = scratch().join("lib\x1b[2J\x07\u{9b}");
    std::fs::create_dir_all(&libc_dir).unwrap();
    std::fs::copy(
        "/lib/x86_64-linux-gnu/libc.so.6",
        libc_dir.join("libc.so.6"),
    )
    .unwrap();
    let trace = scratch().join("hostile-names.trace");
    let _ = std::fs::remove_file(&trace);
    let trace_arg = trace.to_str().unwrap();
    let mut text = Recording::start(
        "names-text",
        &[
            "--no-tui",
            "-vv",
            "--lifecycle",
            "--storm-threshold",
            "1000000",
            "-o",
            trace_arg,
        ],
        "Ctrl-C to stop.",
    );
    let mut json = Recording::start(
        "names-json",
        &["--json", "--storm-threshold", "1000000"],
        "\"kind\":\"started\"",
    );

    let a = as_nobody(&format!(
        "ulimit -u 1; exec {} name {} 3",
        prog.display(),
        hex(ESCAPES)
    ));
    let b = as_nobody(&format!(
        "ulimit -u 1; exec '{}' name {} 3",
        bidi_prog.display(),
        hex(C1_BIDI.as_bytes())
    ));
    let c = as_nobody(&format!(
        "ulimit -u 1; exec /lib64/ld-linux-x86-64.so.2 --library-path '{}' {} name {} 1 500",
        libc_dir.display(),
        prog.display(),
        hex(b"libc-copy")
    ));
    for (o, failed) in [(&a, "3"), (&b, "3"), (&c, "1")] {
        assert_eq!(
            field(o, "failed").as_deref(),
            Some(failed),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (pid_a, pid_b) = (field(&a, "pid").unwrap(), field(&b, "pid").unwrap());
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("SIGTERM answered in {:?}", text.stop());
    eprintln!("SIGTERM answered in {:?}", json.stop());

    // record --no-tui, --lifecycle, -vv.
    let out = text.stdout();
    assert_clean(&out, "record --no-tui");
    let lines = String::from_utf8_lossy(&out);
    assert!(
        lines.contains(&format!(r"in \x1b]0;PWNED\x07\x1b[2J[{pid_a}]")),
        "{lines}"
    );
    assert!(
        lines.contains(&format!(r"in \u{{9b}}31m\u{{202e}}gpj[{pid_b}]")),
        "{lines}"
    );
    assert!(
        lines.contains(r"evil\u{9b}2J\u{202e}gpj.sh"),
        "the exec line and the library: {lines}"
    );
    let log = text.stderr();
    assert_clean(&log, "log lines (-vv)");
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.lines()
            .any(|l| l.contains(r"lib\x1b[2J\x07\u{9b}/libc.so.6")),
        "the libc copy's path, escaped, in a log line: {log}"
    );

    // record --json: exact, with C1 and bidi as \u escapes.
    let out = json.stdout();
    assert_clean(&out, "record --json");
    let records: Vec<Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let comm_of = |pid: &str| {
        records
            .iter()
            .find(|r| r["kind"] == "thread_create_failed" && r["pid"].as_u64() == pid.parse().ok())
            .map(|r| r["comm"].as_str().unwrap().to_string())
    };
    assert_eq!(comm_of(&pid_a).unwrap().as_bytes(), ESCAPES, "lossless");
    assert_eq!(comm_of(&pid_b).unwrap(), C1_BIDI, "lossless");
    assert!(String::from_utf8_lossy(&out).contains(r"\u009b31m\u202egpj"));

    // report, text and JSON, and every export of the trace file.
    let report = run(&["report"], &trace);
    assert_clean(&report, "report");
    assert!(
        String::from_utf8_lossy(&report).contains(r"\x1b]0;PWNED\x07\x1b[2J"),
        "{}",
        String::from_utf8_lossy(&report)
    );
    let rj = run(&["report", "--json"], &trace);
    assert_clean(&rj, "report --json");
    let rj: Value = serde_json::from_slice(&rj).unwrap();
    assert!(rj["findings"].to_string().contains(r"\u001b]0;PWNED"));
    let jsonl = run(&["export", "--format", "jsonl"], &trace);
    assert_clean(&jsonl, "export jsonl");
    assert!(String::from_utf8_lossy(&jsonl).contains(r"\u009b31m\u202egpj"));
    let chrome = run(&["export", "--format", "chrome"], &trace);
    assert_clean(&chrome, "export chrome");
    let chrome: Value = serde_json::from_slice(&chrome).unwrap();
    let names: Vec<&str> = chrome["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "process_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    // A track is named after the program a process ran.
    assert!(
        names.contains(&format!(r"evil\u{{9b}}2J\u{{202e}}gpj. [{pid_b}]").as_str()),
        "track names: {names:?}"
    );
    let perfetto = run(&["export", "--format", "perfetto"], &trace);
    let has = |needle: &[u8]| perfetto.windows(needle.len()).any(|w| w == needle);
    assert!(!has(ESCAPES) && !has(C1_BIDI.as_bytes()) && !has("\u{202e}".as_bytes()));
    assert!(has(br"evil\u{9b}2J\u{202e}gpj."));
}

/// The same names on the live dashboard: drawn as text, the terminal's
/// title untouched.
#[test]
fn the_dashboard_draws_escapes_as_text() {
    if !require_root() {
        return;
    }
    let prog = compile_c("hostile", &["-pthread"]);
    let tmux = Tmux::start(160, 45, &format!("{} record", bin().display()));
    tmux.wait_for(Duration::from_secs(60), |s| s.contains("q quit"));
    let before = tmux.title();
    for name in [ESCAPES, C1_BIDI.as_bytes()] {
        let o = as_nobody(&format!(
            "ulimit -u 1; exec {} name {} 3",
            prog.display(),
            hex(name)
        ));
        assert_eq!(field(&o, "failed").as_deref(), Some("3"));
    }
    let s = tmux.wait_for(Duration::from_secs(10), |s| {
        s.contains(r"\x1b]0;PWNED\x07") && s.contains(r"\u{9b}31m\u{202e}gpj")
    });
    assert!(s.contains("q quit"), "the screen was not cleared: {s}");
    assert_ne!(tmux.title(), "PWNED");
    assert_eq!(tmux.title(), before);
    let (rss, hwm, fds) = footprint(tmux.pid());
    eprintln!("dashboard tracer: RSS {rss} KiB, peak {hwm} KiB, {fds} fds");
    tmux.keys(&["q"]);
    assert_eq!(tmux.exit_status(Duration::from_secs(10)), Some(0));
}

/// A delegated cgroup whose name is a command: its pids.max is hit for
/// real, and the remedy's command keeps the name one quoted word.
#[test]
fn a_cgroup_named_as_a_command_stays_data_in_the_remedy() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let parent = Cgroup::new("pids", "delegated");
    // On cgroup v2, delegated as systemd does it: the controller enabled
    // for the cgroups below, and the delegate's processes started in a
    // leaf of the subtree (a process may move only within what it owns;
    // the parent itself can hold none once it has controllers on).
    let leaf = parent.path.join("init");
    if cgroup_v2() {
        cgroup_enable_controller(&parent.path, "pids");
        std::fs::create_dir(&leaf).unwrap();
    }
    // Delegated to nobody, as a container runtime or systemd would.
    let chown = bash(&format!("chown -R nobody {}", parent.path.display()));
    assert!(chown.status.success());
    let name = "x;$(touch${IFS}pwned);#";
    let tracer = Tracer::start(&[]);
    let script = format!(
        "cd {dir} && mkdir -- '{name}' && echo 4 > '{name}/pids.max' && \
         echo $$ > '{name}/cgroup.procs' && echo pid=$$ && exec {burst} 16",
        dir = parent.path.display(),
        burst = burst.display()
    );
    let out = if cgroup_v2() {
        // Root puts the shell in the leaf, then it runs as nobody.
        Command::new("bash")
            .args([
                "-c",
                &format!(
                    "echo $$ > {}/cgroup.procs && exec runuser -u nobody -- bash -c \"$0\"",
                    leaf.display()
                ),
                &script,
            ])
            .output()
            .expect("bash")
    } else {
        as_nobody(&script)
    };
    let pid: u32 = field(&out, "pid")
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&out.stderr)))
        .parse()
        .unwrap();
    assert_ne!(field(&out, "failed").as_deref(), Some("0"));
    let fds = footprint(tracer.pid()).2;
    let records = tracer.stop();
    let _ = std::fs::remove_dir(parent.path.join(name));
    let failure = records
        .of_pid("thread_create_failed", pid)
        .into_iter()
        .find(|r| r["cause"]["kind"] == "cgroup_pids")
        .unwrap_or_else(|| panic!("no cgroup_pids failure for {pid}"))
        .clone();
    let remedy = failure["cause"]["remedy"].as_str().unwrap();
    let command = remedy
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {remedy}"));
    let path = format!("{}/{name}/pids.max", parent.path.display());
    assert_eq!(command, format!("echo N > '{path}'"), "{remedy}");
    assert!(fds < 256);

    // Pasted: it parses, and run against a copy of the tree it writes the
    // limit there and runs nothing.
    let sh = |cmd: &str, cwd: &Path| {
        Command::new("sh")
            .args(["-c", cmd])
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let n = Command::new("sh")
        .args(["-n", "-c", command])
        .status()
        .unwrap();
    assert!(n.success());
    let dummy = scratch().join("dummy-cgroups");
    let cwd = scratch().join("paste-here");
    let _ = std::fs::remove_dir_all(&dummy);
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(&cwd).unwrap();
    let dummy_dir = format!(
        "{}/{}",
        dummy.display(),
        parent.path.file_name().unwrap().to_str().unwrap()
    );
    std::fs::create_dir_all(Path::new(&dummy_dir).join(name)).unwrap();
    let pasted = command
        .replacen("echo N", "echo 7", 1)
        .replace(parent.path.to_str().unwrap(), &dummy_dir);
    assert!(sh(&pasted, &cwd).status.success(), "{pasted}");
    assert_eq!(
        std::fs::read_to_string(Path::new(&dummy_dir).join(name).join("pids.max")).unwrap(),
        "7\n"
    );
    assert!(!cwd.join("pwned").exists(), "the name ran: {pasted}");
    // The unquoted form the remedy had before runs the name's command.
    let unquoted = format!("echo 7 > {dummy_dir}/{name}/pids.max");
    let _ = sh(&unquoted, &cwd);
    assert!(
        cwd.join("pwned").exists(),
        "control: unquoted, the payload runs"
    );
}

/// One `nobody` process with a 2 MiB argv forks 5,000 children: command
/// lines are cut and shared, exited processes forgotten by bytes, and the
/// tracer stays small and answers SIGTERM.
#[test]
fn a_2_mib_command_line_forked_thousands_of_times_stays_bounded() {
    if !require_root() {
        return;
    }
    let prog = compile_c("hostile", &["-pthread"]);
    let trace = scratch().join("bloat.trace");
    let _ = std::fs::remove_file(&trace);
    let mut rec = Recording::start(
        "bloat",
        &["--json", "-o", trace.to_str().unwrap()],
        "\"kind\":\"started\"",
    );
    let before = footprint(rec.child.id());
    let t0 = Instant::now();
    let out = as_nobody(&format!("exec {} bloat 5000 500", prog.display()));
    assert_eq!(
        field(&out, "forked").as_deref(),
        Some("5000"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = field(&out, "pid").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = footprint(rec.child.id());
    eprintln!(
        "5,000 forks of a 2 MiB argv in {:?}: tracer RSS {} → {} KiB, peak {} KiB, fds {} → {}",
        t0.elapsed(),
        before.0,
        after.0,
        after.1,
        before.2,
        after.2
    );
    assert!(after.1 < 128 << 10, "peak RSS {} KiB", after.1);
    assert!(after.2 <= before.2 + 16, "fds {} → {}", before.2, after.2);
    let took = rec.stop();
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let out = rec.stdout();
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&out).lines().last().unwrap()).unwrap();
    let t = &summary["tracer"];
    eprintln!("tracer: {t}");
    assert!(t["cmdlines_cut"].as_u64().unwrap() >= 1, "{t}");
    assert!(
        t["evicted"]["process_table"].as_u64().unwrap() > 0,
        "5,000 exited entries of 4 KiB exceed 16 MiB: {t}"
    );
    // The trace keeps the cut command line, marker included.
    let jsonl = run(&["export", "--format", "jsonl"], &trace);
    let cut = String::from_utf8_lossy(&jsonl)
        .lines()
        .filter(|l| l.contains(&format!("\"pid\":{pid}")))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["cmdline"].as_str().map(str::len))
        .max();
    assert!(cut.is_some_and(|n| n < 4200), "{cut:?}");
}

/// stdout is a pipe nobody reads: the output stage blocks on it, the
/// collector does not, and SIGTERM ends the recording within seconds,
/// saying why in one line.
#[test]
fn a_stdout_nobody_reads_does_not_make_sigterm_wait() {
    if !require_root() {
        return;
    }
    let err = scratch().join("stuck.err");
    let mut child = Command::new(bin())
        .args(["record", "--json", "--lifecycle"])
        .stdout(Stdio::piped())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Its first line, then nobody reads: the pipe's 64 KiB fill up.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    use std::io::Read;
    let _ = stdout.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first).contains("started"));
    let load = bash("for i in $(seq 3000); do /bin/true; done");
    assert!(load.status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "still recording");
    let (rss, hwm, fds) = footprint(child.id());
    eprintln!("stuck tracer: RSS {rss} KiB, peak {hwm} KiB, {fds} fds");
    assert!(hwm < 256 << 10 && fds < 256);
    let t0 = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut child, Duration::from_secs(15))
        .expect("SIGTERM not answered within 15 s");
    let took = t0.elapsed();
    eprintln!("SIGTERM with stdout unread: exit {status} after {took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(status.code(), Some(1));
    let err = std::fs::read_to_string(&err).unwrap();
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("threadtrace: the output stage did not finish"),
        "{err}"
    );
    drop(stdout);
}
