//! The Chrome Trace Event Format (JSON), which chrome://tracing and
//! ui.perfetto.dev open: a process per track, instant events with their
//! args, storms as complete events, live threads as counter events.
use serde_json::{json, Value};

use super::timeline::Timeline;

pub fn render(t: &Timeline) -> Value {
    let mut events = Vec::new();
    for (pid, name) in &t.processes {
        events.push(json!({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": name}}));
    }
    for i in &t.instants {
        events.push(
            json!({"name": i.name, "cat": i.category, "ph": "i", "s": "p", "pid": i.pid,
                           "tid": i.tid, "ts": i.ts_us, "args": i.args}),
        );
    }
    for s in &t.spans {
        events.push(
            json!({"name": s.name, "cat": "storm", "ph": "X", "pid": s.pid, "tid": s.pid,
                           "ts": s.ts_us, "dur": s.dur_us, "args": s.args}),
        );
    }
    for c in &t.counters {
        events.push(
            json!({"name": "threads", "ph": "C", "pid": c.pid, "ts": c.ts_us, "args": c.live}),
        );
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}
