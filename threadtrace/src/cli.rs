//! Command line.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "threadtrace",
    version,
    about = "See why threads and processes fail to start: failed pthread_create/clone/fork, \
             rlimit changes and OOM kills, host-wide, with eBPF.",
    long_about = None,
    after_help = "Examples:\n  \
      sudo threadtrace record                      watch the whole host, live dashboard\n  \
      sudo threadtrace record --no-tui             the same as readable lines\n  \
      sudo threadtrace record --json -o inc.trace  JSON lines on stdout, keep a trace file\n  \
      sudo threadtrace record -d 60s --comm python3\n  \
      threadtrace report inc.trace                 postmortem summary of a trace file\n  \
      sudo threadtrace record --no-tui -o /var/lib/threadtrace/   a rotating set, as a service\n  \
      threadtrace report --since 10m /var/lib/threadtrace/   the last 10 minutes of it\n  \
      sudo threadtrace doctor                      can this host run threadtrace?"
)]
pub struct Cli {
    /// More output on stderr: -v info and kernel-side logs, -vv debug,
    /// -vvv trace (each unwinding round, with the stack words).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record failures, limit changes and OOM kills until Ctrl-C, SIGTERM or --duration.
    ///
    /// On a terminal, shows a live dashboard (--no-tui for lines); otherwise
    /// prints one line per event. Either way, a summary with exact counts at
    /// the end. Needs root (or CAP_BPF + CAP_PERFMON).
    Record(RecordArgs),
    /// Check that this host has what threadtrace needs, and say how to fix what is missing.
    Doctor,
    /// Convert a trace: jsonl (the objects of `record --json`), perfetto
    /// (Perfetto's protobuf, for ui.perfetto.dev) or chrome (Trace Event
    /// Format: ui.perfetto.dev or chrome://tracing).
    ///
    /// Exit status: 0 when something was read (damage is reported on
    /// stderr), 2 when nothing could be read, 1 on any other error.
    Export(ExportArgs),
    /// Summarize a trace written by `record -o`: one file, a rotating set,
    /// or several files, read in time order.
    ///
    /// Exit status: 0 when something was read (damage is reported on
    /// stderr), 2 when nothing could be read, 1 on any other error.
    Report(ReportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Trace files, or directories of them (a rotating set).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    /// Write here instead of stdout (created with mode 0600: it holds
    /// command lines).
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Overwrite OUT if it exists (only a regular file of ours, with one
    /// link; never through a symbolic link).
    #[arg(long, requires = "output")]
    pub force: bool,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Trace files, or directories of them (a rotating set).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// The minutes around an incident in a long trace.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WindowArgs {
    /// Only from TIME on: a duration back from the end of the trace (10m,
    /// 1h30m) or an RFC 3339 time (2026-11-22T04:40:00Z, or with an offset).
    /// Counts are then those within the window.
    #[arg(long, value_name = "TIME", value_parser = crate::input::parse_bound)]
    pub since: Option<crate::input::Bound>,
    /// Only up to TIME: a duration back from the end of the trace, or an
    /// RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = crate::input::parse_bound)]
    pub until: Option<crate::input::Bound>,
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
    /// by one (the trace file keeps them all).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub storm_threshold: u32,
    /// The window those failures must fall in, e.g. 1s, 500ms.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub storm_window: Duration,
    /// What storms are counted per: a user, a cgroup or a library.
    #[arg(long, value_name = "SCOPE", value_enum, default_value = "uid")]
    pub storm_by: crate::diagnosis::storm::StormBy,
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
    pub metrics_labels: crate::sink::metrics::LabelFilter,
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
}

fn parse_metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    crate::sink::metrics::http::parse_addr(s).map_err(|e| e.to_string())
}

/// A sampling interval, or None for `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval(pub Option<Duration>);

impl RecordArgs {
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
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

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

    #[test]
    fn rss_sampling_flags() {
        let rec = |args: &[&str]| {
            let mut a = vec!["threadtrace", "record"];
            a.extend(args);
            match Cli::try_parse_from(a).map(|c| c.command) {
                Ok(Command::Record(r)) => r.rss(),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(
            rec(&[]).unwrap(),
            Some((Duration::from_secs(2), Duration::from_secs(60)))
        );
        assert_eq!(rec(&["--rss-interval", "off"]).unwrap(), None);
        assert_eq!(
            rec(&["--rss-interval", "500ms", "--rss-window", "10s"]).unwrap(),
            Some((Duration::from_millis(500), Duration::from_secs(10)))
        );
        assert!(rec(&["--rss-interval", "10ms"]).is_err());
        assert!(rec(&["--rss-interval", "5s", "--rss-window", "2s"])
            .unwrap_err()
            .contains("--rss-window (2s) must be at least --rss-interval (5s)"));
    }

    #[test]
    fn record_flags() {
        let c = Cli::try_parse_from([
            "threadtrace",
            "record",
            "--json",
            "-o",
            "x.trace",
            "-d",
            "5s",
            "-p",
            "1",
            "-p",
            "2",
            "--comm",
            "a",
        ])
        .unwrap();
        let Command::Record(r) = c.command else {
            panic!()
        };
        assert!(r.json);
        assert_eq!(r.pids, vec![1, 2]);
        assert_eq!(r.comms, vec!["a"]);
        assert!(Cli::try_parse_from(["threadtrace", "record", "-p", "abc"]).is_err());
    }

    #[test]
    fn report_and_export_take_files_and_a_window() {
        let c = Cli::try_parse_from([
            "threadtrace",
            "report",
            "--since",
            "10m",
            "--until",
            "2026-11-22T04:40:00Z",
            "a.trace",
            "dir/",
        ])
        .unwrap();
        let Command::Report(r) = c.command else {
            panic!()
        };
        assert_eq!(r.files.len(), 2);
        assert_eq!(
            r.window.since,
            Some(crate::input::Bound::BeforeEnd(Duration::from_secs(600)))
        );
        assert!(Cli::try_parse_from(["threadtrace", "report"]).is_err());
        assert!(Cli::try_parse_from(["threadtrace", "report", "--since", "soon", "a"]).is_err());
        assert!(
            Cli::try_parse_from(["threadtrace", "export", "--format", "jsonl", "--force", "a"])
                .is_err(),
            "--force needs -o"
        );
    }

    #[test]
    fn help_names_every_export_format() {
        let mut c = Cli::command();
        let export = c.find_subcommand_mut("export").unwrap();
        let about = export.get_about().unwrap().to_string();
        for f in ["jsonl", "perfetto", "chrome"] {
            assert!(about.contains(f), "{about}");
        }
    }
}
