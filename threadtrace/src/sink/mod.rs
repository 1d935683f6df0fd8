//! Where records go: stdout (JSON lines or readable text) and the trace file.
pub mod metrics;
pub mod output;
pub mod text;

use std::io::{self, BufWriter, Stdout, Write};

use crate::events::Record;

/// stdout, as JSON lines or readable lines.
pub struct Console {
    json: bool,
    out: BufWriter<Stdout>,
}

impl Console {
    pub fn new(json: bool) -> Self {
        Console {
            json,
            out: BufWriter::new(io::stdout()),
        }
    }

    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        if self.json {
            let line = crate::sanitize::to_json(r)?;
            writeln!(self.out, "{line}")
        } else {
            writeln!(self.out, "{}", text::render(r))
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
