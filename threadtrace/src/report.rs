//! `threadtrace report FILE`: what a trace file says, for a postmortem.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;
use serde_json::Value;

use crate::{
    events::{Record, Summary},
    sink::text,
    tracefile::reader::{Damage, Item, TraceReader},
};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Trace(#[from] crate::tracefile::TraceError),
    #[error("{0}: no intact record could be read")]
    Empty(String),
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Trace format version of the file.
    pub format_version: u16,
    pub header: Option<Value>,
    /// Exact counters: the final summary, or the last periodic snapshot if
    /// the recorder did not end cleanly.
    pub counters: Option<Summary>,
    pub ended_cleanly: bool,
    /// Failure events in the file (may be fewer than the counts when the
    /// ring buffer overflowed).
    pub failure_events: u64,
    pub events_by_kind: BTreeMap<String, u64>,
    /// Failure events by the library that asked for the thread.
    pub failures_by_library: BTreeMap<String, u64>,
    pub oom_kills: Vec<Value>,
    /// Limits that changed value (or whose old value is unknown).
    pub rlimit_changes: Vec<Value>,
    /// setrlimit calls that set the value already in force.
    pub rlimit_unchanged: u64,
    pub records_unreadable: u64,
    pub damage: DamageReport,
    /// Processes in the file's process-table snapshot.
    pub processes_at_start: Option<usize>,
    /// Most important first, with evidence and remedy.
    pub findings: Vec<crate::diagnosis::findings::Finding>,
}

#[derive(Debug, Default, Serialize)]
pub struct DamageReport {
    pub bytes_skipped: u64,
    pub records_undecodable: u64,
    pub truncated_tail: bool,
}

impl From<&Damage> for DamageReport {
    fn from(d: &Damage) -> Self {
        DamageReport {
            bytes_skipped: d.bytes_skipped,
            records_undecodable: d.records_undecodable,
            truncated_tail: d.truncated_tail,
        }
    }
}

pub fn build(path: &Path) -> Result<Report, ReportError> {
    let mut reader = TraceReader::open(path)?;
    let mut r = Report::default();
    let mut findings = crate::diagnosis::findings::Findings::default();
    let mut items = 0u64;
    for item in reader.by_ref() {
        items += 1;
        match item {
            Item::Header(h) => r.header = Some(h),
            Item::Processes(p) => {
                r.processes_at_start = p
                    .get("processes")
                    .and_then(|v| v.as_array())
                    .map(|a| a.len())
            }
            Item::Counters(v) => {
                if let Ok(s) = serde_json::from_value::<Summary>(v) {
                    r.counters = Some(s);
                }
            }
            Item::Event(v) => {
                let kind = v
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                *r.events_by_kind.entry(kind.clone()).or_default() += 1;
                let rec = serde_json::from_value::<Record>(v.clone());
                if let Ok(rec) = &rec {
                    findings.add(rec);
                }
                match rec {
                    Ok(Record::ThreadCreateFailed(e)) => {
                        r.failure_events += 1;
                        let lib = match (e.library, e.symbol) {
                            (Some(l), Some(s)) => format!("{l} ({s})"),
                            (Some(l), None) => l,
                            _ => "unknown".into(),
                        };
                        *r.failures_by_library.entry(lib).or_default() += 1;
                    }
                    Ok(Record::OomKill(_)) => r.oom_kills.push(v),
                    Ok(Record::RlimitChange(e)) if e.changed => r.rlimit_changes.push(v),
                    Ok(Record::RlimitChange(_)) => r.rlimit_unchanged += 1,
                    Ok(Record::Summary(s)) => {
                        r.counters = Some(s);
                        r.ended_cleanly = true;
                    }
                    Ok(_) => {}
                    Err(_) => r.records_unreadable += 1,
                }
            }
        }
    }
    r.damage = (&reader.damage).into();
    // A recording that ended cleanly ranked its findings with every event;
    // otherwise rank them from what the file holds.
    r.findings = match &r.counters {
        Some(s) if r.ended_cleanly && !s.findings.is_empty() => s.findings.clone(),
        _ => findings.ranked(r.counters.as_ref()),
    };
    if let Some(s) = r.counters.as_mut() {
        s.findings = r.findings.clone();
    }
    r.format_version = reader.version;
    if items == 0 {
        return Err(ReportError::Empty(path.display().to_string()));
    }
    Ok(r)
}

/// Damage in one line for stderr, or None when the file is intact.
pub fn damage_line(r: &Report) -> Option<String> {
    let d = &r.damage;
    if d.bytes_skipped == 0 && d.records_undecodable == 0 && r.records_unreadable == 0 {
        return None;
    }
    let mut s = format!("skipped {} damaged bytes", d.bytes_skipped);
    if d.truncated_tail {
        s.push_str(" (the file ends mid-record: the recorder was killed)");
    }
    if d.records_undecodable + r.records_unreadable > 0 {
        let _ = write!(
            s,
            ", {} unreadable records",
            d.records_undecodable + r.records_unreadable
        );
    }
    Some(s)
}

/// The report as text. The file may come from anyone: its strings are
/// escaped here (records through `text`, which escapes its own), and the
/// result passes the final guard.
pub fn render(r: &Report) -> String {
    crate::sanitize::block(&render_text(r)).into_owned()
}

fn render_text(r: &Report) -> String {
    let mut out = String::new();
    if let Some(h) = &r.header {
        let mut h = h.clone();
        crate::sanitize::value(&mut h);
        let host = &h["host"];
        let _ = writeln!(
            out,
            "trace (format v{}) of {} (kernel {}, {} CPUs, cgroup {}), started {}",
            r.format_version,
            host["hostname"].as_str().unwrap_or("?"),
            host["kernel"].as_str().unwrap_or("?"),
            host["cpus"],
            host["cgroup"].as_str().unwrap_or("?"),
            h["started"].as_str().unwrap_or("?")
        );
    }
    if !r.ended_cleanly {
        out.push_str(
            "the recording did not end cleanly (killed?): counts are from its last snapshot.\n",
        );
    }
    match &r.counters {
        Some(s) => out.push_str(&text::summary(s)),
        None => out.push_str("no counter snapshot in the file."),
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{} failure events recorded in detail, by the code that asked:",
        r.failure_events
    );
    let mut libs: Vec<_> = r.failures_by_library.iter().collect();
    libs.sort_by(|a, b| b.1.cmp(a.1));
    for (lib, n) in libs.iter().take(10) {
        let lib = crate::sanitize::text(lib);
        let _ = writeln!(out, "  {lib:<40} {n:>10}");
    }
    if !r.oom_kills.is_empty() {
        let _ = writeln!(out, "OOM kills: {}", r.oom_kills.len());
        for v in r.oom_kills.iter().take(10) {
            if let Ok(Record::OomKill(e)) = serde_json::from_value::<Record>(v.clone()) {
                let _ = writeln!(out, "  {}", text::render(&Record::OomKill(e)));
            }
        }
    }
    if !r.rlimit_changes.is_empty() || r.rlimit_unchanged > 0 {
        let _ = writeln!(
            out,
            "rlimit changes: {} (and {} calls that left a limit as it was)",
            r.rlimit_changes.len(),
            r.rlimit_unchanged
        );
        for v in r.rlimit_changes.iter().take(10) {
            if let Ok(Record::RlimitChange(e)) = serde_json::from_value::<Record>(v.clone()) {
                let _ = writeln!(out, "  {}", text::render(&Record::RlimitChange(e)));
            }
        }
    }
    out.trim_end().to_string()
}
