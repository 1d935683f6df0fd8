//! The collector: load and attach, then read the ring buffer, enrich, and
//! fan out to stdout (or the dashboard) and the trace file until Ctrl-C,
//! SIGTERM, --duration, or the dashboard's q.
//!
//! It runs while thread creation is failing on the host, so it runs on one
//! thread (a current-thread tokio runtime, no blocking pool), protects itself
//! from the OOM killer, and keeps every buffer bounded.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    os::fd::OwnedFd,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use threadtrace_common::NprocSnapshot;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    attribution::{self, files, threads, Shared},
    bounded::{json_bytes, ByteLru},
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
    kernel::{counters::CounterMaps, mappings, Kernel},
    own_limits, privileges,
    proctable::{self, CgroupMounts, ProcTable},
    sink::{
        metrics,
        output::{self, Msg, Output, Refused, Sender},
        trace::{self, TraceSink},
        Console,
    },
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
    /// Each file of a rotating set (-o DIR or a pattern).
    pub file_size: Option<u64>,
    /// Overwrite an existing -o file (a regular file of ours).
    pub force: bool,
    pub storm_window: Duration,
    pub storm_by: crate::diagnosis::storm::StormBy,
    /// RLIMIT_DATA for the tracer itself, set once attached.
    pub max_memory: u64,
    pub verbose: u8,
    /// The live dashboard instead of lines (stdout is a terminal, no
    /// --json, no --no-tui).
    pub dashboard: bool,
    /// `--metrics`: where to serve Prometheus metrics, and their labels.
    pub metrics: Option<(std::net::SocketAddr, metrics::Config)>,
    /// How often resident memory is sampled for OOM kills' growers, and
    /// how far back they look; None turns sampling off.
    pub rss: Option<(Duration, Duration)>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "threadtrace needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
)]
pub struct NeedPrivileges;

/// Ring-buffer records handled before the loop looks at its timers and
/// signals again.
const DRAIN_BATCH: usize = 1024;
/// Entries kept at most in each of the collector's per-process tables.
const MAPS_KEPT: usize = 4096;
/// Whether tracked processes still exist is checked this often (their
/// exit record may have been lost).
const LIVENESS_EVERY: u32 = 30;
/// Processes whose thread count is read for a summary at most.
const THREAD_SCAN_MAX: usize = 8192;
/// Rows of live threads in a summary at most.
const THREAD_ROWS: usize = 100;
/// Processes named as holding the threads, per cause.
const HOLDERS: usize = 5;
/// How often the metrics are told which pods are alive.
const LIVE_PODS_EVERY: Duration = Duration::from_secs(10);
/// Processes whose limits the dashboard shows: the busiest this many, and
/// as many of those that failed.
const DASHBOARD_PROCESSES: usize = 100;
/// Budgets of what the collector remembers per process, in bytes: keyed
/// by pids, which any user can multiply. Causes are reused for a second
/// only; who set RLIMIT_NPROC on whom is evidence kept as long as it fits.
const CAUSES_BYTES: usize = 4 << 20;
const RLIMIT_SETS_BYTES: usize = 2 << 20;
const OVERSUBSCRIBED_BYTES: usize = 1 << 20;
const OOM_VICTIMS_BYTES: usize = 256 << 10;
/// Messages held back while the output stage is full; only checkpoints
/// add to them then (the ring buffer is not read meanwhile).
const PENDING_MAX: usize = 256;
/// How long the output stage has, after the stop, to take what is left
/// and write the summary: longer means it is stuck (a stdout nobody
/// reads), and the tracer exits without it.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

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

type CauseKey = (u32, String, i32, bool);

struct Collector {
    kernel: Kernel,
    counters: CounterMaps,
    ctx: Context,
    output: Sender,
    /// Messages the output stage had no room for, oldest first: the ring
    /// buffer is not read until they are taken.
    pending: VecDeque<Msg>,
    /// The output thread ended: the recording cannot go on.
    output_gone: bool,
    /// Counter snapshots and dashboard seconds not sent, the stage busy.
    snapshots_skipped: u64,
    /// Messages dropped past PENDING_MAX.
    records_dropped: u64,
    filter: Filter,
    /// Address spaces and the files behind them, shared with attribution.
    shared: Shared,
    /// libc files whose start_routine offset the kernel already reads.
    libcs_seen: HashSet<(u64, u64)>,
    /// Root directories of other mount namespaces and chroots, held open
    /// while a process of theirs is tracked (their files are found by path
    /// after the process exits).
    roots: HashMap<(u64, PathBuf), Arc<OwnedFd>>,
    own_mount_ns: Option<u64>,
    /// Who holds the threads, per process, recomputed every few seconds.
    census: threads::Census,
    /// Whether a process maps a pool library, per version of its mappings.
    pool_mappers: HashMap<u32, ((u64, usize), bool)>,
    checkpoints: u32,
    pids_watch: PidsWatch,
    /// Pids the OOM killer chose: their exit is not a second finding.
    oom_victims: ByteLru<u32, ()>,
    nproc_sets: ByteLru<u32, LimitSet>,
    causes: ByteLru<CauseKey, (Instant, Cause)>,
    /// (pid, library) → pool size already reported as oversubscribed.
    oversubscribed: ByteLru<(u32, String), i64>,
    delivered: u64,
    decode_errors: u64,
    started: Instant,
    dashboard: bool,
    /// (pid, comm, threads) of the live processes at the last summary.
    scan: Vec<(u32, String, i64)>,
    /// The dashboard's per-process limits, read every few seconds.
    known_limits: limits::PerProcess,
    /// Raised by the trace sink when its file is full: it wants the
    /// process table to start the next one.
    trace_rotation: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// With --metrics: when the live pods were last sent.
    live_pods_sent: Option<Instant>,
    /// Resident memory over the last minute: who grew before an OOM kill.
    growth: Option<RssHistory>,
}

impl Collector {
    fn emit(&mut self, r: Record) {
        self.send(Msg::Record(Box::new(r)));
    }

    /// To the output stage, in order, without waiting: what it has no room
    /// for waits in `pending` (and the ring buffer is not read meanwhile).
    fn send(&mut self, m: Msg) {
        if self.pending.len() >= PENDING_MAX {
            self.records_dropped += 1;
            return;
        }
        self.pending.push_back(m);
        self.flush_pending();
    }

    /// A once-a-second message: skipped, and counted, when the output
    /// stage is busy; the next second's carries the same counts.
    fn send_or_skip(&mut self, m: Msg) {
        if !self.pending.is_empty() {
            self.snapshots_skipped += 1;
            return;
        }
        match self.output.try_send(m) {
            Ok(()) => {}
            Err(Refused::Full(_)) => self.snapshots_skipped += 1,
            Err(Refused::Gone) => self.output_gone = true,
        }
    }

    /// Hands over what waits; true when nothing does.
    fn flush_pending(&mut self) -> bool {
        while let Some(m) = self.pending.pop_front() {
            match self.output.try_send(m) {
                Ok(()) => {}
                Err(Refused::Full(m)) => {
                    self.pending.push_front(m);
                    return false;
                }
                Err(Refused::Gone) => {
                    self.output_gone = true;
                    self.pending.clear();
                    return false;
                }
            }
        }
        true
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
        // The tracer capping its own memory after attach is not news.
        if let decode::Raw::RlimitChange(e) = &raw {
            if e.header.tgid == std::process::id() {
                return;
            }
        }
        // Address spaces first: a failure is attributed through the
        // mappings of its moment, which the ring buffer delivered before it.
        match &raw {
            decode::Raw::Mapping(e) => {
                self.apply_mapping(mappings::from_event(e));
                return;
            }
            decode::Raw::ProcessFork(e) => {
                self.spaces()
                    .fork(e.header.tgid, e.payload.child_pid, e.header.ktime_ns);
            }
            decode::Raw::ProcessExec(e) => {
                let (pid, time) = (e.header.tgid, e.header.ktime_ns);
                self.apply_mapping(mappings::Record::Exec { pid, time });
                let root = self.root_of(pid);
                self.spaces().set_root(pid, time, root);
            }
            decode::Raw::ProcessExit(e) => self.spaces().exit(e.header.tgid, e.header.ktime_ns),
            _ => {}
        }
        let nproc = match &raw {
            decode::Raw::CreateFailed(e) => Some(e.payload.nproc),
            _ => None,
        };
        // When the OOM killer chose: where the growth window ends.
        let kill_ns = match &raw {
            decode::Raw::OomVictim(e) => e.header.ktime_ns,
            _ => 0,
        };
        let Some(mut r) = events::enrich(raw, &mut self.ctx, &self.kernel.offsets_in_use) else {
            return;
        };
        match (nproc, &mut r) {
            (Some(nproc), Record::ThreadCreateFailed(e)) => {
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
        self.oom_victims.insert(e.victim.pid, (), 16);
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
        let set = LimitSet {
            time: e.task.time.clone(),
            pid: e.task.pid,
            comm: e.task.comm.clone(),
            target_pid: e.target_pid,
            soft,
        };
        let bytes = json_bytes(&set) + 64;
        self.nproc_sets.insert(e.target_pid, set, bytes);
    }

    /// Which limit a failure hit, from evidence read now; the same failure
    /// from the same process is diagnosed once a second at most.
    fn diagnose(&mut self, e: &events::ThreadCreateFailed, nproc: NprocSnapshot) -> Cause {
        // A failed mmap/mprotect is diagnosed as the pthread_create it may
        // be part of; attribution drops it if it is not.
        let stack_setup = e.is_stack_setup();
        let clone_tried = !stack_setup;
        let api = if stack_setup {
            threadtrace_common::Api::PthreadCreate.name()
        } else {
            e.api.as_str()
        };
        let key = (e.task.pid, api.to_string(), e.errno, clone_tried);
        if let Some((at, c)) = self.causes.peek(&key) {
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
        // RLIMIT_AS at the failure, as the kernel saw it; /proc only knows
        // it while the process lives.
        let as_at_failure = (nproc.valid != 0)
            .then_some(nproc.as_soft)
            .filter(|&l| l != threadtrace_common::RLIM_INFINITY);
        if let Some(cg) = &e.cgroup {
            ev.pids = self.pids_watch.check(cg);
        }
        evidence::host(&mut ev);
        if !clone_tried {
            evidence::stack(pid, &mut ev);
            if nproc.valid != 0 {
                ev.rlimit_as = as_at_failure;
            }
        }
        let mut c = decide(api, e.errno, clone_tried, &ev);
        match c.kind.as_str() {
            "rlimit_nproc" => {
                let limit = c.limit.unwrap_or(u64::MAX);
                c.inherited_from = holders::inherited_from(&mut self.ctx.procs, pid, limit);
                let sets = &self.nproc_sets;
                c.set_by = holders::set_by(&self.ctx.procs, |pid| sets.peek(&pid), pid, limit);
                let uid = e.task.uid;
                let pids: Vec<(u32, String)> = self
                    .ctx
                    .procs
                    .alive_procs()
                    .filter(|p| p.uid == Some(uid))
                    .map(|p| (p.pid, p.comm.clone()))
                    .collect();
                c.holders = self.holders(pids);
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
                c.holders = self.holders(pids);
            }
            _ => {}
        }
        let bytes = json_bytes(&c) + key.1.len() + 96;
        self.causes.insert(key, (Instant::now(), c.clone()), bytes);
        c
    }

    /// The processes holding the most threads among `pids`, each with the
    /// libraries that created them (read from glibc's own thread list).
    fn holders(&mut self, pids: Vec<(u32, String)>) -> Vec<crate::diagnosis::Holder> {
        let (census, shared, clock) = (&mut self.census, &self.shared, &self.ctx.clock);
        holders::top(pids.into_iter(), HOLDERS, |pid, total| {
            census.of(pid, total, shared, clock)
        })
    }

    fn spaces(&self) -> std::sync::MutexGuard<'_, attribution::address_spaces::AddressSpaces> {
        self.shared.spaces.lock().expect("not poisoned")
    }

    /// Applies a mapping or an exec to the address spaces. A libc seen for
    /// the first time gets its start_routine offset read by the kernel
    /// from then on.
    fn apply_mapping(&mut self, r: mappings::Record) {
        self.spaces().apply(&r);
        if let mappings::Record::Mmap {
            pid,
            time,
            start,
            dev,
            ino,
            path,
            ..
        } = &r
        {
            if threads::is_glibc(path) && !self.libcs_seen.contains(&(*dev, *ino)) {
                self.learn_libc(*pid, *time, *start, (*dev, *ino));
            }
        }
    }

    /// Reads a libc's start_routine offset (glibc publishes it) and has the
    /// kernel read that word of each new thread's `struct pthread`.
    fn learn_libc(&mut self, pid: u32, at: u64, addr: u64, id: (u64, u64)) {
        if !self.libcs_seen.insert(id) {
            return;
        }
        let Some(module) = self.shared.module_at(pid, at, addr, &self.ctx.clock) else {
            return;
        };
        if let Some(off) = module.info.thread_db.pthread_start_routine {
            if !self.kernel.add_start_routine_offset(off) {
                log::info!("a fifth libc build: its threads' start routines are not captured");
            }
        }
    }

    /// The root directory `pid` sees, held open, when it is not ours.
    fn root_of(&mut self, pid: u32) -> Option<Arc<OwnedFd>> {
        let ns = files::mount_ns(pid)?;
        let root = std::fs::read_link(format!("/proc/{pid}/root")).ok()?;
        if Some(ns) == self.own_mount_ns && root == std::path::Path::new("/") {
            return None;
        }
        if let Some(fd) = self.roots.get(&(ns, root.clone())) {
            return Some(fd.clone());
        }
        let fd = Arc::new(files::open_root(pid).ok()?);
        if self.roots.len() >= MAPS_KEPT {
            self.roots.retain(|_, fd| Arc::strong_count(fd) > 1);
        }
        self.roots.insert((ns, root), fd.clone());
        Some(fd)
    }

    /// Every process alive now, with its executable mappings: their
    /// failures are attributed even if they exit right after.
    fn seed_address_spaces(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let now = clock::monotonic_ns();
        let procs: Vec<(u32, Option<u64>)> = self
            .ctx
            .procs
            .alive_procs()
            .map(|p| (p.pid, p.start_ticks))
            .collect();
        let mut libcs = Vec::new();
        for (pid, start_ticks) in procs {
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                continue;
            };
            let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
                .ok()
                .map(|m| (m.dev(), m.ino()));
            // The mappings are at least as old as the process (files changed
            // since are not the ones mapped).
            let since = start_ticks.map_or(now, |t| proctable::ticks_to_ns(t).min(now));
            let root = self.root_of(pid);
            for l in attribution::address_spaces::parse_maps(&maps) {
                if l.exec && threads::is_glibc(l.path) {
                    libcs.push((pid, l.start, (l.dev, l.ino)));
                }
            }
            self.spaces().seed(pid, &maps, since, exe, root);
        }
        for (pid, start, id) in libcs {
            self.learn_libc(pid, now, start, id);
        }
    }

    /// Handles up to DRAIN_BATCH records; true when the ring is empty. In a
    /// storm records never stop coming: returning lets the timers (counter
    /// snapshots) and the signals (Ctrl-C) run in between.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        for _ in 0..DRAIN_BATCH {
            // The output stage is full: leave the rest in the ring.
            if !self.pending.is_empty() || self.output_gone {
                return false;
            }
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
        s.threads = self.thread_rows(filtered);
        self.tracer_bounds(&mut s.tracer);
        s
    }

    /// What staying bounded cost so far (attribution adds its own).
    fn tracer_bounds(&self, t: &mut events::session::Tracer) {
        let procs = &self.ctx.procs.bounds;
        t.cmdlines_cut = procs.cmdlines_cut;
        t.snapshots_skipped = self.snapshots_skipped;
        t.records_dropped = self.records_dropped;
        for (table, n) in [
            ("process_table", procs.exited_evicted),
            ("causes", self.causes.evicted),
            ("rlimit_sets", self.nproc_sets.evicted),
            ("oversubscribed", self.oversubscribed.evicted),
            ("oom_victims", self.oom_victims.evicted),
        ] {
            t.evicted.insert(table.to_string(), n);
        }
    }

    /// Live threads per (process, creating library), for the processes
    /// with the most threads.
    fn thread_rows(&mut self, filtered: bool) -> Vec<ThreadCount> {
        let mut processes: Vec<(u32, String, i64)> = self
            .ctx
            .procs
            .alive()
            .into_iter()
            .filter(|(pid, comm)| !filtered || self.filter.keeps(*pid, comm))
            .take(THREAD_SCAN_MAX)
            .filter_map(|(pid, comm)| Some((pid, comm, proctable::num_threads(pid)?)))
            .collect();
        processes.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let mut rows = Vec::new();
        for (pid, comm, total) in processes.iter().take(THREAD_ROWS) {
            let libs = self.census.of(*pid, *total, &self.shared, &self.ctx.clock);
            rows.extend(
                libs.iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(library, live)| ThreadCount {
                        pid: *pid,
                        comm: comm.clone(),
                        library: library.clone(),
                        live: *live,
                    }),
            );
        }
        rows.sort_by(|a, b| {
            b.live
                .cmp(&a.live)
                .then(a.pid.cmp(&b.pid))
                .then(a.library.cmp(&b.library))
        });
        rows.truncate(THREAD_ROWS);
        processes.sort_unstable_by_key(|p| p.0);
        self.scan = processes;
        rows
    }

    /// A new trace file (rotation, SIGHUP) starts with the process table.
    fn reopen(&mut self, why: &'static str) {
        // In order with the records, never dropped: `send` queues it.
        self.send(Msg::Reopen {
            processes: trace::process_table(&self.ctx.procs),
            time: clock::now_rfc3339(),
            why,
        });
    }

    fn checkpoint(&mut self) {
        if self
            .trace_rotation
            .as_ref()
            .is_some_and(|r| r.swap(false, std::sync::atomic::Ordering::Relaxed))
        {
            self.reopen(trace::ROTATION);
        }
        self.checkpoints += 1;
        let check = self.checkpoints.is_multiple_of(LIVENESS_EVERY);
        let behind = !self.pending.is_empty();
        self.spaces().prune(
            |pid| !check || std::path::Path::new(&format!("/proc/{pid}")).exists(),
            behind,
        );
        self.roots.retain(|_, fd| Arc::strong_count(fd) > 1);
        self.census.prune();
        let s = self.summary(false);
        self.check_oversubscription(&s.time);
        let dashboard = self.dashboard.then(|| self.dashboard_second(&s));
        self.send_or_skip(Msg::Checkpoint(Box::new(s)));
        if let Some(d) = dashboard {
            self.send_or_skip(Msg::Dashboard(Box::new(d)));
        }
        if let Some(at) = self
            .live_pods_sent
            .filter(|at| at.elapsed() >= LIVE_PODS_EVERY)
        {
            let pods = self.ctx.live_pods();
            self.send_or_skip(Msg::LivePods(pods));
            self.live_pods_sent = Some(at + LIVE_PODS_EVERY);
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
        // Pools are looked for where a pool library is mapped, whatever
        // the process's rank by thread count.
        let busy: Vec<(u32, String, i64)> =
            self.scan.iter().filter(|p| p.2 >= 3).cloned().collect();
        let candidates: Vec<(u32, String, i64)> = busy
            .into_iter()
            .filter(|p| self.maps_a_pool_library(p.0))
            .collect();
        for (pid, comm, total) in candidates {
            let libs = self.census.of(pid, total, &self.shared, &self.ctx.clock);
            for (library, &live) in libs.iter() {
                if remedy::pool_variable(library).is_none() {
                    continue;
                }
                let key = (pid, library.clone());
                if self.oversubscribed.get(&key) == Some(&live) {
                    continue;
                }
                let bytes = key.1.len() + 64;
                let cpu_cg = self.ctx.procs.cgroup(pid, "cpu");
                let Some(cpus) = oversubscription::cpus_allowed(pid, cpu_cg.as_deref()) else {
                    continue;
                };
                if let Some(mut o) = oversubscription::check(pid, &comm, library, live, cpus, time)
                {
                    o.k8s = self.ctx.k8s(pid);
                    self.oversubscribed.insert(key, live, bytes);
                    self.emit(Record::Oversubscribed(o));
                }
            }
        }
    }

    /// Whether the process maps a library that runs a thread pool
    /// (libgomp, OpenBLAS, MKL, ...), per version of its mappings.
    fn maps_a_pool_library(&mut self, pid: u32) -> bool {
        let Some(key) = self.spaces().key(pid) else {
            return false;
        };
        if let Some(&(k, yes)) = self.pool_mappers.get(&pid) {
            if k == key {
                return yes;
            }
        }
        let Some(snap) = self.spaces().snapshot(pid, u64::MAX) else {
            return false;
        };
        let yes = snap.mappings.iter().any(|m| {
            remedy::pool_variable(&attribution::classify::library(&m.file.path, false)).is_some()
        });
        if self.pool_mappers.len() >= MAPS_KEPT {
            self.pool_mappers.clear();
        }
        self.pool_mappers.insert(pid, (snap.key, yes));
        yes
    }
}

/// How often a full output stage is offered what waits.
const RETRY: Duration = Duration::from_millis(5);
/// Ring-buffer batches read after the stop at most.
const STOP_BATCHES: u32 = 64;

/// The output thread ended before the summary: why, in one line.
fn output_died(thread: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Error {
    let why = match thread.join() {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => "it returned early".into(),
        // Its message was printed by the panic hook.
        Err(_) => "it panicked".into(),
    };
    anyhow::anyhow!(
        "the output stage stopped ({why}): recording stopped; the trace file is readable up to its last second"
    )
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
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
    let counters = CounterMaps::take(&mut kernel.ebpf)?;
    let mut ring = register(kernel.take_ring_buffer()?)?;
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
    };
    let trace = match &opts.output {
        Some(path) => {
            let header = serde_json::json!({
                "host": host,
                "started": started.time,
                "threadtrace": env!("CARGO_PKG_VERSION"),
                "args": std::env::args().collect::<Vec<_>>(),
            });
            let cfg = trace::Config {
                output: path.clone(),
                force: opts.force,
                max_size: opts.max_size,
                file_size: opts.file_size,
            };
            Some(TraceSink::open(
                &cfg,
                header,
                &trace::process_table(&procs),
                &started.time,
            )?)
        }
        None => None,
    };
    let trace_rotation = trace.as_ref().map(|t| t.wants_rotation.clone());
    let filter = Filter {
        pids: opts.pids.clone(),
        comms: opts.comms.clone(),
    };
    // Every probe is attached and the trace file is open: what the rest
    // of the recording cannot do, it gives up, before its other threads
    // start (they inherit this thread's credentials).
    // Nothing is attached while recording: no probe needs a capability
    // after this point.
    // The metrics port, whatever its number, is bound already.
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
    match own_limits::cap_memory(opts.max_memory) {
        Ok(b) => log::debug!("memory limit (RLIMIT_DATA): {b} bytes"),
        Err(e) => log::warn!("{e}: the tracer's memory is not capped"),
    }
    // Before the dashboard takes the terminal: a SIGTERM from then on
    // must stop the recording and give the terminal back, not kill it.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    // SIGHUP reopens the outputs (logrotate), unless it is the terminal
    // going away.
    let hangup_stops = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut sighup = signal(SignalKind::hangup())?;
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
    let shared = Shared::default();
    let ctx = Context::new(procs);
    let (metrics_sink, metrics_server) = match (metrics_listener, &opts.metrics) {
        (Some(listener), Some((_, cfg))) => {
            let (sink, registry) = metrics::new(cfg);
            let server = metrics::http::spawn(listener, registry)?;
            log::info!("metrics at http://{}/metrics", server.addr);
            (Some(sink), Some(server))
        }
        _ => (None, None),
    };
    let (output, output_thread) = output::spawn(Output {
        shared: shared.clone(),
        clock: ctx.clock,
        console: Console::new(opts.json),
        trace,
        filter: filter.clone(),
        lifecycle: opts.lifecycle,
        storm_threshold: opts.storm_threshold.max(1),
        storm_window: opts.storm_window,
        storm_by: opts.storm_by,
        dashboard: feed,
        metrics: metrics_sink,
    })?;
    let mut c = Collector {
        kernel,
        counters,
        ctx,
        output,
        pending: VecDeque::new(),
        output_gone: false,
        snapshots_skipped: 0,
        records_dropped: 0,
        filter,
        shared: shared.clone(),
        libcs_seen: HashSet::new(),
        roots: HashMap::new(),
        own_mount_ns: files::mount_ns(std::process::id()),
        census: threads::Census::default(),
        pool_mappers: HashMap::new(),
        checkpoints: 0,
        pids_watch,
        oom_victims: ByteLru::new(OOM_VICTIMS_BYTES),
        nproc_sets: ByteLru::new(RLIMIT_SETS_BYTES),
        causes: ByteLru::new(CAUSES_BYTES),
        oversubscribed: ByteLru::new(OVERSUBSCRIBED_BYTES),
        delivered: 0,
        decode_errors: 0,
        started: started_at,
        dashboard: dashboard.is_some(),
        scan: Vec::new(),
        known_limits: limits::PerProcess::default(),
        trace_rotation,
        live_pods_sent: metrics_server.as_ref().map(|_| Instant::now()),
        growth: opts
            .rss
            .map(|(interval, window)| RssHistory::new(interval, window, clock::monotonic_ns())),
    };
    let t0 = Instant::now();
    c.seed_address_spaces();
    log::info!(
        "address spaces of {} processes read in {:?}",
        c.spaces().stats().processes,
        t0.elapsed()
    );
    c.emit(Record::Started(started));
    c.checkpoint();
    log::info!("started in {:?}", started_at.elapsed());

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Sampling resident memory, a slice at a time: the ring buffer is
    // drained between slices.
    let rss_due = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(rss_due);
    loop {
        if c.output_gone {
            break;
        }
        tokio::select! {
            // Not while the output stage is full: the ring buffer holds
            // the burst, and signals are still answered.
            guard = ring.readable_mut(), if c.pending.is_empty() => {
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
            _ = retry.tick(), if !c.pending.is_empty() => { c.flush_pending(); }
            _ = second.tick() => {
                // The counters are read after the events the kernel wrote
                // before them: a storm is not declared from counts whose
                // first failures are still in the ring buffer.
                for _ in 0..8 {
                    if c.drain(ring.get_mut()) {
                        break;
                    }
                }
                c.checkpoint()
            }
            _ = &mut rss_due, if c.growth.is_some() => {
                let wait = c.sample_rss();
                rss_due.as_mut().reset(tokio::time::Instant::now() + wait);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                if hangup_stops {
                    break;
                }
                c.reopen(trace::SIGHUP);
            }
            // q or Ctrl-C on the dashboard (raw mode: not a SIGINT), or
            // the dashboard failed: stop the same way.
            _ = async { if let Some(q) = quit.as_mut() { let _ = q.await; } }, if quit.is_some() => break,
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => break,
        }
    }
    // The terminal back first: the summary is printed on it.
    let dashboard_failed = dashboard.and_then(|d| d.close().err());
    if c.output_gone {
        drop(c);
        return Err(output_died(output_thread));
    }
    // What is still queued goes out unattributed: the stop is prompt.
    c.output.stopping();
    let finish_by = tokio::time::Instant::now() + FINISH_WITHIN;
    let interrupted = async {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    tokio::pin!(interrupted);
    let (mut batches, mut finish_queued) = (0, false);
    let finished = loop {
        if !finish_queued && c.flush_pending() {
            // Events already in the ring buffer belong to this recording;
            // a storm that goes on does not hold the stop back.
            if c.drain(ring.get_mut()) || batches >= STOP_BATCHES {
                let console = c.summary(true);
                let file = c.summary(false);
                c.send(Msg::Finish(Box::new((console, file))));
                finish_queued = true;
            } else {
                batches += 1;
                if c.pending.is_empty() {
                    continue;
                }
            }
        }
        if finish_queued {
            c.flush_pending();
        }
        if c.output_gone || output_thread.is_finished() {
            break true;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = tokio::time::sleep_until(finish_by) => break false,
            // A second Ctrl-C or SIGTERM: do not wait.
            _ = &mut interrupted => break false,
        }
    };
    if !finished {
        anyhow::bail!(
            "the output stage did not finish within {} s of the stop (is stdout read?): \
             exiting without the summary; the trace file is readable up to its last second",
            FINISH_WITHIN.as_secs()
        );
    }
    let sent_finish = finish_queued && c.pending.is_empty() && !c.output_gone;
    drop(c);
    if !sent_finish {
        return Err(output_died(output_thread));
    }
    output_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))??;
    drop(metrics_server);
    match dashboard_failed {
        Some(e) => Err(anyhow::Error::new(e)
            .context("the recording was stopped; its trace file and summary are complete")),
        None => Ok(()),
    }
}
