//! Any bytes given to the trace reader: it reads what is intact, accounts
//! for the rest as damage, and never panics, overflows the stack, or reads
//! out of bounds. A file that fails to open must say why.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use threadtrace_tracefile::reader::TraceReader;

fuzz_target!(|data: &[u8]| {
    let file = common::trace_file(data);
    let len = file.len() as u64;
    match TraceReader::from_bytes(file, "fuzz") {
        Ok(mut reader) => {
            let items = reader.by_ref().count() as u64;
            // Every byte is read once or skipped once.
            assert!(reader.damage.bytes_skipped <= len);
            assert!(items <= len);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
