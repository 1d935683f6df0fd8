//! The output stage, on its own thread (started with the collector, so no
//! thread is created while recording): attributes failures, detects
//! storms, keeps the findings, and fans out to the sinks: the console (or
//! the dashboard), the trace file and the metrics. Messages arrive in
//! order on a bounded channel that the collector never waits on
//! (`channel`); each kind has one handler here.
mod channel;

use std::{
    collections::HashSet,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{counts::Counts, ProcessFilter};
use crate::{
    attribution::{self, Attributed, Attributor, Captured, Shared},
    clock::Clock,
    diagnosis::{
        findings::Findings,
        limits::ProcessLimits,
        remedy,
        storm::{StormBy, StormDetector},
    },
    model::{Attribution, Record, Summary, ThreadCreateFailed, ThreadGroup},
    panics,
    sink::{
        lines,
        metrics::Metrics,
        trace::{self, TraceSink},
        Console,
    },
    tracefile::kind,
    tui::feed::Feed,
};

use channel::Receiving;
pub use channel::{Refused, Sender};

/// How long after the stop began failures still queued are attributed.
/// They happened before it: Ctrl-C right after an incident, or a stop
/// while the output stage is behind (a loaded or emulated machine, where
/// the first attribution of a process reads its files), must not leave
/// them without their library. Past this, the rest go out unattributed
/// (counted as `attribution_skipped`): the summary is due within the
/// collector's 5 s.
const ATTRIBUTE_AFTER_STOP: Duration = Duration::from_secs(2);

pub enum Msg {
    /// A failure, and what the kernel captured of its stack (None when it
    /// was counted, not captured).
    Failure(Box<ThreadCreateFailed>, Option<Box<Captured>>),
    Record(Box<Record>),
    /// Once a second: the exact counters for the trace file, and a flush.
    Checkpoint(Box<Counts>),
    /// Once a second with a dashboard, after the checkpoint: its counters
    /// (narrowed by -p/--comm) and the processes against their limits.
    Dashboard(Box<Counts>, Vec<ProcessLimits>),
    /// A new trace file (rotation, SIGHUP), which starts with this process
    /// table; stdout reopened if it is a file.
    Reopen {
        processes: Vec<serde_json::Value>,
        time: String,
        why: &'static str,
    },
    /// Once a second with --metrics or a dashboard: the limits closest to
    /// their maximum.
    Limits(Vec<crate::model::Headroom>),
    /// Every 10 s with --metrics: the UIDs of the pods with a live process.
    LivePods(HashSet<String>),
    /// The end: the counts for the console (filtered) and for the file.
    Finish(Box<Counts>, Box<Counts>),
}

/// Per-process rows in the trace file's counter snapshots, and in the
/// final summary: the others are summed (`processes_not_listed`).
const SNAPSHOT_ROWS: usize = 100;

/// The sinks and settings of the output stage.
pub struct Output {
    /// Address spaces and files, fed by the collector.
    pub shared: Shared,
    pub clock: Clock,
    pub console: Console,
    pub trace: Option<TraceSink>,
    pub filter: ProcessFilter,
    pub lifecycle: bool,
    pub storm_threshold: u32,
    pub storm_window: Duration,
    pub storm_by: StormBy,
    /// Instead of lines on the console while recording; the summary is
    /// still printed, once the terminal is back.
    pub dashboard: Option<Feed>,
    /// Prometheus counters (`record --metrics`).
    pub metrics: Option<Metrics>,
}

pub fn spawn(out: Output) -> std::io::Result<(Sender, JoinHandle<anyhow::Result<()>>)> {
    let (sender, receiving) = channel::channel();
    // Before the thread: the hook is global, and goes after the dashboard's.
    panics::install_catch_hook();
    let handle = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || Stage::new(out).run(&receiving))?;
    Ok((sender, handle))
}

/// The output thread's state.
struct Stage {
    out: Output,
    /// Attribution is the slow part of an event: it runs here, off the
    /// collector's thread.
    attributor: Attributor,
    attribution: Attribution,
    /// stdout still takes lines (its reader may have gone away).
    console_ok: bool,
    checkpoints: u32,
    storms: StormDetector,
    findings: Findings,
    /// Failures whose attribution panicked, and those left unattributed to
    /// stop promptly.
    panics: u64,
    skipped: u64,
}

impl Stage {
    fn new(out: Output) -> Self {
        Stage {
            attributor: Attributor::new(out.shared.clone(), out.clock),
            storms: StormDetector::new(out.storm_threshold.max(1), out.storm_window, out.storm_by),
            out,
            attribution: Attribution::default(),
            console_ok: true,
            checkpoints: 0,
            findings: Findings::default(),
            panics: 0,
            skipped: 0,
        }
    }

    fn run(mut self, rx: &Receiving) -> anyhow::Result<()> {
        while let Some(msg) = rx.next() {
            match msg {
                Msg::Failure(e, captured) => {
                    let late = rx.stopping_for().is_some_and(|t| t >= ATTRIBUTE_AFTER_STOP);
                    self.failure(*e, captured, late)
                }
                Msg::Record(r) => self.record(*r),
                Msg::Checkpoint(c) => self.checkpoint(*c),
                Msg::Dashboard(c, processes) => self.dashboard(*c, processes),
                Msg::Reopen {
                    processes,
                    time,
                    why,
                } => self.reopen(&processes, &time, why),
                Msg::Limits(limits) => {
                    if let Some(m) = &mut self.out.metrics {
                        m.limits(&limits);
                    }
                    if let Some(d) = &mut self.out.dashboard {
                        d.limits(limits);
                    }
                }
                Msg::LivePods(uids) => {
                    if let Some(m) = &mut self.out.metrics {
                        m.live_pods(&uids, Instant::now());
                    }
                }
                Msg::Finish(console, file) => return self.finish(*console, *file),
            }
        }
        Ok(())
    }

    /// A failure: attributed (unless the stop has waited long enough for
    /// it: `late`), then counted, then written, or summarized by its storm.
    fn failure(&mut self, mut e: ThreadCreateFailed, captured: Option<Box<Captured>>, late: bool) {
        if let Some(c) = captured {
            if late {
                self.skipped += 1;
            } else if !self.attribute(&mut e, &c) {
                // An mmap that failed outside pthread_create.
                return;
            }
            if e.library.is_some() {
                self.attribution.attributed += 1;
            } else {
                self.attribution.unattributed += 1;
            }
        }
        // A Go program gone before its threads were looked at: its holder
        // entry, counted by the kernel, is its Ms. Known only now.
        if e.runtime.as_deref() == Some(attribution::runtimes::GO) {
            let pid = e.task.pid;
            if let Some(h) = e.cause.as_mut().and_then(|c| {
                c.holders
                    .iter_mut()
                    .find(|h| h.pid == pid && h.groups.is_empty())
            }) {
                h.groups = vec![ThreadGroup {
                    name: "Go Ms".into(),
                    threads: h.threads.saturating_sub(1),
                }];
            }
        }
        // The remedy names the pool library or the runtime: known only now.
        if let Some(r) = e
            .cause
            .as_deref()
            .map(|c| remedy::remedy(c, &remedy::Asker::of(&e)))
        {
            if let Some(cause) = e.cause.as_mut() {
                cause.remedy = r;
            }
        }
        self.findings.add_failure(&e);
        if let Some(m) = &mut self.out.metrics {
            m.failure(&e);
        }
        // Every failure, storms included: the console summarizes those,
        // the dashboard counts them.
        if let Some(d) = &mut self.out.dashboard {
            if self.out.filter.keeps(e.task.pid, &e.task.comm) {
                d.failure(&e, Instant::now());
            }
        }
        let (start, in_storm) = self.storms.on_failure(&e, Instant::now());
        let keep_detail = in_storm && start.is_none() && self.storms.keep_detail(&e);
        let r = Record::ThreadCreateFailed(e);
        if let Some(s) = start {
            // The failure that opened the storm, then the storm.
            self.write(&r);
            self.write(&Record::Storm(s));
        } else if in_storm {
            // Summarized by the storm on the console; in the file,
            // sampled: its exact count is in the counter records.
            if keep_detail {
                self.write_trace(&r);
            }
        } else {
            self.write(&r);
        }
    }

    /// Attributes a failure from what the kernel captured; false when it
    /// turns out not to be a task creation (an mmap outside pthread_create).
    fn attribute(&mut self, e: &mut ThreadCreateFailed, c: &Captured) -> bool {
        let attributor = &mut self.attributor;
        match panics::catch(|| attributor.attribute(e, c)) {
            Ok(Attributed::NotCreation) => return false,
            Ok(Attributed::Creation) => {
                if e.is_stack_setup() {
                    e.as_pthread_create();
                }
            }
            // A bug reached by what a process mapped: this failure goes on
            // without a library, the next ones are attributed as usual.
            Err(why) => {
                self.panics += 1;
                if self.panics <= 3 {
                    log::warn!(
                        "attribution of a failure of {}[{}] panicked ({why}); \
                         it is reported without its library (counted in the summary)",
                        e.task.comm,
                        e.task.pid
                    );
                }
            }
        }
        true
    }

    fn record(&mut self, r: Record) {
        self.findings.add(&r);
        self.write(&r);
    }

    /// What the output stage knows of the counts: which mmap sites are
    /// pthread_create's, how many failures were attributed, and what
    /// attribution gave up.
    fn complete(&mut self, c: Counts) -> Summary {
        let mut c = c;
        let attributor = &mut self.attributor;
        c.resolve_stack_setup(|pid, site| attributor.site_in_pthread_create(pid, site));
        let mut s = c.summary;
        s.attribution = self.attribution;
        s.tracer.attribution_panics = self.panics;
        s.tracer.attribution_skipped = self.skipped;
        s
    }

    fn checkpoint(&mut self, c: Counts) {
        let s = self.complete(c);
        for storm in self.storms.tick(&s, Instant::now(), &s.time) {
            self.write(&Record::Storm(storm));
        }
        self.write_counters(&s);
        if let Some(m) = &mut self.out.metrics {
            m.second(&s, false);
        }
        self.checkpoints += 1;
        if let Some(t) = &mut self.out.trace {
            // Flushed every second; on disk every 5 s, so a host crash
            // loses at most that.
            t.checkpoint(self.checkpoints.is_multiple_of(5));
        }
        if self.console_ok && self.out.console.flush().is_err() {
            self.console_ok = false;
        }
    }

    fn dashboard(&mut self, c: Counts, processes: Vec<ProcessLimits>) {
        let mut s = self.complete(c);
        if let Some(feed) = &mut self.out.dashboard {
            s.findings = self.findings.ranked(Some(&s));
            feed.second(s, processes);
        }
    }

    fn reopen(&mut self, processes: &[serde_json::Value], time: &str, why: &'static str) {
        if let Some(t) = &mut self.out.trace {
            t.reopen(processes, time, why);
        }
        if why == trace::SIGHUP {
            self.out.console.reopen();
        }
    }

    /// The last counts, the findings, the trace file's summary and the
    /// console's; then what attribution cost, in the log.
    fn finish(mut self, console: Counts, file: Counts) -> anyhow::Result<()> {
        let mut console = self.complete(console);
        let mut file = self.complete(file);
        if let Some(m) = &mut self.out.metrics {
            m.second(&file, true);
        }
        file.findings = self.findings.ranked(Some(&file));
        console.findings = file.findings.clone();
        // The findings have the exact rows; the summary lists the largest.
        console.list_at_most(SNAPSHOT_ROWS);
        if let Some(t) = &self.out.trace {
            file.trace_events_dropped = t.events_dropped();
            console.trace_events_dropped = t.events_dropped();
        }
        for storm in self.storms.finish(&file, &file.time) {
            self.write(&Record::Storm(storm));
        }
        self.write_counters(&file);
        file.list_at_most(SNAPSHOT_ROWS);
        // The summary is printed whatever became of the file: a full disk
        // loses no more than what it could not take.
        if let Some(t) = &mut self.out.trace {
            // What the file holds, not what waits for it: the summary in
            // the file says how it fared.
            t.settle();
            file.trace_file = Some(t.status());
            let v = serde_json::to_value(Record::Summary(file)).expect("records serialize");
            t.write_last(kind::EVENT, &v);
            let status = t.finish();
            if status.is_incomplete() {
                log::error!("{}", lines::trace_file_shortfall(&status));
            }
            console.trace_file = Some(status);
        }
        if self.console_ok {
            self.out.console.write(&Record::Summary(console))?;
            self.out.console.flush()?;
        }
        self.log_cost();
        Ok(())
    }

    fn log_cost(&self) {
        let a = &self.attributor;
        let files = self
            .out
            .shared
            .modules
            .lock()
            .map(|m| m.stats)
            .unwrap_or_default();
        let spaces = self
            .out
            .shared
            .spaces
            .lock()
            .map(|s| s.stats())
            .unwrap_or_default();
        log::info!(
            "attribution: {} events, {:.1} µs each on average, slowest {:.1} ms; \
             {} stacks unwound with .eh_frame, {} from frame pointers only; \
             {} files read ({} KiB kept, {} evicted, {} unreadable); \
             {} processes, {} mappings, {} files mapped ({} mappings evicted)",
            a.events,
            a.busy.as_secs_f64() * 1e6 / a.events.max(1) as f64,
            a.slowest.as_secs_f64() * 1e3,
            a.unwound,
            a.fp_only,
            files.files_read,
            files.bytes >> 10,
            files.evicted,
            files.unreadable,
            spaces.processes,
            spaces.mappings,
            spaces.files,
            spaces.evicted,
        );
    }

    /// To the trace file, the metrics, and to the console (or the
    /// dashboard) if it passes the filters.
    fn write(&mut self, r: &Record) {
        self.write_trace(r);
        let out = &mut self.out;
        if let Some(m) = &mut out.metrics {
            m.record(r);
        }
        let show = out.filter.keeps_record(r) && (out.lifecycle || r.is_noteworthy());
        if let Some(d) = &mut out.dashboard {
            if show {
                d.record(r);
            }
            return;
        }
        if show && self.console_ok && out.console.write(r).is_err() {
            // stdout closed (its reader went away): keep recording.
            self.console_ok = false;
        }
    }

    fn write_trace(&mut self, r: &Record) {
        if let Some(t) = &mut self.out.trace {
            let v = serde_json::to_value(r).expect("records serialize");
            t.write(kind::EVENT, &v);
        }
    }

    fn write_counters(&mut self, s: &Summary) {
        if let Some(t) = &mut self.out.trace {
            // Totals are complete; the per-process rows are the largest
            // ones, so that a snapshot a second stays small.
            let mut s = s.clone();
            s.list_at_most(SNAPSHOT_ROWS);
            t.counters(serde_json::to_value(&s).expect("summary serializes"));
        }
    }
}
