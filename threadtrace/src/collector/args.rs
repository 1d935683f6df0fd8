//! `record`'s arguments: what to watch, where to write, and the bounds
//! the tracer keeps to.
use std::{path::PathBuf, time::Duration};

use crate::{
    diagnosis::storm::StormBy,
    sink::metrics::{http, LabelFilter, MetricsConfig},
};

/// What `record` was asked to do, checked.
#[derive(Debug, Clone)]
pub struct Options {
    pub json: bool,
    pub output: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub lifecycle: bool,
    pub storm_threshold: u32,
    pub detail_rate: u32,
    pub max_size: Option<u64>,
    /// Each file of a rotating set (-o DIR or a pattern).
    pub file_size: Option<u64>,
    /// Overwrite an existing -o file (a regular file of ours).
    pub force: bool,
    pub storm_window: Duration,
    pub storm_by: StormBy,
    /// RLIMIT_DATA for the tracer itself, set once attached.
    pub max_memory: u64,
    pub verbose: u8,
    /// The live dashboard instead of lines (stdout is a terminal, no
    /// --json, no --no-tui).
    pub dashboard: bool,
    /// `--metrics`: where to serve Prometheus metrics, and their labels.
    pub metrics: Option<(std::net::SocketAddr, MetricsConfig)>,
    /// How often resident memory is sampled for OOM kills' growers, and
    /// how far back they look; None turns sampling off.
    pub rss: Option<(Duration, Duration)>,
    /// `--near`: thresholds of the limits' headroom; empty for off.
    pub near: Vec<f64>,
    /// `--tracepoints-only`: no fexit, even where the kernel allows it.
    pub tracepoints_only: bool,
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// One JSON object per line: first `started`, last `summary`.
    #[arg(long)]
    pub json: bool,
    /// Also write a trace (mode 0600) for `threadtrace report`: a FILE, or
    /// a rotating set, for long runs: a DIRECTORY (one that exists, or a
    /// path ending in /) or a PATTERN with one '*' (host-*.trace). SIGHUP
    /// starts a new file (logrotate: rename, then SIGHUP).
    #[arg(short, long, value_name = "FILE|DIR|PATTERN")]
    pub output: Option<PathBuf>,
    /// Overwrite an existing -o FILE (only a regular file of ours, with one
    /// link; never through a symbolic link).
    #[arg(long, requires = "output")]
    pub force: bool,
    /// Cap what the trace takes on disk, e.g. 100M, 2G (default 1G). A
    /// file: past 15/16 of it event detail stops, counters go on once a
    /// minute, the summary is always written (and says so). A set: its
    /// oldest files are removed.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "output")]
    pub max_size: Option<u64>,
    /// Each file of a rotating set (default 64M, at most an eighth of
    /// --max-size).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "output")]
    pub file_size: Option<u64>,
    /// Stop after this long, e.g. 30s, 5m, 1h.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Only report these processes (repeatable). The trace file keeps everything.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only report processes with this command name (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Failures within --storm-window, for one --storm-by scope, that make
    /// a storm: then they are summarized each second instead of printed one
    /// by one (the trace file keeps 2 of their events a second, and the
    /// exact counts).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub storm_threshold: u32,
    /// The window those failures must fall in, e.g. 1s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub storm_window: Duration,
    /// What storms are counted per: a user, a cgroup or a library.
    #[arg(long, value_name = "SCOPE", value_enum, default_value = "uid")]
    pub storm_by: StormBy,
    /// Also print process fork, exec and exit events, and setrlimit calls
    /// that left a limit unchanged.
    #[arg(long)]
    pub lifecycle: bool,
    /// Failure events with stacks, per process, per CPU, per second. Past
    /// it, failures are counted exactly but not captured: in a storm this
    /// keeps the cost to the failing program and to the tracer small.
    /// 0 captures every failure.
    #[arg(long, value_name = "N", default_value_t = 250)]
    pub detail_rate: u32,
    /// Print one line per event, as without a terminal, instead of the live
    /// dashboard. The dashboard is shown only when stdout is a terminal
    /// and --json is not given; q or Ctrl-C leaves it, and the summary is
    /// printed either way.
    #[arg(long)]
    pub no_tui: bool,
    /// Attach the syscall tracepoints for clone and mmap even where the
    /// kernel allows fexit on the functions behind them (the default
    /// there: any syscall tracepoint slows every syscall of the host a
    /// little). To compare the two, or if fexit misbehaves.
    #[arg(long)]
    pub tracepoints_only: bool,
    /// The tracer's own memory limit (RLIMIT_DATA: heap and private
    /// mappings), e.g. 512M, 2G. It asks the OOM killer to spare it, so
    /// this bounds it instead: past it the tracer stops, the host does not
    /// run out.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub max_memory: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics while recording:
    /// PORT (on 127.0.0.1), HOST:PORT, or 0.0.0.0:PORT for every
    /// interface. The README lists the metrics.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<std::net::SocketAddr>,
    /// The optional labels the metrics keep, comma-separated, among
    /// library, namespace, pod, container: e.g. `namespace,container`
    /// drops pod and library. An empty list keeps none.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "library,namespace,pod,container",
        requires = "metrics"
    )]
    pub metrics_labels: LabelFilter,
    /// Distinct label sets the metrics keep at most; past it, new ones
    /// are folded into one `_overflow` series per metric, and counted.
    #[arg(long, value_name = "N", default_value_t = 2000, requires = "metrics")]
    pub metrics_max_series: usize,
    /// How often the resident memory of every process (and of memory
    /// cgroups with a limit) is sampled, so that an OOM kill names the
    /// processes that grew before it, not only the largest; `off` turns
    /// it off. Rounds are read in slices of 64 processes, 20 ms apart.
    /// The reading at the kill is exact whatever the interval: the
    /// interval only blurs where the window starts.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_interval)]
    pub rss_interval: Interval,
    /// How far back an OOM kill looks for the processes that grew.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub rss_window: Duration,
    /// Warn before a limit runs out: a `limit_near` record when a user's
    /// tasks under RLIMIT_NPROC, a pids or memory cgroup, or the host's
    /// threads-max or pid_max cross one of these fractions of the limit
    /// (or percents: 80%,90%), with the rate it rises at and when it will
    /// run out. Once per threshold until the usage falls 5 points below
    /// it. `off` turns it off. Sampled once a second, and ten times a
    /// second for the limits within 20 points of the lowest threshold.
    #[arg(long, value_name = "FRACTIONS", default_value = "0.8,0.9,0.95", value_parser = parse_near)]
    pub near: Near,
}

/// `--near` thresholds, ascending; empty for `off`.
#[derive(Debug, Clone, PartialEq)]
pub struct Near(pub Vec<f64>);

fn parse_near(s: &str) -> Result<Near, String> {
    crate::diagnosis::headroom::parse_thresholds(s).map(Near)
}

fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    http::parse_addr(s).map_err(|e| e.to_string())
}

/// A sampling interval, or None for `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval(pub Option<Duration>);

impl RecordArgs {
    /// Whether these arguments ask for the dashboard, given whether
    /// stdout is a terminal.
    pub fn wants_dashboard(&self, stdout_is_terminal: bool) -> bool {
        !self.json && !self.no_tui && stdout_is_terminal
    }

    /// The options, checked; `verbose` is the global -v.
    pub fn options(self, verbose: u8, dashboard: bool) -> Result<Options, String> {
        let rss = self.rss()?;
        Ok(Options {
            json: self.json,
            output: self.output,
            duration: self.duration,
            pids: self.pids,
            comms: self.comms,
            lifecycle: self.lifecycle,
            storm_threshold: self.storm_threshold,
            near: self.near.0.clone(),
            detail_rate: self.detail_rate,
            tracepoints_only: self.tracepoints_only,
            max_size: self.max_size,
            file_size: self.file_size,
            force: self.force,
            storm_window: self.storm_window,
            storm_by: self.storm_by,
            max_memory: self.max_memory,
            verbose,
            dashboard,
            metrics: self.metrics.map(|addr| {
                let cfg = MetricsConfig {
                    labels: self.metrics_labels,
                    max_label_sets: self.metrics_max_series,
                };
                (addr, cfg)
            }),
            rss,
        })
    }

    /// The resident-memory sampling settings, checked against each other.
    pub fn rss(&self) -> Result<Option<(Duration, Duration)>, String> {
        match self.rss_interval.0 {
            Some(i) if self.rss_window < i => Err(format!(
                "--rss-window ({}) must be at least --rss-interval ({})",
                humantime::format_duration(self.rss_window),
                humantime::format_duration(i)
            )),
            Some(i) => Ok(Some((i, self.rss_window))),
            None => Ok(None),
        }
    }
}

fn parse_interval(s: &str) -> Result<Interval, String> {
    if matches!(s.trim(), "off" | "0") {
        return Ok(Interval(None));
    }
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err("at least 100ms, or off".into());
    }
    Ok(Interval(Some(d)))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let mult: u64 = match mult
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("unknown unit in {s:?} (examples: 500K, 100M, 2G)")),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?} (examples: 500K, 100M, 2G)"))?;
    n.checked_mul(mult)
        .filter(|&b| b >= 4096)
        .ok_or_else(|| "at least 4K".to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 1h30m)"))?
        }
    };
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert!(parse_size("10").is_err() && parse_size("5X").is_err() && parse_size("M").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
