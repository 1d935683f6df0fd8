//! The collector, `threadtrace record`: a pipeline of stages from the
//! kernel's ring buffer to the sinks.
//!
//! ```text
//! ring buffer ─▶ source ─▶ spaces ─▶ enrich ─▶ diagnose ─▶ handoff ═▶ output stage ─▶ sinks
//!   (kernel)     decode    mappings   model     causes,      back-       attribution,   console or
//!                          over time  records   OOM scope    pressure    storms,        dashboard,
//!                                                                        findings       trace, metrics
//! ```
//!
//! Each stage is a small type that owns its state (`source.rs`,
//! `spaces.rs`, `diagnose.rs`, `handoff.rs`, `output/`); `session.rs` is
//! the once-a-second bookkeeping over them; `startup.rs` builds them and
//! `stop.rs` ends the recording. Everything up to the hand-off runs on
//! this thread: it runs while thread creation is failing on the host, so
//! it is one thread (a current-thread tokio runtime, no blocking pool),
//! protects itself from the OOM killer, and keeps every buffer bounded.
//! The output stage runs on its own thread, started at start-up.
mod args;
mod counts;
mod diagnose;
mod filter;
mod handoff;
mod headroom;
mod output;
mod session;
mod source;
mod spaces;
mod startup;
mod stop;

use std::{process::ExitCode, time::Duration};

use aya::maps::{MapData, RingBuf};

pub use args::RecordArgs;
pub use filter::ProcessFilter;

use crate::{enrich::Context, kernel::decode::Raw, sink::trace};
use diagnose::Diagnosis;
use handoff::Handoff;
use headroom::Headroom;
use session::Session;
use source::Source;
use spaces::SpaceFeeder;

/// Ring-buffer records handled before the loop looks at its timers and
/// signals again.
const DRAIN_BATCH: usize = 1024;
/// How often a full output stage is offered what waits.
const RETRY: Duration = Duration::from_millis(5);

/// The stages of the collector's thread.
pub struct Collector {
    /// The kernel programs, their counters, decoding.
    source: Source,
    /// What enrichment knows: the process table, the clock, the pods.
    ctx: Context,
    spaces: SpaceFeeder,
    diagnosis: Diagnosis,
    /// How close each limit is; None with `--near off`.
    headroom: Option<Headroom>,
    handoff: Handoff,
    session: Session,
}

impl Collector {
    /// One ring-buffer record through the stages to the output stage.
    fn handle(&mut self, bytes: &[u8]) {
        let Some(raw) = self.source.decode(bytes) else {
            return;
        };
        if let Some(offset) = self.spaces.on_raw(&raw, &self.ctx.clock) {
            self.source.read_start_routine_at(offset);
        }
        // What diagnosis needs of the kernel's record.
        let nproc = match &raw {
            Raw::CreateFailed(e) => Some(e.payload.nproc),
            _ => None,
        };
        // When it happened: the evidence is what moved by then (an OOM
        // kill's growth window ends there).
        let at_ns = raw.header().ktime_ns;
        let offsets = self.source.start_routine_offsets();
        let Some((mut r, captured)) = crate::enrich::enrich(raw, &mut self.ctx, offsets) else {
            return;
        };
        if !self
            .diagnosis
            .on_record(&mut r, nproc, at_ns, &mut self.ctx)
        {
            return;
        }
        if let Some(h) = &mut self.headroom {
            h.on_record(&r);
        }
        self.handoff.emit(r, captured);
    }

    /// Handles up to DRAIN_BATCH records; true when the ring is empty. In a
    /// storm records never stop coming: returning lets the timers (counter
    /// snapshots) and the signals (Ctrl-C) run in between.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        for _ in 0..DRAIN_BATCH {
            // The output stage is full: leave the rest in the ring.
            if !self.handoff.is_clear() || self.handoff.gone() {
                return false;
            }
            let Some(item) = ring.next() else { return true };
            // Copy out of the ring first: the slot is released on drop.
            let copy = item.to_vec();
            drop(item);
            self.handle(&copy);
        }
        false
    }

    /// Once a second. The counters are read after the events the kernel
    /// wrote before them: a storm is not declared from counts whose first
    /// failures are still in the ring buffer.
    fn second(&mut self, ring: &mut RingBuf<MapData>) {
        for _ in 0..8 {
            if self.drain(ring) {
                break;
            }
        }
        self.checkpoint();
    }
}

/// `threadtrace record`.
pub fn record(args: RecordArgs, verbose: u8, dashboard: bool) -> anyhow::Result<ExitCode> {
    let opts = args
        .options(verbose, dashboard)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // One thread: the collector must not need new threads while thread
    // creation is failing on the host.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(opts))?;
    Ok(ExitCode::SUCCESS)
}

/// Until Ctrl-C, SIGTERM, --duration, or the dashboard's q.
async fn run(opts: args::Options) -> anyhow::Result<()> {
    let mut r = startup::start(&opts).await?;
    let (c, s) = (&mut r.collector, &mut r.signals);
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sampling resident memory, a slice at a time: the ring buffer is
    // drained between slices.
    let memory_due = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(memory_due);
    // The limits near a threshold, between the seconds.
    let mut headroom = tokio::time::interval(headroom::FAST);
    headroom.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !c.handoff.gone() {
        tokio::select! {
            // Not while the output stage is full: the ring buffer holds
            // the burst, and signals are still answered.
            guard = r.ring.readable_mut(), if c.handoff.is_clear() => {
                let mut guard = guard?;
                // Readiness is cleared only once the ring is empty: a batch
                // cut short comes back on the next turn of the loop.
                if c.drain(guard.get_inner_mut()) {
                    guard.clear_ready();
                } else {
                    drop(guard);
                    // On one thread, timers and signals advance only when
                    // this task yields to the runtime.
                    tokio::task::yield_now().await;
                }
            }
            _ = retry.tick(), if !c.handoff.is_clear() => { c.handoff.flush(); }
            _ = second.tick() => c.second(r.ring.get_mut()),
            _ = &mut memory_due, if c.diagnosis.samples_memory() => {
                let wait = c.diagnosis.sample_memory(&c.ctx);
                memory_due.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = headroom.tick(), if c.headroom.as_ref().is_some_and(Headroom::watching) => c.headroom_fast(),
            _ = s.interrupt.recv() => break,
            _ = s.terminate.recv() => break,
            _ = s.hangup.recv() => {
                if s.hangup_stops {
                    break;
                }
                c.reopen(trace::SIGHUP);
            }
            // q or Ctrl-C on the dashboard (raw mode: not a SIGINT), or
            // the dashboard failed: stop the same way.
            _ = async { if let Some(q) = r.quit.as_mut() { let _ = q.await; } }, if r.quit.is_some() => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
    }
    stop::stop(r).await
}
