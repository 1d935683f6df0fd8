//! The diagnosis stage: why each failure happened and what each OOM kill
//! did, decided from evidence read at once (the failing process has often
//! exited by the time anyone looks), and what the collector must remember
//! for that: who set RLIMIT_NPROC on whom, the pids cgroups' counters, the
//! victims already reported, the history of resident memory, who holds
//! the threads. Every table is bounded in bytes.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use threadtrace_common::NprocSnapshot;

use crate::{
    attribution::{threads::Census, Shared},
    bounded::{json_bytes, ByteLru},
    clock,
    diagnosis::{
        decide,
        evidence::{self, Evidence, Nproc, PidsWatch},
        growth::{self, RssHistory},
        holders,
        limits::{self, ProcessLimits},
        memory, oom,
        oom_group::{GroupKills, Seen},
        oversubscription, remedy,
    },
    enrich::Context,
    model::{
        Cause, Holder, Limit, LimitSet, OomKill, Outcome, Oversubscribed, Record, RlimitChange,
        ThreadCount, ThreadCreateFailed,
    },
    proctable::{self, Proc},
};

const EAGAIN: i32 = 11;

/// Processes named as holding the threads, per cause.
const HOLDERS: usize = 5;
/// Processes whose thread count is read for a summary at most.
const THREAD_SCAN_MAX: usize = 8192;
/// Rows of live threads in a summary at most.
const THREAD_ROWS: usize = 100;
/// Processes whose limits the dashboard shows: the busiest this many, and
/// as many of those that failed.
const DASHBOARD_PROCESSES: usize = 100;
/// Budgets of what is remembered per process, in bytes: keyed by pids,
/// which any user can multiply. Causes are reused for a second only; who
/// set RLIMIT_NPROC on whom is evidence kept as long as it fits.
const CAUSES_BYTES: usize = 4 << 20;
const RLIMIT_SETS_BYTES: usize = 2 << 20;
const OVERSUBSCRIBED_BYTES: usize = 1 << 20;
const OOM_VICTIMS_BYTES: usize = 256 << 10;

/// (pid, api, errno, whether a clone was tried).
type CauseKey = (u32, String, i32, bool);

/// A live process: (pid, comm, threads).
pub type Scanned = (u32, String, i64);

pub struct Diagnosis {
    /// Address spaces and files, for who created each thread.
    shared: Shared,
    /// Who holds the threads, per process, recomputed every few seconds.
    census: Census,
    pids_watch: PidsWatch,
    /// Pids the OOM killer chose: their exit is not a second finding.
    oom_victims: ByteLru<u32, ()>,
    /// The group kill (memory.oom.group) under way: who was chosen.
    group_kills: GroupKills,
    nproc_sets: ByteLru<u32, LimitSet>,
    causes: ByteLru<CauseKey, (Instant, Cause)>,
    /// (pid, library) → pool size already reported as oversubscribed.
    oversubscribed: ByteLru<(u32, String), i64>,
    /// Resident memory over the last minute: who grew before an OOM kill.
    growth: Option<RssHistory>,
    /// The dashboard's per-process limits, read every few seconds.
    known_limits: limits::PerProcess,
}

impl Diagnosis {
    /// `rss`: how often resident memory is sampled, and how far back an
    /// OOM kill looks; None: not sampled.
    pub fn new(shared: Shared, pids_watch: PidsWatch, rss: Option<(Duration, Duration)>) -> Self {
        Diagnosis {
            shared,
            census: Census::default(),
            pids_watch,
            oom_victims: ByteLru::new(OOM_VICTIMS_BYTES),
            group_kills: GroupKills::default(),
            nproc_sets: ByteLru::new(RLIMIT_SETS_BYTES),
            causes: ByteLru::new(CAUSES_BYTES),
            oversubscribed: ByteLru::new(OVERSUBSCRIBED_BYTES),
            growth: rss
                .map(|(interval, window)| RssHistory::new(interval, window, clock::monotonic_ns())),
            known_limits: limits::PerProcess::default(),
        }
    }

    /// What a record needs before it goes out: a failure's cause, an OOM
    /// kill's scope and growers, a pool worker's death, an RLIMIT_NPROC
    /// set remembered. `nproc`: the kernel's count and limit at a failure;
    /// `at_ns`: when it happened (CLOCK_MONOTONIC), for a kill when the
    /// OOM killer chose. False when the record is no news, to be dropped:
    /// a process killed a second time by the same group kill.
    pub fn on_record(
        &mut self,
        r: &mut Record,
        nproc: Option<NprocSnapshot>,
        at_ns: u64,
        ctx: &mut Context,
    ) -> bool {
        match r {
            Record::ThreadCreateFailed(e) => {
                if let Some(nproc) = nproc {
                    e.cause = Some(Box::new(self.failure(e, nproc, at_ns, ctx)));
                }
            }
            Record::RlimitChange(e) => self.note_nproc_change(e),
            Record::OomKill(e) => return self.oom_kill(e, at_ns, ctx),
            // A crash or a kill -9, not a polite SIGTERM (Pool.terminate()
            // ends its workers that way).
            Record::ProcessExit(e)
                if e.signal.as_deref().is_some_and(oom::is_violent)
                    && !self.oom_victims.contains(&e.task.pid) =>
            {
                if let Some(p) = oom::pool_of(&ctx.procs, e.task.pid, |_| false) {
                    e.consequence = Some(oom::consequence(&p));
                    e.pool = Some(p);
                }
            }
            _ => {}
        }
        true
    }

    /// Remembers who set RLIMIT_NPROC on whom: the evidence of where a
    /// limit came from.
    fn note_nproc_change(&mut self, e: &RlimitChange) {
        let (true, Outcome::Ok(_), Some(new)) = (e.resource == "RLIMIT_NPROC", &e.result, e.new)
        else {
            return;
        };
        self.known_limits.forget(e.target_pid);
        let Limit::Value(soft) = new.soft else {
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

    /// The RLIMIT_NPROC change seen on `pid`, if any.
    pub fn nproc_set(&self, pid: u32) -> Option<&LimitSet> {
        self.nproc_sets.peek(&pid)
    }

    /// Which limit a failure hit, from evidence read now; the same failure
    /// from the same process is diagnosed once a second at most.
    fn failure(
        &mut self,
        e: &ThreadCreateFailed,
        nproc: NprocSnapshot,
        at_ns: u64,
        ctx: &mut Context,
    ) -> Cause {
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
        let ev = self.evidence(e, nproc, clone_tried, at_ns);
        let mut c = decide(api, e.errno, clone_tried, &ev);
        match c.kind.as_str() {
            "rlimit_nproc" => {
                let limit = c.limit.unwrap_or(u64::MAX);
                c.inherited_from = holders::inherited_from(&mut ctx.procs, pid, limit);
                let sets = &self.nproc_sets;
                c.set_by = holders::set_by(&ctx.procs, |pid| sets.peek(&pid), pid, limit);
                let uid = e.task.uid;
                let pids: Vec<(u32, String)> = ctx
                    .procs
                    .alive_procs()
                    .filter(|p| p.uid == Some(uid))
                    .map(|p| (p.pid, p.comm.clone()))
                    .collect();
                c.holders = self.holders(pids, ctx);
            }
            "cgroup_pids" => {
                let cg = c.cgroup.clone().unwrap_or_default();
                let procs = &ctx.procs;
                let pids: Vec<(u32, String)> = procs
                    .alive_procs()
                    .filter(|p| {
                        procs
                            .mounts
                            .path(&p.cgroups, "pids")
                            .is_some_and(|path| path.starts_with(&cg))
                    })
                    .map(|p| (p.pid, p.comm.clone()))
                    .collect();
                c.holders = self.holders(pids, ctx);
            }
            _ => {}
        }
        if matches!(c.kind.as_str(), "rlimit_nproc" | "cgroup_pids") {
            holders::add_gone(&mut c.holders, pid, &e.task.comm, nproc.threads);
        }
        let bytes = json_bytes(&c) + key.1.len() + 96;
        self.causes.insert(key, (Instant::now(), c.clone()), bytes);
        c
    }

    /// What is known of a failure's limits: the kernel's own count and
    /// limit at the failure, the pids cgroup's counters, the host's.
    fn evidence(
        &mut self,
        e: &ThreadCreateFailed,
        nproc: NprocSnapshot,
        clone_tried: bool,
        at_ns: u64,
    ) -> Evidence {
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
        // Only a clone refused with EAGAIN may be one of the refusals the
        // cgroup counted; anything else must not take one from it.
        let refusal = clone_tried && e.errno == EAGAIN;
        if let Some(cg) = &e.cgroup {
            ev.pids = self.pids_watch.check(cg, at_ns, refusal);
        }
        // A process gone before its cgroup could be read: a cgroup refusing
        // tasks at that moment is the likely limit, and is said to be
        // inferred.
        if e.cgroup.is_none() && refusal {
            if let Some(p) = self.pids_watch.check_refusing(at_ns) {
                ev.pids = Some(p);
            }
        }
        evidence::host(&mut ev);
        if !clone_tried {
            evidence::stack(e.task.pid, &mut ev);
            // RLIMIT_AS at the failure, as the kernel saw it; /proc only
            // knows it while the process lives.
            if nproc.valid != 0 {
                ev.rlimit_as =
                    Some(nproc.as_soft).filter(|&l| l != threadtrace_common::RLIM_INFINITY);
            }
        }
        ev
    }

    /// The processes holding the most threads among `pids`, each with the
    /// libraries that created them (read from glibc's own thread list).
    fn holders(&mut self, pids: Vec<(u32, String)>, ctx: &Context) -> Vec<Holder> {
        let (census, shared, clock) = (&mut self.census, &self.shared, &ctx.clock);
        holders::top(pids.into_iter(), HOLDERS, |pid, total| {
            let t = census.of(pid, total, shared, clock);
            holders::Census {
                libraries: t.libraries.iter().map(|(l, n)| (l.clone(), *n)).collect(),
                groups: t.groups.clone(),
            }
        })
    }

    /// The memory cgroup, the top holders, who grew, and the pool the
    /// victim belonged to, read while the victim is still being killed;
    /// whether memory.oom.group kills its cgroup with it. A process killed
    /// only because its cgroup was gets the group and the limit, no story
    /// of its own. False for a second kill of a process in one group kill.
    fn oom_kill(&mut self, e: &mut OomKill, kill_ns: u64, ctx: &Context) -> bool {
        let t0 = Instant::now();
        self.oom_victims.insert(e.victim.pid, (), 16);
        let (victim, trigger) = (e.victim.pid, e.trigger.tid);
        match self
            .group_kills
            .seen(victim, e.victim.cgroup.as_deref(), trigger, kill_ns)
        {
            Seen::Again => {
                log::debug!("OOM kill of {victim} again, by memory.oom.group: reported once");
                return false;
            }
            Seen::WithGroup {
                group,
                memory_cgroup,
            } => {
                e.group_kill = Some(group);
                e.memory_cgroup = memory_cgroup;
                return true;
            }
            Seen::New => {}
        }
        e.memory_cgroup = e.victim.cgroup.as_deref().and_then(memory::memory_cgroup);
        // First, while the cgroup is sure to be there.
        let domain = e.memory_cgroup.as_ref().map(|c| c.path.as_str());
        let group = e
            .victim
            .cgroup
            .as_deref()
            .and_then(|cg| memory::oom_group(cg, domain));
        let procs = &ctx.procs;
        let scope: Vec<&Proc> = procs
            .alive_procs()
            .filter(|p| {
                e.memory_cgroup.as_ref().is_none_or(|cg| {
                    procs
                        .mounts
                        .path(&p.cgroups, "memory")
                        .is_some_and(|m| Path::new(&m).starts_with(&cg.path))
                })
            })
            .collect();
        let history = self.growth.as_ref();
        e.top_holders = oom::top_holders(
            &scope,
            HOLDERS,
            |p| history.and_then(|h| h.latest(p.pid, p.start_ticks)),
            memory::rss_bytes,
        );
        oom::victim_as_killed(e);
        if let Some(h) = history {
            grew_before(h, e, &scope, kill_ns);
        }
        let in_group = |p: &Proc| {
            group.as_deref().is_some_and(|g| {
                procs
                    .mounts
                    .path(&p.cgroups, "memory")
                    .is_some_and(|m| Path::new(&m).starts_with(g))
            })
        };
        e.pool = oom::pool_of(procs, victim, in_group);
        e.consequence = e.pool.as_ref().map(oom::consequence);
        if let Some(g) = group {
            e.group_kill = Some(self.group_kills.chosen(
                g,
                victim,
                &e.victim.comm,
                trigger,
                kill_ns,
                e.memory_cgroup.clone(),
            ));
        }
        e.remedy = oom::remedy(e);
        log::debug!(
            "OOM kill of {}: {} processes in scope, diagnosed in {:?}",
            e.victim.pid,
            scope.len(),
            t0.elapsed()
        );
        true
    }

    /// Pool libraries running more threads than their process's CPUs,
    /// among `candidates` (processes that map a pool library): reported
    /// once per (process, library, thread count).
    pub fn oversubscribed(
        &mut self,
        candidates: Vec<Scanned>,
        time: &str,
        ctx: &mut Context,
    ) -> Vec<Oversubscribed> {
        let mut out = Vec::new();
        for (pid, comm, total) in candidates {
            let libs = self.census.of(pid, total, &self.shared, &ctx.clock);
            for (library, &live) in libs.libraries.iter() {
                if remedy::pool_variable(library).is_none() {
                    continue;
                }
                let key = (pid, library.clone());
                if self.oversubscribed.get(&key) == Some(&live) {
                    continue;
                }
                let bytes = key.1.len() + 64;
                let cpu_cg = ctx.procs.cgroup(pid, "cpu");
                let Some(cpus) = oversubscription::cpus_allowed(pid, cpu_cg.as_deref()) else {
                    continue;
                };
                if let Some(mut o) = oversubscription::check(pid, &comm, library, live, cpus, time)
                {
                    o.k8s = ctx.k8s(pid);
                    self.oversubscribed.insert(key, live, bytes);
                    out.push(o);
                }
            }
        }
        out
    }

    /// Live threads per (process, creating library), for the processes
    /// with the most threads (those `keep` accepts), and every live
    /// process scanned, by pid.
    pub fn thread_rows(
        &mut self,
        ctx: &Context,
        keep: impl Fn(u32, &str) -> bool,
    ) -> (Vec<ThreadCount>, Vec<Scanned>) {
        let mut processes: Vec<Scanned> = ctx
            .procs
            .alive()
            .into_iter()
            .filter(|(pid, comm)| keep(*pid, comm))
            .take(THREAD_SCAN_MAX)
            .filter_map(|(pid, comm)| Some((pid, comm, proctable::num_threads(pid)?)))
            .collect();
        processes.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let mut rows = Vec::new();
        for (pid, comm, total) in processes.iter().take(THREAD_ROWS) {
            let libs = self.census.of(*pid, *total, &self.shared, &ctx.clock);
            rows.extend(
                libs.libraries
                    .iter()
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
        (rows, processes)
    }

    /// The dashboard's processes against their limits: the busiest and
    /// the failing ones, read from what the summary has just scanned.
    pub fn limits(
        &mut self,
        scan: &[Scanned],
        summary: &crate::model::Summary,
        ctx: &Context,
    ) -> Vec<ProcessLimits> {
        limits::gather(
            scan,
            &summary.threads,
            &summary.by_process,
            &ctx.procs,
            DASHBOARD_PROCESSES,
            &summary.time,
            &mut self.known_limits,
        )
    }

    /// Whether resident memory is sampled at all.
    pub fn samples_memory(&self) -> bool {
        self.growth.is_some()
    }

    /// One slice of resident-memory sampling; returns how long until the
    /// next one.
    pub fn sample_memory(&mut self, ctx: &Context) -> Duration {
        let Some(h) = self.growth.as_mut() else {
            return Duration::from_secs(3600);
        };
        h.step(&ctx.procs, clock::monotonic_ns());
        h.wait(clock::monotonic_ns())
    }

    /// Once a second: per-process caches whose processes are gone.
    pub fn prune(&mut self) {
        self.census.prune();
    }

    /// Entries each table forgot to stay within its budget, by table.
    pub fn evicted(&self) -> [(&'static str, u64); 4] {
        [
            ("causes", self.causes.evicted),
            ("rlimit_sets", self.nproc_sets.evicted),
            ("oversubscribed", self.oversubscribed.evicted),
            ("oom_victims", self.oom_victims.evicted),
        ]
    }
}

/// Who grew in the window before the kill, the victim among them, and how
/// much the memory cgroup's usage grew.
fn grew_before(h: &RssHistory, e: &mut OomKill, scope: &[&Proc], kill_ns: u64) {
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
        memory::rss_bytes,
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
