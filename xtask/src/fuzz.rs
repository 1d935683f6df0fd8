//! `cargo xtask fuzz [SECONDS]`: the fuzz targets under libFuzzer for a
//! bounded time, shared among them, starting from real recordings and the
//! crafted files of issue 14 (fuzz/seeds/<target>/):
//! - reader: the trace reader on any bytes;
//! - report: `threadtrace report` (text and JSON) on any trace;
//! - export: `threadtrace export` in each format on any trace;
//! - attribution: the maps parser, the kernel's mapping events and the ELF
//!   and unwind entry points on any bytes.
//!
//! Trace inputs go up to 256 KiB (the 2 MiB crafted seed is cut there: at
//! its full size one input took 60 ms, and a 30 s run reached 500 inputs;
//! tests/tests/recorder.rs reads it whole), attribution's up to 2 MiB;
//! one input taking more than 10 s, or the process more than 1 GiB, is a
//! failure: what the reader and report promise is
//! bounded work and memory on hostile files, not only no panic. Built
//! without ASan: the code under test is safe Rust, and each run is several
//! times faster; libFuzzer's own limits check time and memory.
//!
//! New inputs that reach new code go to fuzz/corpus/<target>/ (not
//! committed) and are kept between local runs; a crash leaves its input in
//! fuzz/artifacts/<target>/.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

pub const DEFAULT_SECONDS: u64 = 120;
pub const TARGETS: [&str; 4] = ["reader", "report", "export", "attribution"];
const MAX_LEN: u64 = 2 << 20;
const MAX_TRACE_LEN: u64 = 256 << 10;
const TIMEOUT_S: u64 = 10;
const RSS_LIMIT_MB: u64 = 1024;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of fuzzing in all, shared among the targets.
    #[arg(value_name = "SECONDS", default_value_t = DEFAULT_SECONDS)]
    pub seconds: u64,
}

/// What libFuzzer reached.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub executions: u64,
    pub seconds: u64,
    /// Coverage counters (edges) and features reached: libFuzzer's
    /// `cov:` and `ft:`.
    pub coverage: u64,
    pub features: u64,
}

/// "Done 224689 runs in 31 second(s)" and the last "cov: N ft: M" line.
fn parse(stderr: &str) -> Option<Outcome> {
    let line = stderr.lines().rev().find(|l| l.starts_with("Done "))?;
    let mut words = line.split_whitespace();
    let executions = words.nth(1)?.parse().ok()?;
    let seconds = words.nth(2)?.parse().ok()?;
    let after = |l: &str, key: &str| -> Option<u64> {
        let mut w = l.split_whitespace();
        w.find(|x| *x == key)?;
        w.next()?.parse().ok()
    };
    let stats = stderr.lines().rev().find(|l| l.contains(" cov: "));
    Some(Outcome {
        executions,
        seconds,
        coverage: stats.and_then(|l| after(l, "cov:")).unwrap_or(0),
        features: stats.and_then(|l| after(l, "ft:")).unwrap_or(0),
    })
}

/// Every target, `seconds` shared among them.
pub fn run(seconds: u64) -> Result<Vec<(&'static str, Outcome)>> {
    crate::bootstrap::cargo_fuzz()?;
    let dir = crate::root_dir().join("fuzz");
    // One build for all: each run then starts at once.
    crate::sh(Command::new("cargo").current_dir(&dir).args([
        "+nightly",
        "fuzz",
        "build",
        "--sanitizer",
        "none",
    ]))
    .context("cannot build the fuzz targets")?;
    let each = (seconds / TARGETS.len() as u64).max(1);
    let mut out = Vec::new();
    for target in TARGETS {
        out.push((target, run_one(target, each)?));
    }
    for (target, o) in &out {
        eprintln!(
            "xtask: fuzz: {target}: {} executions in {} s, coverage {} edges, {} features, no crash",
            o.executions, o.seconds, o.coverage, o.features
        );
    }
    Ok(out)
}

fn run_one(target: &str, seconds: u64) -> Result<Outcome> {
    let dir = crate::root_dir().join("fuzz");
    let corpus = dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    eprintln!("xtask: fuzzing {target} for {seconds} s");
    let out = Command::new("cargo")
        .current_dir(&dir)
        .args(["+nightly", "fuzz", "run", "--sanitizer", "none", target])
        .arg(&corpus)
        .arg(dir.join("seeds").join(target))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            &format!(
                "-max_len={}",
                if target == "attribution" {
                    MAX_LEN
                } else {
                    MAX_TRACE_LEN
                }
            ),
            &format!("-timeout={TIMEOUT_S}"),
            &format!("-rss_limit_mb={RSS_LIMIT_MB}"),
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
            "{target} failed under the fuzzer ({}): the input is in fuzz/artifacts/{target}/",
            out.status
        );
    }
    parse(&stderr).context("libFuzzer printed no 'Done N runs' line")
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_libfuzzers_last_lines() {
        let o = super::parse(
            "#1 INITED\n#4082\tDONE   cov: 3837 ft: 16266 corp: 763/67Mb lim: 2097152 exec/s: 131\n\
             Done 4082 runs in 31 second(s)\n",
        )
        .unwrap();
        assert_eq!(
            o,
            super::Outcome {
                executions: 4082,
                seconds: 31,
                coverage: 3837,
                features: 16266
            }
        );
        assert!(super::parse("crash").is_none());
    }
}
