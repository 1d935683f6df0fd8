//! `cargo xtask bench --growth-only`: what sampling resident memory for
//! OOM growers costs the tracer, with 1,000 idle processes on the host.
//! One run, the settings interleaved (off, then each interval, then again)
//! so that the machine's drift is shared; CPU is the tracer's on-CPU time
//! from schedstat (ns, all threads), RSS its VmRSS at the end of each run.
//! A separate run per round with -vv reads the sampler's own timings: how
//! long a round and its longest slice held the collector's thread.
use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::{
    idle_host::{host_processes, load_average, logged, machine_line, measure, range, Idle},
    stats::median,
};

pub struct Options {
    pub processes: usize,
    pub reps: usize,
    /// Measured per run, after a warm-up.
    pub seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            processes: 1000,
            reps: 5,
            seconds: 20,
        }
    }
}

/// Settings measured, as `--rss-interval` takes them.
const INTERVALS: [&str; 4] = ["off", "5s", "2s", "1s"];
const WARM_UP: Duration = Duration::from_secs(4);

/// One round of sampling, as the tracer logs it with -vv.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Round {
    reads: u64,
    wall_us: u64,
    cpu_us: u64,
    longest_us: u64,
    longest_cpu_us: u64,
}

/// The sampler's own figures from -vv, per round.
fn timings(bin: &Path, interval: &str, seconds: u64) -> Result<Vec<Round>> {
    let run = WARM_UP + Duration::from_secs(seconds);
    let lines = logged(bin, &["-vv", "--rss-interval", interval], run)?;
    Ok(lines.iter().filter_map(|l| round_line(l)).collect())
}

/// "memory growth: round of 1012 reads in 16 slices took 9300 µs (8100
/// µs on CPU), longest slice 1100 µs (900 µs on CPU)".
fn round_line(line: &str) -> Option<Round> {
    let rest = line.split_once("memory growth: round of ")?.1;
    let num = |s: &str| s.split_whitespace().next()?.parse().ok();
    Some(Round {
        reads: num(rest)?,
        wall_us: num(rest.split_once(" took ")?.1)?,
        cpu_us: num(rest.split_once(" (")?.1)?,
        longest_us: num(rest.split_once("longest slice ")?.1)?,
        longest_cpu_us: num(rest.rsplit_once(" (")?.1)?,
    })
}

pub fn run(bin: &Path, o: &Options) -> Result<String> {
    if !crate::is_root() {
        bail!("bench --growth-only loads eBPF programs: run it as root");
    }
    let _idle = Idle::start(o.processes, None)?;
    let host_processes = host_processes()?;
    let load_before = load_average();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); INTERVALS.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); INTERVALS.len()];
    let mut rounds = Vec::new();
    for rep in 0..o.reps {
        // Each rep in another order, so that no setting always follows
        // the same one.
        for k in 0..INTERVALS.len() {
            let i = (k + rep) % INTERVALS.len();
            let args = ["--rss-interval", INTERVALS[i]];
            let (c, r) = measure(bin, &args, WARM_UP, o.seconds)?;
            eprintln!(
                "bench growth: rep {} --rss-interval {}: CPU {c:.2}%, RSS {r:.1} MiB",
                rep + 1,
                INTERVALS[i]
            );
            cpu[i].push(c);
            rss[i].push(r);
        }
        rounds.extend(timings(bin, "2s", o.seconds)?);
    }
    let mut md = format!(
        "# `cargo xtask bench --growth-only`\n\n{}\n\n\
         Resident-memory sampling for OOM growers, {} idle processes started \
         ({host_processes} on the host), {} runs of {} s per setting after a {} s warm-up, \
         interleaved; load average {load_before} before, {} after. CPU: the tracer's \
         on-CPU time (schedstat, all threads) over wall time; RSS: its VmRSS at the end.\n\n\
         | `--rss-interval` | tracer CPU, median (min–max) | tracer RSS, median (min–max) |\n\
         | --- | --- | --- |\n",
        machine_line(),
        o.processes,
        o.reps,
        o.seconds,
        WARM_UP.as_secs(),
        load_average(),
    );
    for (i, name) in INTERVALS.iter().enumerate() {
        let (c0, c1) = range(&cpu[i]);
        let (r0, r1) = range(&rss[i]);
        md.push_str(&format!(
            "| {name}{} | {:.2}% ({c0:.2}–{c1:.2}) | {:.1} MiB ({r0:.1}–{r1:.1}) |\n",
            if *name == "2s" { " (default)" } else { "" },
            median(&cpu[i]),
            median(&rss[i]),
        ));
    }
    if !rounds.is_empty() {
        let ms = |f: fn(&Round) -> u64| -> Vec<f64> {
            rounds.iter().map(|r| f(r) as f64 / 1e3).collect()
        };
        let reads: Vec<f64> = rounds.iter().map(|r| r.reads as f64).collect();
        let wall = ms(|r| r.wall_us);
        let cpu = ms(|r| r.cpu_us);
        let mut longest = ms(|r| r.longest_us);
        let mut longest_cpu = ms(|r| r.longest_cpu_us);
        let cpu_median = median(&cpu);
        let pct = |v: &mut Vec<f64>, p: usize| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[(v.len() * p / 100).min(v.len() - 1)]
        };
        md.push_str(&format!(
            "\nThe sampler's own account at 2 s (-vv, {} rounds): {:.0} statm reads per round \
             (kernel threads are read once, then skipped); {cpu_median:.1} ms of CPU per round \
             (median), that is {:.2}% of a core; {:.1} ms of wall time per round, in slices of \
             at most 64 reads or 1 ms. The longest slice of each round, which is how long \
             draining the ring buffer can wait: median {:.2} ms, 90th percentile {:.2} ms, \
             at most {:.2} ms of wall time (which counts waiting for a CPU on a busy host); \
             at most {:.2} ms of CPU.\n",
            rounds.len(),
            median(&reads),
            cpu_median / 2000.0 * 100.0,
            median(&wall),
            pct(&mut longest, 50),
            pct(&mut longest, 90),
            pct(&mut longest, 100),
            pct(&mut longest_cpu, 100),
        ));
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_samplers_round_line() {
        assert_eq!(
            round_line("[DEBUG] memory growth: round of 1012 reads in 16 slices took 9300 µs (8100 µs on CPU), longest slice 1100 µs (900 µs on CPU)"),
            Some(Round {
                reads: 1012,
                wall_us: 9300,
                cpu_us: 8100,
                longest_us: 1100,
                longest_cpu_us: 900
            })
        );
        assert_eq!(round_line("[INFO ] started in 300ms"), None);
    }
}
