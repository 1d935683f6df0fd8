//! threadtrace: why did that thread (or process) fail to start?
mod attribution;
mod cli;
mod clock;
mod diagnosis;
mod doctor;
mod events;
mod export;
mod host;
mod kernel;
mod privileges;
mod proctable;
mod record;
mod report;
mod sink;
use threadtrace_tracefile as tracefile;
mod tui;

use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let dashboard = match &cli.command {
        Command::Record(a) => !a.json && !a.no_tui && std::io::stdout().is_terminal(),
        _ => false,
    };
    let mut logger = env_logger::Builder::new();
    logger
        .filter_level(level)
        .format_target(false)
        .format_timestamp(None);
    if dashboard {
        // Through the dashboard while it owns the terminal.
        logger.target(env_logger::Target::Pipe(Box::new(tui::logs::Writer)));
    }
    logger.init();
    match run(cli, dashboard) {
        Ok(code) => code,
        Err(e) => {
            // One line, no backtrace: `{:#}` joins the causes with ": ".
            eprintln!("threadtrace: {e:#}");
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
                storm_window: a.storm_window,
                storm_by: a.storm_by,
                verbose: cli.verbose,
                dashboard,
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
        Command::Export {
            file,
            format,
            output,
        } => {
            let mut reader = tracefile::reader::TraceReader::open(&file)?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let (read, damage) = export::export(&mut reader, format, &mut out)?;
            if read == 0 {
                eprintln!(
                    "threadtrace: {}: no intact record could be read",
                    file.display()
                );
                return Ok(ExitCode::from(2));
            }
            if damage.bytes_skipped > 0 || damage.records_undecodable > 0 {
                eprintln!(
                    "threadtrace: {}: skipped {} damaged bytes, {} unreadable records",
                    file.display(),
                    damage.bytes_skipped,
                    damage.records_undecodable
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { file, json } => {
            let r = match report::build(&file) {
                Ok(r) => r,
                Err(e @ report::ReportError::Empty(_)) => {
                    eprintln!("threadtrace: {e}");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(d) = report::damage_line(&r) {
                eprintln!("threadtrace: {}: {d}", file.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{}", report::render(&r));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
