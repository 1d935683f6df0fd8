//! The collector: load and attach, then read the ring buffer, enrich, and
//! fan out to stdout (or the dashboard) and the trace file until Ctrl-C,
//! SIGTERM, --duration, or the dashboard's q.
//!
//! It runs while thread creation is failing on the host, so it runs on one
//! thread (a current-thread tokio runtime, no blocking pool), protects itself
//! from the OOM killer, and keeps every buffer bounded.
use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::mpsc::SyncSender,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use threadtrace_common::NprocSnapshot;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    attribution::{classify, live_threads, unwind},
    clock,
    diagnosis::{
        decide,
        evidence::{self, Evidence, Nproc, PidsWatch},
        growth::{self, RssHistory},
        holders,
        limits::{self, ProcessLimits},
        oom, oversubscription, remedy, Cause, LimitSet,
    },
    events::{self, decode, session::ThreadCount, Context, Record, Started, Summary},
    host::HostFacts,
    kernel::{counters::CounterMaps, libc_targets, Kernel},
    privileges,
    proctable::{self, CgroupMounts, ProcTable},
    sink::{
        output::{self, Msg, Output},
        Console,
    },
    tracefile::writer::TraceWriter,
    tui,
};

#[derive(Debug, Clone)]
pub struct Options {
    pub json: bool,
    pub output: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub lifecycle: bool,
    pub storm_threshold: u32,
    pub detail_rate: u32,
    pub max_size: Option<u64>,
    pub storm_window: Duration,
    pub storm_by: crate::diagnosis::storm::StormBy,
    pub verbose: u8,
    /// The live dashboard instead of lines (stdout is a terminal, no
    /// --json, no --no-tui).
    pub dashboard: bool,
    /// How often resident memory is sampled for OOM kills' growers, and
    /// how far back they look; None turns sampling off.
    pub rss: Option<(Duration, Duration)>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "threadtrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
)]
pub struct NeedPrivileges;

/// A libc scan of a new process waits this long after exec, so that the
/// dynamic loader has mapped its libraries.
const EXEC_SCAN_DELAY: Duration = Duration::from_millis(30);
const EXEC_SCAN_QUEUE: usize = 4096;
/// Ring-buffer records handled before the loop looks at its timers and
/// signals again.
const DRAIN_BATCH: usize = 1024;
/// Processes whose maps snapshot is kept at most.
const MAPS_KEPT: usize = 4096;
/// Processes whose thread count is read for a summary at most.
const THREAD_SCAN_MAX: usize = 8192;
/// Rows of live threads in a summary at most.
const THREAD_ROWS: usize = 100;
/// Processes named as holding the threads, per cause.
const HOLDERS: usize = 5;
/// Processes whose limits the dashboard shows: the busiest this many, and
/// as many of those that failed.
const DASHBOARD_PROCESSES: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.comms.is_empty()
    }

    pub fn keeps(&self, pid: u32, comm: &str) -> bool {
        (self.pids.is_empty() && self.comms.is_empty())
            || self.pids.contains(&pid)
            || self.comms.iter().any(|c| c == comm)
    }

    pub fn keeps_record(&self, r: &Record) -> bool {
        match r {
            Record::OomKill(e) => {
                self.keeps(e.victim.pid, &e.victim.comm)
                    || self.keeps(e.trigger.pid, &e.trigger.comm)
                    || e.growers.iter().any(|g| self.keeps(g.pid, &g.comm))
            }
            Record::RlimitChange(e) => {
                self.keeps(e.task.pid, &e.task.comm)
                    || self.keeps(e.target_pid, e.target_comm.as_deref().unwrap_or(""))
            }
            r => r.task().is_none_or(|t| self.keeps(t.pid, &t.comm)),
        }
    }
}

/// Registers a ring buffer's fd with the runtime, for readability.
fn register<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: the AsyncFd owns `inner`, so the fd stays open for as long as
    // it is registered.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into())
}

fn protect_from_oom_killer() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        log::warn!("cannot set oom_score_adj to -1000 ({e}): the OOM killer may take the tracer");
    }
}

struct Collector {
    kernel: Kernel,
    counters: CounterMaps,
    ctx: Context,
    output: SyncSender<Msg>,
    filter: Filter,
    exec_scans: VecDeque<(Instant, u32)>,
    maps: HashMap<u32, (Instant, Arc<str>)>,
    library_names: HashMap<(u32, u64), String>,
    /// Root directory of processes whose maps were read, when not "/".
    roots: HashMap<u32, Option<Arc<str>>>,
    pids_watch: PidsWatch,
    /// Pids the OOM killer chose: their exit is not a second finding.
    oom_victims: std::collections::HashSet<u32>,
    nproc_sets: HashMap<u32, LimitSet>,
    causes: HashMap<(u32, String, i32, bool), (Instant, Cause)>,
    /// Live thread rows of the last checkpoint: holders' libraries.
    last_threads: Vec<ThreadCount>,
    /// (pid, library) → pool size already reported as oversubscribed.
    oversubscribed: HashMap<(u32, String), i64>,
    delivered: u64,
    decode_errors: u64,
    started: Instant,
    dashboard: bool,
    /// (pid, comm, threads) of the live processes at the last summary.
    scan: Vec<(u32, String, i64)>,
    /// The dashboard's per-process limits, read every few seconds.
    known_limits: limits::PerProcess,
    /// Resident memory over the last minute: who grew before an OOM kill.
    growth: Option<RssHistory>,
}

impl Collector {
    fn emit(&mut self, r: Record) {
        // Fails only if the output thread died; its error is reported at
        // the end.
        let _ = self.output.send(Msg::Record(Box::new(r)));
    }

    fn handle(&mut self, bytes: &[u8]) {
        let raw = match decode::decode(bytes) {
            Ok(raw) => raw,
            Err(e) => {
                self.decode_errors += 1;
                log::debug!("undecodable record: {e}");
                return;
            }
        };
        self.delivered += 1;
        // A new filesystem view is searched for libcs before anything else:
        // the exec'ed program may create threads within milliseconds.
        if let decode::Raw::ProcessExec(e) = &raw {
            let pid = e.header.tgid;
            let found = self.kernel.libcs.after_exec(pid);
            if !found.is_empty() {
                for path in self.kernel.probe_new_libcs(found) {
                    let lag = clock::monotonic_ns().saturating_sub(e.header.ktime_ns);
                    log::info!(
                        "probing pthread_create in {path}, {:.1} ms after exec of pid {pid}",
                        lag as f64 / 1e6
                    );
                }
            }
            if self.exec_scans.len() < EXEC_SCAN_QUEUE {
                self.exec_scans
                    .push_back((Instant::now() + EXEC_SCAN_DELAY, pid));
            }
        }
        let (pid, nproc) = match &raw {
            decode::Raw::CloneFailed(e) => (Some(e.header.tgid), e.payload.nproc),
            decode::Raw::PthreadCreateFailed(e) => (Some(e.header.tgid), e.payload.nproc),
            _ => (None, NprocSnapshot::default()),
        };
        // When the OOM killer chose: where the growth window ends.
        let kill_ns = match &raw {
            decode::Raw::OomVictim(e) => e.header.ktime_ns,
            _ => 0,
        };
        let mut r = events::enrich(raw, &mut self.ctx);
        match (pid, &mut r) {
            (Some(pid), Record::ThreadCreateFailed(e)) => {
                if let Some(c) = e.captured.as_mut() {
                    c.maps = self.maps_of(pid);
                    c.root = self.roots.get(&pid).cloned().flatten();
                }
                e.cause = Some(Box::new(self.diagnose(e, nproc)));
            }
            (_, Record::RlimitChange(e)) => self.note_nproc_change(e),
            (_, Record::OomKill(e)) => self.diagnose_oom(e, kill_ns),
            // A crash or a kill -9, not a polite SIGTERM (Pool.terminate()
            // ends its workers that way).
            (_, Record::ProcessExit(e))
                if e.signal.as_deref().is_some_and(oom::is_violent)
                    && !self.oom_victims.contains(&e.task.pid) =>
            {
                if let Some(p) = oom::pool_of(&self.ctx.procs, e.task.pid) {
                    e.consequence = Some(oom::consequence(&p));
                    e.pool = Some(p);
                }
            }
            _ => {}
        }
        self.emit(r);
    }

    /// The memory cgroup, the top holders, who grew, and the pool the
    /// victim belonged to, read while the victim is still being killed.
    fn diagnose_oom(&mut self, e: &mut events::OomKill, kill_ns: u64) {
        let t0 = Instant::now();
        if self.oom_victims.len() >= MAPS_KEPT {
            self.oom_victims.clear();
        }
        self.oom_victims.insert(e.victim.pid);
        e.memory_cgroup = e.victim.cgroup.as_deref().and_then(oom::memory_cgroup);
        let procs = &self.ctx.procs;
        let scope: Vec<&proctable::Proc> = procs
            .alive_procs()
            .filter(|p| {
                e.memory_cgroup.as_ref().is_none_or(|cg| {
                    procs
                        .mounts
                        .path(&p.cgroups, "memory")
                        .is_some_and(|m| std::path::Path::new(&m).starts_with(&cg.path))
                })
            })
            .collect();
        let growth = self.growth.as_ref();
        e.top_holders = oom::top_holders(
            &scope,
            HOLDERS,
            |p| growth.and_then(|h| h.latest(p.pid, p.start_ticks)),
            oom::rss_bytes,
        );
        oom::victim_as_killed(e);
        if let Some(h) = &self.growth {
            let now = kill_ns.clamp(1, clock::monotonic_ns());
            let members: Vec<growth::Member> = scope
                .iter()
                .map(|p| growth::Member {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    start_ticks: p.start_ticks,
                })
                .collect();
            let g = h.at_kill(
                &members,
                (e.victim.pid, e.victim.rss_bytes),
                now,
                growth::StartClock::now(),
                oom::rss_bytes,
            );
            e.growers = g.growers;
            e.victim_growth = g.victim.map(Box::new);
            e.growth_unknown = g.unknown;
            if let Some(cg) = e.memory_cgroup.as_mut() {
                if let Some((grew, s)) = h.cgroup_growth(&cg.path, cg.limit_bytes, now) {
                    cg.grew_bytes = Some(grew);
                    cg.window_s = Some(s);
                }
            }
        }
        e.pool = oom::pool_of(procs, e.victim.pid);
        e.consequence = e.pool.as_ref().map(oom::consequence);
        e.remedy = oom::remedy(e);
        log::debug!(
            "OOM kill of {}: {} processes in scope, diagnosed in {:?}",
            e.victim.pid,
            scope.len(),
            t0.elapsed()
        );
    }

    /// Remembers who set RLIMIT_NPROC on whom: the evidence of where a
    /// limit came from.
    fn note_nproc_change(&mut self, e: &events::RlimitChange) {
        let (true, events::rlimit_change::Outcome::Ok(_), Some(new)) =
            (e.resource == "RLIMIT_NPROC", &e.result, e.new)
        else {
            return;
        };
        self.known_limits.forget(e.target_pid);
        let events::rlimit_change::Limit::Value(soft) = new.soft else {
            return;
        };
        if self.nproc_sets.len() >= MAPS_KEPT {
            self.nproc_sets.clear();
        }
        self.nproc_sets.insert(
            e.target_pid,
            LimitSet {
                time: e.task.time.clone(),
                pid: e.task.pid,
                comm: e.task.comm.clone(),
                target_pid: e.target_pid,
                soft,
            },
        );
    }

    /// Which limit a failure hit, from evidence read now; the same failure
    /// from the same process is diagnosed once a second at most.
    fn diagnose(&mut self, e: &events::ThreadCreateFailed, nproc: NprocSnapshot) -> Cause {
        let clone_tried = !(e.api == "pthread_create" && e.syscall.is_none());
        let key = (e.task.pid, e.api.clone(), e.errno, clone_tried);
        if let Some((at, c)) = self.causes.get(&key) {
            if at.elapsed() < Duration::from_secs(1) {
                return c.clone();
            }
        }
        let pid = e.task.pid;
        let mut ev = Evidence {
            uid: e.task.uid,
            ..Default::default()
        };
        if nproc.valid != 0 {
            ev.nproc = Some(Nproc {
                soft: nproc.soft,
                count: nproc.count,
            });
        }
        if let Some(cg) = &e.cgroup {
            ev.pids = self.pids_watch.check(cg);
        }
        evidence::host(&mut ev);
        if !clone_tried {
            evidence::stack(pid, &mut ev);
        }
        let mut c = decide(&e.api, e.errno, clone_tried, &ev);
        match c.kind.as_str() {
            "rlimit_nproc" => {
                let limit = c.limit.unwrap_or(u64::MAX);
                c.inherited_from = holders::inherited_from(&mut self.ctx.procs, pid, limit);
                c.set_by = holders::set_by(&self.ctx.procs, &self.nproc_sets, pid, limit);
                let uid = e.task.uid;
                let pids: Vec<(u32, String)> = self
                    .ctx
                    .procs
                    .alive_procs()
                    .filter(|p| p.uid == Some(uid))
                    .map(|p| (p.pid, p.comm.clone()))
                    .collect();
                c.holders = holders::top(pids.into_iter(), &self.last_threads, HOLDERS);
            }
            "cgroup_pids" => {
                let cg = c.cgroup.clone().unwrap_or_default();
                let pids: Vec<(u32, String)> = self
                    .ctx
                    .procs
                    .alive_procs()
                    .filter(|p| {
                        self.ctx
                            .procs
                            .mounts
                            .path(&p.cgroups, "pids")
                            .is_some_and(|path| path.starts_with(&cg))
                    })
                    .map(|p| (p.pid, p.comm.clone()))
                    .collect();
                c.holders = holders::top(pids.into_iter(), &self.last_threads, HOLDERS);
            }
            _ => {}
        }
        if self.causes.len() >= MAPS_KEPT {
            self.causes.clear();
        }
        self.causes.insert(key, (Instant::now(), c.clone()));
        c
    }

    /// The failing process's maps, read now: it may exit before its failure
    /// is attributed. Read at most once a second per process, so that a
    /// storm does not turn into a storm of /proc reads.
    fn maps_of(&mut self, pid: u32) -> Option<Arc<str>> {
        if let Some((at, m)) = self.maps.get(&pid) {
            if at.elapsed() < Duration::from_secs(1) {
                return Some(m.clone());
            }
        }
        let m: Arc<str> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .ok()?
            .into();
        if self.maps.len() >= MAPS_KEPT {
            self.maps.clear();
            self.roots.clear();
        }
        let root = std::fs::read_link(format!("/proc/{pid}/root"))
            .ok()
            .map(|p| p.display().to_string());
        self.roots
            .insert(pid, root.filter(|r| r != "/").map(Arc::from));
        self.maps.insert(pid, (Instant::now(), m.clone()));
        Some(m)
    }

    /// Handles up to DRAIN_BATCH records; true when the ring is empty. In a
    /// storm records never stop coming: returning lets the timers (counter
    /// snapshots) and the signals (Ctrl-C) run in between.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        for _ in 0..DRAIN_BATCH {
            let Some(item) = ring.next() else { return true };
            let bytes: &[u8] = &item;
            // Copy out of the ring first: the slot is released on drop.
            let copy = bytes.to_vec();
            drop(item);
            self.handle(&copy);
        }
        false
    }

    /// One slice of resident-memory sampling; returns how long until the
    /// next one.
    fn sample_rss(&mut self) -> Duration {
        let Some(h) = self.growth.as_mut() else {
            return Duration::from_secs(3600);
        };
        h.step(&self.ctx.procs, clock::monotonic_ns());
        h.wait(clock::monotonic_ns())
    }

    /// Libraries a process mapped after exec: a libc at a path we have not
    /// probed (a bundled or newly installed one) gets probed now.
    fn scan_new_processes(&mut self) {
        let now = Instant::now();
        let own = libc_targets::mount_ns(std::process::id());
        while let Some(&(due, pid)) = self.exec_scans.front() {
            if due > now {
                break;
            }
            self.exec_scans.pop_front();
            let found = libc_targets::mapped_by(pid, own);
            if !found.is_empty() {
                self.kernel.probe_new_libcs(found);
            }
        }
    }

    /// Exact counts from the kernel; `filtered` applies -p/--comm (the
    /// trace file always gets everything).
    fn summary(&mut self, filtered: bool) -> Summary {
        let c = self.counters.read();
        let procs = &mut self.ctx.procs;
        let filter = &self.filter;
        let mut s = Summary::from_counters(
            &c,
            |pid| {
                procs
                    .lookup(pid)
                    .map(|p| p.comm.clone())
                    .unwrap_or_default()
            },
            |pid, comm| !filtered || filter.keeps(pid, comm),
        );
        s.time = clock::now_rfc3339();
        s.duration_s = self.started.elapsed().as_secs_f64();
        s.events_delivered = self.delivered;
        s.decode_errors = self.decode_errors;
        s.threads = self.thread_rows(&c.live, filtered);
        s
    }

    /// Live threads per (process, library).
    fn thread_rows(
        &mut self,
        live: &std::collections::BTreeMap<(u32, u64), i64>,
        filtered: bool,
    ) -> Vec<ThreadCount> {
        let mut processes: Vec<(u32, String, i64)> = self
            .ctx
            .procs
            .alive()
            .into_iter()
            .filter(|(pid, comm)| !filtered || self.filter.keeps(*pid, comm))
            .take(THREAD_SCAN_MAX)
            .filter_map(|(pid, comm)| Some((pid, comm, proctable::num_threads(pid)?)))
            .collect();
        processes.sort_unstable_by_key(|p| p.0);
        if self.library_names.len() >= MAPS_KEPT {
            self.library_names.clear();
        }
        let mut names = std::mem::take(&mut self.library_names);
        let rows = live_threads::rows(
            live,
            |pid, caller| {
                names
                    .entry((pid, caller))
                    .or_insert_with(|| {
                        let exe = self.ctx.procs.get(pid).and_then(|p| p.exe.clone());
                        self.maps_of(pid)
                            .and_then(|m| {
                                unwind::locate(&m, caller)
                                    .map(|(path, _)| classify::library(path, exe.as_deref()))
                            })
                            .unwrap_or_else(|| live_threads::UNATTRIBUTED.to_string())
                    })
                    .clone()
            },
            &processes,
            THREAD_ROWS,
        );
        self.library_names = names;
        if self.dashboard {
            self.scan = processes;
        }
        rows
    }

    fn checkpoint(&mut self) {
        self.counters
            .prune_live(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let s = self.summary(false);
        self.last_threads = s.threads.clone();
        self.check_oversubscription(&s.time);
        let dashboard = self.dashboard.then(|| self.dashboard_second(&s));
        let _ = self.output.send(Msg::Checkpoint(s));
        if let Some(d) = dashboard {
            let _ = self.output.send(Msg::Dashboard(Box::new(d)));
        }
    }

    /// The dashboard's second: its counters, narrowed like the console's,
    /// and the limits of the busiest and the failing processes, read from
    /// what the summary has just scanned.
    fn dashboard_second(&mut self, s: &Summary) -> (Summary, Vec<ProcessLimits>) {
        let t0 = Instant::now();
        let keep = |pid: u32, comm: &str| self.filter.keeps(pid, comm);
        let filtered: Vec<(u32, String, i64)>;
        let (scan, summary) = if self.filter.is_empty() {
            (&self.scan[..], s.clone())
        } else {
            filtered = self
                .scan
                .iter()
                .filter(|p| keep(p.0, &p.1))
                .cloned()
                .collect();
            (&filtered[..], s.narrowed(keep))
        };
        let rows = limits::gather(
            scan,
            &summary.threads,
            &summary.by_process,
            &self.ctx.procs,
            DASHBOARD_PROCESSES,
            &summary.time,
            &mut self.known_limits,
        );
        log::debug!(
            "dashboard: limits of {} processes read in {:?}",
            rows.len(),
            t0.elapsed()
        );
        (summary, rows)
    }

    /// Pool libraries running more threads than their process's CPUs:
    /// reported once per (process, library, thread count).
    fn check_oversubscription(&mut self, time: &str) {
        let rows: Vec<ThreadCount> = self.last_threads.clone();
        for r in rows {
            if r.library == live_threads::UNATTRIBUTED
                || remedy::pool_variable(&r.library).is_none()
            {
                continue;
            }
            let key = (r.pid, r.library.clone());
            if self.oversubscribed.get(&key) == Some(&r.live) {
                continue;
            }
            let cpu_cg = self.ctx.procs.cgroup(r.pid, "cpu");
            let Some(cpus) = oversubscription::cpus_allowed(r.pid, cpu_cg.as_deref()) else {
                continue;
            };
            if let Some(o) = oversubscription::check(r.pid, &r.comm, &r.library, r.live, cpus, time)
            {
                if self.oversubscribed.len() >= MAPS_KEPT {
                    self.oversubscribed.clear();
                }
                self.oversubscribed.insert(key, r.live);
                self.emit(Record::Oversubscribed(o));
            }
        }
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    if !privileges::can_trace(privileges::effective_caps()) {
        return Err(NeedPrivileges.into());
    }
    protect_from_oom_killer();
    let started_at = Instant::now();
    let log_level = if opts.verbose > 0 {
        aya_log::Level::Debug as u8
    } else {
        0
    };
    let mut kernel = Kernel::load(log_level, opts.detail_rate)?;
    if opts.verbose > 0 {
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
    }
    kernel.libcs.note_own_namespace();
    let libcs = kernel.probe_new_libcs(libc_targets::scan_host());
    if libcs.is_empty() {
        log::warn!("no libc with pthread_create found: only clone/fork failures will be seen");
    }
    let counters = CounterMaps::take(&mut kernel.ebpf)?;
    let mut ring = register(kernel.take_ring_buffer()?)?;

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
        pthread_create_libcs: libcs,
        processes: procs.len(),
    };
    let trace = match &opts.output {
        Some(path) => {
            let header = serde_json::json!({
                "host": host,
                "started": started.time,
                "threadtrace": env!("CARGO_PKG_VERSION"),
                "args": std::env::args().collect::<Vec<_>>(),
            });
            let mut w = TraceWriter::create(path, &header)
                .with_context(|| "cannot write the trace file".to_string())?;
            w.set_max_bytes(opts.max_size);
            // Who was running: pids in the file can be described elsewhere.
            let table: Vec<serde_json::Value> = procs
                .alive_procs()
                .map(|p| {
                    serde_json::json!({
                        "pid": p.pid, "ppid": p.ppid, "comm": p.comm, "exe": p.exe, "cmdline": p.cmdline, "uid": p.uid,
                        "started": p.start_ticks.and_then(proctable::started_at).map(clock::rfc3339),
                        "cgroups": p.cgroups.iter().map(|(c, path)| format!("{c}:{path}")).collect::<Vec<_>>(),
                    })
                })
                .collect();
            w.write_value(
                crate::tracefile::kind::PROCESSES,
                &serde_json::json!({"time": started.time, "processes": table}),
            )?;
            Some(w)
        }
        None => None,
    };
    let filter = Filter {
        pids: opts.pids.clone(),
        comms: opts.comms.clone(),
    };
    // Before the dashboard takes the terminal: a SIGTERM from then on
    // must stop the recording and give the terminal back, not kill it.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let (dashboard, feed, mut quit) = if opts.dashboard {
        match tui::start(opts.output.clone()) {
            Ok((d, feed, quit)) => (Some(d), Some(feed), Some(quit)),
            Err(e) => {
                log::warn!("{e}");
                (None, None, None)
            }
        }
    } else {
        (None, None, None)
    };
    let (output, output_thread) = output::spawn(Output {
        console: Console::new(opts.json),
        trace,
        filter: filter.clone(),
        lifecycle: opts.lifecycle,
        storm_threshold: opts.storm_threshold.max(1),
        storm_window: opts.storm_window,
        storm_by: opts.storm_by,
        dashboard: feed,
    })?;
    let mut c = Collector {
        kernel,
        counters,
        ctx: Context::new(procs),
        output,
        filter,
        exec_scans: VecDeque::new(),
        maps: HashMap::new(),
        library_names: HashMap::new(),
        roots: HashMap::new(),
        pids_watch,
        oom_victims: Default::default(),
        nproc_sets: HashMap::new(),
        causes: HashMap::new(),
        last_threads: Vec::new(),
        oversubscribed: HashMap::new(),
        delivered: 0,
        decode_errors: 0,
        started: started_at,
        dashboard: dashboard.is_some(),
        scan: Vec::new(),
        known_limits: limits::PerProcess::default(),
        growth: opts
            .rss
            .map(|(interval, window)| RssHistory::new(interval, window, clock::monotonic_ns())),
    };
    c.emit(Record::Started(started));
    c.checkpoint();
    log::info!("started in {:?}", started_at.elapsed());

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut scan_tick = tokio::time::interval(Duration::from_millis(20));
    // Sampling resident memory, a slice at a time: the ring buffer is
    // drained between slices.
    let rss_due = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(rss_due);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
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
            _ = scan_tick.tick(), if !c.exec_scans.is_empty() => c.scan_new_processes(),
            _ = second.tick() => c.checkpoint(),
            _ = &mut rss_due, if c.growth.is_some() => {
                let wait = c.sample_rss();
                rss_due.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            // q or Ctrl-C on the dashboard (raw mode: not a SIGINT), or
            // the dashboard failed: stop the same way.
            _ = async { if let Some(q) = quit.as_mut() { let _ = q.await; } }, if quit.is_some() => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
    }
    // The terminal back first: the summary is printed on it.
    let dashboard_failed = dashboard.and_then(|d| d.close().err());
    // Events already in the ring buffer belong to this recording.
    while !c.drain(ring.get_mut()) {}
    let console = c.summary(true);
    let file = c.summary(false);
    let _ = c.output.send(Msg::Finish { console, file });
    drop(c);
    output_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))??;
    match dashboard_failed {
        Some(e) => Err(anyhow::Error::new(e)
            .context("the recording was stopped; its trace file and summary are complete")),
        None => Ok(()),
    }
}
