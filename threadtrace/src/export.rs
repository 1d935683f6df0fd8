//! `threadtrace export FILE --format jsonl|chrome`: a trace in formats
//! other tools open. jsonl is the objects of `record --json`; chrome is
//! the Trace Event Format that chrome://tracing and ui.perfetto.dev open:
//! a track per process, failures and OOM kills as instant events with the
//! library, cause and remedy as args, storms as slices, and live threads
//! per process as counters.
use std::io::Write;

use serde_json::{json, Value};

use crate::{
    events::Record,
    tracefile::reader::{Damage, Item, TraceReader},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Chrome,
}

/// Microseconds since the epoch from an RFC 3339 time.
fn micros(time: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(time).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as u64)
}

fn instant(name: String, pid: u32, tid: u32, time: &str, args: Value) -> Option<Value> {
    Some(
        json!({"name": name, "ph": "i", "s": "p", "pid": pid, "tid": tid, "ts": micros(time)?, "args": args}),
    )
}

/// Chrome trace events for one record.
fn chrome_events(r: &Record) -> Vec<Value> {
    let mut out = Vec::new();
    match r {
        Record::ThreadCreateFailed(e) => {
            let who = e.library.clone().unwrap_or_else(|| "unknown".into());
            out.extend(instant(
                format!("{} {} ({who})", e.api, e.error),
                e.task.pid,
                e.task.tid,
                &e.task.time,
                json!({
                    "library": e.library, "symbol": e.symbol, "module": e.module,
                    "cause": e.cause.as_ref().map(|c| c.kind.clone()),
                    "detail": e.cause.as_ref().map(|c| c.detail.clone()),
                    "remedy": e.cause.as_ref().map(|c| c.remedy.clone()),
                }),
            ));
        }
        Record::OomKill(k) => {
            out.extend(instant(
                format!("OOM kill of {}[{}]", k.victim.comm, k.victim.pid),
                k.victim.pid,
                k.victim.pid,
                &k.task.time,
                json!({"rss_bytes": k.victim.rss_bytes, "memory_cgroup": k.memory_cgroup, "trigger": k.trigger,
                       "pool": k.pool, "consequence": k.consequence, "remedy": k.remedy}),
            ));
        }
        Record::Storm(s) if s.state == "end" => {
            if let (Some(start), Some(pid)) =
                (micros(&s.started), s.processes.first().map(|p| p.pid))
            {
                out.push(json!({
                    "name": format!("storm: {} failures", s.failures), "ph": "X", "pid": pid, "tid": pid,
                    "ts": start, "dur": (s.duration_s * 1e6) as u64,
                    "args": {"scope": s.scope, "peak_rate_per_s": s.peak_rate_per_s, "libraries": s.libraries,
                             "causes": s.causes, "remedy": s.remedy},
                }));
            }
        }
        Record::ProcessExec(e) => {
            out.push(json!({"name": "process_name", "ph": "M", "pid": e.task.pid, "args": {"name": format!("{} [{}]", e.task.comm, e.task.pid)}}));
        }
        _ => {}
    }
    out
}

/// Counter events from a counters snapshot: live threads per process.
fn chrome_counters(summary: &Value) -> Vec<Value> {
    let Some(ts) = summary.get("time").and_then(Value::as_str).and_then(micros) else {
        return Vec::new();
    };
    let mut per: std::collections::BTreeMap<u64, serde_json::Map<String, Value>> =
        Default::default();
    for t in summary
        .get("threads")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(pid), Some(lib), Some(live)) =
            (t["pid"].as_u64(), t["library"].as_str(), t["live"].as_i64())
        else {
            continue;
        };
        per.entry(pid)
            .or_default()
            .insert(lib.to_string(), live.into());
    }
    per.into_iter()
        .map(
            |(pid, args)| json!({"name": "threads", "ph": "C", "pid": pid, "ts": ts, "args": args}),
        )
        .collect()
}

/// Writes the export; returns the records read and what was skipped as
/// damaged.
pub fn export(
    reader: &mut TraceReader,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<(u64, Damage)> {
    let mut read = 0u64;
    match format {
        Format::Jsonl => {
            for item in reader.by_ref() {
                read += 1;
                if let Item::Event(v) = item {
                    serde_json::to_writer(&mut *out, &v)?;
                    out.write_all(b"\n")?;
                }
            }
        }
        Format::Chrome => {
            let mut events = Vec::new();
            for item in reader.by_ref() {
                read += 1;
                match item {
                    Item::Event(v) => {
                        if let Ok(r) = serde_json::from_value::<Record>(v) {
                            events.extend(chrome_events(&r));
                        }
                    }
                    Item::Counters(v) => events.extend(chrome_counters(&v)),
                    Item::Header(_) | Item::Processes(_) => {}
                }
            }
            serde_json::to_writer(
                &mut *out,
                &json!({"traceEvents": events, "displayTimeUnit": "ms"}),
            )?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok((read, reader.damage.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_to_micros() {
        assert_eq!(micros("1970-01-01T00:00:01.000002Z"), Some(1_000_002));
        assert_eq!(micros("yesterday"), None);
    }

    #[test]
    fn counters_become_one_counter_event_per_process() {
        let s = json!({"time": "1970-01-01T00:00:01Z", "threads": [
            {"pid": 7, "comm": "a", "library": "libgomp", "live": 3},
            {"pid": 7, "comm": "a", "library": "unattributed", "live": 1},
            {"pid": 8, "comm": "b", "library": "libopenblas", "live": 2}]});
        let c = chrome_counters(&s);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["args"]["libgomp"], 3);
        assert_eq!(c[0]["ph"], "C");
        assert_eq!(c[1]["pid"], 8);
    }
}
