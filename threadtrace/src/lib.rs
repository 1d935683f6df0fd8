//! threadtrace as a library: what the `threadtrace` binary is made of
//! (src/main.rs is its command line), and what the fuzz targets (fuzz/)
//! drive directly: `report` and `export` on any bytes.
#![expect(
    clippy::len_without_is_empty,
    reason = "the binary's own modules, public only for the fuzz targets: lints about \
              designing a public API do not apply"
)]
pub mod attribution;
pub mod bounded;
pub mod cli;
pub mod clock;
pub mod diagnosis;
pub mod doctor;
pub mod events;
pub mod export;
pub mod host;
pub mod input;
pub mod kernel;
pub mod own_limits;
pub mod panics;
pub mod pods;
pub mod privileges;
pub mod proctable;
pub mod record;
pub mod report;
pub mod sanitize;
pub mod sink;
pub use threadtrace_tracefile as tracefile;
pub mod tui;
