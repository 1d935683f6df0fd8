//! What each kernel program costs, from the kernel's own accounting
//! (kernel.bpf_stats_enabled: run count and run time per program), over
//! one thread loop, for threadtrace's programs and bpftrace's. Enabled
//! only here: the accounting itself costs a clock read per run.
use std::{collections::HashSet, fmt::Write as _, path::Path, process::Command};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{bpftrace, run_workload, threadtrace, Running};
use crate::output;

pub struct ProgramCost {
    pub name: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

pub struct PerProbe {
    threads: u64,
    threadtrace: Vec<ProgramCost>,
    bpftrace: Vec<ProgramCost>,
}

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the kernel's per-program accounting on, and back off when dropped.
pub struct StatsOn(String);

impl StatsOn {
    pub fn new() -> Result<StatsOn> {
        let was = std::fs::read_to_string(STATS).context("kernel.bpf_stats_enabled")?;
        std::fs::write(STATS, "1")?;
        Ok(StatsOn(was))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS, self.0.trim());
    }
}

fn programs() -> Result<Value> {
    Ok(serde_json::from_str(&output(
        Command::new("bpftool").args(["prog", "show", "--json"]),
    )?)?)
}

/// The ids of the programs loaded now.
fn ids() -> Result<HashSet<u64>> {
    Ok(programs()?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

/// (name, run count, run time ns) of the programs with these ids. (Debian's
/// bpftool does not say which process holds a program: a tool's programs
/// are the ones that appeared when it started.)
fn snapshot(ours: &HashSet<u64>) -> Result<Vec<(String, u64, u64)>> {
    Ok(programs()?
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["id"].as_u64().is_some_and(|id| ours.contains(&id)))
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("?").to_string(),
                p["run_cnt"].as_u64().unwrap_or(0),
                p["run_time_ns"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

fn costs(before: &[(String, u64, u64)], after: &[(String, u64, u64)]) -> Vec<ProgramCost> {
    let mut out: Vec<ProgramCost> = after
        .iter()
        .map(|(name, runs, ns)| {
            let (r0, n0) = before
                .iter()
                .find(|b| &b.0 == name)
                .map_or((0, 0), |b| (b.1, b.2));
            let runs = runs.saturating_sub(r0);
            ProgramCost {
                name: name.clone(),
                runs,
                ns_per_run: ns.saturating_sub(n0) as f64 / runs.max(1) as f64,
            }
        })
        .filter(|c| c.runs > 0)
        .collect();
    out.sort_by(|a, b| (b.ns_per_run * b.runs as f64).total_cmp(&(a.ns_per_run * a.runs as f64)));
    out
}

/// The programs a tool loads when `start` runs it, over one thread loop:
/// the kernel's accounting must be on (`StatsOn`).
pub fn one_tool(
    start: impl FnOnce() -> Result<Running>,
    thread_loop: &Path,
    threads: u64,
) -> Result<Vec<ProgramCost>> {
    let others = ids()?;
    let mut t = start()?;
    let ours: HashSet<u64> = ids()?.difference(&others).copied().collect();
    let before = snapshot(&ours)?;
    run_workload(Command::new(thread_loop).arg(threads.to_string()))?;
    let after = snapshot(&ours)?;
    t.stop()?;
    Ok(costs(&before, &after))
}

pub fn measure(bin: &Path, script: &Path, thread_loop: &Path, threads: u64) -> Result<PerProbe> {
    let _on = StatsOn::new()?;
    Ok(PerProbe {
        threads,
        threadtrace: one_tool(|| threadtrace(bin, &[]), thread_loop, threads)?,
        bpftrace: one_tool(|| bpftrace(script), thread_loop, threads)?,
    })
}

pub fn section(md: &mut String, p: &PerProbe) -> std::fmt::Result {
    writeln!(md, "## Kernel programs, per run\n")?;
    writeln!(
        md,
        "One thread loop of {} threads with `kernel.bpf_stats_enabled=1` (the kernel's run \
         count and run time for each program; programs that did not run are left out). The \
         time of the uprobe and uretprobe traps themselves is not in these figures: it is \
         in the wall and CPU times above.\n",
        p.threads
    )?;
    writeln!(
        md,
        "| tool | program | runs | runs per thread | ns per run | ns per thread |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
    for (tool, progs) in [("threadtrace", &p.threadtrace), ("bpftrace", &p.bpftrace)] {
        let mut total = 0.0;
        for c in progs.iter() {
            let per_thread = c.runs as f64 / p.threads as f64;
            total += c.ns_per_run * per_thread;
            writeln!(
                md,
                "| {tool} | {} | {} | {:.2} | {:.0} | {:.0} |",
                c.name,
                c.runs,
                per_thread,
                c.ns_per_run,
                c.ns_per_run * per_thread
            )?;
        }
        writeln!(md, "| {tool} | **all** | | | | **{total:.0}** |")?;
    }
    writeln!(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_deltas_per_program() {
        let before = vec![("a".to_string(), 10, 1000), ("b".to_string(), 5, 50)];
        let after = vec![
            ("a".to_string(), 110, 21000),
            ("b".to_string(), 5, 50),
            ("c".to_string(), 4, 400),
        ];
        let c = costs(&before, &after);
        assert_eq!(c.len(), 2, "b did not run");
        assert_eq!(
            (c[0].name.as_str(), c[0].runs, c[0].ns_per_run),
            ("a", 100, 200.0)
        );
        assert_eq!((c[1].name.as_str(), c[1].ns_per_run), ("c", 100.0));
    }
}
