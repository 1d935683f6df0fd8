//! `cargo xtask bench`: what threadtrace costs and whether it counts right,
//! measured side by side with what users would run instead, in one run on
//! one machine. Every figure is a ratio against a baseline measured in the
//! same run. Writes bench/results.md.
//!
//! Workloads (bench/programs/, bench/numpy_matmul.py) time themselves, so
//! that a tracer's start-up and shutdown are not counted as overhead.
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

pub struct Options {
    /// Runs of each overhead workload per configuration.
    pub reps: usize,
    pub storm_seconds: u64,
    pub threads: u64,
    /// Only the storm, written to bench/storm-{N}s.md.
    pub storm_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reps: 5,
            storm_seconds: 60,
            threads: 100_000,
            storm_only: false,
        }
    }
}

/// Targets from the issue, checked in results.md.
const THREAD_LOOP_MAX: f64 = 1.05;
const NUMPY_MAX: f64 = 1.01;
const TRACER_CPU_MAX: f64 = 0.50;
const TRACER_RSS_MAX_KIB: u64 = 64 * 1024;
const STARTUP_MAX: Duration = Duration::from_secs(1);

/// Where the workloads run from: a directory user nobody can read.
fn work_dir() -> PathBuf {
    PathBuf::from("/tmp/threadtrace-bench")
}

fn compile(name: &str) -> Result<PathBuf> {
    let src = root_dir().join("bench/programs").join(format!("{name}.c"));
    let out = work_dir().join(name);
    sh(Command::new("gcc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(&src))?;
    Ok(out)
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A tracer running in the background, its stdout read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    startup: Duration,
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
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if ready(&l) => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    bail!("{cmd:?} did not start tracing within 60 s");
                }
            }
        }
        Ok(Running {
            child,
            lines: rx,
            startup: t0.elapsed(),
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

struct Overhead {
    name: &'static str,
    untraced: f64,
    threadtrace: f64,
    bpftrace: f64,
}

impl Overhead {
    fn tt_ratio(&self) -> f64 {
        self.threadtrace / self.untraced
    }
    fn bt_ratio(&self) -> f64 {
        self.bpftrace / self.untraced
    }
}

/// Median seconds of `workload` in each mode; modes take turns, so that a
/// drift of the machine spreads over all three.
fn overhead(
    name: &'static str,
    bin: &Path,
    script: &Path,
    reps: usize,
    workload: &dyn Fn() -> Result<f64>,
) -> Result<Overhead> {
    let modes = [Mode::Untraced, Mode::Threadtrace, Mode::Bpftrace];
    let mut times: [Vec<f64>; 3] = Default::default();
    let trace = work_dir().join("overhead.trace");
    for rep in 0..reps {
        for (i, &mode) in modes.iter().enumerate() {
            let tracer = match mode {
                Mode::Untraced => None,
                Mode::Threadtrace => Some(threadtrace(bin, &["-o", trace.to_str().unwrap()])?),
                Mode::Bpftrace => Some(bpftrace(script)?),
            };
            let s = workload()?;
            if let Some(mut t) = tracer {
                t.stop()?;
            }
            eprintln!(
                "xtask: bench: {name} {} run {}: {s:.3} s",
                ["untraced", "threadtrace", "bpftrace"][i],
                rep + 1
            );
            times[i].push(s);
        }
    }
    let [mut u, mut t, mut b] = times;
    Ok(Overhead {
        name,
        untraced: median(&mut u),
        threadtrace: median(&mut t),
        bpftrace: median(&mut b),
    })
}

struct Storm {
    seconds: u64,
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

fn storm(bin: &Path, generator: &Path, seconds: u64) -> Result<Storm> {
    let base = storm_generator(generator, 10)?;
    let untraced_rate = field_f64(&base, "rate")?;
    eprintln!("xtask: bench: storm untraced: {untraced_rate:.0} failures/s");

    let trace = work_dir().join("storm.trace");
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
    for _ in 0..reps {
        let mut t = threadtrace(bin, &[])?;
        tt.push(t.startup.as_secs_f64());
        t.stop()?;
        let mut b = bpftrace(script)?;
        bt.push(b.startup.as_secs_f64());
        b.stop()?;
    }
    Ok(Startup {
        threadtrace: median(&mut tt),
        bpftrace: median(&mut bt),
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
        "| generator rate, traced | {:.0} failures/s ({:.2}× untraced) |",
        sm.traced_rate,
        sm.traced_rate / sm.untraced_rate
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
    let sm = storm(bin, generator, seconds)?;
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

pub fn run(opts: &Options) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs: run it as root (sudo cargo xtask bench)");
    }
    crate::bootstrap::test_packages()?;
    let bin = crate::build(true)?;
    std::fs::create_dir_all(work_dir())?;
    sh(Command::new("chmod").arg("755").arg(work_dir()))?;
    let thread_loop = compile("thread_loop")?;
    let generator = compile("storm")?;
    let script = root_dir().join("bench/threads.bt");
    let numpy = root_dir().join("bench/numpy_matmul.py");
    // bpftrace needs tracefs for tracepoints; threadtrace mounts it itself.
    if !Path::new("/sys/kernel/tracing/events").exists() {
        sh(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
    }

    if opts.storm_only {
        return storm_only(&bin, &generator, opts.storm_seconds);
    }
    let threads = opts.threads.to_string();
    let loop_run = || -> Result<f64> {
        field_f64(
            &output(Command::new(&thread_loop).arg(&threads))?,
            "seconds",
        )
    };
    let numpy_run = || -> Result<f64> {
        field_f64(
            &output(
                Command::new("/usr/bin/python3")
                    .arg(&numpy)
                    .args(["2048", "12"]),
            )?,
            "seconds",
        )
    };
    let tl = overhead("thread loop", &bin, &script, opts.reps, &loop_run)?;
    let np = overhead("numpy", &bin, &script, opts.reps, &numpy_run)?;
    let st = startup(&bin, &script, opts.reps)?;
    let sm = storm(&bin, &generator, opts.storm_seconds)?;

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
        "Median of {} runs per configuration, configurations taking turns. threadtrace runs \
         `record -o FILE` (all its probes: thread failures, rlimits, OOM, lifecycle); \
         bpftrace runs bench/threads.bt (uprobe + uretprobe on pthread_create, the clone \
         exits).\n",
        opts.reps
    )?;
    writeln!(
        md,
        "| workload | untraced | threadtrace | bpftrace | threadtrace slowdown | bpftrace slowdown |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- | --- |")?;
    for o in [&tl, &np] {
        writeln!(
            md,
            "| {} | {:.3} s | {:.3} s | {:.3} s | {:+.1}% | {:+.1}% |",
            o.name,
            o.untraced,
            o.threadtrace,
            o.bpftrace,
            (o.tt_ratio() - 1.0) * 100.0,
            (o.bt_ratio() - 1.0) * 100.0
        )?;
    }
    writeln!(
        md,
        "\nThread loop: {} threads created and joined one after another. numpy: \
         `import numpy` and 12 products of 2048×2048 matrices on OpenBLAS's threads.\n",
        opts.threads
    )?;

    storm_section(&mut md, &sm)?;
    let exact = sm.counted == sm.generator_failed;
    writeln!(md, "## Start-up\n")?;
    writeln!(
        md,
        "From launch to the `started` line (every probe attached), median of {} runs: \
         threadtrace {:.0} ms; bpftrace, to its BEGIN probe (bench/threads.bt), {:.0} ms ({:.2}×).\n",
        opts.reps,
        st.threadtrace * 1e3,
        st.bpftrace * 1e3,
        st.threadtrace / st.bpftrace
    )?;

    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | measured | |\n| --- | --- | --- |")?;
    let tl_ok = tl.tt_ratio() <= THREAD_LOOP_MAX && tl.tt_ratio() <= tl.bt_ratio();
    writeln!(
        md,
        "| thread loop slowdown ≤ 5% and no worse than bpftrace | {:+.1}% (bpftrace {:+.1}%) | {} |",
        (tl.tt_ratio() - 1.0) * 100.0,
        (tl.bt_ratio() - 1.0) * 100.0,
        verdict(tl_ok)
    )?;
    writeln!(
        md,
        "| numpy slowdown ≤ 1% | {:+.1}% | {} |",
        (np.tt_ratio() - 1.0) * 100.0,
        verdict(np.tt_ratio() <= NUMPY_MAX)
    )?;
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

    let out = root_dir().join("bench/results.md");
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

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn fields_of_a_workloads_output() {
        let out = "pid=7\nfailed=12\nrate=3.5\n";
        assert_eq!(field(out, "failed"), Some("12"));
        assert_eq!(field_f64(out, "rate").unwrap(), 3.5);
        assert!(field_f64(out, "seconds").is_err());
        assert_eq!(field("pids=1\n", "pid"), None);
    }
}
