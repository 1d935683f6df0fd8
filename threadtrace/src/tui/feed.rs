//! The output stage's side of the dashboard: it hands over clones of what
//! the console would have printed, tallies every failure by library and
//! cause (storms included, which the console summarizes), and once a
//! second sends the picture. A send never waits: when the dashboard lags,
//! the update is dropped and counted, and the recording goes on.
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    time::{Duration, Instant},
};

use super::data::{FailureGroup, Second, Update};
use crate::{
    diagnosis::{limits::ProcessLimits, share},
    model::{Headroom, Record, Summary, ThreadCreateFailed},
};

/// Updates waiting for the dashboard at most: records are few (storms are
/// summarized), seconds one a second; this is minutes of a stalled drawer.
const QUEUE: usize = 4096;
/// Processes named per failure group.
const GROUP_PROCESSES: usize = 20;
/// Failure groups tallied: libraries × causes are few; a flood of distinct
/// executables (each is its own "library") stops at this many.
const GROUPS: usize = 256;

struct GroupTally {
    /// Failures seen in detail, per process.
    by_pid: HashMap<u32, u64>,
    processes: BTreeMap<u32, (String, u32)>,
    example: Option<(Instant, Arc<ThreadCreateFailed>)>,
}

/// (library, cause).
type Group<'a> = (&'a str, &'a str);

pub struct Feed {
    tx: SyncSender<Update>,
    dropped: u64,
    /// library → cause → tally.
    groups: HashMap<String, HashMap<String, GroupTally>>,
    tallied: usize,
    /// The limits closest to their maximum, as last sent.
    limits: Vec<Headroom>,
}

pub fn channel() -> (Feed, Receiver<Update>) {
    let (tx, rx) = sync_channel(QUEUE);
    (
        Feed {
            tx,
            dropped: 0,
            groups: HashMap::new(),
            tallied: 0,
            limits: Vec::new(),
        },
        rx,
    )
}

impl Feed {
    /// Each group's exact failures: each process's exact count (the
    /// kernel's, which --detail-rate and a full ring buffer do not thin
    /// out), shared among its groups as its detailed failures were.
    fn exact_by_group(&self, counted: &HashMap<u32, u64>) -> HashMap<Group<'_>, u64> {
        let mut by_pid: HashMap<u32, Vec<(Group<'_>, u64)>> = HashMap::new();
        for (library, causes) in &self.groups {
            for (cause, t) in causes {
                for (&pid, &n) in &t.by_pid {
                    by_pid
                        .entry(pid)
                        .or_default()
                        .push(((library.as_str(), cause.as_str()), n));
                }
            }
        }
        let mut out: HashMap<Group<'_>, u64> = HashMap::new();
        for (pid, groups) in by_pid {
            let detailed: Vec<u64> = groups.iter().map(|g| g.1).collect();
            let exact = counted.get(&pid).copied().unwrap_or(0);
            for (g, n) in groups.iter().zip(share::exact_by_group(exact, &detailed)) {
                *out.entry(g.0).or_default() += n;
            }
        }
        out
    }

    fn send(&mut self, u: Update) {
        match self.tx.try_send(u) {
            Ok(()) => {}
            // Gone: the dashboard was closed; nothing left to show.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped += 1,
        }
    }

    /// A record the console would have printed.
    pub fn record(&mut self, r: &Record) {
        self.send(Update::Record(Box::new(r.clone())));
    }

    /// Every failure, printed or summarized by a storm.
    pub fn failure(&mut self, e: &ThreadCreateFailed, now: Instant) {
        let library = e.library.as_deref().unwrap_or("unknown code");
        let cause = e.cause.as_ref().map_or("unknown", |c| c.kind.as_str());
        let full = self.tallied >= GROUPS;
        let causes = match self.groups.get_mut(library) {
            Some(c) => c,
            None if full => return,
            None => self.groups.entry(library.to_string()).or_default(),
        };
        let t = match causes.get_mut(cause) {
            Some(t) => t,
            None if full => return,
            None => {
                self.tallied += 1;
                causes.entry(cause.to_string()).or_insert(GroupTally {
                    by_pid: HashMap::new(),
                    processes: BTreeMap::new(),
                    example: None,
                })
            }
        };
        *t.by_pid.entry(e.task.pid).or_default() += 1;
        if t.processes.len() < GROUP_PROCESSES {
            t.processes
                .entry(e.task.pid)
                .or_insert_with(|| (e.task.comm.clone(), e.task.uid));
        }
        // A copy a second at most: in a storm, cloning each stack would
        // cost the output stage more than attributing it.
        if t.example
            .as_ref()
            .is_none_or(|(at, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            t.example = Some((now, Arc::new(e.clone())));
        }
    }

    /// The limits closest to their maximum, for the next picture.
    pub fn limits(&mut self, limits: Vec<Headroom>) {
        self.limits = limits;
    }

    /// The second's picture: `summary` carries the findings so far.
    pub fn second(&mut self, summary: Summary, processes: Vec<ProcessLimits>) {
        let mut counted: HashMap<u32, u64> = HashMap::new();
        for p in &summary.by_process {
            *counted.entry(p.pid).or_default() += p.count;
        }
        let exact = self.exact_by_group(&counted);
        let mut failures: Vec<FailureGroup> = self
            .groups
            .iter()
            .flat_map(|(library, causes)| {
                let exact = &exact;
                causes.iter().map(move |(cause, t)| FailureGroup {
                    library: library.clone(),
                    cause: cause.clone(),
                    failures: exact
                        .get(&(library.as_str(), cause.as_str()))
                        .copied()
                        .unwrap_or(0),
                    processes: t
                        .processes
                        .iter()
                        .map(|(pid, (comm, uid))| (*pid, comm.clone(), *uid))
                        .collect(),
                    example: t.example.as_ref().map(|(_, e)| e.clone()),
                })
            })
            .collect();
        failures.sort_by(|a, b| {
            b.failures
                .cmp(&a.failures)
                .then_with(|| a.library.cmp(&b.library))
                .then_with(|| a.cause.cmp(&b.cause))
        });
        let dropped = self.dropped;
        self.send(Update::Second(Box::new(Second {
            summary,
            failures,
            processes,
            limits: self.limits.clone(),
            dropped,
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::failure;

    #[test]
    fn failures_are_tallied_by_library_and_cause_with_one_example() {
        let (mut feed, rx) = channel();
        let t0 = Instant::now();
        for i in 0..5 {
            feed.failure(
                &failure(10 + i % 2, "omp", "libgomp", "rlimit_nproc"),
                t0 + Duration::from_millis(i as u64),
            );
        }
        feed.failure(&failure(12, "py", "libopenblas", "cgroup_pids"), t0);
        feed.second(Summary::default(), vec![]);
        let Ok(Update::Second(s)) = rx.try_recv() else {
            panic!("a second")
        };
        assert_eq!(s.failures.len(), 2);
        let g = &s.failures[0];
        assert_eq!(
            (g.library.as_str(), g.cause.as_str(), g.failures),
            ("libgomp", "rlimit_nproc", 5)
        );
        assert_eq!(g.processes.len(), 2);
        assert_eq!(
            g.example.as_ref().unwrap().task.pid,
            10,
            "the first of the second, kept: a copy a second"
        );
    }

    /// In a storm most failures come without detail (--detail-rate): the
    /// groups still show the kernel's exact counts, shared by process.
    #[test]
    fn groups_show_exact_counts_when_detail_is_sampled() {
        let (mut feed, rx) = channel();
        let t0 = Instant::now();
        for _ in 0..3 {
            feed.failure(&failure(10, "omp", "libgomp", "rlimit_nproc"), t0);
        }
        feed.failure(&failure(10, "omp", "omp", "rlimit_nproc"), t0);
        feed.failure(&failure(11, "py", "libopenblas", "cgroup_pids"), t0);
        let row = crate::model::fixtures::eagain;
        let summary = Summary {
            by_process: vec![row(10, 4000), row(11, 1)],
            ..Default::default()
        };
        feed.second(summary, vec![]);
        let Ok(Update::Second(s)) = rx.try_recv() else {
            panic!("a second")
        };
        let count = |lib: &str| {
            s.failures
                .iter()
                .find(|g| g.library == lib)
                .unwrap()
                .failures
        };
        assert_eq!(count("libgomp"), 3000);
        assert_eq!(count("omp"), 1000);
        assert_eq!(count("libopenblas"), 1);
    }

    #[test]
    fn a_full_or_closed_dashboard_never_blocks_and_is_counted() {
        let (mut feed, rx) = channel();
        let r = Record::ThreadCreateFailed(failure(1, "omp", "libgomp", "rlimit_nproc"));
        for _ in 0..QUEUE + 10 {
            feed.record(&r);
        }
        assert_eq!(feed.dropped, 10);
        drop(rx);
        feed.record(&r);
        assert_eq!(feed.dropped, 11);
    }
}
