//! What a trace file shows on a timeline, whatever the format it is drawn
//! in: one track per process, the moments that matter on it (failures, OOM
//! kills, limit changes, oversubscription), storms as spans, and live
//! threads per creating library as counters. Chrome JSON and Perfetto
//! protobuf are two renderings of this one model, so they carry the same
//! content.
use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::{
    model::{
        Limits, OomKill, Oversubscribed, Record, RlimitChange, Storm, Task, ThreadCreateFailed,
    },
    tracefile::reader::Item,
    words::growth::{grew, sentence, verdict, GrowthVerdict},
};

/// Frames of a failure's stack kept in its args.
const STACK_FRAMES: usize = 16;

/// A moment on a process's track.
#[derive(Debug, Clone, PartialEq)]
pub struct Instant {
    pub pid: u32,
    pub tid: u32,
    pub ts_us: u64,
    pub name: String,
    /// "failure", "oom", "rlimit", "oversubscribed": Perfetto's category.
    pub category: &'static str,
    pub args: Map<String, Value>,
}

/// Live threads of one process at one time, per creating library.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    pub pid: u32,
    pub ts_us: u64,
    pub live: BTreeMap<String, i64>,
}

/// A span on a process's track: a storm, from its start to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub pid: u32,
    pub ts_us: u64,
    pub dur_us: u64,
    pub name: String,
    pub args: Map<String, Value>,
}

#[derive(Debug, Default)]
pub struct Timeline {
    /// Track names: "comm [pid]".
    pub processes: BTreeMap<u32, String>,
    pub instants: Vec<Instant>,
    pub counters: Vec<Counter>,
    pub spans: Vec<Span>,
}

/// Microseconds since the epoch from an RFC 3339 time.
pub fn micros(time: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(time).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros() as u64)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Timeline {
    pub fn add(&mut self, item: Item) {
        match item {
            Item::Event(v) => {
                if let Ok(r) = serde_json::from_value::<Record>(v) {
                    self.add_record(&r);
                }
            }
            Item::Counters(v) => self.add_counters(&v),
            Item::Processes(v) => {
                for p in v["processes"].as_array().into_iter().flatten() {
                    if let (Some(pid), Some(comm)) = (p["pid"].as_u64(), p["comm"].as_str()) {
                        self.name(pid as u32, comm);
                    }
                }
            }
            Item::Header(_) => {}
        }
    }

    /// A process keeps the name it had first: its track does not jump when
    /// a thread renames itself.
    fn name(&mut self, pid: u32, comm: &str) {
        self.processes
            .entry(pid)
            .or_insert_with(|| format!("{comm} [{pid}]"));
    }

    fn instant(&mut self, category: &'static str, task: &Task, name: String, args: Value) {
        let Some(ts_us) = micros(&task.time) else {
            return;
        };
        self.name(task.pid, &task.comm);
        self.instants.push(Instant {
            pid: task.pid,
            tid: task.tid,
            ts_us,
            name,
            category,
            args: object(args),
        });
    }

    pub fn add_record(&mut self, r: &Record) {
        match r {
            Record::ThreadCreateFailed(e) => self.failure(e),
            Record::OomKill(k) => self.oom_kill(k),
            Record::RlimitChange(e) if e.changed => self.rlimit_change(e),
            Record::Oversubscribed(o) => self.oversubscribed(o),
            Record::Storm(s) if s.state == "end" => self.storm(s),
            Record::ProcessExec(e) => {
                // The name after exec is the one people know the process by.
                self.processes
                    .insert(e.task.pid, format!("{} [{}]", e.task.comm, e.task.pid));
            }
            _ => {}
        }
    }

    fn failure(&mut self, e: &ThreadCreateFailed) {
        let who = e.library.clone().unwrap_or_else(|| "unknown".into());
        let stack: Vec<String> = e
            .stack
            .iter()
            .take(STACK_FRAMES)
            .map(|f| {
                format!(
                    "{} ({})",
                    f.symbol.as_deref().unwrap_or("?"),
                    f.module.as_deref().unwrap_or("?")
                )
            })
            .collect();
        self.instant(
            "failure",
            &e.task,
            format!("{} {} ({who})", e.api, e.error),
            json!({
                "library": e.library, "symbol": e.symbol, "module": e.module,
                "syscall": e.syscall, "uid": e.task.uid, "cgroup": e.cgroup,
                "cause": e.cause.as_ref().map(|c| c.kind.clone()),
                "detail": e.cause.as_ref().map(|c| c.detail.clone()),
                "remedy": e.cause.as_ref().map(|c| c.remedy.clone()),
                "stack": stack,
            }),
        );
    }

    /// On the victim's track: that is whose work was lost. And on the
    /// track of the process that grew, when it was not the victim: that is
    /// where the memory went.
    fn oom_kill(&mut self, k: &OomKill) {
        let on_track_of = |pid: u32, comm: &str| Task {
            pid,
            tid: pid,
            comm: comm.to_string(),
            ..k.task.clone()
        };
        let growth = sentence(k);
        let mut args = json!({"rss_bytes": k.victim.rss_bytes, "memory_cgroup": k.memory_cgroup,
               "trigger": k.trigger, "growth": growth, "growers": k.growers,
               "victim_growth": k.victim_growth, "pool": k.pool,
               "consequence": k.consequence, "remedy": k.remedy});
        if let Some(g) = &k.group_kill {
            args["group_kill"] = json!(g);
        }
        self.instant(
            "oom",
            &on_track_of(k.victim.pid, &k.victim.comm),
            format!(
                "OOM kill of {}[{}]{}",
                k.victim.comm,
                k.victim.pid,
                if k.killed_with_group() {
                    " with its memory cgroup (memory.oom.group)"
                } else {
                    ""
                }
            ),
            args,
        );
        if let GrowthVerdict::NotTheGrower(o) = verdict(k) {
            self.instant(
                "oom",
                &on_track_of(o.pid, &o.comm),
                format!(
                    "{} before the OOM kill of {}[{}]",
                    grew(o),
                    k.victim.comm,
                    k.victim.pid
                ),
                json!({"grower": o, "victim_pid": k.victim.pid, "growth": growth,
                       "remedy": k.remedy}),
            );
        }
    }

    fn rlimit_change(&mut self, e: &RlimitChange) {
        let lim = |l: &Option<Limits>| l.as_ref().map(|l| format!("{}/{}", l.soft, l.hard));
        self.instant(
            "rlimit",
            &e.task,
            format!("{} set to {}", e.resource, lim(&e.new).unwrap_or_default()),
            json!({"resource": e.resource, "target_pid": e.target_pid,
                   "target_comm": e.target_comm, "old": lim(&e.old), "new": lim(&e.new),
                   "api": e.api}),
        );
    }

    fn oversubscribed(&mut self, o: &Oversubscribed) {
        let task = Task {
            time: o.time.clone(),
            pid: o.pid,
            tid: o.pid,
            comm: o.comm.clone(),
            uid: 0,
        };
        self.instant(
            "oversubscribed",
            &task,
            format!(
                "{} threads of {} on {} CPUs",
                o.threads, o.library, o.cpus_allowed
            ),
            json!({"library": o.library, "threads": o.threads,
                   "cpus_allowed": o.cpus_allowed, "source": o.source, "remedy": o.remedy}),
        );
    }

    /// A storm that ended, as a span on its first process's track.
    fn storm(&mut self, s: &Storm) {
        let (Some(ts_us), Some(p)) = (micros(&s.started), s.processes.first()) else {
            return;
        };
        self.name(p.pid, &p.comm);
        self.spans.push(Span {
            pid: p.pid,
            ts_us,
            dur_us: (s.duration_s * 1e6) as u64,
            name: format!("storm: {} failures", s.failures),
            args: object(json!({
                "scope": s.scope, "failures": s.failures,
                "peak_rate_per_s": s.peak_rate_per_s, "libraries": s.libraries,
                "causes": s.causes, "remedy": s.remedy,
            })),
        });
    }

    /// Every name and arg escaped by `sanitize`: the viewers draw bidi
    /// overrides and invisible characters as they are.
    pub fn escape_strings(&mut self) {
        use crate::sanitize;
        let text = |s: &mut String| {
            if let std::borrow::Cow::Owned(clean) = sanitize::text(s) {
                *s = clean;
            }
        };
        let args = |m: &mut Map<String, Value>| {
            let mut v = Value::Object(std::mem::take(m));
            sanitize::value(&mut v);
            *m = object(v);
        };
        self.processes.values_mut().for_each(text);
        for i in &mut self.instants {
            text(&mut i.name);
            args(&mut i.args);
        }
        for s in &mut self.spans {
            text(&mut s.name);
            args(&mut s.args);
        }
        for c in &mut self.counters {
            if c.live
                .keys()
                .any(|k| matches!(sanitize::text(k), std::borrow::Cow::Owned(_)))
            {
                c.live = std::mem::take(&mut c.live)
                    .into_iter()
                    .map(|(k, v)| (sanitize::text(&k).into_owned(), v))
                    .collect();
            }
        }
    }

    /// A counters snapshot: live threads per process and library.
    pub fn add_counters(&mut self, summary: &Value) {
        let Some(ts_us) = summary.get("time").and_then(Value::as_str).and_then(micros) else {
            return;
        };
        let mut per: BTreeMap<u32, BTreeMap<String, i64>> = BTreeMap::new();
        for t in summary
            .get("threads")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(pid), Some(lib), Some(live)) =
                (t["pid"].as_u64(), t["library"].as_str(), t["live"].as_i64())
            else {
                continue;
            };
            if let Some(comm) = t["comm"].as_str() {
                self.name(pid as u32, comm);
            }
            per.entry(pid as u32)
                .or_default()
                .insert(lib.to_string(), live);
        }
        self.counters.extend(
            per.into_iter()
                .map(|(pid, live)| Counter { pid, ts_us, live }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_args_are_escaped_for_the_viewers() {
        let mut t = Timeline::default();
        t.add_counters(&json!({"time": "1970-01-01T00:00:01Z", "threads": [
            {"pid": 7, "comm": "\u{1b}]0;PWNED\u{7}", "library": "lib\u{202e}", "live": 3}]}));
        t.instants.push(Instant {
            pid: 7,
            tid: 7,
            ts_us: 1,
            name: "\u{9b}2J".into(),
            category: "failure",
            args: object(json!({"cgroup": "/x\u{2066}", "keys\u{1b}": 1})),
        });
        t.escape_strings();
        assert_eq!(t.processes[&7], r"\x1b]0;PWNED\x07 [7]");
        assert_eq!(t.counters[0].live[r"lib\u{202e}"], 3);
        assert_eq!(t.instants[0].name, r"\u{9b}2J");
        assert_eq!(t.instants[0].args["cgroup"], r"/x\u{2066}");
        assert_eq!(t.instants[0].args[r"keys\x1b"], 1);
    }

    #[test]
    fn rfc3339_to_micros() {
        assert_eq!(micros("1970-01-01T00:00:01.000002Z"), Some(1_000_002));
        assert_eq!(micros("yesterday"), None);
    }

    #[test]
    fn counters_are_grouped_per_process() {
        let mut t = Timeline::default();
        t.add_counters(&json!({"time": "1970-01-01T00:00:01Z", "threads": [
            {"pid": 7, "comm": "a", "library": "libgomp", "live": 3},
            {"pid": 7, "comm": "a", "library": "unattributed", "live": 1},
            {"pid": 8, "comm": "b", "library": "libopenblas", "live": 2}]}));
        assert_eq!(t.counters.len(), 2);
        assert_eq!(t.counters[0].live["libgomp"], 3);
        assert_eq!(t.counters[0].live["unattributed"], 1);
        assert_eq!(t.counters[1].pid, 8);
        assert_eq!(t.processes[&8], "b [8]");
    }
}
