//! threadtrace's trace file format: what `record -o` writes and `report` and
//! `export` read. A crate of its own so that it can be fuzzed (fuzz/) and
//! read by tools without the tracer's eBPF build.
//!
//! Layout: a 16-byte preamble (magic "THRTRACE", format version, the oldest
//! reader version that can read it, flags), then records, each
//! `len: u32 | type: u8 | crc32(type, payload): u32 | payload`.
//! Payloads are values of the JSON model (`codec`), with object keys interned
//! by KEY records, so new fields never need a format change. Readers skip
//! record types they do not know.
//!
//! A recording may be one file or a rotating set of them (`set`), each
//! readable alone: every file starts with the header and a process-table
//! snapshot.
pub mod codec;
pub mod open;
pub mod reader;
pub mod set;
pub mod writer;

pub const MAGIC: &[u8; 8] = b"THRTRACE";
pub const VERSION: u16 = 1;
/// Readers older than this cannot read what this version writes.
pub const MIN_READER_VERSION: u16 = 1;
pub const PREAMBLE_LEN: usize = 16;
pub const RECORD_HEADER_LEN: usize = 9;
/// No record is larger; a length above it marks damage.
pub const MAX_RECORD: usize = 1 << 20;

/// Record types.
pub mod kind {
    /// Host facts and recording parameters, first in the file.
    pub const HEADER: u8 = 1;
    /// Defines an interned key: varint id, then the UTF-8 name.
    pub const KEY: u8 = 2;
    /// One event (a `Record` of the JSON model).
    pub const EVENT: u8 = 3;
    /// Periodic snapshot of the kernel's exact counters.
    pub const COUNTERS: u8 = 4;
    /// The process table: who was running, so that pids in the file can be
    /// described on another machine.
    pub const PROCESSES: u8 = 5;
    /// Last record of a file that a rotating set or a reopen (SIGHUP)
    /// closed: the recording goes on in the next file. Older readers skip it.
    pub const CONTINUED: u8 = 6;
    /// The file stopped taking records (`{"time", "reason", "error",
    /// "records_lost"}`: the disk was full), or took them again
    /// (`"resumed": true`). Written into space reserved for it, so that a
    /// full disk is told as one, not as a killed recorder. Older readers
    /// skip it.
    pub const CUT: u8 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} is not a threadtrace trace file")]
    NotATrace(String),
    #[error("{path} is trace format v{version}, newer than this threadtrace reads (v{VERSION}): use a newer threadtrace")]
    TooNew { path: String, version: u16 },
    #[error("{0} is empty: nothing could be read")]
    Empty(String),
    #[error("{0} ends inside its preamble (the recorder was stopped as it started): nothing could be read")]
    CutPreamble(String),
    #[error("{path} is {kind}: only regular files are read")]
    NotRegular { path: String, kind: &'static str },
    #[error("{0} exists: give --force to overwrite it")]
    Exists(String),
    #[error("{path}: refusing to write there: {why}")]
    Refused { path: String, why: String },
}

impl TraceError {
    /// A trace file from which nothing could be read (documented exit
    /// code 2), rather than something that is not a trace or cannot be
    /// opened (1).
    pub fn nothing_read(&self) -> bool {
        matches!(self, TraceError::Empty(_) | TraceError::CutPreamble(_))
    }
}
