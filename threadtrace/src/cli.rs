//! The command line: `threadtrace <command>`, each command's arguments
//! owned by its module, and the binary's main.
use std::{io::IsTerminal, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    collector::{self, RecordArgs},
    doctor,
    export::{self, ExportArgs},
    panics,
    report::{self, ReportArgs},
    sanitize, tui,
};

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

/// Characters of one log or error line at most.
const LOG_LINE_MAX: usize = 2048;

/// The binary: parse, set up logging (through the dashboard while it owns
/// the terminal), run the command, and say any error in one line.
pub fn main() -> ExitCode {
    panics::one_line_hook();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let dashboard = match &cli.command {
        Command::Record(a) => a.wants_dashboard(std::io::stdout().is_terminal()),
        _ => false,
    };
    let mut logger = env_logger::Builder::new();
    logger.filter_level(level).format(|buf, record| {
        use std::io::Write as _;
        // Log lines carry paths and names other users chose.
        let style = buf.default_level_style(record.level());
        let msg = record.args().to_string();
        writeln!(
            buf,
            "[{style}{:<5}{style:#}] {}",
            record.level(),
            sanitize::line(&msg, LOG_LINE_MAX)
        )
    });
    if dashboard {
        // Through the dashboard while it owns the terminal.
        logger.target(env_logger::Target::Pipe(Box::new(tui::logs::Writer)));
    }
    logger.init();
    match run(cli, dashboard) {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace: `{:#}` joins the causes with ": ".
            eprintln!(
                "threadtrace: {}",
                sanitize::line(&format!("{e:#}"), LOG_LINE_MAX)
            );
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, dashboard: bool) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Record(a) => collector::record(a, cli.verbose, dashboard),
        Command::Doctor => {
            let checks = doctor::run();
            println!("{}", doctor::render(&checks));
            Ok(if checks.iter().all(|c| c.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Export(a) => export::run(a),
        Command::Report(a) => report::run(a),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
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

    /// What `--help` says and what the README says agree where they state
    /// a number or a guarantee: the defaults, and how much of a storm the
    /// trace file keeps (the code's own figure).
    #[test]
    fn help_and_readme_agree() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .unwrap()
            .replace('\n', " ");
        let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut c = Cli::command();
        let help = c
            .find_subcommand_mut("record")
            .unwrap()
            .render_long_help()
            .to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for (readme_says, help_says) in [
            ("`--storm-threshold` failures (default 20)", "[default: 20]"),
            ("`--storm-window` (1 s)", "[default: 1s]"),
            ("`--detail-rate` (250)", "[default: 250]"),
            ("`--rss-interval`, 2 s by default", "[default: 2s]"),
            ("`--rss-window` (60 s)", "[default: 60s]"),
            ("(`record --max-memory`, 1 GiB by", "[default: 1G]"),
            ("`--file-size` (64M by default", "(default 64M"),
            ("`--max-size` (1G by default)", "(default 1G)"),
            ("`--metrics-max-series` (default 2000)", "[default: 2000]"),
        ] {
            assert!(readme.contains(readme_says), "README: {readme_says:?}");
            assert!(
                help.contains(help_says),
                "help: {help_says:?} for {readme_says:?}"
            );
        }
        let kept = crate::diagnosis::storm::DETAIL_PER_SECOND;
        let in_file = format!("keeps {kept} of their events a second");
        assert!(help.contains(&in_file), "help: {in_file:?}");
        let in_readme = format!("keeps {kept} of a storm's events a second");
        assert!(readme.contains(&in_readme), "README: {in_readme:?}");
        assert!(readme.contains(&format!("sampled into the file, {kept} a second per storm")));
    }
}
