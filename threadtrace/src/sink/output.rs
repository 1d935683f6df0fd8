//! The output stage, on its own thread (started with the collector, so no
//! thread is created while recording): attributes failures, then writes
//! the console (or feeds the dashboard) and the trace file. Records arrive
//! in order on a bounded channel; when it is full the collector waits, the
//! ring buffer absorbs the burst, and what overflows it is counted by the
//! kernel.
use std::{
    sync::mpsc::{sync_channel, Receiver, SyncSender},
    thread::JoinHandle,
};

use std::time::{Duration, Instant};

use super::Console;
use crate::{
    attribution::Attributor,
    diagnosis::{findings::Findings, limits::ProcessLimits, storm::StormDetector},
    events::{Record, Summary},
    record::Filter,
    tracefile::{kind, writer::TraceWriter},
    tui::feed::Feed,
};

pub enum Msg {
    Record(Box<Record>),
    /// Once a second: the exact counters for the trace file, and a flush.
    Checkpoint(Summary),
    /// Once a second with a dashboard, after the checkpoint: its counters
    /// (narrowed by -p/--comm) and the processes against their limits.
    Dashboard(Box<(Summary, Vec<ProcessLimits>)>),
    /// Every 10 s with --metrics: the UIDs of the pods with a live process.
    LivePods(std::collections::HashSet<String>),
    /// The end: the summary for the console (filtered) and the file.
    Finish {
        console: Summary,
        file: Summary,
    },
}

/// Per-process rows in the trace file's counter snapshots.
const SNAPSHOT_ROWS: usize = 100;

/// Records waiting for the output thread at most.
const QUEUE: usize = 2048;

pub struct Output {
    pub console: Console,
    pub trace: Option<TraceWriter>,
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

pub fn spawn(out: Output) -> std::io::Result<(SyncSender<Msg>, JoinHandle<anyhow::Result<()>>)> {
    let (tx, rx) = sync_channel(QUEUE);
    let handle = std::thread::Builder::new()
        .name("output".into())
        .spawn(move || out.run(rx))?;
    Ok((tx, handle))
}

impl Output {
    fn run(mut self, rx: Receiver<Msg>) -> anyhow::Result<()> {
        // blazesym's Symbolizer is neither Send nor Sync: it is made, and
        // stays, here. Libraries mapped now are indexed before the first
        // failure, in case the process that fails exits before its turn.
        let mut attributor = Attributor::new();
        attributor.modules.index_all();
        let mut console_ok = true;
        let mut checkpoints = 0u32;
        let mut storms = StormDetector::new(self.storm_threshold, self.storm_window, self.storm_by);
        let mut findings = Findings::default();
        for msg in rx {
            match msg {
                Msg::Record(r) => {
                    let mut r = *r;
                    if let Record::ThreadCreateFailed(e) = &mut r {
                        if let Some(c) = e.captured.take() {
                            attributor.attribute(e, &c);
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
                Msg::Checkpoint(s) => {
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
                        let r = if checkpoints.is_multiple_of(5) {
                            t.sync()
                        } else {
                            t.flush()
                        };
                        if let Err(e) = r {
                            log::error!("trace file: {e}; recording goes on without it");
                            self.trace = None;
                        }
                    }
                    if console_ok && self.console.flush().is_err() {
                        console_ok = false;
                    }
                }
                Msg::Dashboard(d) => {
                    let (mut summary, processes) = *d;
                    if let Some(feed) = &mut self.dashboard {
                        summary.findings = findings.ranked(Some(&summary));
                        feed.second(summary, processes);
                    }
                }
                Msg::LivePods(uids) => {
                    if let Some(m) = &mut self.metrics {
                        m.live_pods(&uids, Instant::now());
                    }
                }
                Msg::Finish {
                    mut console,
                    mut file,
                } => {
                    if let Some(m) = &mut self.metrics {
                        m.second(&file, true);
                    }
                    file.findings = findings.ranked(Some(&file));
                    console.findings = file.findings.clone();
                    if let Some(t) = &self.trace {
                        file.trace_events_dropped = t.events_dropped;
                        console.trace_events_dropped = t.events_dropped;
                    }
                    for storm in storms.finish(&file, &file.time) {
                        self.write(&Record::Storm(storm), &mut console_ok);
                    }
                    self.write_counters(&file);
                    if let Some(t) = &mut self.trace {
                        let v =
                            serde_json::to_value(Record::Summary(file)).expect("records serialize");
                        t.write_always(kind::EVENT, &v)?;
                    }
                    if let Some(t) = &mut self.trace {
                        t.sync()?;
                    }
                    if console_ok {
                        self.console.write(&Record::Summary(console))?;
                        self.console.flush()?;
                    }
                    log::info!(
                        "attribution: {} events, {:.1} µs each on average, slowest {:.1} ms; \
                         {} stacks unwound with .eh_frame, {} from frame pointers only; \
                         {} symbol lookups, {} from cache; {} modules indexed",
                        attributor.events,
                        attributor.busy.as_secs_f64() * 1e6 / attributor.events.max(1) as f64,
                        attributor.slowest.as_secs_f64() * 1e3,
                        attributor.unwound,
                        attributor.fp_only,
                        attributor.lookups,
                        attributor.cache_hits,
                        attributor.modules.len()
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
            if let Err(e) = t.write_value(kind, &v) {
                log::error!("trace file: {e}; recording goes on without it");
                self.trace = None;
            }
        }
    }

    fn write_counters(&mut self, s: &Summary) {
        if let Some(t) = &mut self.trace {
            // Totals are complete; the per-process rows are the largest
            // ones, so that a snapshot a second stays small.
            let mut s = s.clone();
            s.by_process.truncate(SNAPSHOT_ROWS);
            let v = serde_json::to_value(&s).expect("summary serializes");
            if let Err(e) = t.write_value(kind::COUNTERS, &v) {
                log::error!("trace file: {e}; recording goes on without it");
                self.trace = None;
            }
        }
    }
}
