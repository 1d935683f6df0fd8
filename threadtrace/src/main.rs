//! threadtrace: why did that thread (or process) fail to start?
use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use threadtrace::{
    cli::{Cli, Command},
    doctor, export, panics, record, report, sanitize, sink, tui,
};

/// Characters of one log or error line at most.
const LOG_LINE_MAX: usize = 2048;

fn main() -> ExitCode {
    panics::one_line_hook();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let dashboard = match &cli.command {
        Command::Record(a) => !a.json && !a.no_tui && std::io::stdout().is_terminal(),
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
        Command::Record(a) => {
            let rss = a.rss().map_err(|e| anyhow::anyhow!("{e}"))?;
            let opts = record::Options {
                json: a.json,
                output: a.output,
                duration: a.duration,
                pids: a.pids,
                comms: a.comms,
                lifecycle: a.lifecycle,
                storm_threshold: a.storm_threshold,
                detail_rate: a.detail_rate,
                max_size: a.max_size,
                file_size: a.file_size,
                force: a.force,
                storm_window: a.storm_window,
                storm_by: a.storm_by,
                max_memory: a.max_memory,
                verbose: cli.verbose,
                dashboard,
                metrics: a.metrics.map(|addr| {
                    let cfg = sink::metrics::Config {
                        labels: a.metrics_labels,
                        max_label_sets: a.metrics_max_series,
                    };
                    (addr, cfg)
                }),
                rss,
            };
            // One thread: the collector must not need new threads while
            // thread creation is failing on the host.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(record::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
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
