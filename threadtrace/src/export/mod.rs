//! `threadtrace export FILE --format jsonl|perfetto|chrome`: a trace in
//! formats other tools open. jsonl is the objects of `record --json`;
//! perfetto and chrome draw the same timeline (see `timeline`), one in
//! Perfetto's protobuf, one in the Chrome JSON that chrome://tracing and
//! ui.perfetto.dev both open.
pub mod chrome;
pub mod perfetto;
pub mod timeline;

use std::{io::Write, path::PathBuf, process::ExitCode};

use crate::{
    input::{self, WindowArgs},
    tracefile::reader::Item,
};

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Trace files, or directories of them (a rotating set).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum)]
    pub format: Format,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, as `record --json` printed them.
    Jsonl,
    /// Perfetto's native protobuf trace (.pftrace), for ui.perfetto.dev.
    Perfetto,
    /// Chrome Trace Event JSON, for chrome://tracing or ui.perfetto.dev.
    Chrome,
}

/// `threadtrace export`: exit 0 when something was read, 2 when nothing
/// could be, 1 on other errors.
pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let mut input = match input::open_or_say(&a.files, &a.window) {
        Ok(i) => i,
        Err(code) => return Ok(code),
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => {
            input::refuse_overwriting_an_input(p, input.paths())?;
            Box::new(std::io::BufWriter::new(crate::tracefile::open::create(
                p, a.force,
            )?))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let read = match export(&mut input, a.format, &mut out) {
        Ok(n) => n,
        // `export | head`: the reader has what it wanted.
        Err(e) if broken_pipe(&e) => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e),
    };
    let damage = input.damage();
    if read == 0 {
        input::say(&format!("{}: no intact record could be read", input.name()));
        return Ok(ExitCode::from(2));
    }
    if let Some(d) = input::damage_line(&damage, 0) {
        input::say(&format!("{}: {d}", input.name()));
    }
    Ok(ExitCode::SUCCESS)
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    let pipe = Some(std::io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(|e| e.kind()) == pipe
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                == pipe
    })
}

/// Writes the export; returns the records read.
pub fn export(
    input: &mut dyn Iterator<Item = Item>,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let mut read = 0u64;
    if format == Format::Jsonl {
        for item in &mut *input {
            read += 1;
            if let Item::Event(v) = item {
                writeln!(out, "{}", crate::sanitize::to_json(&v)?)?;
            }
        }
    } else {
        let mut t = timeline::Timeline::default();
        for item in &mut *input {
            read += 1;
            t.add(item);
        }
        // Names and args are what a person reads in the viewer.
        t.escape_strings();
        if format == Format::Perfetto {
            out.write_all(&perfetto::render(&t))?;
        } else {
            writeln!(out, "{}", crate::sanitize::to_json(&chrome::render(&t))?)?;
        }
    }
    out.flush()?;
    Ok(read)
}
