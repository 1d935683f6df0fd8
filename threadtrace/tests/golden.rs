//! The output contract, against recordings made before the code was
//! reorganized: what `record --json` printed, and what `report` and
//! `export` make of the trace files, must stay byte for byte the same.
//!
//! `golden/recording.trace` and `golden/record.jsonl` are one real
//! recording (`record --json --lifecycle -o`) of every kind of record: an
//! inherited RLIMIT_NPROC failing libgomp, numpy's OpenBLAS as `nobody`, a
//! pids cgroup at its max, a thread stack that could not be mapped, rlimit
//! changes, a storm, a pool worker OOM-killed in a memory cgroup, and
//! oversubscription. `older.trace` is an earlier format's recording,
//! `cut.trace` one cut at 4 KiB. `golden/expected/` holds the outputs.
//!
//! A change meant to alter an output regenerates them with
//! `GOLDEN_UPDATE=1 cargo test --release -p threadtrace --test golden`
//! and shows the difference in its commit.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use threadtrace::{lines, model::Record, sanitize};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var_os("GOLDEN_UPDATE").is_some_and(|v| !v.is_empty())
}

/// `got` against `expected/NAME`; on a difference, the first line that
/// differs.
fn check(name: &str, got: &[u8]) {
    let path = dir().join("expected").join(name);
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (GOLDEN_UPDATE=1 writes it)", path.display()));
    if want == got {
        return;
    }
    let (w, g) = (String::from_utf8_lossy(&want), String::from_utf8_lossy(got));
    let (wl, gl): (Vec<&str>, Vec<&str>) = (w.lines().collect(), g.lines().collect());
    let at = (0..wl.len().max(gl.len()))
        .find(|&i| wl.get(i) != gl.get(i))
        .unwrap_or(0);
    panic!(
        "{name} differs from {} at line {}:\n  expected: {}\n  got:      {}",
        path.display(),
        at + 1,
        wl.get(at).copied().unwrap_or("<end>"),
        gl.get(at).copied().unwrap_or("<end>"),
    );
}

/// The binary's stdout, exit code and stderr, for one command line.
fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_threadtrace"))
        .current_dir(dir())
        .args(args)
        .output()
        .expect("threadtrace runs");
    let mut all = out.stdout;
    all.extend_from_slice(
        format!(
            "\n--- exit {:?}, stderr:\n",
            out.status.code().unwrap_or(-1)
        )
        .as_bytes(),
    );
    all.extend_from_slice(&out.stderr);
    all
}

#[test]
fn report_is_unchanged() {
    for (name, args) in [
        ("report.txt", &["report", "recording.trace"][..]),
        ("report.json", &["report", "--json", "recording.trace"]),
        (
            "report-since.txt",
            &["report", "--since", "5s", "recording.trace"],
        ),
        (
            "report-until.json",
            &["report", "--json", "--until", "8s", "recording.trace"],
        ),
        ("report-older.txt", &["report", "older.trace"]),
        ("report-older.json", &["report", "--json", "older.trace"]),
        ("report-cut.txt", &["report", "cut.trace"]),
        (
            "report-both.txt",
            &["report", "older.trace", "recording.trace"],
        ),
    ] {
        check(name, &run(args));
    }
}

#[test]
fn export_is_unchanged() {
    for format in ["jsonl", "chrome", "perfetto"] {
        for file in ["recording", "older"] {
            check(
                &format!("export-{file}.{format}"),
                &run(&["export", "--format", format, &format!("{file}.trace")]),
            );
        }
    }
}

/// Each line `record --json` printed reads back into the model and is
/// printed again as it was: field names, order and values.
#[test]
fn record_json_lines_are_unchanged() {
    let text = std::fs::read_to_string(dir().join("record.jsonl")).unwrap();
    for (i, line) in text.lines().enumerate() {
        let r: Record =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
        assert_eq!(
            sanitize::to_json(&r).unwrap(),
            line,
            "line {} of record.jsonl",
            i + 1
        );
    }
}

/// The readable line of each of those records, as `record --no-tui`
/// prints it.
#[test]
fn readable_lines_are_unchanged() {
    let text = std::fs::read_to_string(dir().join("record.jsonl")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let r: Record = serde_json::from_str(line).unwrap();
        out.push_str(&lines::render(&r));
        out.push('\n');
    }
    check("lines.txt", out.as_bytes());
}
