//! The headroom stage: how close each limit a live process can hit is to
//! its maximum, sampled at a bounded cost, and a `limit_near` record when
//! one crosses a `--near` threshold, before anything fails.
//!
//! Once a second, from the process scan the summary has just made: every
//! user's tasks under the lowest soft RLIMIT_NPROC of its processes (read
//! once per process, at most NPROC_READS a pass), every pids and memory
//! cgroup with a limit on the way up from a process's own, and the host's
//! tasks under threads-max and pid_max. The limits within WATCH_MARGIN of
//! the lowest threshold are then sampled every FAST, cheaply (a few files
//! each), so that a limit climbing ten tasks a second is seen at each
//! threshold and not only after it ran out.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use super::diagnose::Scanned;
use crate::{
    clock,
    diagnosis::{
        headroom::{Crossing, Key, Tracker},
        holders, memory, remedy,
    },
    enrich::Context,
    model::{
        Headroom as Limit, HeadroomCost, Holder, LimitNear, LimitSet, MemHolder, Record,
        ThreadCount,
    },
    pods, proctable,
};

/// How often the limits near a threshold are sampled.
pub const FAST: Duration = Duration::from_millis(100);
/// Limits this far below the lowest threshold are sampled every FAST.
const WATCH_MARGIN: f64 = 0.2;
/// Limits sampled every FAST at most, the closest first.
const WATCHED: usize = 16;
/// /proc/PID/limits read per pass at most (some 50 µs each): a host that
/// starts with 10,000 processes has them all read within a minute.
const NPROC_READS: usize = 200;
/// Cgroups looked at per pass at most.
const CGROUPS: usize = 1024;
/// Processes whose threads are counted again per fast sample of a user.
const USER_PIDS: usize = 256;
/// Holders named per event.
const HOLDERS: usize = 5;
/// v1 reports "no memory limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

/// What is read again on a fast sample.
#[derive(Debug, Clone)]
enum Source {
    /// A user's processes: their threads are summed.
    User(Vec<u32>),
    /// A file holding the current value (pids.current, memory.current).
    File(String),
    /// /proc/loadavg's count of tasks.
    Tasks,
}

#[derive(Debug, Clone)]
struct Watched {
    key: Key,
    source: Source,
    max: u64,
}

pub struct Headroom {
    tracker: Tracker,
    started: Instant,
    /// Soft RLIMIT_NPROC per live process (u64::MAX: unlimited; None:
    /// unreadable), read once; again after a setrlimit of it.
    nproc: HashMap<u32, Option<u64>>,
    /// What each limit was last seen with: the event's details.
    details: HashMap<Key, Limit>,
    watched: Vec<Watched>,
    /// Files and processes read, for the summary's cost figures.
    reads: u64,
    /// Time spent sampling.
    busy: Duration,
}

impl Headroom {
    pub fn new(thresholds: Vec<f64>) -> Self {
        Headroom {
            tracker: Tracker::new(thresholds),
            started: Instant::now(),
            nproc: HashMap::new(),
            details: HashMap::new(),
            watched: Vec::new(),
            reads: 0,
            busy: Duration::ZERO,
        }
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Limits tracked now.
    pub fn tracked(&self) -> usize {
        self.tracker.len()
    }

    /// What it cost so far, for the summary.
    pub fn cost(&self) -> HeadroomCost {
        HeadroomCost {
            limits: self.tracker.len() as u64,
            limits_evicted: self.tracker.evicted,
            processes: self.nproc.len() as u64,
            reads: self.reads,
            busy_s: self.busy.as_secs_f64(),
        }
    }

    /// The `n` limits closest to their maximum, as last sampled.
    pub fn closest(&self, n: usize) -> Vec<Limit> {
        self.tracker
            .closest(n)
            .into_iter()
            .filter_map(|(k, o)| {
                let mut l = self.details.get(&k)?.clone();
                l.current = o.current;
                l.ratio = o.ratio;
                Some(l)
            })
            .collect()
    }

    /// Whether any limit is watched closely.
    pub fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// An RLIMIT_NPROC change: its process's limit is read again.
    pub fn on_record(&mut self, r: &Record) {
        if let Record::RlimitChange(e) = r {
            if e.resource == "RLIMIT_NPROC" {
                self.nproc.remove(&e.target_pid);
            }
        }
    }

    /// The pass over every limit, once a second.
    pub fn second<'s>(
        &mut self,
        scan: &[Scanned],
        rows: &[ThreadCount],
        ctx: &mut Context,
        sets: &dyn Fn(u32) -> Option<&'s LimitSet>,
    ) -> Vec<LimitNear> {
        let t0 = Instant::now();
        let at = self.now();
        let mut samples: Vec<(Key, Limit, Source)> = Vec::new();
        self.users(scan, ctx, &mut samples);
        self.cgroups(scan, ctx, &mut samples);
        host(&mut samples);
        self.reads += samples.len() as u64;
        let mut out = Vec::new();
        let mut near: Vec<(f64, Watched)> = Vec::new();
        let watch_from = self.tracker.lowest() - WATCH_MARGIN;
        for (key, limit, source) in samples {
            if limit.ratio >= watch_from {
                near.push((
                    limit.ratio,
                    Watched {
                        key: key.clone(),
                        source,
                        max: limit.max,
                    },
                ));
            }
            let crossed = self.tracker.observe(&key, at, limit.current, limit.max);
            self.details.insert(key.clone(), limit);
            if let Some(c) = crossed {
                out.push(self.event(&key, c, scan, rows, ctx, sets));
            }
        }
        near.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.watched = near.into_iter().take(WATCHED).map(|(_, w)| w).collect();
        // Gone processes and removed cgroups.
        self.tracker.forget_older(at - 10.0);
        let live: HashSet<u32> = scan.iter().map(|s| s.0).collect();
        self.nproc.retain(|pid, _| live.contains(pid));
        self.details
            .retain(|k, _| self.tracker.outlook(k).is_some());
        self.busy += t0.elapsed();
        out
    }

    /// The limits near a threshold, again, every FAST.
    pub fn fast<'s>(
        &mut self,
        scan: &[Scanned],
        rows: &[ThreadCount],
        ctx: &mut Context,
        sets: &dyn Fn(u32) -> Option<&'s LimitSet>,
    ) -> Vec<LimitNear> {
        let t0 = Instant::now();
        let at = self.now();
        let mut out = Vec::new();
        // Taken for the loop and put back: no copy ten times a second.
        let watched = std::mem::take(&mut self.watched);
        for w in &watched {
            let current = match &w.source {
                Source::User(pids) => pids
                    .iter()
                    .filter_map(|&p| proctable::num_threads(p))
                    .map(|n| n.max(0) as u64)
                    .sum::<u64>(),
                Source::File(path) => match read_u64(Path::new(path)) {
                    Some(v) => v,
                    None => continue,
                },
                Source::Tasks => match tasks() {
                    Some(v) => v,
                    None => continue,
                },
            };
            self.reads += 1;
            if let Some(d) = self.details.get_mut(&w.key) {
                d.current = current;
                d.ratio = current as f64 / w.max.max(1) as f64;
            }
            if let Some(c) = self.tracker.observe(&w.key, at, current, w.max) {
                out.push(self.event(&w.key, c, scan, rows, ctx, sets));
            }
        }
        self.watched = watched;
        self.busy += t0.elapsed();
        out
    }

    /// Each user's tasks (what the kernel counts against RLIMIT_NPROC)
    /// against the lowest soft limit among its processes. Root is exempt.
    fn users(&mut self, scan: &[Scanned], ctx: &Context, out: &mut Vec<(Key, Limit, Source)>) {
        let mut by_uid: BTreeMap<u32, Vec<&Scanned>> = BTreeMap::new();
        for s in scan {
            if let Some(uid) = ctx.procs.get(s.0).and_then(|p| p.uid).filter(|&u| u != 0) {
                by_uid.entry(uid).or_default().push(s);
            }
        }
        let mut budget = NPROC_READS;
        for (uid, procs) in by_uid {
            let tasks: u64 = procs.iter().map(|s| s.2.max(0) as u64).sum();
            let mut lowest: Option<(u64, &Scanned)> = None;
            for s in &procs {
                let soft = match self.nproc.get(&s.0) {
                    Some(v) => *v,
                    None if budget > 0 => {
                        budget -= 1;
                        self.reads += 1;
                        let v = crate::diagnosis::evidence::proc_limit(s.0, "Max processes");
                        self.nproc.insert(s.0, v);
                        v
                    }
                    None => continue,
                };
                if let Some(soft) = soft.filter(|&l| l != u64::MAX) {
                    if lowest.is_none_or(|(l, _)| soft < l) {
                        lowest = Some((soft, s));
                    }
                }
            }
            let Some((max, owner)) = lowest else { continue };
            let mut pids: Vec<&&Scanned> = procs.iter().collect();
            pids.sort_by_key(|s| std::cmp::Reverse(s.2));
            out.push((
                Key {
                    kind: "rlimit_nproc",
                    subject: format!("uid {uid}"),
                },
                Limit {
                    kind: "rlimit_nproc".into(),
                    current: tasks,
                    max,
                    ratio: tasks as f64 / max.max(1) as f64,
                    uid: Some(uid),
                    pid: Some(owner.0),
                    comm: Some(owner.1.clone()),
                    ..Default::default()
                },
                Source::User(pids.iter().take(USER_PIDS).map(|s| s.0).collect()),
            ));
        }
    }

    /// Every pids and memory cgroup with a limit, from each process's own
    /// up to the hierarchy's root: a pod's limit sits above its
    /// containers'.
    fn cgroups(
        &mut self,
        scan: &[Scanned],
        ctx: &mut Context,
        out: &mut Vec<(Key, Limit, Source)>,
    ) {
        // One process per distinct cgroup: thousands of processes share a
        // few, and building each one's path costs more than the reads.
        let mut distinct: HashMap<(&'static str, &str), u32> = HashMap::new();
        for s in scan {
            let Some(p) = ctx.procs.get(s.0) else {
                continue;
            };
            for controller in ["pids", "memory"] {
                if let Some(line) = proctable::cgroup_line(&p.cgroups, controller) {
                    distinct.entry((controller, line)).or_insert(s.0);
                }
            }
        }
        let mut first: Vec<(&'static str, u32)> =
            distinct.into_iter().map(|((c, _), pid)| (c, pid)).collect();
        first.sort_unstable();
        let mut seen: HashSet<String> = HashSet::new();
        for (controller, pid) in first {
            let Some(dir) = ctx.procs.cgroup(pid, controller) else {
                continue;
            };
            let mut dir = std::path::PathBuf::from(dir);
            loop {
                if seen.len() >= CGROUPS || !seen.insert(format!("{controller}:{}", dir.display()))
                {
                    break;
                }
                self.reads += 1;
                let Some((file, current, max)) = cgroup_use(controller, &dir) else {
                    break;
                };
                if let Some(max) = max {
                    let path = dir.display().to_string();
                    // A pod's or a container's limit: named as its
                    // processes' pod.
                    let k8s = pods::cgroup::parse(&path)
                        .is_some()
                        .then(|| ctx.k8s(pid))
                        .flatten();
                    let kind = if controller == "pids" {
                        "cgroup_pids"
                    } else {
                        "memory_cgroup"
                    };
                    out.push((
                        Key {
                            kind,
                            subject: path.clone(),
                        },
                        Limit {
                            kind: kind.into(),
                            current,
                            max,
                            ratio: current as f64 / max.max(1) as f64,
                            cgroup: Some(path),
                            k8s,
                            ..Default::default()
                        },
                        Source::File(file),
                    ));
                }
                if !dir.pop() {
                    break;
                }
            }
        }
    }

    /// The `limit_near` record of a crossing: who holds it, where it came
    /// from, what to do.
    fn event<'s>(
        &mut self,
        key: &Key,
        c: Crossing,
        scan: &[Scanned],
        rows: &[ThreadCount],
        ctx: &mut Context,
        sets: &dyn Fn(u32) -> Option<&'s LimitSet>,
    ) -> LimitNear {
        let mut limit = self.details.get(key).cloned().unwrap_or_default();
        limit.ratio = c.ratio;
        let in_scope = |pid: u32| -> bool {
            match key.kind {
                "rlimit_nproc" => ctx.procs.get(pid).and_then(|p| p.uid) == limit.uid,
                "cgroup_pids" | "memory_cgroup" => {
                    let controller = if key.kind == "cgroup_pids" {
                        "pids"
                    } else {
                        "memory"
                    };
                    ctx.procs
                        .cgroup(pid, controller)
                        .is_some_and(|cg| Path::new(&cg).starts_with(&key.subject))
                }
                _ => true,
            }
        };
        let mut members: Vec<&Scanned> = scan.iter().filter(|s| in_scope(s.0)).collect();
        members.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let mut e = LimitNear {
            time: clock::now_rfc3339(),
            limit,
            threshold: c.threshold,
            rate_per_min: c.rate_per_min,
            exhausted_in_s: c.exhausted_in_s,
            holders: Vec::new(),
            memory_holders: Vec::new(),
            inherited_from: None,
            set_by: None,
            remedy: String::new(),
        };
        if key.kind == "memory_cgroup" {
            let mut held: Vec<MemHolder> = members
                .iter()
                .take(64)
                .filter_map(|s| {
                    Some(MemHolder {
                        pid: s.0,
                        comm: s.1.clone(),
                        rss_bytes: memory::rss_bytes(s.0)?,
                    })
                })
                .collect();
            held.sort_by_key(|h| std::cmp::Reverse(h.rss_bytes));
            held.truncate(HOLDERS);
            e.memory_holders = held;
        } else {
            // Counted now: the scan is up to a second old, and the limit
            // may be climbing ten threads a second.
            let mut held: Vec<Holder> = members
                .iter()
                .take(HOLDERS)
                .map(|s| Holder {
                    pid: s.0,
                    comm: s.1.clone(),
                    threads: proctable::num_threads(s.0).unwrap_or(s.2).max(0) as u64,
                    libraries: libraries(rows, s.0),
                    groups: Vec::new(),
                })
                .collect();
            held.sort_by(|a, b| b.threads.cmp(&a.threads).then(a.pid.cmp(&b.pid)));
            e.holders = held;
        }
        if let Some(pid) = e.limit.pid.filter(|_| key.kind == "rlimit_nproc") {
            e.inherited_from = holders::inherited_from(&mut ctx.procs, pid, e.limit.max);
            e.set_by = holders::set_by(&ctx.procs, sets, pid, e.limit.max);
        }
        e.remedy = remedy::before_limit(&e);
        e
    }
}

/// The libraries that created a process's live threads, most first.
fn libraries(rows: &[ThreadCount], pid: u32) -> Vec<String> {
    let mut libs: Vec<&ThreadCount> = rows.iter().filter(|r| r.pid == pid && r.live > 0).collect();
    libs.sort_by(|a, b| b.live.cmp(&a.live).then(a.library.cmp(&b.library)));
    libs.into_iter().map(|r| r.library.clone()).collect()
}

fn read_u64(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok()
}

/// (file of the current value, current, max) of a cgroup directory; max
/// None when it has no limit; None when it is not a cgroup of that
/// controller (above the hierarchy's root).
fn cgroup_use(controller: &str, dir: &Path) -> Option<(String, u64, Option<u64>)> {
    let (current, max) = match controller {
        "pids" => ("pids.current", "pids.max"),
        _ if dir.join("memory.max").exists() => ("memory.current", "memory.max"),
        _ => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
    };
    let max_text = std::fs::read_to_string(dir.join(max)).ok()?;
    let max = max_text
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&m| m < V1_UNLIMITED);
    let file = dir.join(current);
    let current = match max {
        Some(_) => read_u64(&file)?,
        None => 0,
    };
    Some((file.display().to_string(), current, max))
}

/// Tasks on the host, from /proc/loadavg ("0.00 0.01 0.05 1/234 5678").
fn tasks() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The host's tasks against kernel.threads-max and kernel.pid_max: every
/// task holds a pid.
fn host(out: &mut Vec<(Key, Limit, Source)>) {
    let Some(current) = tasks() else { return };
    for (kind, file) in [
        ("threads_max", "/proc/sys/kernel/threads-max"),
        ("pid_max", "/proc/sys/kernel/pid_max"),
    ] {
        if let Some(max) = read_u64(Path::new(file)) {
            out.push((
                Key {
                    kind,
                    subject: "host".into(),
                },
                Limit {
                    kind: kind.into(),
                    current,
                    max,
                    ratio: current as f64 / max.max(1) as f64,
                    ..Default::default()
                },
                Source::Tasks,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_v1_and_v2() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("pids.current"), "7\n").unwrap();
        std::fs::write(p.join("pids.max"), "40\n").unwrap();
        let (file, current, max) = cgroup_use("pids", p).unwrap();
        assert_eq!((current, max), (7, Some(40)));
        assert!(file.ends_with("pids.current"));
        std::fs::write(p.join("pids.max"), "max\n").unwrap();
        assert_eq!(cgroup_use("pids", p).unwrap().2, None);
        std::fs::write(p.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(p.join("memory.usage_in_bytes"), "5\n").unwrap();
        assert_eq!(cgroup_use("memory", p).unwrap().2, None, "v1 unlimited");
        std::fs::write(p.join("memory.max"), "1000\n").unwrap();
        std::fs::write(p.join("memory.current"), "900\n").unwrap();
        assert_eq!(cgroup_use("memory", p).unwrap().1, 900);
        assert!(cgroup_use("pids", &p.join("nope")).is_none());
        assert!(tasks().unwrap() > 0);
    }
}
