//! Start-up, in the order that keeps the tracer honest and small: check
//! privileges, load and attach every probe, read /proc (after attaching:
//! a process started meanwhile is in one or the other), open the outputs,
//! give up the capabilities no longer needed, start the output stage and
//! the dashboard (no thread is created later), seed the address spaces,
//! and say `started`.
use std::{os::fd::AsRawFd, thread::JoinHandle, time::Instant};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, Signal, SignalKind},
    sync::oneshot,
};

use super::{
    args::Options,
    diagnose::Diagnosis,
    handoff::Handoff,
    headroom::Headroom,
    output::{self, Output},
    session::Session,
    source::Source,
    spaces::SpaceFeeder,
    Collector, ProcessFilter,
};
use crate::{
    attribution::Shared,
    clock,
    diagnosis::evidence::PidsWatch,
    enrich::Context,
    host::HostFacts,
    kernel::{counters::CounterMaps, Kernel},
    model::{Record, Started},
    own_limits, privileges,
    proctable::{CgroupMounts, ProcTable},
    sink::{
        metrics,
        trace::{self, TraceConfig, TraceSink},
        Console,
    },
    tui::{self, Dashboard},
};

#[derive(Debug, thiserror::Error)]
#[error(
    "threadtrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
)]
pub struct NeedPrivileges;

/// The signals that stop a recording, and SIGHUP, which reopens its
/// outputs unless it is the terminal going away.
pub struct Signals {
    pub interrupt: Signal,
    pub terminate: Signal,
    pub hangup: Signal,
    pub hangup_stops: bool,
}

/// A recording under way: the collector and what its loop waits on.
pub struct Recording {
    pub collector: Collector,
    pub ring: AsyncFd<RingBuf<MapData>>,
    pub signals: Signals,
    pub dashboard: Option<Dashboard>,
    /// Fires on the dashboard's q or Ctrl-C, or when it failed.
    pub quit: Option<oneshot::Receiver<()>>,
    pub output_thread: JoinHandle<anyhow::Result<()>>,
    pub metrics_server: Option<metrics::http::Server>,
}

/// Registers a ring buffer's fd with the runtime, for readability.
fn register<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: the AsyncFd owns `inner`, so the fd stays open for as long as
    // it is registered.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into())
}

/// Surfaces the kernel programs' own log lines (`-v`).
fn kernel_logs(kernel: &mut Kernel) -> std::io::Result<()> {
    match aya_log::EbpfLogger::init(&mut kernel.ebpf) {
        Ok(logger) => {
            let mut logger = register(logger)?;
            tokio::spawn(async move {
                while let Ok(mut guard) = logger.readable_mut().await {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
        Err(e) => log::debug!("no kernel-side logs: {e}"),
    }
    Ok(())
}

pub async fn start(opts: &Options) -> anyhow::Result<Recording> {
    if !privileges::can_trace(privileges::effective_caps()) {
        return Err(NeedPrivileges.into());
    }
    own_limits::protect_from_oom_killer();
    match own_limits::raise_fd_limit() {
        Ok(n) => log::debug!("file descriptors: up to {n}"),
        Err(e) => log::warn!("{e}: the tracer may run out of file descriptors"),
    }
    let started_at = Instant::now();
    // Before loading anything: a port in use is a one-line error at once.
    let metrics_listener = match &opts.metrics {
        Some((addr, _)) => Some(metrics::http::bind(*addr)?),
        None => None,
    };
    let (kernel, counters, ring) = load(opts)?;
    // The probes are attached before /proc is read: a mapping made
    // meanwhile is in one or the other.
    let mut procs = ProcTable::new(CgroupMounts::read());
    procs.seed();
    let mut pids_watch = PidsWatch::default();
    let roots = procs.mounts.pids_roots();
    pids_watch.seed(&roots.iter().map(String::as_str).collect::<Vec<_>>());
    let host = HostFacts::collect();
    let started = Started {
        time: clock::now_rfc3339(),
        version: env!("CARGO_PKG_VERSION").into(),
        host: host.hostname.clone(),
        kernel: host.kernel.clone(),
        tracer_pid: std::process::id(),
        probes: kernel.attached.clone(),
        processes: procs.len(),
        attach: kernel.attach.clone(),
    };
    let trace = open_trace(opts, &host, &started, &procs)?;
    let trace_rotation = trace.as_ref().map(|t| t.wants_rotation.clone());
    let filter = ProcessFilter {
        pids: opts.pids.clone(),
        comms: opts.comms.clone(),
    };
    give_up_privileges(opts.max_memory);
    // Before the dashboard takes the terminal: a SIGTERM from then on
    // must stop the recording and give the terminal back, not kill it.
    let signals = Signals {
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
        hangup: signal(SignalKind::hangup())?,
        hangup_stops: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let (dashboard, feed, quit) = start_dashboard(opts);
    let shared = Shared::default();
    let ctx = Context::new(procs);
    let (metrics_sink, metrics_server) = serve_metrics(metrics_listener, opts)?;
    let (sender, output_thread) = output::spawn(Output {
        shared: shared.clone(),
        clock: ctx.clock,
        console: Console::new(opts.json),
        trace,
        filter: filter.clone(),
        lifecycle: opts.lifecycle,
        storm_threshold: opts.storm_threshold,
        storm_window: opts.storm_window,
        storm_by: opts.storm_by,
        dashboard: feed,
        metrics: metrics_sink,
    })?;
    let mut collector = Collector {
        source: Source::new(kernel, counters),
        spaces: SpaceFeeder::new(shared.clone()),
        diagnosis: Diagnosis::new(shared, pids_watch, opts.rss),
        headroom: (!opts.near.is_empty()).then(|| Headroom::new(opts.near.clone())),
        handoff: Handoff::new(sender),
        session: Session::new(
            filter,
            started_at,
            dashboard.is_some(),
            trace_rotation,
            metrics_server.is_some(),
        ),
        ctx,
    };
    collector.seed_address_spaces();
    collector.handoff.emit(Record::Started(started), None);
    collector.checkpoint();
    log::info!("started in {:?}", started_at.elapsed());
    Ok(Recording {
        collector,
        ring,
        signals,
        dashboard,
        quit,
        output_thread,
        metrics_server,
    })
}

/// Every probe is attached and the trace file is open: what the rest of
/// the recording cannot do, it gives up, before its other threads start
/// (they inherit this thread's credentials). Nothing is attached while
/// recording: no probe needs a capability after this point; the metrics
/// port, whatever its number, is bound already. Then the tracer's own
/// memory is capped.
fn give_up_privileges(max_memory: u64) {
    let needs = privileges::Needs::of_host();
    match privileges::drop_after_attach(&needs) {
        Ok(kept) => log::info!(
            "capabilities kept after attach: {}",
            kept.iter()
                .map(|k| privileges::name(k.cap))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => log::warn!("{e}: recording goes on with the capabilities it had"),
    }
    match own_limits::cap_memory(max_memory) {
        Ok(b) => log::debug!("memory limit (RLIMIT_DATA): {b} bytes"),
        Err(e) => log::warn!("{e}: the tracer's memory is not capped"),
    }
}

/// Loads and attaches the kernel programs; their counters and ring buffer.
fn load(opts: &Options) -> anyhow::Result<(Kernel, CounterMaps, AsyncFd<RingBuf<MapData>>)> {
    let log_level = if opts.verbose > 0 {
        aya_log::Level::Debug as u8
    } else {
        0
    };
    let mut kernel = Kernel::load(log_level, opts.detail_rate, !opts.tracepoints_only)?;
    if opts.verbose > 0 {
        kernel_logs(&mut kernel)?;
    }
    let counters = CounterMaps::take(&mut kernel.ebpf)?;
    let ring = register(kernel.take_ring_buffer()?)?;
    Ok((kernel, counters, ring))
}

/// The trace file or set of `-o`, which starts with the host and the
/// processes alive.
fn open_trace(
    opts: &Options,
    host: &HostFacts,
    started: &Started,
    procs: &ProcTable,
) -> anyhow::Result<Option<TraceSink>> {
    let Some(path) = &opts.output else {
        return Ok(None);
    };
    let header = serde_json::json!({
        "host": host,
        "started": started.time,
        "threadtrace": env!("CARGO_PKG_VERSION"),
        "args": std::env::args().collect::<Vec<_>>(),
    });
    let cfg = TraceConfig {
        output: path.clone(),
        force: opts.force,
        max_size: opts.max_size,
        file_size: opts.file_size,
    };
    Ok(Some(TraceSink::open(
        &cfg,
        header,
        &trace::process_table(procs),
        &started.time,
    )?))
}

type DashboardParts = (
    Option<Dashboard>,
    Option<tui::feed::Feed>,
    Option<oneshot::Receiver<()>>,
);

/// The dashboard, when asked for and the terminal can be taken; lines
/// otherwise.
fn start_dashboard(opts: &Options) -> DashboardParts {
    if !opts.dashboard {
        return (None, None, None);
    }
    match tui::start(opts.output.clone()) {
        Ok((d, feed, quit)) => (Some(d), Some(feed), Some(quit)),
        Err(e) => {
            log::warn!("{e}");
            (None, None, None)
        }
    }
}

/// The metrics and their server, on the port bound before loading.
fn serve_metrics(
    listener: Option<std::net::TcpListener>,
    opts: &Options,
) -> anyhow::Result<(Option<metrics::Metrics>, Option<metrics::http::Server>)> {
    let (Some(listener), Some((_, cfg))) = (listener, &opts.metrics) else {
        return Ok((None, None));
    };
    let (sink, registry) = metrics::new(cfg);
    let server = metrics::http::spawn(listener, registry)?;
    log::info!("metrics at http://{}/metrics", server.addr);
    Ok((Some(sink), Some(server)))
}

impl Collector {
    /// The address spaces of every process alive now, and the start
    /// routine offsets of the libcs they map.
    fn seed_address_spaces(&mut self) {
        let t0 = Instant::now();
        for offset in self.spaces.seed(&self.ctx.procs, &self.ctx.clock) {
            self.source.read_start_routine_at(offset);
        }
        log::info!(
            "address spaces of {} processes read in {:?}",
            self.spaces.spaces().stats().processes,
            t0.elapsed()
        );
    }
}
