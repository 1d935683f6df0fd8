//! Findings: what the recording means, ranked by impact, each with its
//! evidence and one remedy, for one screen at 3 a.m.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::share;
use crate::{
    model::{Finding, LimitNear, OomKill, Record, Summary, ThreadCreateFailed},
    words::{
        self, bytes,
        growth::{grew, sentence, verdict, GrowthVerdict},
    },
};

type PoolDeaths = (String, Vec<String>, BTreeSet<String>, Option<String>);

#[derive(Default)]
struct FailureTally {
    events: u64,
    /// pid → (comm, failures seen in detail): every process of the group,
    /// up to PROCESSES_KEPT over all groups.
    processes: BTreeMap<u32, (String, u64)>,
    symbol: Option<String>,
    /// The runtime that made the thread, and why it wanted one.
    runtime: Option<String>,
    reason: Option<String>,
    detail: String,
    inherited: Option<String>,
    holders: Option<String>,
    remedy: String,
    /// What attribution could not name, and why (the first such failure).
    attribution_gap: Option<String>,
    /// The pods of its processes (a few).
    pods: BTreeSet<String>,
}

/// Collects what findings need, bounded: groups, not events.
#[derive(Default)]
pub struct Findings {
    /// (cause, library, uid, whether processes were to be created) →
    /// group.
    failures: BTreeMap<GroupKey, FailureTally>,
    /// Processes tracked over all groups.
    processes_kept: usize,
    /// (victim, its finding, where its group's line is in the evidence).
    ooms: Vec<(u32, Finding, Option<usize>)>,
    /// Chosen victim → the processes killed with its cgroup
    /// (memory.oom.group).
    groups: BTreeMap<u32, KilledWith>,
    /// Parent pid → (parent comm, dead workers, signals, consequence).
    pool_deaths: BTreeMap<u32, PoolDeaths>,
    oversubscribed: BTreeMap<(u32, String), Finding>,
    /// (kind, user or cgroup) → the limit's highest crossing.
    near: BTreeMap<(String, String), (f64, Finding)>,
    seen_kills: BTreeSet<u32>,
}

type GroupKey = (String, String, u32, bool);

/// The processes memory.oom.group killed with a chosen victim.
#[derive(Default)]
struct KilledWith {
    cgroup: String,
    chosen_comm: String,
    /// The first KILLED_NAMED of them, as comm[pid].
    named: Vec<String>,
    count: u64,
}

/// Processes killed with a group named in its finding at most.
const KILLED_NAMED: usize = 20;

const KEPT: usize = 64;
/// Processes whose failures are shared out exactly, over all groups.
const PROCESSES_KEPT: usize = 65_536;

/// What the counts hold that no group's detail covers.
#[derive(Default)]
struct Rest {
    share: Share,
    pids: std::collections::HashSet<u32>,
    /// "api error" → failures.
    kinds: BTreeMap<String, u64>,
}

/// A group's exact share of the counts: failures and processes, those
/// seen in detail and those of the same program inferred to belong.
#[derive(Default, Clone, Copy)]
struct Share {
    failures: u64,
    processes: u64,
}

impl Findings {
    pub fn add(&mut self, r: &Record) {
        match r {
            Record::ThreadCreateFailed(e) => self.add_failure(e),
            _ => self.add_other(r),
        }
    }

    pub fn add_failure(&mut self, e: &ThreadCreateFailed) {
        let kind = e
            .cause
            .as_ref()
            .map(|c| c.kind.clone())
            .unwrap_or_else(|| "unknown".into());
        let lib = e.library.clone().unwrap_or_else(|| "unknown code".into());
        let key = (kind, lib, e.task.uid, e.creates_process());
        if self.failures.len() >= KEPT && !self.failures.contains_key(&key) {
            return;
        }
        let g = self.failures.entry(key).or_default();
        g.events += 1;
        if let Some(p) = g.processes.get_mut(&e.task.pid) {
            p.1 += 1;
        } else if self.processes_kept < PROCESSES_KEPT {
            self.processes_kept += 1;
            g.processes.insert(e.task.pid, (e.task.comm.clone(), 1));
        }
        if g.symbol.is_none() {
            g.symbol = e.symbol.clone();
            g.runtime = e.runtime.clone();
            g.reason = e.reason.clone();
        }
        if g.attribution_gap.is_none() {
            g.attribution_gap = e.attribution_gap.clone();
        }
        if let Some(k) = &e.k8s {
            if g.pods.len() < 3 {
                g.pods.insert(words::pod(k));
            }
        }
        if let Some(c) = &e.cause {
            if g.detail.is_empty() {
                g.detail = c.detail.clone();
                g.remedy = c.remedy.clone();
                g.inherited = c.inherited_from.as_ref().map(|a| {
                    format!(
                        "the limit is inherited from {}[{}]{}",
                        a.comm,
                        a.pid,
                        a.started
                            .as_ref()
                            .map(|s| format!(", started {s}"))
                            .unwrap_or_default()
                    )
                });
                if !c.holders.is_empty() {
                    g.holders = Some(format!("held by {}", words::threads_held(&c.holders)));
                }
            }
        }
    }

    fn add_other(&mut self, r: &Record) {
        match r {
            // Killed with its cgroup: a line of the chosen victim's
            // finding, not a finding of its own.
            Record::OomKill(k) if k.killed_with_group() => {
                let Some(g) = &k.group_kill else { return };
                if (self.groups.len() >= KEPT && !self.groups.contains_key(&g.chosen))
                    || !self.seen_kills.insert(k.victim.pid)
                {
                    return;
                }
                let w = self.groups.entry(g.chosen).or_insert_with(|| KilledWith {
                    cgroup: g.cgroup.clone(),
                    chosen_comm: g.chosen_comm.clone(),
                    ..Default::default()
                });
                w.count += 1;
                if w.named.len() < KILLED_NAMED {
                    w.named.push(format!("{}[{}]", k.victim.comm, k.victim.pid));
                }
            }
            Record::OomKill(k)
                if self.ooms.len() < KEPT && self.seen_kills.insert(k.victim.pid) =>
            {
                let (f, group_line) = oom_finding(k);
                self.ooms.push((k.victim.pid, f, group_line));
            }
            Record::ProcessExit(e) if self.pool_deaths.len() < KEPT => {
                if let (Some(p), Some(sig)) = (&e.pool, &e.signal) {
                    let d = self.pool_deaths.entry(p.parent_pid).or_insert_with(|| {
                        (
                            p.parent_comm.clone(),
                            Vec::new(),
                            BTreeSet::new(),
                            e.consequence.clone(),
                        )
                    });
                    if d.1.len() < 20 {
                        d.1.push(format!("{}[{}]", e.task.comm, e.task.pid));
                    }
                    d.2.insert(sig.clone());
                }
            }
            Record::LimitNear(e) => self.add_near(e),
            Record::Oversubscribed(o) if self.oversubscribed.len() < KEPT => {
                self.oversubscribed.insert(
                    (o.pid, o.library.clone()),
                    Finding {
                        kind: "oversubscribed".into(),
                        impact: 1_000 + o.threads,
                        title: format!(
                            "{}[{}]: {} runs {} threads on {} CPUs",
                            o.comm, o.pid, o.library, o.threads, o.cpus_allowed
                        ),
                        evidence: vec![format!("CPUs allowed by its {}", o.source)],
                        remedy: o.remedy.clone(),
                    },
                );
            }
            _ => {}
        }
    }

    /// A limit near its maximum: one finding per limit, at its highest
    /// crossing; ranked below every failure and kill, above
    /// oversubscription.
    fn add_near(&mut self, e: &LimitNear) {
        let l = &e.limit;
        let subject = match (&l.cgroup, l.uid) {
            (Some(cg), _) => cg.clone(),
            (None, Some(uid)) => format!("uid {uid}"),
            _ => String::new(),
        };
        let key = (l.kind.clone(), subject);
        if self.near.get(&key).is_some_and(|(r, _)| *r >= l.ratio)
            || (self.near.len() >= KEPT && !self.near.contains_key(&key))
        {
            return;
        }
        let mut evidence = vec![format!("{}: {}", l.kind, words::headroom::outlook(e))];
        if let Some(a) = &e.inherited_from {
            evidence.push(format!("the limit is inherited from {}[{}]", a.comm, a.pid));
        }
        if let Some(s) = &e.set_by {
            evidence.push(format!(
                "the limit was set by {}[{}] at {}",
                s.comm, s.pid, s.time
            ));
        }
        if !e.holders.is_empty() {
            evidence.push(format!("held by {}", words::threads_held(&e.holders)));
        }
        if !e.memory_holders.is_empty() {
            evidence.push(format!("held by {}", words::memory_held(&e.memory_holders)));
        }
        let finding = Finding {
            kind: "limit_near".into(),
            impact: 2_000 + (l.ratio * 1000.0) as u64,
            title: format!(
                "near a limit ({:.0}%): {}",
                l.ratio * 100.0,
                words::headroom::used(l)
            ),
            evidence,
            remedy: e.remedy.clone(),
        };
        self.near.insert(key, (l.ratio, finding));
    }

    /// Each group's exact failures, from `counts` (the kernel's counts per
    /// process): a process's count is shared among its groups as its
    /// failures seen in detail were; a process seen in no group's detail
    /// goes to the group of a process with the same name (the same
    /// program, failing the same way), else to the rest, with what the
    /// counts do not tie to a process. Without counts, the events.
    /// Returns the shares, in the groups' order, the rest and the total.
    fn shares(&self, counts: Option<&Summary>) -> (Vec<Share>, Rest, u64) {
        let mut shares: Vec<Share> = self
            .failures
            .values()
            .map(|g| Share {
                failures: g.events,
                processes: g.processes.len() as u64,
            })
            .collect();
        let Some(s) = counts else {
            let total = shares.iter().map(|s| s.failures).sum();
            return (shares, Rest::default(), total);
        };
        let mut per_pid: HashMap<u32, (&str, u64)> = HashMap::new();
        for p in &s.by_process {
            let e = per_pid.entry(p.pid).or_insert((p.comm.as_str(), 0));
            e.1 += p.count;
        }
        let mut rest = Rest {
            share: Share {
                failures: s.failures_not_listed + s.failures_without_process,
                processes: s.processes_not_listed,
            },
            ..Default::default()
        };
        let mut groups_of: HashMap<u32, Vec<(usize, u64)>> = HashMap::new();
        let mut group_of_comm: HashMap<&str, usize> = HashMap::new();
        for (i, g) in self.failures.values().enumerate() {
            shares[i].failures = 0;
            for (pid, (comm, detailed)) in &g.processes {
                groups_of.entry(*pid).or_default().push((i, *detailed));
                group_of_comm.entry(comm.as_str()).or_insert(i);
            }
        }
        for (pid, groups) in &groups_of {
            let exact = per_pid.get(pid).map_or(0, |p| p.1);
            let detailed: Vec<u64> = groups.iter().map(|g| g.1).collect();
            for ((i, _), n) in groups.iter().zip(share::exact_by_group(exact, &detailed)) {
                shares[*i].failures += n;
            }
        }
        for (pid, (comm, n)) in &per_pid {
            if groups_of.contains_key(pid) {
                continue;
            }
            match group_of_comm.get(comm) {
                Some(&i) => {
                    shares[i].failures += n;
                    shares[i].processes += 1;
                }
                None => {
                    rest.share.failures += n;
                    rest.share.processes += 1;
                    rest.pids.insert(*pid);
                }
            }
        }
        for p in s.by_process.iter().filter(|p| rest.pids.contains(&p.pid)) {
            *rest
                .kinds
                .entry(format!("{} {}", p.api, p.error))
                .or_default() += p.count;
        }
        let total = (shares.iter().map(|s| s.failures).sum::<u64>() + rest.share.failures)
            .max(s.failures_total);
        (shares, rest, total)
    }

    /// Failures the kernel counted whose detail was never seen (the ring
    /// buffer full, a process beyond what is tracked) and whose program no
    /// other finding covers: counted, so that the findings add up, with
    /// what the counts do say (the api and error) and the cause that the
    /// failures seen in detail nearly all had, as the likely one.
    fn not_seen_in_detail(&self, rest: &Rest, groups: &[Finding], total: u64) -> Finding {
        let mut evidence = Vec::new();
        if !rest.kinds.is_empty() {
            let kinds: Vec<String> = rest
                .kinds
                .iter()
                .map(|(k, n)| format!("{k} {}", words::thousands(*n)))
                .collect();
            evidence.push(format!(
                "the kernel counted them exactly: {}",
                kinds.join(", ")
            ));
        }
        evidence.push(
            "their events were lost (the ring buffer was full) or their processes were gone \
             before they could be named"
                .into(),
        );
        let failures: Vec<&Finding> = groups
            .iter()
            .filter(|f| f.kind == "thread_create_failed")
            .collect();
        let seen: u64 = failures.iter().map(|f| f.impact - 10_000).sum();
        if let Some(top) = failures.iter().max_by_key(|f| f.impact) {
            let share = top.impact - 10_000;
            if seen > 0 && share * 10 >= seen * 9 {
                if let Some(why) = top.evidence.first() {
                    evidence.push(format!(
                        "{}% of the failures seen in detail had one cause, likely theirs too: {why}",
                        share * 100 / seen
                    ));
                }
            }
        }
        Finding {
            kind: "thread_create_failed".into(),
            impact: 10_000 + rest.share.failures,
            title: format!(
                "{} of {} failures{} were counted but not seen in detail: their library is not known",
                words::thousands(rest.share.failures),
                words::thousands(total),
                match rest.share.processes {
                    0 => String::new(),
                    n => format!(", in {},", words::count(n, "process")),
                }
            ),
            evidence,
            remedy: String::new(),
        }
    }

    /// Findings, most important first. `counts` (exact, from the kernel)
    /// replaces event counts, which miss what the ring buffer dropped.
    pub fn ranked(&self, counts: Option<&Summary>) -> Vec<Finding> {
        let mut out: Vec<Finding> = Vec::new();
        for (victim, f, line) in &self.ooms {
            let mut f = f.clone();
            if let (Some(w), Some(at)) = (self.groups.get(victim), *line) {
                f.title.push_str(&format!(
                    "; {} killed with its memory cgroup (memory.oom.group)",
                    words::count(w.count, "process")
                ));
                f.evidence[at] = killed_with(w);
            }
            out.push(f);
        }
        // Kills with a group whose chosen victim was not seen (the
        // recording began in the middle of it, or its record was lost).
        for (chosen, w) in &self.groups {
            if self.ooms.iter().any(|(v, _, l)| v == chosen && l.is_some()) {
                continue;
            }
            out.push(Finding {
                kind: "oom_kill".into(),
                impact: 100_000,
                title: format!(
                    "{} killed with the memory cgroup {} (memory.oom.group), when the OOM killer chose {}[{chosen}]",
                    words::count(w.count, "process"),
                    w.cgroup,
                    w.chosen_comm
                ),
                evidence: vec![killed_with(w)],
                remedy: String::new(),
            });
        }
        for (ppid, (pcomm, workers, signals, consequence)) in &self.pool_deaths {
            out.push(Finding {
                kind: "pool_worker_died".into(),
                impact: 500_000,
                title: format!(
                    "{} worker(s) of {pcomm}[{ppid}] killed by {}: {}",
                    workers.len(),
                    signals.iter().cloned().collect::<Vec<_>>().join(", "),
                    workers.join(", ")
                ),
                evidence: consequence.iter().cloned().collect(),
                remedy: format!(
                    "restart {pcomm}[{ppid}]: its pool will not recover the lost tasks"
                ),
            });
        }
        let (shares, rest, total) = self.shares(counts);
        for (((kind, lib, uid, processes), g), share) in self.failures.iter().zip(shares) {
            let names: Vec<String> = g
                .processes
                .iter()
                .take(3)
                .map(|(pid, (comm, _))| format!("{comm}[{pid}]"))
                .collect();
            let more = match share.processes.saturating_sub(3) {
                0 => String::new(),
                n => format!(" and {} more", words::thousands(n)),
            };
            let who = match &g.symbol {
                Some(s) => format!("{lib} ({s})"),
                None => lib.clone(),
            };
            let who = match &g.runtime {
                Some(r) => format!("{who} via the {} runtime", words::runtime_name(r)),
                None => who,
            };
            let pods = if g.pods.is_empty() {
                String::new()
            } else {
                let list: Vec<&str> = g.pods.iter().map(String::as_str).collect();
                format!(" ({})", list.join("; "))
            };
            let of_total = if share.failures < total {
                format!(
                    " ({} of {} failures{})",
                    words::thousands(share.failures),
                    words::thousands(total),
                    if share.processes > 3 {
                        format!(", in {} processes", words::thousands(share.processes))
                    } else {
                        String::new()
                    }
                )
            } else {
                String::new()
            };
            let mut evidence = vec![format!("{kind}: {}", g.detail)];
            evidence.extend(g.reason.iter().map(|r| format!("wanted: {r}")));
            evidence.extend(g.inherited.iter().cloned());
            evidence.extend(g.holders.iter().cloned());
            evidence.extend(g.attribution_gap.iter().cloned());
            out.push(Finding {
                kind: "thread_create_failed".into(),
                impact: 10_000 + share.failures,
                title: format!(
                    "{} failed for {who} in {}{more}{pods}, uid {uid}{of_total}",
                    words::count(share.failures, words::creation(*processes)),
                    names.join(", ")
                ),
                evidence,
                remedy: g.remedy.clone(),
            });
        }
        if rest.share.failures > 0 {
            out.push(self.not_seen_in_detail(&rest, &out, total));
        }
        out.extend(self.oversubscribed.values().cloned());
        out.extend(self.near.values().map(|(_, f)| f.clone()));
        out.sort_by(|a, b| b.impact.cmp(&a.impact).then(a.title.cmp(&b.title)));
        out
    }
}

/// "killed with its memory cgroup /sys/fs/cgroup/app (memory.oom.group):
/// sleep[689], sleep[690]".
fn killed_with(w: &KilledWith) -> String {
    let more = match w.count.saturating_sub(w.named.len() as u64) {
        0 => String::new(),
        n => format!(" and {} more", words::thousands(n)),
    };
    format!(
        "killed with its memory cgroup {} (memory.oom.group): {}{more}",
        w.cgroup,
        w.named.join(", ")
    )
}

/// An OOM kill: who grew first (the victim is often not the one), then
/// the limit, what memory.oom.group killed with it, what the kill did to
/// a pool, who triggered it, who held the memory. Returns where the
/// group's line is, to name the processes killed with it once known.
fn oom_finding(k: &OomKill) -> (Finding, Option<usize>) {
    let v = &k.victim;
    let mut evidence = Vec::new();
    evidence.extend(sentence(k));
    match &k.memory_cgroup {
        Some(c) => evidence.push(format!(
            "memory limit {} of {} reached{}",
            bytes(c.limit_bytes),
            c.path,
            match (c.grew_bytes, c.window_s) {
                (Some(g), Some(w)) => format!("; its usage grew {} in {w:.0} s", bytes(g)),
                _ => String::new(),
            }
        )),
        None => evidence.push("no memory cgroup limit: the host ran out of memory".into()),
    }
    let group_line = k.group_kill.as_ref().map(|g| {
        evidence.push(format!(
            "memory.oom.group of {} is 1: every other process in it is killed with {}[{}]",
            g.cgroup, v.comm, v.pid
        ));
        evidence.len() - 1
    });
    if let Some(c) = &k.consequence {
        evidence.push(c.clone());
    }
    if k.trigger.pid != v.pid {
        evidence.push(format!(
            "the allocation that triggered it was {}[{}]'s: killed is not guilty",
            k.trigger.comm, k.trigger.pid
        ));
    }
    if !k.top_holders.is_empty() {
        evidence.push(format!(
            "largest holders then: {}",
            words::memory_held(&k.top_holders)
        ));
    }
    let mut title = format!(
        "OOM kill of {}[{}]{}",
        v.comm,
        v.pid,
        v.rss_bytes
            .map(|b| format!(" ({})", bytes(b)))
            .unwrap_or_default()
    );
    if let Some(p) = &k.pool {
        title.push_str(&format!(
            ", a worker of the {} pool of {}[{}]",
            p.kind, p.parent_comm, p.parent_pid
        ));
    }
    if let GrowthVerdict::NotTheGrower(o) = verdict(k) {
        title.push_str(&format!(
            "{} not the process that grew: {}[{}] {}",
            if k.pool.is_some() { ";" } else { "," },
            o.comm,
            o.pid,
            grew(o)
        ));
    }
    let f = Finding {
        kind: "oom_kill".into(),
        impact: if k.pool.is_some() { 1_000_000 } else { 100_000 },
        title,
        evidence,
        remedy: k.remedy.clone(),
    };
    (f, group_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom_finding_of(mut k: OomKill) -> Finding {
        k.remedy = crate::diagnosis::oom::remedy(&k);
        let mut f = Findings::default();
        f.add(&Record::OomKill(k));
        f.ranked(None).remove(0)
    }

    /// Incident 5: the finding says the victim is not the grower, and
    /// aims the remedy at the grower.
    #[test]
    fn a_kill_of_the_largest_names_the_process_that_grew() {
        let f = oom_finding_of(crate::model::fixtures::not_the_grower());
        assert_eq!(
            f.title,
            "OOM kill of python3[100] (180 MiB), not the process that grew: python3[200] grew 150 MiB in 60 s"
        );
        assert_eq!(
            f.evidence[0],
            "killed python3[100] (largest, 180 MiB, grew 0 MiB in 60 s); python3[200] grew 150 MiB in 60 s"
        );
        assert!(
            f.remedy.starts_with("the memory limit of /sys/fs/cgroup/memory/app (256 MiB) was reached; python3[200] grew 150 MiB in 60 s while python3[100] (killed) did not: cut python3[200]'s memory or find its leak"),
            "{}",
            f.remedy
        );
        assert!(f.remedy.contains("`choom -n 500 -p 200`"), "{}", f.remedy);
    }

    /// seeds/002: the pool worker grew and was killed; nothing says it
    /// was not the grower, and the pool's hang stays in the first lines.
    #[test]
    fn a_worker_that_grew_is_not_called_innocent() {
        let mut k = crate::model::fixtures::kill(300, "python3");
        let g = crate::model::Grower {
            pid: 300,
            comm: "python3".into(),
            rss_bytes: 180 << 20,
            grew_bytes: 175 << 20,
            window_s: 2.4,
            started_in_window: true,
            visible_s: Some(1.0),
        };
        k.victim_growth = Some(Box::new(g.clone()));
        k.growers = vec![g];
        k.top_holders = vec![crate::model::MemHolder {
            pid: 297,
            comm: "python3".into(),
            rss_bytes: 12 << 20,
        }];
        k.pool = Some(crate::model::Pool {
            parent_pid: 297,
            parent_comm: "python3".into(),
            parent_cmdline: None,
            siblings_alive: 2,
            kind: "python-multiprocessing".into(),
        });
        k.consequence = Some(
            "python3[297] is a multiprocessing pool: map/map_async/join on it will wait forever"
                .into(),
        );
        let f = oom_finding_of(k);
        assert_eq!(
            f.title,
            "OOM kill of python3[300] (180 MiB), a worker of the python-multiprocessing pool of python3[297]"
        );
        assert_eq!(
            f.evidence[0],
            "killed python3[300] (largest, 180 MiB, grew 175 MiB in 2 s, since it started): it grew the most"
        );
        assert!(f.evidence[2].contains("wait forever"), "{:?}", f.evidence);
        assert!(
            f.remedy.contains("python3[300] grew the most (175 MiB in 2 s, since it started) and was killed: cut its memory or find its leak, or raise the limit; restart python3[297]"),
            "{}",
            f.remedy
        );
        let all = format!("{} {:?} {}", f.title, f.evidence, f.remedy);
        assert!(
            !all.contains("not the process") && !all.contains("did not"),
            "{all}"
        );
    }

    /// Debian 6.1, memory.oom.group 1: python3[692] grew and was chosen;
    /// sleep[689] and sleep[690] were killed with the cgroup. One finding,
    /// the victim's, naming them; none of their own, no pool story.
    #[test]
    fn a_group_kill_is_one_finding_of_the_chosen_victim() {
        const CG: &str = "/sys/fs/cgroup/anchor-oomgroup";
        let group = |role: &str| {
            Some(crate::model::GroupKill {
                cgroup: CG.into(),
                chosen: 692,
                chosen_comm: "python3".into(),
                role: role.into(),
            })
        };
        let mut chosen = crate::model::fixtures::kill(692, "python3");
        chosen.group_kill = group("chosen");
        chosen.remedy = crate::diagnosis::oom::remedy(&chosen);
        let mut f = Findings::default();
        f.add(&Record::OomKill(chosen));
        for pid in [689, 690] {
            let mut k = crate::model::fixtures::kill(pid, "sleep");
            k.victim.rss_bytes = Some(700 << 10);
            k.trigger = crate::model::Trigger {
                pid: 692,
                tid: 692,
                comm: "python3".into(),
                uid: 1000,
            };
            k.group_kill = group("killed_with_group");
            f.add(&Record::OomKill(k));
        }
        // A collateral that made it out twice counts once.
        let mut again = crate::model::fixtures::kill(690, "sleep");
        again.group_kill = group("killed_with_group");
        f.add(&Record::OomKill(again));
        let r = f.ranked(None);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(
            r[0].title,
            "OOM kill of python3[692] (180 MiB); 2 processes killed with its memory cgroup (memory.oom.group)"
        );
        assert!(
            r[0].evidence.contains(&format!(
                "killed with its memory cgroup {CG} (memory.oom.group): sleep[689], sleep[690]"
            )),
            "{:#?}",
            r[0].evidence
        );
        assert!(r[0].remedy.contains("memory.oom.group"), "{}", r[0].remedy);
        let all = format!("{r:?}");
        assert!(
            !all.contains("wait") && !all.contains("sleep[690] with"),
            "{all}"
        );
    }

    /// The chosen victim was not seen: the group's kills still make one
    /// finding, which says who was chosen.
    #[test]
    fn kills_with_a_group_whose_choice_was_not_seen_are_one_finding() {
        let mut f = Findings::default();
        for pid in [689, 690] {
            let mut k = crate::model::fixtures::kill(pid, "sleep");
            k.group_kill = Some(crate::model::GroupKill {
                cgroup: "/sys/fs/cgroup/app".into(),
                chosen: 692,
                chosen_comm: "python3".into(),
                role: "killed_with_group".into(),
            });
            f.add(&Record::OomKill(k));
        }
        let r = f.ranked(None);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert_eq!(
            r[0].title,
            "2 processes killed with the memory cgroup /sys/fs/cgroup/app (memory.oom.group), when the OOM killer chose python3[692]"
        );
    }

    #[test]
    fn a_failure_in_a_pod_names_the_pod() {
        let mut e = crate::model::fixtures::failure(42, "omp", "libgomp", "rlimit_nproc");
        e.k8s = Some(crate::model::K8s {
            namespace: Some("shop".into()),
            pod: Some("cart-1".into()),
            container: Some("app".into()),
            ..Default::default()
        });
        let mut f = Findings::default();
        f.add_failure(&e);
        let r = f.ranked(None);
        assert!(
            r[0].title
                .contains("in omp[42] (pod shop/cart-1, container app), uid 65534"),
            "{}",
            r[0].title
        );
    }
}

#[cfg(test)]
mod unattributed_tests {
    use super::*;

    #[test]
    fn a_failure_of_unknown_code_says_why() {
        let mut e = crate::model::fixtures::failure(7, "python3", "x", "rlimit_nproc");
        e.library = None;
        e.symbol = None;
        e.attribution_gap = Some("the code that asked is not known: the code at 0x7f00 could not be read: /opt/libx.so: the file changed after it was mapped".into());
        let mut f = Findings::default();
        f.add_failure(&e);
        let ranked = f.ranked(None);
        assert!(
            ranked[0]
                .evidence
                .iter()
                .any(|l| l.contains("is not known") && l.contains("the file changed")),
            "{ranked:#?}"
        );
    }
}
