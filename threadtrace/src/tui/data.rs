//! What the dashboard shows: the updates it is sent (records and the
//! per-second picture from the output stage, the tracer's own usage and
//! log lines from the driver), and what they add up to (`Data`).
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use crate::{
    diagnosis::limits::ProcessLimits,
    model::{Record, Started, Storm, Summary, ThreadCreateFailed},
};

/// Failed thread creations of one library for one cause.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureGroup {
    pub library: String,
    pub cause: String,
    /// Exact: each process's count from the kernel, shared among its
    /// groups as its failures seen in detail were.
    pub failures: u64,
    /// (pid, comm, uid) of the first processes seen failing.
    pub processes: Vec<(u32, String, u32)>,
    /// A recent failure of the group, for its stack, cause and remedy.
    pub example: Option<Arc<ThreadCreateFailed>>,
}

/// What the output stage sends once a second.
#[derive(Debug, Clone, Default)]
pub struct Second {
    /// Exact counters (narrowed by -p/--comm), with the findings so far.
    pub summary: Summary,
    /// Cumulative, largest first.
    pub failures: Vec<FailureGroup>,
    /// The busiest and the failing processes, most threads first.
    pub processes: Vec<ProcessLimits>,
    /// The limits closest to their maximum, closest first (`--near`).
    pub limits: Vec<crate::model::Headroom>,
    /// Updates the dashboard was too slow to take, so far.
    pub dropped: u64,
}

/// The tracer's own cost, and its trace file's size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub trace_bytes: Option<u64>,
}

#[derive(Debug)]
pub enum Update {
    /// A record the console would have printed.
    Record(Box<Record>),
    Second(Box<Second>),
    Usage(Usage),
    /// A log line (warnings, -v) that would have gone to stderr.
    Log(String),
}

/// Seconds of rate history kept per failure group.
pub const HISTORY: usize = 120;
/// Recent events kept.
pub const RECENT: usize = 500;
/// OOM kills and pool worker deaths kept.
pub const KILLS: usize = 100;

#[derive(Debug, Clone)]
pub struct FailureRow {
    pub group: FailureGroup,
    /// Failures seen per second, oldest first, the last second last.
    pub per_second: VecDeque<u64>,
}

impl FailureRow {
    pub fn rate(&self) -> u64 {
        self.per_second.back().copied().unwrap_or(0)
    }
}

/// Everything shown; frozen as a whole while paused.
#[derive(Debug, Clone, Default)]
pub struct Data {
    pub started: Option<Started>,
    pub summary: Summary,
    pub events_per_s: u64,
    pub failures: Vec<FailureRow>,
    pub processes: Vec<ProcessLimits>,
    /// The limits closest to their maximum, closest first.
    pub limits: Vec<crate::model::Headroom>,
    /// OOM kills and pool workers killed, newest first.
    pub kills: VecDeque<Record>,
    /// Newest first.
    pub recent: VecDeque<Record>,
    /// Active storms by scope.
    pub storms: BTreeMap<String, Storm>,
    pub usage: Usage,
    pub dropped: u64,
    pub log: Option<String>,
    /// Updates received: while paused, how far the live state has moved.
    pub updates: u64,
}

impl Data {
    pub(super) fn update(&mut self, u: Update) {
        self.updates += 1;
        match u {
            Update::Record(r) => self.record(*r),
            Update::Second(s) => self.second(*s),
            Update::Usage(u) => self.usage = u,
            Update::Log(l) => self.log = Some(l),
        }
    }

    fn record(&mut self, r: Record) {
        match &r {
            Record::Started(s) => {
                self.started = Some(s.clone());
                return;
            }
            Record::Storm(s) => {
                if s.state == "end" {
                    self.storms.remove(&s.scope);
                } else {
                    self.storms.insert(s.scope.clone(), s.clone());
                }
                // Each second's update would push everything else out.
                if s.state == "update" {
                    return;
                }
            }
            Record::OomKill(_) => push(&mut self.kills, r.clone(), KILLS),
            Record::ProcessExit(e) if e.pool.is_some() => push(&mut self.kills, r.clone(), KILLS),
            _ => {}
        }
        push(&mut self.recent, r, RECENT);
    }

    fn second(&mut self, s: Second) {
        let dt = s.summary.duration_s - self.summary.duration_s;
        if dt > 0.0 && self.summary.duration_s > 0.0 {
            let events = s
                .summary
                .events_delivered
                .saturating_sub(self.summary.events_delivered);
            self.events_per_s = (events as f64 / dt).round() as u64;
        }
        let mut before: BTreeMap<(String, String), FailureRow> = std::mem::take(&mut self.failures)
            .into_iter()
            .map(|r| ((r.group.library.clone(), r.group.cause.clone()), r))
            .collect();
        self.failures = s
            .failures
            .into_iter()
            .map(|g| {
                let key = (g.library.clone(), g.cause.clone());
                let (seen, mut per_second) = match before.remove(&key) {
                    Some(old) => (old.group.failures, old.per_second),
                    None => (0, VecDeque::new()),
                };
                push_back(&mut per_second, g.failures.saturating_sub(seen), HISTORY);
                FailureRow {
                    group: g,
                    per_second,
                }
            })
            .collect();
        self.processes = s.processes;
        self.limits = s.limits;
        self.dropped = s.dropped;
        self.summary = s.summary;
    }

    /// The active storm a failure group belongs to.
    pub fn storm_of(&self, g: &FailureGroup) -> Option<&Storm> {
        self.storms.values().find(|s| {
            (s.libraries.contains(&g.library)
                || (s.libraries.is_empty() && g.library == "unknown code"))
                && (s.causes.is_empty() || s.causes.contains(&g.cause))
        })
    }
}

fn push<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    q.push_front(v);
    q.truncate(max);
}

fn push_back<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    q.push_back(v);
    while q.len() > max {
        q.pop_front();
    }
}
