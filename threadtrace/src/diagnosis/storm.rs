//! Storms: many thread-creation failures in a short window. One storm per
//! scope (a user, a cgroup or a library: --storm-by); while it lasts, its
//! failures are summarized instead of printed one by one (the trace file
//! keeps a sample), and the exact count comes from the kernel's counters.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::model::{Storm, StormProcess, Summary, ThreadCreateFailed};

struct Active {
    uid: u32,
    started: Instant,
    started_time: String,
    events: u64,
    peak: u64,
    this_second: u64,
    last_failure: Instant,
    processes: BTreeMap<u32, String>,
    libraries: BTreeSet<String>,
    causes: BTreeSet<String>,
    /// "thread", "process".
    creates: BTreeSet<&'static str>,
    remedy: String,
    /// Kernel count per process when it joined the storm.
    baseline: HashMap<u32, u64>,
    failures: u64,
    /// Events kept in the trace file this second, and in all.
    kept_this_second: u64,
    kept: u64,
    /// Exact failures at the previous tick, and when it was.
    last_tick: Option<(Instant, u64)>,
}

/// Events of a storm kept in detail in the trace file per second: the
/// rest are sampled out, their exact count is in the counter records.
pub const DETAIL_PER_SECOND: u64 = 2;

/// What storms are counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StormBy {
    Uid,
    Cgroup,
    Library,
}

impl StormBy {
    fn scope(self, e: &ThreadCreateFailed) -> String {
        match self {
            StormBy::Uid => format!("uid {}", e.task.uid),
            StormBy::Cgroup => format!("cgroup {}", e.cgroup.as_deref().unwrap_or("unknown")),
            StormBy::Library => format!("library {}", e.library.as_deref().unwrap_or("unknown")),
        }
    }
}

#[derive(Default)]
struct ScopeState {
    recent: VecDeque<Instant>,
    active: Option<Active>,
}

pub struct StormDetector {
    threshold: usize,
    window: Duration,
    by: StormBy,
    scopes: HashMap<String, ScopeState>,
    /// Exact failures per pid, from the last checkpoint.
    counts: HashMap<u32, u64>,
}

impl StormDetector {
    pub fn new(threshold: u32, window: Duration, by: StormBy) -> Self {
        StormDetector {
            threshold: threshold.max(1) as usize,
            window,
            by,
            scopes: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    /// A failure: Some(storm start) when it makes its scope's failures reach
    /// the threshold. `in_storm` says whether it belongs to an active storm
    /// (then it is summarized, not printed).
    pub fn on_failure(&mut self, e: &ThreadCreateFailed, now: Instant) -> (Option<Storm>, bool) {
        let scope = self.by.scope(e);
        let st = self.scopes.entry(scope.clone()).or_default();
        st.recent.push_back(now);
        while st
            .recent
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.window)
        {
            st.recent.pop_front();
        }
        if st.recent.len() > self.threshold {
            st.recent.pop_front();
        }
        let mut started = None;
        if st.active.is_none() && st.recent.len() >= self.threshold {
            st.active = Some(Active {
                uid: e.task.uid,
                started: *st.recent.front().unwrap_or(&now),
                started_time: e.task.time.clone(),
                events: 0,
                peak: 0,
                this_second: 0,
                last_failure: now,
                processes: BTreeMap::new(),
                libraries: BTreeSet::new(),
                causes: BTreeSet::new(),
                creates: BTreeSet::new(),
                remedy: String::new(),
                baseline: HashMap::new(),
                failures: 0,
                kept_this_second: 0,
                kept: 0,
                last_tick: None,
            });
            started = Some(());
        }
        let Some(a) = st.active.as_mut() else {
            return (None, false);
        };
        a.events += 1;
        a.this_second += 1;
        a.last_failure = now;
        if let std::collections::btree_map::Entry::Vacant(slot) = a.processes.entry(e.task.pid) {
            slot.insert(e.task.comm.clone());
            // Failures before joining are not the storm's.
            let before = self.counts.get(&e.task.pid).copied().unwrap_or(0);
            a.baseline.insert(e.task.pid, before);
        }
        if let Some(l) = &e.library {
            a.libraries.insert(l.clone());
        }
        a.creates.insert(if e.creates_process() {
            "process"
        } else {
            "thread"
        });
        if let Some(c) = &e.cause {
            a.causes.insert(c.kind.clone());
            if a.remedy.is_empty() {
                a.remedy = c.remedy.clone();
            }
        }
        let storm = started.map(|_| snapshot(&scope, a, "start", &e.task.time, now));
        (storm, started.is_none())
    }

    /// Whether a failure that belongs to an active storm is kept in the
    /// trace file: at most DETAIL_PER_SECOND a second per storm.
    pub fn keep_detail(&mut self, e: &ThreadCreateFailed) -> bool {
        let scope = self.by.scope(e);
        let Some(a) = self.scopes.get_mut(&scope).and_then(|s| s.active.as_mut()) else {
            return true;
        };
        if a.kept_this_second >= DETAIL_PER_SECOND {
            return false;
        }
        a.kept_this_second += 1;
        a.kept += 1;
        true
    }

    /// Once a second: exact counts, an update per active storm, and the
    /// end of storms whose scope had no failure for a window.
    pub fn tick(&mut self, counts: &Summary, now: Instant, time: &str) -> Vec<Storm> {
        self.counts.clear();
        for p in &counts.by_process {
            *self.counts.entry(p.pid).or_default() += p.count;
        }
        let mut out = Vec::new();
        for (scope, st) in self.scopes.iter_mut() {
            let Some(a) = st.active.as_mut() else {
                continue;
            };
            a.failures = a
                .baseline
                .iter()
                .map(|(pid, base)| {
                    self.counts
                        .get(pid)
                        .copied()
                        .unwrap_or(*base)
                        .saturating_sub(*base)
                })
                .sum::<u64>()
                .max(a.events);
            // The exact rate between ticks; the detail rate until the
            // kernel's counts come in.
            let (since, before) = a.last_tick.unwrap_or((a.started, 0));
            let secs = now
                .saturating_duration_since(since)
                .as_secs_f64()
                .max(0.001);
            let rate = ((a.failures.max(a.events) - before.min(a.failures.max(a.events))) as f64
                / secs) as u64;
            a.peak = a.peak.max(rate.max(a.this_second.min(rate.max(1))));
            a.last_tick = Some((now, a.failures.max(a.events)));
            a.this_second = 0;
            a.kept_this_second = 0;
            if now.duration_since(a.last_failure) > self.window {
                out.push(snapshot(scope, a, "end", time, now));
                st.active = None;
            } else {
                out.push(snapshot(scope, a, "update", time, now));
            }
        }
        out
    }

    /// Storms still active at the end of the recording, ended.
    pub fn finish(&mut self, counts: &Summary, time: &str) -> Vec<Storm> {
        let now = Instant::now() + self.window * 2;
        self.tick(counts, now, time)
            .into_iter()
            .filter(|s| s.state == "end")
            .collect()
    }
}

fn snapshot(scope: &str, a: &Active, state: &str, time: &str, now: Instant) -> Storm {
    let until = if state == "end" { a.last_failure } else { now };
    Storm {
        time: time.to_string(),
        state: state.into(),
        scope: scope.to_string(),
        uid: a.uid,
        started: a.started_time.clone(),
        duration_s: until.saturating_duration_since(a.started).as_secs_f64(),
        failures: a.failures.max(a.events),
        events: a.events,
        events_in_file: a.kept,
        peak_rate_per_s: a.peak.max(if a.last_tick.is_none() {
            a.this_second
        } else {
            0
        }),
        processes: a
            .processes
            .iter()
            .take(20)
            .map(|(pid, comm)| StormProcess {
                pid: *pid,
                comm: comm.clone(),
            })
            .collect(),
        libraries: a.libraries.iter().cloned().collect(),
        causes: a.causes.iter().cloned().collect(),
        remedy: a.remedy.clone(),
        creates: a.creates.iter().map(|c| c.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProcessFailures, Task};

    /// A pthread_create EAGAIN of libgomp in `omp[pid]`, uid 1000, its
    /// cause not decided.
    fn failure(pid: u32) -> ThreadCreateFailed {
        let mut e = crate::model::fixtures::failure(pid, "omp", "libgomp", "unknown");
        e.cause = None;
        e.task = Task {
            time: "t".into(),
            pid,
            tid: pid,
            comm: "omp".into(),
            uid: 1000,
        };
        e.library = Some("libgomp".into());
        e
    }

    #[test]
    fn starts_at_the_threshold_updates_and_ends_with_exact_counts() {
        let mut d = StormDetector::new(20, Duration::from_secs(1), StormBy::Uid);
        let t0 = Instant::now();
        let e = failure(4_400_000);
        let mut starts = 0;
        let mut printed = 0;
        for i in 0..25 {
            let (s, in_storm) = d.on_failure(&e, t0 + Duration::from_millis(i));
            starts += s.is_some() as u32;
            printed += (!in_storm) as u32;
        }
        assert_eq!(starts, 1);
        assert_eq!(printed, 20, "up to and including the one that started it");
        let mut counts = Summary::default();
        counts.by_process.push(ProcessFailures {
            pid: 4_400_000,
            comm: "omp".into(),
            api: "pthread_create".into(),
            errno: 11,
            error: "EAGAIN".into(),
            count: 5000,
        });
        let up = d.tick(&counts, t0 + Duration::from_millis(100), "t");
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].state, "update");
        assert_eq!(
            up[0].failures, 5000,
            "exact, from the kernel: most were not seen in detail"
        );
        assert_eq!(up[0].libraries, vec!["libgomp".to_string()]);
        assert_eq!(up[0].scope, "uid 1000");
        let end = d.tick(&counts, t0 + Duration::from_secs(3), "t");
        assert_eq!(end[0].state, "end");
        assert!(d.tick(&counts, t0 + Duration::from_secs(4), "t").is_empty());
    }

    #[test]
    fn storms_by_library_count_each_library_apart() {
        let mut d = StormDetector::new(20, Duration::from_secs(1), StormBy::Library);
        let t0 = Instant::now();
        let a = failure(4_400_002);
        let mut b = failure(4_400_003);
        b.library = Some("libopenblas".into());
        for i in 0..15 {
            assert!(d.on_failure(&a, t0 + Duration::from_millis(i)).0.is_none());
            assert!(d.on_failure(&b, t0 + Duration::from_millis(i)).0.is_none());
        }
        let (s, _) = d.on_failure(&a, t0 + Duration::from_millis(16));
        assert!(s.is_none(), "16 for libgomp");
        for i in 17..21 {
            if let (Some(s), _) = d.on_failure(&a, t0 + Duration::from_millis(i)) {
                assert_eq!(s.scope, "library libgomp");
                return;
            }
        }
        panic!("no storm for libgomp");
    }

    #[test]
    fn a_few_failures_are_not_a_storm() {
        let mut d = StormDetector::new(20, Duration::from_secs(1), StormBy::Uid);
        let t0 = Instant::now();
        for i in 0..19 {
            assert_eq!(
                d.on_failure(&failure(4_400_001), t0 + Duration::from_millis(i * 100)),
                (None, false)
            );
        }
    }
}
