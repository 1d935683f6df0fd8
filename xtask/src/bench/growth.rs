//! `cargo xtask bench --growth-only`: what sampling resident memory for
//! OOM growers costs the tracer, with 1,000 idle processes on the host.
//! One run, the settings interleaved (off, then each interval, then again)
//! so that the machine's drift is shared; CPU is the tracer's on-CPU time
//! from schedstat (ns, all threads), RSS its VmRSS at the end of each run.
//! A separate run per round with -vv reads the sampler's own timings: how
//! long a round and its longest slice held the collector's thread.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

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

/// Idle processes, killed when dropped.
struct Idle(Vec<Child>);

impl Drop for Idle {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn idle(n: usize) -> Result<Idle> {
    let mut v = Idle(Vec::with_capacity(n));
    for _ in 0..n {
        v.0.push(
            Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()
                .context("cannot start sleep")?,
        );
    }
    Ok(v)
}

/// A tracer, with its stderr collected line by line.
struct Tracer {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tracer {
    fn start(bin: &Path, args: &[&str]) -> Result<Tracer> {
        let mut child = Command::new(bin)
            .args(["record", "--json", "--no-tui"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let (started_tx, started) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"kind\":\"started\"") {
                    let _ = started_tx.send(());
                }
            }
        });
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        if started.recv_timeout(Duration::from_secs(60)).is_err() {
            bail!("the tracer did not start within 60 s");
        }
        Ok(Tracer { child, stderr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then what it logged. Measurements are taken before: a
    /// tracer still draining a busy host's events a minute later is
    /// killed, said, and not an error.
    fn stop(mut self) -> Result<Vec<String>> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "bench growth: tracer {} still running 60 s after SIGINT: killed",
                    self.pid()
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread has the last lines once the pipe is closed.
        std::thread::sleep(Duration::from_millis(100));
        Ok(self.stderr.try_iter().collect())
    }
}

/// On-CPU time of a process, all its threads, in seconds.
fn on_cpu_s(pid: u32) -> Result<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(t?.path().join("schedstat")).unwrap_or_default();
        ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(ns as f64 / 1e9)
}

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// (CPU % of one core, RSS MiB) of a tracer with this setting.
fn measure(bin: &Path, interval: &str, seconds: u64) -> Result<(f64, f64)> {
    let t = Tracer::start(bin, &["--rss-interval", interval])?;
    std::thread::sleep(WARM_UP);
    let (c0, w0) = (on_cpu_s(t.pid())?, Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = (on_cpu_s(t.pid())? - c0) / w0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_mib(t.pid())?;
    t.stop()?;
    Ok((cpu, rss))
}

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
    let t = Tracer::start(bin, &["-vv", "--rss-interval", interval])?;
    std::thread::sleep(WARM_UP + Duration::from_secs(seconds));
    Ok(t.stop()?.iter().filter_map(|l| round_line(l)).collect())
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

pub fn run(bin: &Path, o: &Options) -> Result<String> {
    if !crate::is_root() {
        bail!("bench --growth-only loads eBPF programs: run it as root");
    }
    let _idle = idle(o.processes)?;
    let host_processes = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    let load_before = load_average();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); INTERVALS.len()];
    let mut rss: Vec<Vec<f64>> = vec![Vec::new(); INTERVALS.len()];
    let mut rounds = Vec::new();
    for rep in 0..o.reps {
        // Each rep in another order, so that no setting always follows
        // the same one.
        for k in 0..INTERVALS.len() {
            let i = (k + rep) % INTERVALS.len();
            let (c, r) = measure(bin, INTERVALS[i], o.seconds)?;
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
        "# `cargo xtask bench --growth-only`\n\nKernel {}, {} CPUs.\n\n\
         Resident-memory sampling for OOM growers, {} idle processes started \
         ({host_processes} on the host), {} runs of {} s per setting after a {} s warm-up, \
         interleaved; load average {load_before} before, {} after. CPU: the tracer's \
         on-CPU time (schedstat, all threads) over wall time; RSS: its VmRSS at the end.\n\n\
         | `--rss-interval` | tracer CPU, median (min–max) | tracer RSS, median (min–max) |\n\
         | --- | --- | --- |\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
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
            median(&mut cpu[i].clone()),
            median(&mut rss[i].clone()),
        ));
    }
    if !rounds.is_empty() {
        let ms = |f: fn(&Round) -> u64| -> Vec<f64> {
            rounds.iter().map(|r| f(r) as f64 / 1e3).collect()
        };
        let mut reads: Vec<f64> = rounds.iter().map(|r| r.reads as f64).collect();
        let mut wall = ms(|r| r.wall_us);
        let mut cpu = ms(|r| r.cpu_us);
        let mut longest = ms(|r| r.longest_us);
        let mut longest_cpu = ms(|r| r.longest_cpu_us);
        let cpu_median = median(&mut cpu);
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
            median(&mut reads),
            cpu_median / 2000.0 * 100.0,
            median(&mut wall),
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

    #[test]
    fn median_and_range() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(range(&[2.0, 0.5, 1.0]), (0.5, 2.0));
    }
}
