//! The output stage, on its own thread (started with the collector, so no
//! thread is created while recording): attributes failures, then writes
//! the console (or feeds the dashboard) and the trace file. Records arrive
//! in order on a channel bounded in messages and in bytes; the collector
//! never waits on it ([`Sender::try_send`]): when it is full the collector
//! stops reading the ring buffer, which absorbs the burst (what overflows
//! it is counted by the kernel), and goes on answering signals.
use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
};

use std::time::{Duration, Instant};

use super::Console;
use crate::{
    attribution::{Attributor, Shared, Verdict},
    clock::Clock,
    diagnosis::{findings::Findings, limits::ProcessLimits, storm::StormDetector},
    events::{Record, Summary},
    record::Filter,
    tracefile::kind,
    tui::feed::Feed,
};

use super::trace::TraceSink;

pub enum Msg {
    Record(Box<Record>),
    /// Once a second: the exact counters for the trace file, and a flush.
    Checkpoint(Box<Summary>),
    /// Once a second with a dashboard, after the checkpoint: its counters
    /// (narrowed by -p/--comm) and the processes against their limits.
    Dashboard(Box<(Summary, Vec<ProcessLimits>)>),
    /// A new trace file (rotation, SIGHUP), which starts with this process
    /// table; stdout reopened if it is a file.
    Reopen {
        processes: Vec<serde_json::Value>,
        time: String,
        why: &'static str,
    },
    /// Every 10 s with --metrics: the UIDs of the pods with a live process.
    LivePods(std::collections::HashSet<String>),
    /// The end: the summary for the console (filtered) and the file.
    Finish(Box<(Summary, Summary)>),
}

/// Per-process rows in the trace file's counter snapshots.
const SNAPSHOT_ROWS: usize = 100;

/// Records waiting for the output thread at most.
const QUEUE: usize = 2048;
/// And their bytes at most: a failure carries a stack copy and its
/// process's maps, which any process can make large.
const QUEUE_BYTES: usize = 64 << 20;

/// Bytes a message holds, roughly: what it carries that can be large.
fn message_bytes(m: &Msg) -> usize {
    const BASE: usize = 1024;
    let summary =
        |s: &Summary| BASE + 128 * (s.by_process.len() + s.threads.len()) + 1024 * s.findings.len();
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    match m {
        Msg::Record(r) => match &**r {
            Record::ThreadCreateFailed(e) => {
                BASE + text(&e.cmdline)
                    + text(&e.exe)
                    + 64 * e.stack.len()
                    + e.captured.as_ref().map_or(0, |c| {
                        8 * c.ips.len() + 12 * c.start_routine.len() + c.snapshot.bytes.len()
                    })
            }
            Record::ProcessExec(e) => BASE + text(&e.cmdline),
            Record::ProcessExit(e) => BASE + text(&e.cmdline),
            Record::OomKill(e) => BASE + text(&e.victim.cmdline),
            _ => BASE,
        },
        Msg::Checkpoint(s) => summary(s),
        Msg::Dashboard(d) => summary(&d.0) + 256 * d.1.len(),
        Msg::LivePods(uids) => BASE + 64 * uids.len(),
        Msg::Reopen { processes, .. } => BASE + 512 * processes.len(),
        // The last one always fits.
        Msg::Finish(_) => 0,
    }
}

/// Why the output stage did not take a message.
pub enum Refused {
    /// Full: the message is handed back, to be tried again.
    Full(Msg),
    /// The output thread is gone (it returned or panicked).
    Gone,
}

/// The collector's end of the channel: it never waits.
pub struct Sender {
    tx: SyncSender<(usize, Msg)>,
    in_flight: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
}

impl Sender {
    pub fn try_send(&self, m: Msg) -> Result<(), Refused> {
        let size = message_bytes(&m);
        // Counted before the send: the output thread may take it at once.
        let before = self.in_flight.fetch_add(size, Ordering::SeqCst);
        if before > 0 && before + size > QUEUE_BYTES {
            self.in_flight.fetch_sub(size, Ordering::SeqCst);
            return Err(Refused::Full(m));
        }
        match self.tx.try_send((size, m)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.in_flight.fetch_sub(size, Ordering::SeqCst);
                match e {
                    TrySendError::Full((_, m)) => Err(Refused::Full(m)),
                    TrySendError::Disconnected(_) => Err(Refused::Gone),
                }
            }
        }
    }

    /// The recording is stopping: failures still queued are written
    /// without attribution, so that the summary comes promptly.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

pub struct Output {
    /// Address spaces and files, fed by the collector.
    pub shared: Shared,
    pub clock: Clock,
    pub console: Console,
    pub trace: Option<TraceSink>,
    pub filter: Filter,
    pub lifecycle: bool,
    pub storm_threshold: u32,
    pub storm_window: Duration,
    pub storm_by: crate::diagnosis::storm::StormBy,
    /// Instead of lines on the console while recording; the summary is
    /// still printed, once the terminal is back.
    pub dashboard: Option<Feed>,
    /// Prometheus counters (`record --metrics`).
    pub metrics: Option<super::metrics::Metrics>,
}

pub fn spawn(out: Output) -> std::io::Result<(Sender, JoinHandle<anyhow::Result<()>>)> {
    let (tx, rx) = sync_channel(QUEUE);
    let sender = Sender {
        tx,
        in_flight: Arc::new(AtomicUsize::new(0)),
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let (in_flight, stopping) = (sender.in_flight.clone(), sender.stopping.clone());
    // Before the thread: the hook is global, and goes after the dashboard's.
    crate::panics::install_catch_hook();
    let handle = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || out.run(rx, &in_flight, &stopping))?;
    Ok((sender, handle))
}

impl Output {
    fn run(
        mut self,
        rx: Receiver<(usize, Msg)>,
        in_flight: &AtomicUsize,
        stopping: &AtomicBool,
    ) -> anyhow::Result<()> {
        // Attribution is the slow part of an event: it runs here, off the
        // collector's thread.
        let mut attributor = Attributor::new(self.shared.clone(), self.clock);
        let mut attribution = crate::events::session::Attribution::default();
        let mut console_ok = true;
        let mut checkpoints = 0u32;
        let mut storms = StormDetector::new(self.storm_threshold, self.storm_window, self.storm_by);
        let mut findings = Findings::default();
        let (mut panics, mut skipped) = (0u64, 0u64);
        for (size, msg) in rx {
            in_flight.fetch_sub(size, Ordering::SeqCst);
            match msg {
                Msg::Record(r) => {
                    let mut r = *r;
                    if let Record::ThreadCreateFailed(e) = &mut r {
                        if let Some(c) = e.captured.take() {
                            if stopping.load(Ordering::SeqCst) {
                                skipped += 1;
                            } else {
                                match crate::panics::catch(|| attributor.attribute(e, &c)) {
                                    // An mmap that failed outside pthread_create.
                                    Ok(Verdict::NotCreation) => continue,
                                    Ok(Verdict::Creation) => {
                                        if e.is_stack_setup() {
                                            e.as_pthread_create();
                                        }
                                    }
                                    // A bug reached by what a process mapped:
                                    // this failure goes on without a library,
                                    // the next ones are attributed as usual.
                                    Err(why) => {
                                        panics += 1;
                                        if panics <= 3 {
                                            log::warn!(
                                                "attribution of a failure of {}[{}] panicked ({why}); \
                                                 it is reported without its library (counted in the summary)",
                                                e.task.comm,
                                                e.task.pid
                                            );
                                        }
                                    }
                                }
                            }
                            if e.library.is_some() {
                                attribution.attributed += 1;
                            } else {
                                attribution.unattributed += 1;
                            }
                        }
                        // The remedy names the pool library: known only now.
                        let library = e.library.clone();
                        if let Some(cause) = e.cause.as_mut() {
                            cause.remedy =
                                crate::diagnosis::remedy::remedy(cause, library.as_deref());
                        }
                        findings.add_failure(e);
                        if let Some(m) = &mut self.metrics {
                            m.failure(e);
                        }
                        // Every failure, storms included: the console
                        // summarizes those, the dashboard counts them.
                        if let Some(d) = &mut self.dashboard {
                            if self.filter.keeps(e.task.pid, &e.task.comm) {
                                d.failure(e, Instant::now());
                            }
                        }
                        let (start, in_storm) = storms.on_failure(e, Instant::now());
                        if let Some(s) = start {
                            // The failure that opened the storm, then the storm.
                            self.write(&r, &mut console_ok);
                            self.write(&Record::Storm(s), &mut console_ok);
                            continue;
                        }
                        if in_storm {
                            // Summarized by the storm on the console; in the
                            // file, sampled: its exact count is in the
                            // counter records.
                            if storms.keep_detail(e) {
                                self.write_trace(kind::EVENT, &r);
                            }
                            continue;
                        }
                    }
                    if !matches!(r, Record::ThreadCreateFailed(_)) {
                        findings.add(&r);
                    }
                    self.write(&r, &mut console_ok);
                }
                Msg::Checkpoint(mut s) => {
                    s.resolve_stack_setup(|pid, site| attributor.site_in_pthread_create(pid, site));
                    s.attribution = attribution;
                    s.tracer.attribution_panics = panics;
                    s.tracer.attribution_skipped = skipped;
                    for storm in storms.tick(&s, Instant::now(), &s.time) {
                        self.write(&Record::Storm(storm), &mut console_ok);
                    }
                    self.write_counters(&s);
                    if let Some(m) = &mut self.metrics {
                        m.second(&s, false);
                    }
                    checkpoints += 1;
                    if let Some(t) = &mut self.trace {
                        // Flushed every second; on disk every 5 s, so a host
                        // crash loses at most that.
                        t.checkpoint(checkpoints.is_multiple_of(5));
                    }
                    if console_ok && self.console.flush().is_err() {
                        console_ok = false;
                    }
                }
                Msg::Dashboard(d) => {
                    let (mut summary, processes) = *d;
                    summary.resolve_stack_setup(|pid, site| {
                        attributor.site_in_pthread_create(pid, site)
                    });
                    summary.attribution = attribution;
                    if let Some(feed) = &mut self.dashboard {
                        summary.findings = findings.ranked(Some(&summary));
                        feed.second(summary, processes);
                    }
                }
                Msg::Reopen {
                    processes,
                    time,
                    why,
                } => {
                    if let Some(t) = &mut self.trace {
                        t.reopen(&processes, &time, why);
                    }
                    if why == super::trace::SIGHUP {
                        self.console.reopen();
                    }
                }
                Msg::LivePods(uids) => {
                    if let Some(m) = &mut self.metrics {
                        m.live_pods(&uids, Instant::now());
                    }
                }
                Msg::Finish(both) => {
                    let (mut console, mut file) = *both;
                    for s in [&mut console, &mut file] {
                        s.resolve_stack_setup(|pid, site| {
                            attributor.site_in_pthread_create(pid, site)
                        });
                        s.attribution = attribution;
                        s.tracer.attribution_panics = panics;
                        s.tracer.attribution_skipped = skipped;
                    }
                    if let Some(m) = &mut self.metrics {
                        m.second(&file, true);
                    }
                    file.findings = findings.ranked(Some(&file));
                    console.findings = file.findings.clone();
                    if let Some(t) = &self.trace {
                        file.trace_events_dropped = t.events_dropped();
                        console.trace_events_dropped = t.events_dropped();
                    }
                    for storm in storms.finish(&file, &file.time) {
                        self.write(&Record::Storm(storm), &mut console_ok);
                    }
                    self.write_counters(&file);
                    // The summary is printed whatever became of the file: a
                    // full disk loses no more than what it could not take.
                    if let Some(t) = &mut self.trace {
                        file.trace_file = Some(t.status());
                        let v =
                            serde_json::to_value(Record::Summary(file)).expect("records serialize");
                        t.write_always(kind::EVENT, &v);
                        let status = t.finish();
                        if status.is_incomplete() {
                            log::error!(
                                "trace file {}: incomplete: {} records lost, {} bytes unwritten{}",
                                status.path,
                                status.records_lost,
                                status.bytes_unwritten,
                                status
                                    .error
                                    .as_deref()
                                    .map(|e| format!(" ({e})"))
                                    .unwrap_or_default()
                            );
                        }
                        console.trace_file = Some(status);
                    }
                    if console_ok {
                        self.console.write(&Record::Summary(console))?;
                        self.console.flush()?;
                    }
                    let files = self
                        .shared
                        .modules
                        .lock()
                        .map(|m| m.stats)
                        .unwrap_or_default();
                    let spaces = self
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
                        attributor.events,
                        attributor.busy.as_secs_f64() * 1e6 / attributor.events.max(1) as f64,
                        attributor.slowest.as_secs_f64() * 1e3,
                        attributor.unwound,
                        attributor.fp_only,
                        files.files_read,
                        files.bytes >> 10,
                        files.evicted,
                        files.unreadable,
                        spaces.processes,
                        spaces.mappings,
                        spaces.files,
                        spaces.evicted,
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    /// To the trace file, and to the console if it passes the filters.
    fn write(&mut self, r: &Record, console_ok: &mut bool) {
        self.write_trace(kind::EVENT, r);
        if let Some(m) = &mut self.metrics {
            m.record(r);
        }
        let show = self.filter.keeps_record(r) && (self.lifecycle || r.is_noteworthy());
        if let Some(d) = &mut self.dashboard {
            if show {
                d.record(r);
            }
            return;
        }
        if show && *console_ok && self.console.write(r).is_err() {
            // stdout closed (its reader went away): keep recording.
            *console_ok = false;
        }
    }

    fn write_trace(&mut self, kind: u8, r: &Record) {
        if let Some(t) = &mut self.trace {
            let v = serde_json::to_value(r).expect("records serialize");
            t.write(kind, &v);
        }
    }

    fn write_counters(&mut self, s: &Summary) {
        if let Some(t) = &mut self.trace {
            // Totals are complete; the per-process rows are the largest
            // ones, so that a snapshot a second stays small.
            let mut s = s.clone();
            s.by_process.truncate(SNAPSHOT_ROWS);
            t.counters(serde_json::to_value(&s).expect("summary serializes"));
        }
    }
}
