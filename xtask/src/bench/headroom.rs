//! `cargo xtask bench --headroom-only`: what sampling every limit's
//! headroom for `limit_near` records (`record --near`) costs the tracer,
//! with 1,000 and 10,000 idle processes on the host, against `--near off`.
//! Per process count, one run of each setting per rep, each rep starting
//! with the other one, so that the machine's drift is shared; the cost is
//! the median of the reps' pairs with its bootstrap interval. A separate
//! run with -vv reads the pass's own timing, logged once a second.
use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::{
    idle_host::{host_processes, load_average, logged, machine_line, measure, range, Idle},
    stats::{median, Estimate},
    verdict,
};

pub struct Options {
    /// Idle processes, ascending: each count adds to the previous one's.
    pub processes: Vec<usize>,
    pub reps: usize,
    /// Measured per run, after a warm-up.
    pub seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            processes: vec![1000, 10_000],
            reps: 5,
            seconds: 20,
        }
    }
}

/// The settings compared: `--near off`, then the default thresholds.
/// Memory sampling is off in both, so that it does not mix in.
const SETTINGS: [(&str, &[&str]); 2] = [
    ("off", &["--rss-interval", "off", "--near", "off"]),
    ("0.8,0.9,0.95 (default)", &["--rss-interval", "off"]),
];
const WARM_UP: Duration = Duration::from_secs(4);
/// /proc/PID/limits read per pass at most, one pass a second (NPROC_READS
/// in threadtrace/src/collector/headroom.rs): the warm-up lasts until every
/// idle process's limit has been read once.
const LIMITS_READ_PER_S: usize = 200;
/// The idle processes' user: root's processes are exempt from
/// RLIMIT_NPROC, and the tracer does not read their limits.
const NOBODY: u32 = 65534;
/// Target from the issue: added tracer CPU, % of one core, at 1,000
/// processes.
const ADDED_CPU_MAX: f64 = 0.5;
const TARGET_AT: usize = 1000;

/// One pass over every limit, as the tracer logs it with -vv.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pass {
    limits: u64,
    ms: f64,
}

/// "headroom: 3 limits read in 2.761311ms" (a Duration's Debug form).
fn pass_line(line: &str) -> Option<Pass> {
    let rest = line.split_once("headroom: ")?.1;
    let (limits, took) = rest.split_once(" limits read in ")?;
    let took = took.trim();
    let (num, scale) = [("ns", 1e-6), ("µs", 1e-3), ("ms", 1.0), ("s", 1e3)]
        .into_iter()
        .find_map(|(unit, scale)| Some((took.strip_suffix(unit)?, scale)))?;
    Some(Pass {
        limits: limits.trim().parse().ok()?,
        ms: num.parse::<f64>().ok()? * scale,
    })
}

/// One process count's measurements.
struct Count {
    processes: usize,
    on_host: usize,
    /// Passes that read /proc/PID/limits of processes not read before.
    ramp: usize,
    warm_up: Duration,
    /// Per setting, per rep.
    cpu: [Vec<f64>; 2],
    rss: [Vec<f64>; 2],
    /// From the -vv run, in order.
    passes: Vec<Pass>,
}

impl Count {
    /// Per rep, on against off.
    fn pairs(&self, f: fn(f64, f64) -> f64) -> Estimate {
        let v: Vec<f64> = self.cpu[1]
            .iter()
            .zip(&self.cpu[0])
            .map(|(&on, &off)| f(on, off))
            .collect();
        Estimate::of(&v)
    }

    fn added(&self) -> Estimate {
        self.pairs(|on, off| on - off)
    }
}

fn measure_count(bin: &Path, o: &Options, processes: usize) -> Result<Count> {
    let ramp = processes.div_ceil(LIMITS_READ_PER_S);
    let warm_up = WARM_UP + Duration::from_secs(ramp as u64);
    let mut c = Count {
        processes,
        on_host: host_processes()?,
        ramp,
        warm_up,
        cpu: Default::default(),
        rss: Default::default(),
        passes: Vec::new(),
    };
    for rep in 0..o.reps {
        for k in 0..SETTINGS.len() {
            let i = (k + rep) % SETTINGS.len();
            let (cpu, rss) = measure(bin, SETTINGS[i].1, warm_up, o.seconds)?;
            eprintln!(
                "bench headroom: {processes} processes, rep {} --near {}: CPU {cpu:.2}%, RSS {rss:.1} MiB",
                rep + 1,
                SETTINGS[i].0
            );
            c.cpu[i].push(cpu);
            c.rss[i].push(rss);
        }
    }
    let run = warm_up + Duration::from_secs(o.seconds);
    let lines = logged(bin, &["-vv", "--rss-interval", "off"], run)?;
    c.passes = lines.iter().filter_map(|l| pass_line(l)).collect();
    Ok(c)
}

pub fn run(bin: &Path, o: &Options) -> Result<String> {
    if !crate::is_root() {
        bail!("bench --headroom-only loads eBPF programs: run it as root");
    }
    let load_before = load_average();
    let mut idle = Idle::start(0, Some(NOBODY))?;
    let mut counts = Vec::new();
    for &n in &o.processes {
        idle.grow_to(n)?;
        counts.push(measure_count(bin, o, n)?);
    }
    Ok(report(o, &counts, &load_before))
}

fn spread(v: &[f64], unit: &str, digits: usize) -> String {
    let (lo, hi) = range(v);
    format!("{:.digits$}{unit} ({lo:.digits$}–{hi:.digits$})", median(v))
}

fn report(o: &Options, counts: &[Count], load_before: &str) -> String {
    let mut md = format!(
        "# `cargo xtask bench --headroom-only`\n\n{}\n\n\
         Headroom sampling for `limit_near` records (`record --near`, its default \
         thresholds) against `--near off`, `--rss-interval off` in both. Idle processes: \
         `sleep 3600` as `nobody` (root's processes are exempt from RLIMIT_NPROC: the \
         tracer would not read their limits). Per process count, {} runs of {} s per \
         setting, interleaved, each rep starting with the other setting, after a warm-up \
         of {} s and 1 s per {LIMITS_READ_PER_S} processes (the tracer reads at most \
         {LIMITS_READ_PER_S} processes' /proc/PID/limits a second, each once: the warm-up \
         lasts until all are read); load average {load_before} before, {} after. CPU: the \
         tracer's on-CPU time (schedstat, all threads) over wall time, % of one core, \
         median (min–max); RSS: its VmRSS at the end. on / off and added: the median of \
         the reps' pairs, 95% bootstrap interval in brackets.\n\n\
         | idle processes (on the host) | CPU, `--near off` | CPU, `--near` default | \
         on / off | added CPU, % of a core | RSS, off | RSS, on |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        machine_line(),
        o.reps,
        o.seconds,
        WARM_UP.as_secs(),
        load_average(),
    );
    for c in counts {
        let added = c.added();
        md.push_str(&format!(
            "| {} ({}) | {} | {} | {} | {:+.2} [{:+.2}, {:+.2}] | {} | {} |\n",
            c.processes,
            c.on_host,
            spread(&c.cpu[0], "%", 2),
            spread(&c.cpu[1], "%", 2),
            c.pairs(|on, off| on / off).percent(),
            added.median,
            added.low,
            added.high,
            spread(&c.rss[0], " MiB", 1),
            spread(&c.rss[1], " MiB", 1),
        ));
    }
    if let Some(c) = counts.iter().find(|c| c.processes == TARGET_AT) {
        let added = c.added();
        md.push_str(&format!(
            "\nTarget from the issue: added tracer CPU ≤ {ADDED_CPU_MAX}% of a core at \
             {TARGET_AT} processes: {:+.2} [{:+.2}, {:+.2}], {}.\n",
            added.median,
            added.low,
            added.high,
            verdict(added.median <= ADDED_CPU_MAX)
        ));
    }
    md.push_str(
        "\nThe pass's own account: one run per process count with `--near` on and -vv, \
         its `headroom: N limits read in T` lines (wall time of the once-a-second pass, \
         which counts waiting for a CPU on a busy host). The first passes also read the \
         processes' RLIMIT_NPROC, at most 200 each; the others after them.\n\n\
         | idle processes | limits tracked | first passes: median, max | passes after: \
         median, max | after, as % of a core |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for c in counts {
        let (first, after) = c.passes.split_at(c.ramp.min(c.passes.len()));
        let ms = |p: &[Pass]| -> Vec<f64> { p.iter().map(|p| p.ms).collect() };
        let times = |p: &[Pass]| {
            if p.is_empty() {
                return "none logged".to_string();
            }
            let v = ms(p);
            format!("{:.2} ms, {:.2} ms ({})", median(&v), range(&v).1, p.len())
        };
        let limits: Vec<f64> = c.passes.iter().map(|p| p.limits as f64).collect();
        md.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.2}% |\n",
            c.processes,
            median(&limits),
            times(first),
            times(after),
            median(&ms(after)) / 10.0,
        ));
    }
    md.push_str(&format!(
        "\nWarm-up: {}.\n",
        counts
            .iter()
            .map(|c| format!("{} s at {} processes", c.warm_up.as_secs(), c.processes))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pass_line_in_every_unit() {
        let p = |l: &str| pass_line(l).map(|p| (p.limits, (p.ms * 1e6).round() / 1e6));
        assert_eq!(
            p("[DEBUG] headroom: 3 limits read in 2.761311ms"),
            Some((3, 2.761311))
        );
        assert_eq!(p("headroom: 12 limits read in 850.5µs"), Some((12, 0.8505)));
        assert_eq!(p("headroom: 1 limits read in 1.5s"), Some((1, 1500.0)));
        assert_eq!(p("headroom: 0 limits read in 900ns"), Some((0, 0.0009)));
        assert_eq!(p("headroom: 3 limits read in soon"), None);
        assert_eq!(
            p("[DEBUG] dashboard: limits of 4 processes read in 1ms"),
            None
        );
    }

    #[test]
    fn added_and_ratio_are_per_rep_pairs() {
        let c = Count {
            processes: 1000,
            on_host: 1080,
            ramp: 5,
            warm_up: Duration::from_secs(9),
            cpu: [vec![1.0, 2.0, 1.0], vec![1.5, 2.5, 1.5]],
            rss: [vec![30.0; 3], vec![31.0; 3]],
            passes: vec![],
        };
        assert_eq!(c.added().median, 0.5);
        assert_eq!(c.pairs(|on, off| on / off).median, 1.5);
        let md = report(
            &Options {
                processes: vec![1000],
                reps: 3,
                seconds: 20,
            },
            &[c],
            "1.00",
        );
        assert!(md.contains("| 1000 (1080) | 1.00% (1.00–2.00) |"), "{md}");
        assert!(md.contains("+0.50 [+0.50, +0.50], met."), "{md}");
        assert!(md.contains("| 1000 | NaN | none logged |"), "{md}");
    }
}
