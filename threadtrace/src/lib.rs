//! threadtrace as a library: what the `threadtrace` binary is made of
//! (src/main.rs is its command line), and what the fuzz targets (fuzz/)
//! and the tests drive directly. The layers, bottom up, and what each may
//! import, are in docs/architecture.md; `cargo xtask test` checks that no
//! two top-level modules import each other.
// Foundation: no model, no diagnosis.
mod bounded;
mod clock;
mod host;
mod own_limits;
mod panics;
mod privileges;
mod proctable;
pub mod sanitize;
pub use threadtrace_tracefile as tracefile;
// The data model of `record --json` and trace files, and how it reads.
pub mod model;
mod words;
// What fills the model: the kernel's records, attribution, diagnosis.
mod attribution;
mod diagnosis;
mod enrich;
mod kernel;
mod pods;
// What reads it: sinks, the dashboard, the readers of trace files.
pub mod export;
pub mod input;
pub mod report;
mod sink;
/// The readable lines of records and summaries, for the golden tests.
pub use sink::lines;
mod tui;
// The commands.
pub mod cli;
mod collector;
mod doctor;
