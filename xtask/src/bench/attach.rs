//! `cargo xtask bench --attach-only`: what each way of attaching the
//! failure hooks costs a thread loop. threadtrace forced onto its syscall
//! tracepoints (`record --tracepoints-only`) against threadtrace as it
//! starts by default (fexit and fentry where the kernel allows them), both
//! against untraced and against bpftrace, rounds taking turns; then each
//! kernel program's run time per thread from the kernel's accounting.
//!
//! Meant for kernels where fexit loads (`cargo xtask vm -- ...` runs it in
//! a Debian guest); where it does not, both threadtrace configurations use
//! the tracepoints, and the page says so.
use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{
    bpftrace, field_f64, machine, probes, run_workload,
    stats::{median, Estimate},
    threadtrace,
};
use crate::output;

pub struct Options {
    pub reps: usize,
    pub threads: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 8,
            threads: 20_000,
        }
    }
}

const CONFIGS: [&str; 4] = ["untraced", "tracepoints", "default", "bpftrace"];
const TRACEPOINTS_ONLY: &[&str] = &["--tracepoints-only"];

/// How each hook was attached, as `started` said: "clone failures: fexit
/// kernel_clone".
fn attach_lines(started: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(started).unwrap_or(Value::Null);
    v["attach"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let at: Vec<&str> = h["at"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut s = format!(
                "{}: {} {}",
                h["hook"].as_str().unwrap_or("?"),
                match h["method"].as_str() {
                    Some("fentry_fexit") => "fentry/fexit",
                    Some(m) => m,
                    None => "?",
                },
                at.join(", ")
            );
            if let Some(why) = h["fexit_refused"].as_str() {
                write!(s, " (fexit {why})").unwrap();
            }
            s
        })
        .collect()
}

pub fn run(bin: &Path, thread_loop: &Path, script: &Path, o: &Options) -> Result<String> {
    let threads = o.threads.to_string();
    let workload = || -> Result<(f64, f64)> {
        let (out, cpu) = run_workload(Command::new(thread_loop).arg(&threads))?;
        Ok((field_f64(&out, "seconds")?, cpu))
    };
    workload().context("warming up")?;
    // (wall, cpu) per round, per configuration.
    let mut runs: [Vec<(f64, f64)>; 4] = Default::default();
    let mut attach: [Vec<String>; 2] = Default::default();
    for rep in 0..o.reps {
        for k in 0..CONFIGS.len() {
            let i = (rep + k) % CONFIGS.len();
            let tracer = match i {
                0 => None,
                1 => Some(threadtrace(bin, TRACEPOINTS_ONLY)?),
                2 => Some(threadtrace(bin, &[])?),
                _ => Some(bpftrace(script)?),
            };
            if let Some(t) = &tracer {
                if (1..=2).contains(&i) && attach[i - 1].is_empty() {
                    attach[i - 1] = attach_lines(&t.ready_line);
                }
            }
            let (wall, cpu) = workload()?;
            if let Some(mut t) = tracer {
                t.stop()?;
            }
            eprintln!(
                "xtask: bench: attach {} round {}: {wall:.3} s, {cpu:.3} s CPU",
                CONFIGS[i],
                rep + 1
            );
            runs[i].push((wall, cpu));
        }
    }
    let per_thread = kernel_time(bin, thread_loop, o.threads)?;
    page(o, &runs, &attach, &per_thread)
}

/// Each threadtrace configuration's programs over one thread loop, with
/// the kernel's accounting on.
fn kernel_time(
    bin: &Path,
    thread_loop: &Path,
    threads: u64,
) -> Result<[Vec<probes::ProgramCost>; 2]> {
    let _on = probes::StatsOn::new()?;
    Ok([
        probes::one_tool(|| threadtrace(bin, TRACEPOINTS_ONLY), thread_loop, threads)?,
        probes::one_tool(|| threadtrace(bin, &[]), thread_loop, threads)?,
    ])
}

fn ratio(runs: &[Vec<(f64, f64)>; 4], of: usize, to: usize, cpu: bool) -> Estimate {
    let pick = |r: &(f64, f64)| if cpu { r.1 } else { r.0 };
    let ratios: Vec<f64> = runs[of]
        .iter()
        .zip(&runs[to])
        .map(|(a, b)| pick(a) / pick(b))
        .collect();
    Estimate::of(&ratios)
}

fn page(
    o: &Options,
    runs: &[Vec<(f64, f64)>; 4],
    attach: &[Vec<String>; 2],
    per_thread: &[Vec<probes::ProgramCost>; 2],
) -> Result<String> {
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let emulated = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains("QEMU"));
    let mut md = String::new();
    writeln!(md, "# Attach methods on {}\n", kernel.trim())?;
    writeln!(
        md,
        "Written by `cargo xtask bench --attach-only` ({}).\n",
        output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?.trim()
    )?;
    writeln!(md, "## Machine\n\n{}", machine())?;
    if emulated {
        writeln!(
            md,
            "An emulated CPU (qemu): compare the ratios within this page, not its times \
             with a real machine's.\n"
        )?;
    }
    writeln!(md, "## How threadtrace attached\n")?;
    for (name, lines) in [("--tracepoints-only", &attach[0]), ("default", &attach[1])] {
        writeln!(md, "- {name}:")?;
        for l in lines {
            writeln!(md, "  - {l}")?;
        }
    }
    writeln!(md, "\n## The thread loop\n")?;
    writeln!(
        md,
        "{} rounds of a loop creating and joining {} threads; in each round it runs \
         untraced, under threadtrace on its tracepoints, under threadtrace as it starts by \
         default, and under bpftrace (bench/threads.bt), each round starting with the next \
         configuration. A figure is the median of the rounds' ratios, with its 95% \
         bootstrap interval in brackets; wall time is the loop's own clock, CPU its user + \
         system time. Median untraced loop: {:.3} s.\n",
        o.reps,
        o.threads,
        median(&runs[0].iter().map(|r| r.0).collect::<Vec<_>>())
    )?;
    writeln!(md, "| against | configuration | wall | CPU |")?;
    writeln!(md, "| --- | --- | --- | --- |")?;
    for (of, to) in [(1, 0), (2, 0), (3, 0), (2, 1)] {
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            CONFIGS[to],
            CONFIGS[of],
            ratio(runs, of, to, false).percent(),
            ratio(runs, of, to, true).percent()
        )?;
    }
    writeln!(md, "\n## Kernel time per thread\n")?;
    writeln!(
        md,
        "One loop of {} threads per configuration with `kernel.bpf_stats_enabled=1`: \
         each program's run count and run time from the kernel's own accounting \
         (programs that did not run are left out; the cost of the trampoline or of the \
         slow syscall exit itself is not in them, only in the loop's times above).\n",
        o.threads
    )?;
    writeln!(
        md,
        "| configuration | program | runs per thread | ns per run | ns per thread |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- |")?;
    for (name, costs) in [("tracepoints", &per_thread[0]), ("default", &per_thread[1])] {
        let mut total = 0.0;
        for c in costs {
            let per = c.runs as f64 / o.threads as f64;
            total += c.ns_per_run * per;
            writeln!(
                md,
                "| {name} | {} | {per:.2} | {:.0} | {:.0} |",
                c.name,
                c.ns_per_run,
                c.ns_per_run * per
            )?;
        }
        writeln!(md, "| {name} | **all** | | | **{total:.0}** |")?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_started_line_tells_each_hooks_method() {
        let started = r#"{"kind":"started","attach":[
            {"hook":"clone failures","method":"fexit","at":["kernel_clone"]},
            {"hook":"thread stack mmap","method":"tracepoints","at":["sys_exit_mmap"],
             "fexit_refused":"not allowed here: EPERM"}]}"#;
        assert_eq!(
            attach_lines(started),
            [
                "clone failures: fexit kernel_clone",
                "thread stack mmap: tracepoints sys_exit_mmap (fexit not allowed here: EPERM)"
            ]
        );
        assert!(attach_lines("not json").is_empty());
    }
}
