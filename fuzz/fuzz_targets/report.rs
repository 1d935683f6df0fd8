//! `threadtrace report` on any bytes: the report is built, rendered as
//! text and as JSON, and nothing panics, whatever the records say (they
//! decode into the event types, feed the findings, the OOM and limit
//! lists).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use threadtrace::{input::Input, report, tracefile::reader::TraceReader};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = TraceReader::from_bytes(common::trace_file(data), "fuzz") else {
        return;
    };
    let mut input = Input::from_reader(reader);
    if let Ok(r) = report::build(&mut input) {
        assert!(r.oom_kills.len() <= report::KEPT && r.rlimit_changes.len() <= report::KEPT);
        let _ = report::render(&r);
        let _ = report::damage_line(&r);
        serde_json::to_string(&r).expect("a report serializes");
    }
});
