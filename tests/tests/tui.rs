//! The dashboard as an SRE meets it: `record` in a real terminal (tmux)
//! while a real program fails, then q, Ctrl-C or SIGTERM: the terminal
//! comes back with the summary on it, the process exits 0, and the trace
//! file is complete.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use threadtrace_e2e::*;

const STARTED: Duration = Duration::from_secs(60);

/// The dashboard is up: its header and its keys are on the screen.
fn dashboard(s: &str) -> bool {
    s.lines()
        .next()
        .is_some_and(|l| l.starts_with("threadtrace up"))
        && s.contains(" probes │")
        && s.contains("q quit")
}

/// The failures table's row for this library and cause, as its cells.
fn failure_row(s: &str, library: &str, cause: &str) -> Option<Vec<String>> {
    s.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|c| c.len() >= 4 && c[0] == library && c[1] == cause)
}

/// What the terminal shows once the tracer has exited: the end of
/// recording summary, on the normal screen again.
fn assert_summary_on_restored_screen(s: &str) {
    assert!(
        s.contains("── summary (") && !s.contains("q quit · p pause"),
        "the summary, not the dashboard:\n{s}"
    );
}

#[test]
fn a_real_failure_on_the_dashboard_then_q() {
    if !require_root() {
        return;
    }
    let burst = compile_c("thread_burst", &["-pthread"]);
    let file = scratch().join("tui.trace");
    let _ = std::fs::remove_file(&file);
    let tmux = Tmux::start(
        120,
        40,
        &format!("{} record -o {}", bin().display(), file.display()),
    );
    let s = tmux.wait_for(STARTED, dashboard);
    assert!(s.contains(&format!("trace {}", file.display())), "{s}");
    let tracer = tmux.pid();
    let at_start = threads_of(tracer);
    assert_eq!(at_start, "3", "collector, output stage, dashboard");

    let out = as_nobody(&format!("ulimit -u 8; exec {} 64", burst.display()));
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    let failed: u64 = field(&out, "failed").unwrap().parse().unwrap();
    assert!(failed > 0, "{}", String::from_utf8_lossy(&out.stdout));

    // Within seconds: which library, which cause, how many, who.
    let s = tmux.wait_for(Duration::from_secs(10), |s| {
        failure_row(s, "thread_burst", "rlimit_nproc").is_some_and(|c| c[2] == failed.to_string())
    });
    let row = failure_row(&s, "thread_burst", "rlimit_nproc").unwrap();
    assert!(
        row.iter()
            .any(|c| c.contains(&format!("thread_burst[{pid}]"))),
        "{row:?}"
    );
    assert!(
        s.contains(&format!("{failed} failures (exact)")),
        "header:\n{s}"
    );
    assert!(
        s.contains("1. ") && s.contains(" failed for thread_burst"),
        "the finding:\n{s}"
    );
    assert_eq!(
        threads_of(tracer),
        at_start,
        "no thread created while thread creation fails"
    );

    // A smaller terminal: redrawn whole, header first, keys last.
    tmux.resize(80, 24);
    let s = tmux.wait_for(Duration::from_secs(5), |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 24
            && lines[0].starts_with("threadtrace up")
            && lines[23].starts_with(" q quit")
            && lines.iter().all(|l| l.chars().count() <= 80)
    });
    assert!(
        failure_row(&s, "thread_burst", "rlimit_nproc").is_some(),
        "{s}"
    );

    // Enter on the finding: the evidence and the remedy.
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for(Duration::from_secs(5), |s| s.contains("Esc close"));
    assert!(s.contains("why: rlimit_nproc") && s.contains("do: "), "{s}");
    tmux.keys(&["Escape", "q"]);

    assert_eq!(tmux.exit_status(Duration::from_secs(30)), Some(0));
    let s = tmux.screen();
    assert_summary_on_restored_screen(&s);
    assert!(
        s.contains(&format!("{failed} thread-creation failures")),
        "{s}"
    );
    let r = report_json(&file);
    assert_eq!(r["ended_cleanly"], true, "flushed and ended: {r}");
    assert_eq!(report_count(&r, pid), failed);
}

/// Ctrl-C is a key in raw mode, and SIGTERM comes from outside: both stop
/// the recording as q does.
#[test]
fn ctrl_c_and_sigterm_end_it_like_q() {
    if !require_root() {
        return;
    }
    for how in ["Ctrl-C", "SIGTERM"] {
        let file = scratch().join(format!("tui-{how}.trace"));
        let _ = std::fs::remove_file(&file);
        let tmux = Tmux::start(
            100,
            30,
            &format!("{} record -o {}", bin().display(), file.display()),
        );
        tmux.wait_for(STARTED, dashboard);
        match how {
            "Ctrl-C" => tmux.keys(&["C-c"]),
            _ => {
                // SAFETY: signalling the tracer this test started.
                unsafe { libc::kill(tmux.pid() as i32, libc::SIGTERM) };
            }
        }
        assert_eq!(
            tmux.exit_status(Duration::from_secs(30)),
            Some(0),
            "{how}:\n{}",
            tmux.screen()
        );
        assert_summary_on_restored_screen(&tmux.screen());
        assert_eq!(report_json(&file)["ended_cleanly"], true, "{how}");
    }
}

/// --no-tui on a terminal, and stdout not a terminal: today's lines.
#[test]
fn lines_without_a_terminal_or_with_no_tui() {
    if !require_root() {
        return;
    }
    let tmux = Tmux::start(200, 30, &format!("{} record --no-tui", bin().display()));
    let s = tmux.wait_for(STARTED, |s| s.contains("Ctrl-C to stop."));
    assert!(
        s.lines()
            .any(|l| l.starts_with("threadtrace ") && l.contains(" recording on ")),
        "{s}"
    );
    // Not raw: Ctrl-C is SIGINT from the terminal.
    tmux.keys(&["C-c"]);
    assert_eq!(tmux.exit_status(Duration::from_secs(30)), Some(0));
    assert!(tmux.screen().contains("── summary ("));

    let out = Command::new(bin())
        .args(["record", "-d", "2s"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("threadtrace ") && text.contains("── summary ("),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no terminal escapes in a pipe: {text}"
    );
}
