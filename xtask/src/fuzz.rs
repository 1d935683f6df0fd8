//! `cargo xtask fuzz [SECONDS]`: the trace reader under libFuzzer for a
//! bounded time, starting from real recordings (fuzz/seeds/). New inputs
//! that reach new code go to fuzz/corpus/ (not committed) and are kept
//! between local runs; a crash leaves its input in fuzz/artifacts/.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub const DEFAULT_SECONDS: u64 = 120;

/// What libFuzzer reached.
pub struct Outcome {
    pub executions: u64,
    pub seconds: u64,
}

/// "Done 224689 runs in 31 second(s)" → (224689, 31).
fn parse_done(stderr: &str) -> Option<Outcome> {
    let line = stderr.lines().rev().find(|l| l.starts_with("Done "))?;
    let mut words = line.split_whitespace();
    let executions = words.nth(1)?.parse().ok()?;
    let seconds = words.nth(2)?.parse().ok()?;
    Some(Outcome {
        executions,
        seconds,
    })
}

pub fn run(seconds: u64) -> Result<Outcome> {
    crate::bootstrap::cargo_fuzz()?;
    let dir = crate::root_dir().join("fuzz");
    let corpus = dir.join("corpus/reader");
    std::fs::create_dir_all(&corpus)?;
    eprintln!("xtask: fuzzing the trace reader for {seconds} s");
    let out = Command::new("cargo")
        .current_dir(&dir)
        .args(["+nightly", "fuzz", "run", "reader"])
        .arg(&corpus)
        .arg(dir.join("seeds/reader"))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run cargo fuzz")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("{stderr}");
        bail!(
            "the trace reader failed under the fuzzer ({}): the input is in fuzz/artifacts/reader/",
            out.status
        );
    }
    let outcome = parse_done(&stderr).context("libFuzzer printed no 'Done N runs' line")?;
    eprintln!(
        "xtask: fuzz: reader: {} executions in {} s, no crash",
        outcome.executions, outcome.seconds
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_libfuzzers_last_line() {
        let o = super::parse_done("#1 INITED\nDone 224689 runs in 31 second(s)\n").unwrap();
        assert_eq!((o.executions, o.seconds), (224689, 31));
        assert!(super::parse_done("crash").is_none());
    }
}
