//! `cargo xtask bench`: what threadtrace costs and whether it counts right,
//! measured side by side with what users would run instead, in one run on
//! one machine. Every figure is a ratio against a baseline measured in the
//! same run. Writes bench/results.md.
//!
//! Workloads (bench/programs/, bench/numpy_matmul.py) time themselves, so
//! that a tracer's start-up and shutdown are not counted as overhead; their
//! CPU time (user + system, from wait4) is reported beside, since wall time
//! on these VMs swings by 30% between runs. Configurations take turns in
//! rounds, each round starting with another one, and a slowdown is the
//! median of the per-round ratios with a 95% bootstrap interval.
mod attach;
mod growth;
mod headroom;
mod idle_host;
mod probes;
mod spaces;
mod stats;

use stats::{median, Estimate};
use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{output, root_dir, sh};

#[derive(clap::Args)]
pub struct Args {
    /// To try it out: 3 rounds, 10k threads, a 10 s storm, 500 processes
    /// (with --growth-only or --headroom-only: 1 round of 10 s per
    /// setting).
    #[arg(long)]
    quick: bool,
    /// The storm's length in seconds [default: 60, 10 with --quick].
    #[arg(long, value_name = "N")]
    storm_seconds: Option<u64>,
    /// Only the storm: bench/storm-{N}s.md.
    #[arg(long)]
    storm_only: bool,
    /// Measure this threadtrace binary instead of building one (another
    /// build, for a before/after comparison).
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Write the results there, not to bench/results.md.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Processes for the address-space memory figure [default: 5000, 500
    /// with --quick].
    #[arg(long, value_name = "N")]
    processes: Option<usize>,
    /// Only what sampling memory for OOM growers costs the tracer with
    /// 1,000 idle processes: bench/growth.md (of the other options, only
    /// --quick applies).
    #[arg(long)]
    growth_only: bool,
    /// Only what sampling every limit's headroom for limit_near (record
    /// --near) costs the tracer, against --near off, with 1,000 and 10,000
    /// idle processes: bench/headroom.md (of the other options, only
    /// --quick applies).
    #[arg(long, conflicts_with = "growth_only")]
    headroom_only: bool,
    /// Rounds of each overhead measurement [default: 15; 8 with
    /// --attach-only].
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Threads per thread loop [default: 100,000; 20,000 with
    /// --attach-only].
    #[arg(long, value_name = "N")]
    threads: Option<u64>,
    /// Only the thread loop with threadtrace on its syscall tracepoints
    /// against threadtrace as it attaches by default (fexit where the
    /// kernel allows it), both against untraced and bpftrace, and each
    /// program's kernel time per thread: bench/attach-RELEASE.md, or
    /// --out (--quick: 5 rounds of 5,000 threads). For kernels where
    /// fexit loads: run it in a guest, `cargo xtask vm -- ...`.
    #[arg(long, conflicts_with_all = ["growth_only", "headroom_only"])]
    attach_only: bool,
}

impl Args {
    fn options(&self) -> Options {
        let mut o = Options::default();
        if self.quick {
            o.reps = 3;
            o.threads = 10_000;
            o.storm_seconds = 10;
            o.processes = 500;
        }
        Options {
            reps: self.rounds.unwrap_or(o.reps),
            threads: self.threads.unwrap_or(o.threads),
            storm_seconds: self.storm_seconds.unwrap_or(o.storm_seconds),
            storm_only: self.storm_only,
            bin: self.bin.clone(),
            processes: self.processes.unwrap_or(o.processes),
            out: self.out.clone(),
        }
    }
}

/// What one run measures, from [`Args`].
struct Options {
    /// Rounds of each overhead workload (each runs every configuration).
    reps: usize,
    storm_seconds: u64,
    threads: u64,
    /// Only the storm, written to bench/storm-{N}s.md.
    storm_only: bool,
    /// Measure this threadtrace binary instead of building one (e.g. an
    /// older build, for a before/after comparison).
    bin: Option<PathBuf>,
    /// Processes in the address-space memory figure.
    processes: usize,
    /// Where results.md goes (another build's figures go beside it).
    out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 15,
            storm_seconds: 60,
            threads: 100_000,
            storm_only: false,
            bin: None,
            processes: 5000,
            out: None,
        }
    }
}

/// Targets from the issues, checked in results.md.
const THREAD_LOOP_MAX: f64 = 1.05;
const NUMPY_MAX: f64 = 1.01;
const STORM_RATE_MIN: f64 = 0.9;
const TRACER_CPU_MAX: f64 = 0.50;
const TRACER_RSS_MAX_KIB: u64 = 64 * 1024;
const STARTUP_MAX: Duration = Duration::from_secs(1);

/// Where the workloads run from: a directory user nobody can read.
fn work_dir() -> PathBuf {
    PathBuf::from("/tmp/threadtrace-bench")
}

fn compile(name: &str, libs: &[&str]) -> Result<PathBuf> {
    let src = root_dir().join("bench/programs").join(format!("{name}.c"));
    let out = work_dir().join(name);
    sh(Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .args(libs))?;
    Ok(out)
}

/// Runs a workload; its stdout and its CPU time (user + system of it and
/// its waited-for children), from wait4.
fn run_workload(cmd: &mut Command) -> Result<(String, f64)> {
    let child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let pid = child.id() as i32;
    let mut stdout = child.stdout.expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: rusage is plain data filled by wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child, once.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } != pid {
        bail!("wait4 {cmd:?}: {}", std::io::Error::last_os_error());
    }
    let out = reader.join().unwrap_or_default();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed (status {status}): {out}");
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((out, secs(ru.ru_utime) + secs(ru.ru_stime)))
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn field_f64(text: &str, key: &str) -> Result<f64> {
    field(text, key)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key}= in:\n{text}"))
}

/// A tracer running in the background, its stdout read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    startup: Duration,
    /// The line that said it is tracing.
    ready_line: String,
}

impl Drop for Running {
    /// A benchmark that fails half-way leaves no tracer behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Starts `cmd` and waits for the line that says it is tracing.
    fn start(mut cmd: Command, ready: impl Fn(&str) -> bool) -> Result<Running> {
        let t0 = Instant::now();
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready_line = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if ready(&l) => break l,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait()?;
                    bail!("{cmd:?} ended before tracing ({status})");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    bail!("{cmd:?} did not start tracing within 60 s");
                }
            }
        };
        Ok(Running {
            child,
            lines: rx,
            startup: t0.elapsed(),
            ready_line,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then everything it printed after starting. A tracer that
    /// has not exited 30 s later is killed, and that is an error.
    fn stop(&mut self) -> Result<Vec<String>> {
        sh(Command::new("kill").args(["-INT", &self.pid().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("tracer {} did not exit within 30 s of SIGINT", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("tracer exited with {status}");
        }
        Ok(self.lines.try_iter().collect())
    }
}

fn threadtrace(bin: &Path, extra: &[&str]) -> Result<Running> {
    let mut c = Command::new(bin);
    c.args(["record", "--json"]).args(extra);
    Running::start(c, |l| l.contains("\"kind\":\"started\""))
}

fn bpftrace(script: &Path) -> Result<Running> {
    let mut c = Command::new("bpftrace");
    c.arg(script).stderr(Stdio::null());
    Running::start(c, |l| l == "tracing")
}

/// utime + stime of a process, all threads, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: ") S ppid ...".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM")
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Untraced,
    Threadtrace,
    Bpftrace,
}

const MODES: [Mode; 3] = [Mode::Untraced, Mode::Threadtrace, Mode::Bpftrace];

/// One workload's runs: (wall s, CPU s) per round, per mode.
struct Overhead {
    name: &'static str,
    runs: [Vec<(f64, f64)>; 3],
}

impl Overhead {
    fn median_wall(&self, mode: usize) -> f64 {
        median(&self.runs[mode].iter().map(|r| r.0).collect::<Vec<_>>())
    }

    /// Per-round ratio of `mode` to untraced, wall (cpu = false) or CPU.
    fn ratio(&self, mode: usize, cpu: bool) -> Estimate {
        let pick = |r: &(f64, f64)| if cpu { r.1 } else { r.0 };
        let ratios: Vec<f64> = self.runs[mode]
            .iter()
            .zip(&self.runs[0])
            .map(|(t, u)| pick(t) / pick(u))
            .collect();
        Estimate::of(&ratios)
    }
}

/// Each round runs `workload` once per mode, starting with another mode
/// each round, so that neither a drift of the machine nor a position in
/// the round favours one.
fn overhead(
    name: &'static str,
    bin: &Path,
    script: &Path,
    reps: usize,
    workload: &dyn Fn() -> Result<(f64, f64)>,
) -> Result<Overhead> {
    let mut runs: [Vec<(f64, f64)>; 3] = Default::default();
    let trace = work_dir().join("overhead.trace");
    for rep in 0..reps {
        for k in 0..MODES.len() {
            let i = (rep + k) % MODES.len();
            let tracer = match MODES[i] {
                Mode::Untraced => None,
                Mode::Threadtrace => {
                    let _ = std::fs::remove_file(&trace);
                    Some(threadtrace(bin, &["-o", trace.to_str().unwrap()])?)
                }
                Mode::Bpftrace => Some(bpftrace(script)?),
            };
            let (wall, cpu) = workload()?;
            if let Some(mut t) = tracer {
                t.stop()?;
            }
            eprintln!(
                "xtask: bench: {name} {} round {}: {wall:.3} s, {cpu:.3} s CPU",
                ["untraced", "threadtrace", "bpftrace"][i],
                rep + 1
            );
            runs[i].push((wall, cpu));
        }
    }
    Ok(Overhead { name, runs })
}

struct Storm {
    seconds: u64,
    /// Traced / untraced rate of the generator, rounds taking turns.
    rate_ratio: Estimate,
    rate_rounds: usize,
    untraced_rate: f64,
    generator_failed: u64,
    traced_rate: f64,
    counted: u64,
    delivered: u64,
    lost: u64,
    sampled_out: u64,
    in_file: u64,
    tracer_cpu: f64,
    tracer_rss_kib: u64,
    file_bytes: u64,
    file_events: u64,
    attribution: Option<String>,
}

/// The storm generator as nobody, one worker per core; it sets the
/// RLIMIT_NPROC that fails every creation itself.
fn storm_generator(storm: &Path, seconds: u64) -> Result<String> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    output(
        Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(storm)
            .args([seconds.to_string(), workers.to_string()]),
    )
}

/// The generator's rate untraced and traced, 10 s each, in turns.
fn storm_rates(bin: &Path, generator: &Path, rounds: usize) -> Result<(Estimate, f64)> {
    let mut ratios = Vec::new();
    let mut untraced = Vec::new();
    for r in 0..rounds {
        let mut rate = [0.0; 2];
        for k in 0..2 {
            let traced = (r + k) % 2 == 1;
            let tracer = traced.then(|| threadtrace(bin, &[])).transpose()?;
            rate[traced as usize] = field_f64(&storm_generator(generator, 10)?, "rate")?;
            if let Some(mut t) = tracer {
                t.stop()?;
            }
        }
        eprintln!(
            "xtask: bench: storm round {}: {:.0} untraced, {:.0} traced failures/s",
            r + 1,
            rate[0],
            rate[1]
        );
        untraced.push(rate[0]);
        ratios.push(rate[1] / rate[0]);
    }
    Ok((Estimate::of(&ratios), median(&untraced)))
}

fn storm(bin: &Path, generator: &Path, seconds: u64, rounds: usize) -> Result<Storm> {
    let (rate_ratio, untraced_rate) = storm_rates(bin, generator, rounds)?;

    let trace = work_dir().join("storm.trace");
    // The tracer never overwrites a file without --force.
    let _ = std::fs::remove_file(&trace);
    let log = work_dir().join("storm.log");
    let mut c = Command::new(bin);
    c.args(["record", "--json", "-v", "-o"])
        .arg(&trace)
        .stderr(std::fs::File::create(&log)?);
    let mut tracer = Running::start(c, |l| l.contains("\"kind\":\"started\""))?;
    let cpu0 = cpu_seconds(tracer.pid())?;
    let t0 = Instant::now();
    let out = storm_generator(generator, seconds)?;
    let wall = t0.elapsed().as_secs_f64();
    let tracer_cpu = (cpu_seconds(tracer.pid())? - cpu0) / wall;
    let tracer_rss_kib = peak_rss_kib(tracer.pid())?;
    // Ring-buffer records still in flight are drained before the summary.
    std::thread::sleep(Duration::from_secs(2));
    let lines = tracer.stop()?;
    let pid: u32 = field_f64(&out, "pid")? as u32;
    let generator_failed = field_f64(&out, "failed")? as u64;
    let summary: Value = lines
        .iter()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["kind"] == "summary")
        })
        .context("no summary from threadtrace")?;
    let counted = summary["by_process"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["pid"] == pid && p["api"] == "pthread_create")
        .filter_map(|p| p["count"].as_u64())
        .sum();
    let in_file = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "storm" && v["state"] == "end")
        .filter_map(|v| v["events_in_file"].as_u64())
        .sum();
    let report: Value = serde_json::from_str(&output(
        Command::new(bin).args(["report", "--json"]).arg(&trace),
    )?)?;
    let attribution = std::fs::read_to_string(&log)?
        .lines()
        .find_map(|l| l.split_once("attribution: ").map(|(_, r)| r.to_string()));
    Ok(Storm {
        seconds,
        rate_ratio,
        rate_rounds: rounds,
        untraced_rate,
        generator_failed,
        traced_rate: field_f64(&out, "rate")?,
        counted,
        delivered: summary["events_delivered"].as_u64().unwrap_or(0),
        lost: summary["events_lost"].as_u64().unwrap_or(0),
        sampled_out: summary["events_sampled_out"].as_u64().unwrap_or(0),
        in_file,
        tracer_cpu,
        tracer_rss_kib,
        file_bytes: std::fs::metadata(&trace)?.len(),
        file_events: report["events_by_kind"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, n)| n.as_u64())
            .sum(),
        attribution,
    })
}

struct Startup {
    threadtrace: f64,
    bpftrace: f64,
}

fn startup(bin: &Path, script: &Path, reps: usize) -> Result<Startup> {
    let mut tt = Vec::new();
    let mut bt = Vec::new();
    for _ in 0..reps.min(7) {
        let mut t = threadtrace(bin, &[])?;
        tt.push(t.startup.as_secs_f64());
        t.stop()?;
        let mut b = bpftrace(script)?;
        bt.push(b.startup.as_secs_f64());
        b.stop()?;
    }
    Ok(Startup {
        threadtrace: median(&tt),
        bpftrace: median(&bt),
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.0} GiB", k as f64 / 1048576.0));
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let rev = output(
        Command::new("git")
            .current_dir(root_dir())
            .args(["describe", "--always", "--dirty"]),
    )
    .unwrap_or_default();
    let bt = output(Command::new("bpftrace").arg("--version")).unwrap_or_default();
    format!(
        "- CPU: {cpu}, {} online\n- memory: {mem}\n- kernel: {}\n- threadtrace: {}\n- {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim(),
        rev.trim(),
        bt.trim()
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// The storm's table, and its symbolization line.
fn storm_section(md: &mut String, sm: &Storm) -> std::fmt::Result {
    let exact = sm.counted == sm.generator_failed;
    writeln!(md, "## Storm\n")?;
    writeln!(
        md,
        "bench/programs/storm.c as `nobody`, one worker per core, its RLIMIT_NPROC lowered \
         to 1 once its workers run, for {} s: every pthread_create fails with EAGAIN. \
         threadtrace runs with its defaults (`--detail-rate 250`).\n",
        sm.seconds
    )?;
    writeln!(md, "| figure | value |\n| --- | --- |")?;
    writeln!(
        md,
        "| generator rate, untraced | {:.0} failures/s |",
        sm.untraced_rate
    )?;
    writeln!(
        md,
        "| generator rate, traced / untraced, {} rounds of 10 s each, taking turns | {} |",
        sm.rate_rounds,
        sm.rate_ratio.percent()
    )?;
    writeln!(
        md,
        "| generator rate during the {} s storm | {:.0} failures/s |",
        sm.seconds, sm.traced_rate
    )?;
    writeln!(
        md,
        "| failures the generator counted | {} |",
        sm.generator_failed
    )?;
    writeln!(
        md,
        "| failures threadtrace counted | {} ({}) |",
        sm.counted,
        if exact { "exact" } else { "**differs**" }
    )?;
    writeln!(
        md,
        "| detail events delivered to the collector | {} ({:.2}% of failures) |",
        sm.delivered,
        100.0 * sm.delivered as f64 / sm.generator_failed.max(1) as f64
    )?;
    writeln!(
        md,
        "| failures past --detail-rate: counted, stacks not captured | {} |",
        sm.sampled_out
    )?;
    writeln!(
        md,
        "| detail events dropped by a full ring buffer (counted, not lost) | {} |",
        sm.lost
    )?;
    writeln!(
        md,
        "| detail events sampled into the trace file | {} |",
        sm.in_file
    )?;
    writeln!(
        md,
        "| tracer CPU | {:.1}% of one core |",
        sm.tracer_cpu * 100.0
    )?;
    writeln!(
        md,
        "| tracer peak RSS | {:.1} MiB |",
        sm.tracer_rss_kib as f64 / 1024.0
    )?;
    writeln!(
        md,
        "| trace file after the storm | {:.2} MB: {} event records, {:.0} bytes per event record (the once-a-second counter snapshots included) |",
        sm.file_bytes as f64 / 1e6,
        sm.file_events,
        sm.file_bytes as f64 / sm.file_events.max(1) as f64
    )?;
    writeln!(md)?;

    writeln!(md, "## Symbolization\n")?;
    writeln!(
        md,
        "From the storm's `-v` log (attribution includes unwinding and symbolization; the \
         slowest event is the first, uncached): {}\n",
        sm.attribution
            .as_deref()
            .unwrap_or("no attribution line logged")
    )
}

/// Only the storm, for its length (e.g. the 10 minutes of the README's
/// trace-size figure): bench/storm-{N}s.md.
fn storm_only(bin: &Path, generator: &Path, seconds: u64) -> Result<()> {
    let sm = storm(bin, generator, seconds, 3)?;
    let mut md = String::new();
    writeln!(md, "# threadtrace storm, {seconds} s\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench --storm-only --storm-seconds {seconds}` ({}).\n",
        output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?.trim()
    )?;
    writeln!(md, "## Machine\n\n{}", machine())?;
    storm_section(&mut md, &sm)?;
    let out = root_dir().join(format!("bench/storm-{seconds}s.md"));
    std::fs::write(&out, &md)?;
    print!("{md}");
    eprintln!("xtask: bench: written to {}", out.display());
    if sm.counted != sm.generator_failed {
        bail!(
            "threadtrace counted {} failures, the generator {}",
            sm.counted,
            sm.generator_failed
        );
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<()> {
    if args.growth_only {
        let mut o = growth::Options::default();
        if args.quick {
            o.reps = 1;
            o.seconds = 10;
        }
        only("growth", |bin| growth::run(bin, &o))
    } else if args.headroom_only {
        let mut o = headroom::Options::default();
        if args.quick {
            o.reps = 1;
            o.seconds = 10;
        }
        only("headroom", |bin| headroom::run(bin, &o))
    } else if args.attach_only {
        attach_only(args)
    } else {
        benchmark(&args.options())
    }
}

/// Root, the build measured, and the directory the workloads run from.
fn prepare(bin: &Option<PathBuf>) -> Result<PathBuf> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root (sudo cargo xtask bench)");
    }
    let bin = match bin {
        Some(b) => b.clone(),
        None => crate::build::build(true)?,
    };
    std::fs::create_dir_all(work_dir())?;
    sh(Command::new("chmod").arg("755").arg(work_dir()))?;
    Ok(bin)
}

fn attach_only(args: &Args) -> Result<()> {
    let mut o = attach::Options::default();
    if args.quick {
        o.reps = 5;
        o.threads = 5_000;
    }
    o.reps = args.rounds.unwrap_or(o.reps);
    o.threads = args.threads.unwrap_or(o.threads);
    let bin = prepare(&args.bin)?;
    let thread_loop = compile("thread_loop", &[])?;
    let script = root_dir().join("bench/threads.bt");
    mount_tracefs()?;
    let md = attach::run(&bin, &thread_loop, &script, &o)?;
    let release = output(Command::new("uname").arg("-r"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root_dir().join(format!("bench/attach-{}.md", release.trim())));
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    print!("{md}");
    eprintln!("xtask: bench: written to {}", out.display());
    Ok(())
}

/// bpftrace needs tracefs for tracepoints; threadtrace mounts it itself.
fn mount_tracefs() -> Result<()> {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    }
    Ok(())
}

/// One section measured alone, written to bench/{name}.md.
fn only(name: &str, measure: impl FnOnce(&Path) -> Result<String>) -> Result<()> {
    let md = measure(&crate::build::build(true)?)?;
    let out = root_dir().join(format!("bench/{name}.md"));
    std::fs::write(&out, &md)?;
    print!("{md}");
    eprintln!("xtask: bench: written to {}", out.display());
    Ok(())
}

fn benchmark(opts: &Options) -> Result<()> {
    let bin = prepare(&opts.bin)?;
    crate::bootstrap::test_packages()?;
    crate::bootstrap::bench_packages()?;
    let thread_loop = compile("thread_loop", &[])?;
    let generator = compile("storm", &[])?;
    let sleeper = compile("sleeper", &["-lm", "-lz"])?;
    let script = root_dir().join("bench/threads.bt");
    let numpy = root_dir().join("bench/numpy_matmul.py");
    mount_tracefs()?;

    if opts.storm_only {
        return storm_only(&bin, &generator, opts.storm_seconds);
    }
    let threads = opts.threads.to_string();
    let loop_run = || -> Result<(f64, f64)> {
        let (out, cpu) = run_workload(Command::new(&thread_loop).arg(&threads))?;
        Ok((field_f64(&out, "seconds")?, cpu))
    };
    let numpy_run = || -> Result<(f64, f64)> {
        let (out, cpu) = run_workload(
            Command::new("/usr/bin/python3")
                .arg(&numpy)
                .args(["2048", "12"]),
        )?;
        Ok((field_f64(&out, "seconds")?, cpu))
    };
    let tl = overhead("thread loop", &bin, &script, opts.reps, &loop_run)?;
    let np = overhead("numpy", &bin, &script, opts.reps, &numpy_run)?;
    let per_probe = probes::measure(&bin, &script, &thread_loop, opts.threads)?;
    let st = startup(&bin, &script, opts.reps)?;
    let sm = storm(&bin, &generator, opts.storm_seconds, 5)?;
    let sp = spaces::measure(&bin, &sleeper, opts.processes)?;

    let mut md = String::new();
    writeln!(md, "# threadtrace benchmark results\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench` ({}). Every ratio is against a baseline \
         measured in the same run.\n",
        output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?.trim()
    )?;
    writeln!(md, "## Machine\n\n{}", machine())?;

    writeln!(md, "## Overhead on the traced workload\n")?;
    writeln!(
        md,
        "{} rounds; in each, the workload runs untraced, under threadtrace and under \
         bpftrace, each round starting with the next configuration. threadtrace runs \
         `record -o FILE` (every probe: thread failures, rlimits, OOM, lifecycle, mappings); \
         bpftrace runs bench/threads.bt (uprobe + uretprobe on pthread_create, the clone \
         exits). A slowdown is the median of the rounds' ratios to untraced, with its 95% \
         bootstrap interval in brackets; wall time is the workload's own clock, CPU time \
         its user + system time (wait4).\n",
        opts.reps
    )?;
    writeln!(
        md,
        "| workload | untraced | threadtrace, wall | threadtrace, CPU | bpftrace, wall | bpftrace, CPU |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
    for o in [&tl, &np] {
        writeln!(
            md,
            "| {} | {:.3} s | {} | {} | {} | {} |",
            o.name,
            o.median_wall(0),
            o.ratio(1, false).percent(),
            o.ratio(1, true).percent(),
            o.ratio(2, false).percent(),
            o.ratio(2, true).percent(),
        )?;
    }
    for o in [&tl, &np] {
        let (w, c) = (o.ratio(1, false), o.ratio(1, true));
        if w.within_noise() || c.within_noise() {
            writeln!(
                md,
                "\n{}: threadtrace's {} interval contains 0%: the difference is within \
                 the noise of this machine.",
                o.name,
                match (w.within_noise(), c.within_noise()) {
                    (true, true) => "wall and CPU",
                    (true, false) => "wall",
                    _ => "CPU",
                }
            )?;
        }
    }
    writeln!(
        md,
        "\nThread loop: {} threads created and joined one after another. numpy: \
         `import numpy` and 12 products of 2048×2048 matrices on OpenBLAS's threads.\n",
        opts.threads
    )?;
    probes::section(&mut md, &per_probe)?;

    storm_section(&mut md, &sm)?;
    writeln!(md, "## Start-up\n")?;
    writeln!(
        md,
        "From launch to the `started` line (every probe attached, every process's \
         mappings read), median of {} runs: threadtrace {:.0} ms; bpftrace, to its BEGIN \
         probe (bench/threads.bt), {:.0} ms ({:.2}×).\n",
        opts.reps.min(7),
        st.threadtrace * 1e3,
        st.bpftrace * 1e3,
        st.threadtrace / st.bpftrace
    )?;
    spaces::section(&mut md, &sp)?;

    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | measured | |\n| --- | --- | --- |")?;
    let (tl_tt, tl_bt) = (tl.ratio(1, false), tl.ratio(2, false));
    let tl_ok = tl_tt.median <= THREAD_LOOP_MAX && tl_tt.median <= tl_bt.median;
    writeln!(
        md,
        "| thread loop slowdown ≤ 5% and below bpftrace's | {} (bpftrace {}) | {} |",
        tl_tt.percent(),
        tl_bt.percent(),
        verdict(tl_ok)
    )?;
    let np_tt = np.ratio(1, false);
    writeln!(
        md,
        "| numpy slowdown ≤ 1% | {} | {} |",
        np_tt.percent(),
        verdict(np_tt.median <= NUMPY_MAX)
    )?;
    writeln!(
        md,
        "| a failing program in a storm keeps ≥ 0.9× its rate | {:.2}× [{:.2}, {:.2}] | {} |",
        sm.rate_ratio.median,
        sm.rate_ratio.low,
        sm.rate_ratio.high,
        verdict(sm.rate_ratio.median >= STORM_RATE_MIN)
    )?;
    let exact = sm.counted == sm.generator_failed;
    writeln!(
        md,
        "| exact storm count at the generator's full rate | {} of {} | {} |",
        sm.counted,
        sm.generator_failed,
        verdict(exact)
    )?;
    writeln!(
        md,
        "| tracer ≤ 50% of one core during the storm | {:.1}% | {} |",
        sm.tracer_cpu * 100.0,
        verdict(sm.tracer_cpu <= TRACER_CPU_MAX)
    )?;
    writeln!(
        md,
        "| tracer RSS ≤ 64 MiB | {:.1} MiB | {} |",
        sm.tracer_rss_kib as f64 / 1024.0,
        verdict(sm.tracer_rss_kib <= TRACER_RSS_MAX_KIB)
    )?;
    writeln!(
        md,
        "| start-up ≤ 1 s | {:.0} ms | {} |",
        st.threadtrace * 1e3,
        verdict(Duration::from_secs_f64(st.threadtrace) <= STARTUP_MAX)
    )?;

    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| root_dir().join("bench/results.md"));
    std::fs::write(&out, &md)?;
    print!("{md}");
    eprintln!("xtask: bench: written to {}", out.display());
    if !exact {
        bail!(
            "threadtrace counted {} failures, the generator {}",
            sm.counted,
            sm.generator_failed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmdline: &[&str]) -> Args {
        match crate::parse(cmdline).unwrap() {
            crate::Task::Bench(a) => a,
            _ => panic!("not bench"),
        }
    }

    #[test]
    fn quick_shrinks_the_defaults_and_explicit_options_win() {
        let o = args(&["bench"]).options();
        assert_eq!((o.reps, o.storm_seconds, o.processes), (15, 60, 5000));
        let o = args(&["bench", "--quick"]).options();
        assert_eq!(
            (o.reps, o.threads, o.storm_seconds, o.processes),
            (3, 10_000, 10, 500)
        );
        let o = args(&[
            "bench",
            "--storm-seconds",
            "30",
            "--quick",
            "--processes",
            "7",
        ])
        .options();
        assert_eq!((o.reps, o.storm_seconds, o.processes), (3, 30, 7));
        let o = args(&["bench", "--storm-only", "--bin", "/b", "--out", "/o"]).options();
        assert!(o.storm_only);
        assert_eq!(o.bin.as_deref(), Some(Path::new("/b")));
        assert_eq!(o.out.as_deref(), Some(Path::new("/o")));
        let a = args(&["bench", "--growth-only", "--quick"]);
        assert!(a.growth_only && a.quick);
        let a = args(&["bench", "--headroom-only", "--quick"]);
        assert!(a.headroom_only && a.quick && !a.growth_only);
        assert!(crate::parse(&["bench", "--headroom-only", "--growth-only"]).is_err());
        let o = args(&["bench", "--quick", "--rounds", "9", "--threads", "77"]).options();
        assert_eq!((o.reps, o.threads), (9, 77));
        assert!(crate::parse(&["bench", "--attach-only", "--growth-only"]).is_err());
    }

    #[test]
    fn fields_of_a_workloads_output() {
        let out = "pid=7\nfailed=12\nrate=3.5\n";
        assert_eq!(field(out, "failed"), Some("12"));
        assert_eq!(field_f64(out, "rate").unwrap(), 3.5);
        assert!(field_f64(out, "seconds").is_err());
        assert_eq!(field("pids=1\n", "pid"), None);
    }

    #[test]
    fn a_workloads_cpu_time_comes_from_wait4() {
        let (out, cpu) = run_workload(Command::new("bash").args([
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo seconds=1",
        ]))
        .unwrap();
        assert_eq!(field(&out, "seconds"), Some("1"));
        assert!(cpu > 0.05, "{cpu}");
        assert!(run_workload(&mut Command::new("false")).is_err());
    }
}
