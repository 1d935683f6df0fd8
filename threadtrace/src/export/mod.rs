//! `threadtrace export FILE --format jsonl|perfetto|chrome`: a trace in
//! formats other tools open. jsonl is the objects of `record --json`;
//! perfetto and chrome draw the same timeline (see `timeline`), one in
//! Perfetto's protobuf, one in the Chrome JSON that chrome://tracing and
//! ui.perfetto.dev both open.
pub mod chrome;
pub mod perfetto;
pub mod timeline;

use std::io::Write;

use crate::tracefile::reader::{Damage, Item, TraceReader};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, as `record --json` printed them.
    Jsonl,
    /// Perfetto's native protobuf trace (.pftrace), for ui.perfetto.dev.
    Perfetto,
    /// Chrome Trace Event JSON, for chrome://tracing or ui.perfetto.dev.
    Chrome,
}

/// Writes the export; returns the records read and what was skipped as
/// damaged.
pub fn export(
    reader: &mut TraceReader,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<(u64, Damage)> {
    let mut read = 0u64;
    if format == Format::Jsonl {
        for item in reader.by_ref() {
            read += 1;
            if let Item::Event(v) = item {
                writeln!(out, "{}", crate::sanitize::to_json(&v)?)?;
            }
        }
    } else {
        let mut t = timeline::Timeline::default();
        for item in reader.by_ref() {
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
    Ok((read, reader.damage.clone()))
}
