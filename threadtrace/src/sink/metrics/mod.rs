//! `record --metrics`: Prometheus counters, a sink beside the console, the
//! trace file and the dashboard. The output stage updates them as records
//! and counter snapshots go by; a thread of its own serves them
//! (`http.rs`), so that a scrape never waits on the collector nor the
//! collector on a scrape.
//!
//! Failure counts are the kernel's exact counts per (process, api, errno).
//! The library and the cause are known for the failures seen in detail:
//! each counts 1 where it belongs as it arrives, and what the kernel
//! counted beyond them (sampled out by --detail-rate, lost by a full ring
//! buffer) is shared among the process's (cause, library) groups as its
//! detailed failures were (`diagnosis::share`), two seconds later, once
//! their detail can no longer be on its way. So the counters add up to
//! the kernel's counts and never go down.
//!
//! Labels are named as cAdvisor names them (`namespace`, `pod`,
//! `container`), empty for host processes, with no `node` label (the
//! scrape adds it) and no pid. Label sets are capped: past the cap, new
//! ones are folded into one `_overflow` series per metric, and counted.
//! A pod's series go a minute after its last process.
pub mod http;
mod process;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info, MetricType},
    registry::{Metric, Registry},
};

use crate::{
    diagnosis::share,
    model::{names, K8s, Outcome, Record, Summary, ThreadCreateFailed},
};

/// The label value of the series that over-the-cap label sets fold into.
pub const OVERFLOW: &str = "_overflow";
/// A pod's series are deleted this long after its last process ended.
pub const POD_GRACE: Duration = Duration::from_secs(60);
/// Processes whose failures are accounted at most: the kernel keeps
/// 16,384 per-process counters; past this, a new process's failures are
/// counted by `threadtrace_failures_without_process_total` only.
const PROCESSES: usize = 65_536;
/// Longest label value: names from files and processes are bounded.
const VALUE_MAX: usize = 128;
/// The kernel's count is shared out this many checkpoints (seconds) late:
/// events reach the output stage well within it.
const LAG: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--metrics-labels: unknown label {0:?} (choose among library, namespace, pod, container)"
    )]
    UnknownLabel(String),
}

/// The optional labels kept (`--metrics-labels`); a dropped one is empty
/// on every series, which Prometheus treats as absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelFilter {
    pub library: bool,
    pub namespace: bool,
    pub pod: bool,
    pub container: bool,
}

impl Default for LabelFilter {
    fn default() -> Self {
        LabelFilter {
            library: true,
            namespace: true,
            pod: true,
            container: true,
        }
    }
}

impl std::str::FromStr for LabelFilter {
    type Err = MetricsError;

    /// A comma-separated list of the labels to keep; empty keeps none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut f = LabelFilter {
            library: false,
            namespace: false,
            pod: false,
            container: false,
        };
        for l in s.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            match l {
                "library" => f.library = true,
                "namespace" => f.namespace = true,
                "pod" => f.pod = true,
                "container" => f.container = true,
                other => return Err(MetricsError::UnknownLabel(other.into())),
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub labels: LabelFilter,
    /// Distinct label sets at most, over every labelled metric.
    pub max_label_sets: usize,
}

type Value = Arc<str>;

fn value(s: &str) -> Value {
    if s.len() <= VALUE_MAX {
        return s.into();
    }
    let mut end = VALUE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].into()
}

fn empty() -> Value {
    "".into()
}

/// Where a process runs, as labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Where {
    namespace: Value,
    pod: Value,
    container: Value,
    /// Not a label: tells when the pod is gone.
    pod_uid: Option<Value>,
}

impl Where {
    fn host() -> Self {
        Where {
            namespace: empty(),
            pod: empty(),
            container: empty(),
            pod_uid: None,
        }
    }

    fn of(k8s: Option<&K8s>, f: LabelFilter) -> Self {
        let Some(k) = k8s else {
            return Where::host();
        };
        let keep = |on: bool, v: &Option<String>| match v {
            Some(v) if on => value(v),
            _ => empty(),
        };
        Where {
            namespace: keep(f.namespace, &k.namespace),
            pod: keep(f.pod, &k.pod),
            container: keep(f.container, &k.container),
            pod_uid: k.pod_uid.as_deref().map(value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    api: Value,
    errno: Value,
    cause: Value,
    library: Value,
    namespace: Value,
    pod: Value,
    container: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OomLabels {
    namespace: Value,
    pod: Value,
    container: Value,
    /// The memory cgroup whose limit was reached, for host processes
    /// (a pod's is named by its labels); empty for a host-wide OOM.
    memory_cgroup: Value,
    pool_worker: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    namespace: Value,
    pod: Value,
    container: Value,
    /// "oom_kill" or the fatal signal.
    reason: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    resource: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StormLabels {
    by: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MetricLabels {
    metric: Value,
}

/// One limit: its kind, what it is the limit of ("uid 65534", a cgroup's
/// path, "host"), and its pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    kind: Value,
    limit: Value,
    namespace: Value,
    pod: Value,
    container: Value,
}

/// The gauges of the limits closest to their maximum.
#[derive(Default)]
struct LimitGauges {
    usage: Family<LimitLabels, Gauge>,
    max: Family<LimitLabels, Gauge>,
    ratio: Family<LimitLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The label sets set last: the others are removed.
    shown: HashSet<LimitLabels>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: Value,
}

/// A series, to delete it with its pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LabelledSeries {
    Failure(FailureLabels),
    Oom(OomLabels),
    Pool(PoolLabels),
}

/// Label sets against the cap.
struct Cap {
    max: usize,
    sets: usize,
    gauge: Gauge,
    folded: Family<MetricLabels, Counter>,
}

impl Cap {
    /// `labels` if its series exists or fits, else the overflow series.
    fn admit<L>(
        &mut self,
        family: &Family<L, Counter>,
        labels: L,
        overflow: L,
        metric: &str,
    ) -> (L, bool)
    where
        L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    {
        if family.get(&labels).is_some() {
            return (labels, false);
        }
        if self.sets < self.max {
            self.sets += 1;
            self.gauge.set(self.sets as i64);
            return (labels, true);
        }
        self.folded
            .get_or_create(&MetricLabels {
                metric: metric.into(),
            })
            .inc();
        (overflow, false)
    }

    fn removed(&mut self, n: usize) {
        self.sets = self.sets.saturating_sub(n);
        self.gauge.set(self.sets as i64);
    }
}

/// One (process, api, errno): the kernel's count against what the
/// counters were given.
#[derive(Default)]
struct Account {
    /// (cause, library) → failures seen in detail.
    groups: Vec<((Value, Value), u64)>,
    detailed: u64,
    /// Given out beyond the detailed ones.
    shared: u64,
    /// The kernel's count at the last LAG checkpoints, newest last.
    counts: [u64; LAG],
}

struct ProcessAccount {
    at: Where,
    accounts: HashMap<(Value, i32), Account>,
}

/// A pod with series: deleted POD_GRACE after none of its UIDs is alive.
#[derive(Default)]
struct PodSeries {
    uids: HashSet<Value>,
    series: HashSet<LabelledSeries>,
    gone_since: Option<Instant>,
}

/// Kernel counters seen at the last checkpoint, for their deltas.
#[derive(Default)]
struct Totals {
    lost: u64,
    sampled_out: u64,
    without_process: u64,
}

pub struct Metrics {
    labels: LabelFilter,
    failures: Family<FailureLabels, Counter>,
    ooms: Family<OomLabels, Counter>,
    pool_lost: Family<PoolLabels, Counter>,
    rlimits: Family<ResourceLabels, Counter>,
    storms: Family<StormLabels, Counter>,
    events_lost: Counter,
    sampled_out: Counter,
    without_process: Counter,
    probes: Gauge,
    limits: LimitGauges,
    cap: Cap,
    processes: HashMap<u32, ProcessAccount>,
    pods: HashMap<(Value, Value), PodSeries>,
    totals: Totals,
}

/// A metric of any type, so that registration is one table.
#[derive(Debug)]
struct AnyMetric(Box<dyn Metric>);

impl EncodeMetric for AnyMetric {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The sink, for the output stage, and the registry, for the server.
pub fn new(cfg: &MetricsConfig) -> (Metrics, Registry) {
    let mut r = Registry::default();
    let m = Metrics {
        labels: cfg.labels,
        failures: Family::default(),
        ooms: Family::default(),
        pool_lost: Family::default(),
        rlimits: Family::default(),
        storms: Family::default(),
        events_lost: Counter::default(),
        sampled_out: Counter::default(),
        without_process: Counter::default(),
        probes: Gauge::default(),
        limits: LimitGauges::default(),
        cap: Cap {
            max: cfg.max_label_sets,
            sets: 0,
            gauge: Gauge::default(),
            folded: Family::default(),
        },
        processes: HashMap::new(),
        pods: HashMap::new(),
        totals: Totals::default(),
    };
    let max: Gauge = Gauge::default();
    max.set(cfg.max_label_sets as i64);
    let build = Info::new(BuildLabels {
        version: env!("CARGO_PKG_VERSION").into(),
    });
    let table: [(&str, &str, Box<dyn Metric>); 16] = [
        (
            "threadtrace_thread_create_failures",
            "Failed pthread_create, clone, clone3, fork and vfork: the kernel's exact counts, by the library that asked and the limit that was hit",
            Box::new(m.failures.clone()),
        ),
        (
            "threadtrace_oom_kills",
            "OOM kills, by pod or memory cgroup, and whether the victim was a pool worker",
            Box::new(m.ooms.clone()),
        ),
        (
            "threadtrace_pool_workers_lost",
            "Pool workers (multiprocessing and the like) killed by the OOM killer or a fatal signal: their pool may wait forever",
            Box::new(m.pool_lost.clone()),
        ),
        (
            "threadtrace_rlimit_changes",
            "setrlimit/prlimit calls that changed a limit, by resource",
            Box::new(m.rlimits.clone()),
        ),
        (
            "threadtrace_storms",
            "Thread-creation failure storms started, by what they are counted per (--storm-by)",
            Box::new(m.storms.clone()),
        ),
        (
            "threadtrace_events_lost",
            "Events the kernel's ring buffer had no room for: their failures are still counted, their detail is lost",
            Box::new(m.events_lost.clone()),
        ),
        (
            "threadtrace_events_sampled_out",
            "Failures past --detail-rate: counted, not captured in detail",
            Box::new(m.sampled_out.clone()),
        ),
        (
            "threadtrace_failures_without_process",
            "Failures the kernel counted with no process (its per-process table was full): not in threadtrace_thread_create_failures_total",
            Box::new(m.without_process.clone()),
        ),
        (
            "threadtrace_probes_attached",
            "Kernel probes attached (tracepoints and fexit)",
            Box::new(m.probes.clone()),
        ),
        (
            "threadtrace_metrics_label_sets",
            "Distinct label sets of the labelled metrics now",
            Box::new(m.cap.gauge.clone()),
        ),
        (
            "threadtrace_metrics_label_sets_max",
            "The cap on label sets (--metrics-max-series): past it, new ones fold into the _overflow series",
            Box::new(max),
        ),
        (
            "threadtrace_metrics_folded",
            "Updates folded into a metric's _overflow series because the label-set cap was reached",
            Box::new(m.cap.folded.clone()),
        ),
        (
            "threadtrace_limit_usage",
            "Use of the limits closest to their maximum (--near): tasks of a user under RLIMIT_NPROC, of a pids cgroup, of the host (threads_max, pid_max); bytes of a memory cgroup",
            Box::new(m.limits.usage.clone()),
        ),
        (
            "threadtrace_limit_max",
            "The maximum of each limit in threadtrace_limit_usage",
            Box::new(m.limits.max.clone()),
        ),
        (
            "threadtrace_limit_usage_ratio",
            "threadtrace_limit_usage over threadtrace_limit_max",
            Box::new(m.limits.ratio.clone()),
        ),
        ("threadtrace_build", "The threadtrace version", Box::new(build)),
    ];
    for (name, help, metric) in table {
        r.register(name, help, AnyMetric(metric));
    }
    r.register_collector(Box::new(process::TracerProcess::new()));
    (m, r)
}

impl Metrics {
    /// A failure seen in detail, storms included.
    pub fn failure(&mut self, e: &ThreadCreateFailed) {
        let at = Where::of(e.k8s.as_ref(), self.labels);
        let cause = value(e.cause.as_ref().map_or("unknown", |c| c.kind.as_str()));
        let library = match (self.labels.library, &e.library) {
            (false, _) => empty(),
            (true, Some(l)) => value(l),
            (true, None) => value("unknown"),
        };
        let api = value(&e.api);
        let full = self.processes.len() >= PROCESSES;
        let p = match self.processes.get_mut(&e.task.pid) {
            Some(p) => p,
            None if full => return,
            None => self.processes.entry(e.task.pid).or_insert(ProcessAccount {
                at: at.clone(),
                accounts: HashMap::new(),
            }),
        };
        p.at = at.clone();
        let a = p.accounts.entry((api.clone(), e.errno)).or_default();
        a.detailed += 1;
        match a
            .groups
            .iter_mut()
            .find(|g| g.0 .0 == cause && g.0 .1 == library)
        {
            Some(g) => g.1 += 1,
            None => a.groups.push(((cause.clone(), library.clone()), 1)),
        }
        let errno = value(&names::errno_name(e.errno));
        self.count_failure(&api, &errno, &cause, &library, &at, 1);
    }

    fn count_failure(
        &mut self,
        api: &Value,
        errno: &Value,
        cause: &Value,
        library: &Value,
        at: &Where,
        n: u64,
    ) {
        let labels = FailureLabels {
            api: api.clone(),
            errno: errno.clone(),
            cause: cause.clone(),
            library: library.clone(),
            namespace: at.namespace.clone(),
            pod: at.pod.clone(),
            container: at.container.clone(),
        };
        let o: Value = OVERFLOW.into();
        let overflow = FailureLabels {
            api: o.clone(),
            errno: o.clone(),
            cause: o.clone(),
            library: o.clone(),
            namespace: o.clone(),
            pod: o.clone(),
            container: o,
        };
        let (labels, new) = self.cap.admit(
            &self.failures,
            labels,
            overflow,
            "threadtrace_thread_create_failures_total",
        );
        self.failures.get_or_create(&labels).inc_by(n);
        if new {
            self.track(at, LabelledSeries::Failure(labels));
        }
    }

    /// Every record but failures (those come by `failure`).
    pub fn record(&mut self, r: &Record) {
        let o: Value = OVERFLOW.into();
        match r {
            Record::Started(s) => {
                self.probes.set(s.probes.len() as i64);
            }
            Record::OomKill(e) => {
                let at = Where::of(e.k8s.as_ref(), self.labels);
                let memory_cgroup = match (&at.pod_uid, &e.memory_cgroup) {
                    (None, Some(cg)) => value(&cg.path),
                    _ => empty(),
                };
                let labels = OomLabels {
                    namespace: at.namespace.clone(),
                    pod: at.pod.clone(),
                    container: at.container.clone(),
                    memory_cgroup,
                    pool_worker: if e.pool.is_some() { "true" } else { "false" }.into(),
                };
                let overflow = OomLabels {
                    namespace: o.clone(),
                    pod: o.clone(),
                    container: o.clone(),
                    memory_cgroup: o.clone(),
                    pool_worker: o.clone(),
                };
                let (labels, new) =
                    self.cap
                        .admit(&self.ooms, labels, overflow, "threadtrace_oom_kills_total");
                self.ooms.get_or_create(&labels).inc();
                if new {
                    self.track(&at, LabelledSeries::Oom(labels));
                }
                if e.pool.is_some() {
                    self.pool_lost(&at, "oom_kill");
                }
            }
            Record::ProcessExit(e) if e.pool.is_some() => {
                let at = Where::of(e.k8s.as_ref(), self.labels);
                self.pool_lost(&at, e.signal.as_deref().unwrap_or("unknown"));
            }
            Record::RlimitChange(e) if e.changed && matches!(e.result, Outcome::Ok(_)) => {
                let labels = ResourceLabels {
                    resource: value(&e.resource),
                };
                let overflow = ResourceLabels { resource: o };
                let (labels, _) = self.cap.admit(
                    &self.rlimits,
                    labels,
                    overflow,
                    "threadtrace_rlimit_changes_total",
                );
                self.rlimits.get_or_create(&labels).inc();
            }
            Record::Storm(s) if s.state == "start" => {
                let by = s.scope.split(' ').next().unwrap_or("");
                self.storms
                    .get_or_create(&StormLabels { by: value(by) })
                    .inc();
            }
            _ => {}
        }
    }

    fn pool_lost(&mut self, at: &Where, reason: &str) {
        let o: Value = OVERFLOW.into();
        let labels = PoolLabels {
            namespace: at.namespace.clone(),
            pod: at.pod.clone(),
            container: at.container.clone(),
            reason: value(reason),
        };
        let overflow = PoolLabels {
            namespace: o.clone(),
            pod: o.clone(),
            container: o.clone(),
            reason: o,
        };
        let (labels, new) = self.cap.admit(
            &self.pool_lost,
            labels,
            overflow,
            "threadtrace_pool_workers_lost_total",
        );
        self.pool_lost.get_or_create(&labels).inc();
        if new {
            self.track(at, LabelledSeries::Pool(labels));
        }
    }

    /// Remembers a pod's series, to delete them with the pod. Only series
    /// with a pod label are the pod's: with `pod` dropped, a series is
    /// shared by every pod of its namespace and container.
    fn track(&mut self, at: &Where, s: LabelledSeries) {
        let Some(uid) = &at.pod_uid else { return };
        if at.pod.is_empty() {
            return;
        }
        let p = self
            .pods
            .entry((at.namespace.clone(), at.pod.clone()))
            .or_default();
        p.uids.insert(uid.clone());
        p.series.insert(s);
    }

    /// Once a second: the kernel's counters. `final_` shares out the rest
    /// at once: nothing more is on its way.
    pub fn second(&mut self, s: &Summary, final_: bool) {
        let mut pending: Vec<(Value, Value, Value, Value, Where, u64)> = Vec::new();
        for row in &s.by_process {
            let Some(p) = self.processes.get_mut(&row.pid) else {
                if self.processes.len() >= PROCESSES {
                    continue;
                }
                // Failures without detail yet: the process is met here.
                self.processes.insert(
                    row.pid,
                    ProcessAccount {
                        at: Where::host(),
                        accounts: HashMap::new(),
                    },
                );
                let p = self.processes.get_mut(&row.pid).expect("inserted");
                let a = p.accounts.entry((value(&row.api), row.errno)).or_default();
                a.counts[LAG - 1] = row.count;
                continue;
            };
            let api = value(&row.api);
            let a = p.accounts.entry((api.clone(), row.errno)).or_default();
            if row.count < a.counts[LAG - 1] {
                // The kernel's entry was removed and made again (a pid
                // reused after a prune): start over.
                *a = Account::default();
            }
            let due = if final_ { row.count } else { a.counts[0] };
            a.counts.rotate_left(1);
            a.counts[LAG - 1] = row.count;
            let excess = due.saturating_sub(a.detailed + a.shared);
            if excess == 0 {
                continue;
            }
            a.shared += excess;
            let errno: Value = value(&row.error);
            if a.groups.is_empty() {
                let unknown = value("unknown");
                let library = if self.labels.library {
                    unknown.clone()
                } else {
                    empty()
                };
                pending.push((api.clone(), errno, unknown, library, p.at.clone(), excess));
                continue;
            }
            // Each group's part of the excess, in proportion to its
            // detailed failures.
            let weights: Vec<u64> = a.groups.iter().map(|g| g.1).collect();
            let parts = share::share(a.detailed + excess, &weights);
            for (g, part) in a.groups.iter().zip(parts) {
                let extra = part.saturating_sub(g.1);
                if extra > 0 {
                    pending.push((
                        api.clone(),
                        errno.clone(),
                        g.0 .0.clone(),
                        g.0 .1.clone(),
                        p.at.clone(),
                        extra,
                    ));
                }
            }
        }
        for (api, errno, cause, library, at, n) in pending {
            self.count_failure(&api, &errno, &cause, &library, &at, n);
        }
        let delta = |now: u64, last: &mut u64| {
            let d = now.saturating_sub(*last);
            *last = now.max(*last);
            d
        };
        self.events_lost
            .inc_by(delta(s.events_lost, &mut self.totals.lost));
        self.sampled_out
            .inc_by(delta(s.events_sampled_out, &mut self.totals.sampled_out));
        self.without_process.inc_by(delta(
            s.failures_without_process,
            &mut self.totals.without_process,
        ));
    }

    /// Once a second: the limits closest to their maximum. Bounded: the
    /// others' series are removed.
    pub fn limits(&mut self, limits: &[crate::model::Headroom]) {
        let mut shown = HashSet::new();
        for l in limits {
            let at = Where::of(l.k8s.as_ref(), self.labels);
            let subject = match (&l.cgroup, l.uid) {
                (Some(cg), _) => cg.clone(),
                (None, Some(uid)) => format!("uid {uid}"),
                _ => "host".to_string(),
            };
            let labels = LimitLabels {
                kind: value(&l.kind),
                limit: value(&subject),
                namespace: at.namespace,
                pod: at.pod,
                container: at.container,
            };
            let g = &self.limits;
            g.usage
                .get_or_create(&labels)
                .set(l.current.min(i64::MAX as u64) as i64);
            g.max
                .get_or_create(&labels)
                .set(l.max.min(i64::MAX as u64) as i64);
            g.ratio.get_or_create(&labels).set(l.ratio);
            shown.insert(labels);
        }
        let g = &mut self.limits;
        for gone in g.shown.difference(&shown) {
            g.usage.remove(gone);
            g.max.remove(gone);
            g.ratio.remove(gone);
        }
        g.shown = shown;
    }

    /// The pods with a live process now: the others' series go after
    /// POD_GRACE.
    pub fn live_pods(&mut self, alive: &HashSet<String>, now: Instant) {
        let mut gone: Vec<(Value, Value)> = Vec::new();
        for (key, p) in self.pods.iter_mut() {
            if p.uids.iter().any(|u| alive.contains(u.as_ref())) {
                p.gone_since = None;
                continue;
            }
            let since = *p.gone_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= POD_GRACE {
                gone.push(key.clone());
            }
        }
        for key in gone {
            let Some(p) = self.pods.remove(&key) else {
                continue;
            };
            let mut n = 0;
            for s in p.series {
                let removed = match &s {
                    LabelledSeries::Failure(l) => self.failures.remove(l),
                    LabelledSeries::Oom(l) => self.ooms.remove(l),
                    LabelledSeries::Pool(l) => self.pool_lost.remove(l),
                };
                n += usize::from(removed);
            }
            self.cap.removed(n);
            log::debug!("metrics: pod {}/{} gone, {n} series deleted", key.0, key.1);
        }
    }
}

#[cfg(test)]
mod tests;
