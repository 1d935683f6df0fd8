//! `threadtrace report FILE...`: what a trace says, for a postmortem: one
//! file, a rotating set, or the window of it around an incident.
use std::{
    collections::BTreeMap, fmt::Write as _, io::Write as _, path::PathBuf, process::ExitCode,
};

use serde::Serialize;
use serde_json::Value;

use crate::{
    diagnosis::findings::Findings,
    input::{self, Input, WindowArgs},
    model::{Finding, Record, Summary},
    sanitize,
    sink::lines,
    tracefile::reader::{Damage, Item},
    words,
};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Trace files, or directories of them (a rotating set).
    #[arg(required = true, value_name = "FILE|DIR")]
    pub files: Vec<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}: no intact record could be read")]
    Empty(String),
}

/// Why the file ends without its summary, in the words that fit: a full
/// disk (the file says so), a kill in the middle of a write, or either of
/// a kill and a file system that took nothing more.
fn incomplete(cuts: &[Value], truncated_tail: bool) -> String {
    let last_stop = cuts.last().filter(|c| c["resumed"] != Value::Bool(true));
    if let Some(c) = last_stop {
        let time = c["time"].as_str().unwrap_or("?");
        let why = match c["reason"].as_str() {
            Some("disk full") | None => "the disk was full",
            Some(other) => other,
        };
        return format!(
            "the file stopped taking records at {time}: {why}; the recording may have gone on without it"
        );
    }
    if truncated_tail {
        return "the recording did not end cleanly: the recorder was killed while writing (the file ends mid-record)".into();
    }
    "the recording did not end cleanly: the recorder was killed, or its file system took no more (full or read-only)".into()
}

/// OOM kills and limit changes kept whole in a report, each: the rest are
/// counted. A crafted file holds millions of them.
pub const KEPT: usize = 1000;

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
    /// The first KEPT of them; `oom_kills_total` counts them all.
    pub oom_kills: Vec<Value>,
    pub oom_kills_total: u64,
    /// Of those, the processes killed only because memory.oom.group
    /// killed their cgroup with the victim the kernel chose.
    #[serde(skip_serializing_if = "is_zero")]
    pub oom_kills_with_group: u64,
    /// Limits that changed value (or whose old value is unknown): the
    /// first KEPT; `rlimit_changes_total` counts them all.
    pub rlimit_changes: Vec<Value>,
    pub rlimit_changes_total: u64,
    /// setrlimit calls that set the value already in force.
    pub rlimit_unchanged: u64,
    pub records_unreadable: u64,
    pub damage: DamageReport,
    /// Processes in the file's process-table snapshot.
    pub processes_at_start: Option<usize>,
    /// Most important first, with evidence and remedy.
    pub findings: Vec<Finding>,
    /// The files read, in time order.
    pub files: Vec<String>,
    /// --since/--until: only what happened within; `counters` are then the
    /// counts within it (the difference of the snapshots at its ends).
    pub window: Option<WindowReport>,
    /// The last file ends by naming the file its recording goes on in.
    pub continued_in: Option<String>,
    /// Where the files stopped taking records (a full disk), and took them
    /// again: the CUT records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cuts: Vec<Value>,
    /// Why the files do not hold the end of the recording, when they do
    /// not: killed, or no more room, told as what it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Failures recorded in detail after the last counter snapshot of a
    /// recording that did not end cleanly: `counters` were raised by them,
    /// so that no count is below what the events show.
    #[serde(skip_serializing_if = "is_zero")]
    pub counts_raised_by: u64,
    /// Failure events per (pid, api, errno): (comm, error, events).
    #[serde(skip)]
    events_by_process: BTreeMap<(u32, String, i32), (String, String, u64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// (pid, api, errno) keys of failure events tallied at most.
const EVENT_KEYS: usize = 65_536;

#[derive(Debug, Default, Serialize)]
pub struct WindowReport {
    pub since: Option<String>,
    pub until: Option<String>,
    /// Events and snapshots left out.
    pub outside: u64,
    /// Counts are since this snapshot (None: since the recording started).
    pub counted_from: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct DamageReport {
    pub bytes_skipped: u64,
    pub records_undecodable: u64,
    pub truncated_tail: bool,
    pub candidates_unchecked: u64,
    pub read_error: Option<String>,
}

impl From<&Damage> for DamageReport {
    fn from(d: &Damage) -> Self {
        DamageReport {
            bytes_skipped: d.bytes_skipped,
            records_undecodable: d.records_undecodable,
            truncated_tail: d.truncated_tail,
            candidates_unchecked: d.candidates_unchecked,
            read_error: d.read_error.clone(),
        }
    }
}

/// `threadtrace report`: exit 0 when something was read, 2 when nothing
/// could be, 1 on other errors.
pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let mut input = match input::open_or_say(&a.files, &a.window) {
        Ok(i) => i,
        Err(code) => return Ok(code),
    };
    let r = match build(&mut input) {
        Ok(r) => r,
        Err(e) => {
            input::say(&e.to_string());
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(d) = damage_line(&r) {
        input::say(&format!("{}: {d}", input.name()));
    }
    let text = if a.json {
        sanitize::to_json_pretty(&r)?
    } else {
        render(&r)
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| std::io::Write::flush(&mut out)) {
        // `report | head`: the reader has what it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        r => {
            r?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn build(input: &mut Input) -> Result<Report, ReportError> {
    let mut r = Report::default();
    let mut findings = Findings::default();
    let mut items = 0u64;
    // The first file's process table, which may come in parts.
    let mut first_table: Option<String> = None;
    for item in input.by_ref() {
        items += 1;
        match item {
            Item::Header(h) => {
                if r.header.is_none() {
                    r.header = Some(h);
                }
            }
            Item::Processes(p) => {
                let time = p["time"].as_str().unwrap_or("").to_string();
                if first_table.get_or_insert_with(|| time.clone()) == &time {
                    let n = p["processes"].as_array().map_or(0, |a| a.len());
                    *r.processes_at_start.get_or_insert(0) += n;
                }
            }
            Item::Counters(v) => {
                if let Ok(s) = serde_json::from_value::<Summary>(v) {
                    r.counters = Some(s);
                }
            }
            Item::Event(v) => r.event(v, &mut findings),
        }
    }
    r.damage = (&input.damage()).into();
    r.files = input
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    r.continued_in = input
        .continued()
        .and_then(|c| c["next"].as_str())
        .map(String::from);
    r.cuts = input.cuts().to_vec();
    r.window(input);
    if r.window.is_none() && r.continued_in.is_none() && !r.ended_cleanly {
        r.incomplete = Some(incomplete(&r.cuts, r.damage.truncated_tail));
        r.counts_raised_by = r.raise_counts_to_events();
    }
    // A recording that ended cleanly ranked its findings with every event;
    // otherwise (or for a window) rank them from what was read.
    r.findings = match &r.counters {
        Some(s) if r.ended_cleanly && r.window.is_none() && !s.findings.is_empty() => {
            s.findings.clone()
        }
        _ => findings.ranked(r.counters.as_ref()),
    };
    if let Some(s) = r.counters.as_mut() {
        s.findings = r.findings.clone();
    }
    r.format_version = input.version();
    if items == 0 {
        return Err(ReportError::Empty(input.name()));
    }
    Ok(r)
}

impl Report {
    /// One event record: counted by kind, kept or tallied, and seen by
    /// the findings.
    fn event(&mut self, v: Value, findings: &mut Findings) {
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        *self.events_by_kind.entry(kind).or_default() += 1;
        let rec = serde_json::from_value::<Record>(v.clone());
        if let Ok(rec) = &rec {
            findings.add(rec);
        }
        match rec {
            Ok(Record::ThreadCreateFailed(e)) => {
                self.failure_events += 1;
                let key = (e.task.pid, e.api.clone(), e.errno);
                if self.events_by_process.len() < EVENT_KEYS
                    || self.events_by_process.contains_key(&key)
                {
                    self.events_by_process
                        .entry(key)
                        .or_insert_with(|| (e.task.comm.clone(), e.error.clone(), 0))
                        .2 += 1;
                }
                let lib = match (e.library, e.symbol) {
                    (Some(l), Some(s)) => format!("{l} ({s})"),
                    (Some(l), None) => l,
                    _ => "unknown".into(),
                };
                *self.failures_by_library.entry(lib).or_default() += 1;
            }
            Ok(Record::OomKill(k)) => {
                self.oom_kills_total += 1;
                self.oom_kills_with_group += k.killed_with_group() as u64;
                if self.oom_kills.len() < KEPT {
                    self.oom_kills.push(v);
                }
            }
            Ok(Record::RlimitChange(e)) if e.changed => {
                self.rlimit_changes_total += 1;
                if self.rlimit_changes.len() < KEPT {
                    self.rlimit_changes.push(v);
                }
            }
            Ok(Record::RlimitChange(_)) => self.rlimit_unchanged += 1,
            Ok(Record::Summary(s)) => {
                self.counters = Some(s);
                self.ended_cleanly = true;
            }
            Ok(_) => {}
            Err(_) => self.records_unreadable += 1,
        }
    }

    /// A recording that did not end cleanly has counts from its last
    /// snapshot, which may be older than failures the file recorded in
    /// detail: each (process, api, errno) count is raised to its events,
    /// so that the counts are a floor the findings never contradict.
    /// Returns the failures added.
    fn raise_counts_to_events(&mut self) -> u64 {
        if self.events_by_process.is_empty() {
            return 0;
        }
        let s = self.counters.get_or_insert_with(Summary::default);
        let mut added = 0;
        for ((pid, api, errno), (comm, error, events)) in &self.events_by_process {
            let row = s
                .by_process
                .iter_mut()
                .find(|p| p.pid == *pid && &p.api == api && p.errno == *errno);
            let counted = row.as_ref().map_or(0, |p| p.count);
            if *events <= counted {
                continue;
            }
            let more = events - counted;
            match row {
                Some(p) => p.count = *events,
                None => s.by_process.push(crate::model::ProcessFailures {
                    pid: *pid,
                    comm: comm.clone(),
                    api: api.clone(),
                    errno: *errno,
                    error: error.clone(),
                    count: *events,
                }),
            }
            *s.by_api
                .entry(api.clone())
                .or_default()
                .entry(error.clone())
                .or_default() += more;
            s.failures_total += more;
            added += more;
        }
        s.by_process
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        added
    }

    /// With --since/--until: the window, and the counts within it (the
    /// last snapshot in it minus the last one before it).
    fn window(&mut self, input: &mut Input) {
        if input.window.is_all() {
            return;
        }
        let baseline = input
            .baseline
            .take()
            .and_then(|v| serde_json::from_value::<Summary>(v).ok());
        self.window = Some(WindowReport {
            since: input.window.since.map(crate::clock::rfc3339),
            until: input.window.until.map(crate::clock::rfc3339),
            outside: input.outside,
            counted_from: baseline.as_ref().map(|b| b.time.clone()),
        });
        if let (Some(c), Some(b)) = (self.counters.as_mut(), baseline.as_ref()) {
            *c = crate::input::since(c, b);
        }
    }
}

/// Damage in one line for stderr, or None when the file is intact.
pub fn damage_line(r: &Report) -> Option<String> {
    let d = &r.damage;
    input::damage_line(
        &Damage {
            bytes_skipped: d.bytes_skipped,
            records_undecodable: d.records_undecodable,
            truncated_tail: d.truncated_tail,
            candidates_unchecked: d.candidates_unchecked,
            read_error: d.read_error.clone(),
        },
        r.records_unreadable,
    )
}

/// The report as text. The file may come from anyone: its strings are
/// escaped here (records through `text`, which escapes its own), and the
/// result passes the final guard.
pub fn render(r: &Report) -> String {
    sanitize::block(&render_text(r)).into_owned()
}

fn render_text(r: &Report) -> String {
    let mut out = String::new();
    if let Some(h) = &r.header {
        let mut h = h.clone();
        sanitize::value(&mut h);
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
    if r.files.len() > 1 {
        let _ = writeln!(out, "{} files read, in time order.", r.files.len());
    }
    if let Some(w) = &r.window {
        let _ = writeln!(
            out,
            "window {} to {}: {} records outside it left out; counts are those within it{}.",
            w.since.as_deref().unwrap_or("the start"),
            w.until.as_deref().unwrap_or("the end"),
            w.outside,
            match &w.counted_from {
                Some(t) => format!(" (since the snapshot at {t})"),
                None => " (since the recording started)".into(),
            }
        );
    } else if let Some(next) = &r.continued_in {
        let _ = writeln!(
            out,
            "the recording goes on in {next}: counts are from the last snapshot read."
        );
    } else if let Some(why) = &r.incomplete {
        let raised = match r.counts_raised_by {
            0 => String::new(),
            n => format!(
                ", raised by {} recorded in detail after it",
                words::count(n, "failure")
            ),
        };
        let _ = writeln!(out, "{why}: counts are from its last snapshot{raised}.");
    }
    match &r.counters {
        Some(s) => out.push_str(&lines::summary(s)),
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
        let lib = sanitize::text(lib);
        let _ = writeln!(out, "  {lib:<40} {n:>10}");
    }
    if !r.oom_kills.is_empty() {
        let with_group = match r.oom_kills_with_group {
            0 => String::new(),
            n => format!(" ({n} of them killed with their memory cgroup, by memory.oom.group)"),
        };
        let _ = writeln!(out, "OOM kills: {}{with_group}", r.oom_kills_total);
        for v in r.oom_kills.iter().take(10) {
            if let Ok(Record::OomKill(e)) = serde_json::from_value::<Record>(v.clone()) {
                let _ = writeln!(out, "  {}", lines::render(&Record::OomKill(e)));
            }
        }
    }
    if !r.rlimit_changes.is_empty() || r.rlimit_unchanged > 0 {
        let _ = writeln!(
            out,
            "rlimit changes: {} (and {} calls that left a limit as it was)",
            r.rlimit_changes_total, r.rlimit_unchanged
        );
        for v in r.rlimit_changes.iter().take(10) {
            if let Ok(Record::RlimitChange(e)) = serde_json::from_value::<Record>(v.clone()) {
                let _ = writeln!(out, "  {}", lines::render(&Record::RlimitChange(e)));
            }
        }
    }
    out.trim_end().to_string()
}
