//! `threadtrace export` on any bytes, in each of its formats (the second
//! byte picks one): jsonl, Perfetto protobuf, Chrome JSON. Nothing panics,
//! and what is written parses back (JSON lines, one JSON document).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use threadtrace::{
    export::{self, Format},
    tracefile::reader::TraceReader,
};

fuzz_target!(|data: &[u8]| {
    let Some((pick, rest)) = data.split_first() else {
        return;
    };
    let format = [Format::Jsonl, Format::Perfetto, Format::Chrome][*pick as usize % 3];
    let Ok(mut reader) = TraceReader::from_bytes(common::trace_file(rest), "fuzz") else {
        return;
    };
    let mut out = Vec::new();
    export::export(&mut reader, format, &mut out).expect("writing to memory");
    match format {
        Format::Jsonl => {
            for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<serde_json::Value>(line).expect("a JSON line");
            }
        }
        Format::Chrome => {
            serde_json::from_slice::<serde_json::Value>(&out).expect("one JSON document");
        }
        Format::Perfetto => {}
    }
});
