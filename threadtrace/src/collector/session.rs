//! The recording's bookkeeping, once a second and at the end: the exact
//! counts with what the tracer did to stay bounded, the trace file's
//! rotation, the address spaces pruned, oversubscription checked, the
//! dashboard's picture and the metrics' live pods.
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{
    counts::Counts, diagnose::Scanned, headroom::Headroom, output::Msg, Collector, ProcessFilter,
};
use crate::{clock, model::Record, sink::trace};

/// Whether tracked processes still exist is checked this often, in
/// seconds (their exit record may have been lost).
const LIVENESS_EVERY: u32 = 30;
/// Limits in the metrics and on the dashboard: the closest to their
/// maximum.
const LIMITS_SHOWN: usize = 20;
/// How often the metrics are told which pods are alive.
const LIVE_PODS_EVERY: Duration = Duration::from_secs(10);

pub struct Session {
    /// -p and --comm, for the console and the dashboard.
    pub filter: ProcessFilter,
    started: Instant,
    /// The live dashboard is shown: it gets a picture each second.
    dashboard: bool,
    /// The live processes at the last summary, by pid.
    scan: Vec<Scanned>,
    /// Live threads per (process, creating library), at the last summary.
    rows: Vec<crate::model::ThreadCount>,
    checkpoints: u32,
    /// Raised by the trace sink when its file is full: it wants the
    /// process table to start the next one.
    trace_rotation: Option<Arc<AtomicBool>>,
    /// With --metrics: when the live pods were last sent.
    live_pods_sent: Option<Instant>,
}

impl Session {
    pub fn new(
        filter: ProcessFilter,
        started: Instant,
        dashboard: bool,
        trace_rotation: Option<Arc<AtomicBool>>,
        metrics: bool,
    ) -> Self {
        Session {
            filter,
            started,
            dashboard,
            scan: Vec::new(),
            rows: Vec::new(),
            checkpoints: 0,
            trace_rotation,
            live_pods_sent: metrics.then(Instant::now),
        }
    }
}

impl Collector {
    /// Exact counts from the kernel; `filtered` applies -p/--comm (the
    /// trace file always gets everything).
    pub(super) fn counts(&mut self, filtered: bool) -> Counts {
        let counters = self.source.counters();
        let procs = &mut self.ctx.procs;
        let filter = &self.session.filter;
        let keep = |pid: u32, comm: &str| !filtered || filter.keeps(pid, comm);
        let mut c = Counts::from_counters(
            &counters,
            |pid| {
                procs
                    .lookup(pid)
                    .map(|p| p.comm.clone())
                    .unwrap_or_default()
            },
            keep,
        );
        let (threads, scan) = self.diagnosis.thread_rows(&self.ctx, keep);
        self.session.scan = scan;
        let s = &mut c.summary;
        s.time = clock::now_rfc3339();
        s.duration_s = self.session.started.elapsed().as_secs_f64();
        s.events_delivered = self.source.delivered;
        s.decode_errors = self.source.decode_errors;
        s.threads = threads;
        // What staying bounded cost so far (attribution adds its own).
        let t = &mut s.tracer;
        let bounds = &self.ctx.procs.bounds;
        t.cmdlines_cut = bounds.cmdlines_cut;
        t.snapshots_skipped = self.handoff.snapshots_skipped;
        t.records_dropped = self.handoff.records_dropped;
        t.headroom = self.headroom.as_ref().map(Headroom::cost);
        let tables = [("process_table", bounds.exited_evicted)]
            .into_iter()
            .chain(self.diagnosis.evicted());
        for (table, n) in tables {
            t.evicted.insert(table.to_string(), n);
        }
        c
    }

    /// A new trace file (rotation, SIGHUP) starts with the process table.
    pub(super) fn reopen(&mut self, why: &'static str) {
        // In order with the records, never dropped: `send` queues it.
        self.handoff.send(Msg::Reopen {
            processes: trace::process_table(&self.ctx.procs),
            time: clock::now_rfc3339(),
            why,
        });
    }

    /// Once a second: the counts to the output stage, and what must be
    /// looked at regularly.
    pub(super) fn checkpoint(&mut self) {
        if self
            .session
            .trace_rotation
            .as_ref()
            .is_some_and(|r| r.swap(false, Ordering::Relaxed))
        {
            self.reopen(trace::ROTATION);
        }
        self.session.checkpoints += 1;
        let check_alive = self.session.checkpoints.is_multiple_of(LIVENESS_EVERY);
        self.spaces.prune(check_alive, !self.handoff.is_clear());
        self.diagnosis.prune();
        let c = self.counts(false);
        self.session.rows.clone_from(&c.summary.threads);
        self.oversubscription(&c.summary.time);
        self.headroom_second();
        let dashboard = self.session.dashboard.then(|| self.dashboard_second(&c));
        self.handoff.send_or_skip(Msg::Checkpoint(Box::new(c)));
        if let Some((c, processes)) = dashboard {
            self.handoff
                .send_or_skip(Msg::Dashboard(Box::new(c), processes));
        }
        if let Some(at) = self
            .session
            .live_pods_sent
            .filter(|at| at.elapsed() >= LIVE_PODS_EVERY)
        {
            let pods = self.ctx.live_pods();
            self.handoff.send_or_skip(Msg::LivePods(pods));
            self.session.live_pods_sent = Some(at + LIVE_PODS_EVERY);
        }
    }

    /// The dashboard's second: its counts, narrowed like the console's,
    /// and the limits of the busiest and the failing processes, read from
    /// what the counts have just scanned.
    fn dashboard_second(
        &mut self,
        c: &Counts,
    ) -> (Counts, Vec<crate::diagnosis::limits::ProcessLimits>) {
        let t0 = Instant::now();
        let filter = &self.session.filter;
        let keep = |pid: u32, comm: &str| filter.keeps(pid, comm);
        let filtered: Vec<Scanned>;
        let (scan, counts) = if filter.is_empty() {
            (&self.session.scan[..], c.clone())
        } else {
            filtered = self
                .session
                .scan
                .iter()
                .filter(|p| keep(p.0, &p.1))
                .cloned()
                .collect();
            (&filtered[..], c.narrowed(keep))
        };
        let rows = self.diagnosis.limits(scan, &counts.summary, &self.ctx);
        log::debug!(
            "dashboard: limits of {} processes read in {:?}",
            rows.len(),
            t0.elapsed()
        );
        (counts, rows)
    }

    /// Every limit's headroom, from this second's scan.
    fn headroom_second(&mut self) {
        let Some(h) = &mut self.headroom else { return };
        let t0 = Instant::now();
        let sets = |pid: u32| self.diagnosis.nproc_set(pid);
        let near = h.second(&self.session.scan, &self.session.rows, &mut self.ctx, &sets);
        log::debug!(
            "headroom: {} limits read in {:?}",
            h.tracked(),
            t0.elapsed()
        );
        for e in near {
            self.handoff.emit(Record::LimitNear(e), None);
        }
        if self.session.dashboard || self.session.live_pods_sent.is_some() {
            let closest = h.closest(LIMITS_SHOWN);
            self.handoff.send_or_skip(Msg::Limits(closest));
        }
    }

    /// The limits near a threshold, between the seconds.
    pub(super) fn headroom_fast(&mut self) {
        let Some(h) = &mut self.headroom else { return };
        let sets = |pid: u32| self.diagnosis.nproc_set(pid);
        for e in h.fast(&self.session.scan, &self.session.rows, &mut self.ctx, &sets) {
            self.handoff.emit(Record::LimitNear(e), None);
        }
    }

    /// Pool libraries running more threads than their process's CPUs.
    /// Pools are looked for where a pool library is mapped, whatever the
    /// process's rank by thread count.
    fn oversubscription(&mut self, time: &str) {
        let candidates: Vec<Scanned> = self
            .session
            .scan
            .iter()
            .filter(|p| p.2 >= 3)
            .filter(|p| self.spaces.maps_a_pool_library(p.0))
            .cloned()
            .collect();
        for o in self
            .diagnosis
            .oversubscribed(candidates, time, &mut self.ctx)
        {
            self.handoff.emit(Record::Oversubscribed(o), None);
        }
    }
}
