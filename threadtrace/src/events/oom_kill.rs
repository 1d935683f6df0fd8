//! `oom_kill`: the OOM killer chose a victim. The victim and the task whose
//! allocation triggered the kill are both reported: they often differ.
use serde::{Deserialize, Serialize};
use threadtrace_common::{Event, OomVictim};

use super::{cstr, Context, Task};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Victim {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Option<String>,
    pub exe: Option<String>,
    pub uid: Option<u32>,
    /// anon + file + shmem resident memory when it was chosen.
    pub rss_bytes: Option<u64>,
    pub anon_rss_bytes: Option<u64>,
    pub total_vm_bytes: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub ppid: Option<u32>,
    pub parent_comm: Option<String>,
    /// Memory cgroup directory.
    pub cgroup: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Trigger {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub uid: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct OomKill {
    /// The victim (pid, comm, uid); `tid` is the victim's pid.
    #[serde(flatten)]
    pub task: Task,
    pub victim: Victim,
    pub trigger: Trigger,
    /// The memory cgroup whose limit was reached; null for a global OOM.
    pub memory_cgroup: Option<crate::diagnosis::oom::MemoryCgroup>,
    /// The largest resident processes in that cgroup (or the host) then.
    pub top_holders: Vec<crate::diagnosis::oom::MemHolder>,
    /// The processes of that cgroup (or the host) whose resident memory
    /// grew the most in the window before the kill, most first; the
    /// victim among them when it grew. Empty when nothing was sampled.
    #[serde(default)]
    pub growers: Vec<crate::diagnosis::growth::Grower>,
    /// The victim's own growth in that window; null when not known.
    #[serde(default)]
    pub victim_growth: Option<Box<crate::diagnosis::growth::Grower>>,
    /// Live processes in scope whose growth could not be measured (seen
    /// too briefly, or past the history's process cap).
    #[serde(default)]
    pub growth_unknown: u32,
    /// Set when the victim was a pool worker.
    pub pool: Option<crate::diagnosis::oom::Pool>,
    /// What the kill did beyond the victim (a pool waiting forever).
    pub consequence: Option<String>,
    pub remedy: String,
    /// The victim's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<crate::pods::K8s>,
}

pub fn enrich(e: &Event<OomVictim>, ctx: &mut Context) -> OomKill {
    let p = &e.payload;
    let h = &e.header;
    let pid = p.victim_pid;
    let known = ctx.procs.lookup(pid).cloned();
    let detail = p.has_detail != 0;
    // mark_victim records sizes in kB (its format prints them as %lukB).
    let kb = |n: u64| detail.then_some(n * 1024);
    let comm = match cstr(&p.comm) {
        c if !c.is_empty() => c,
        _ => known.as_ref().map(|k| k.comm.clone()).unwrap_or_default(),
    };
    let uid = if detail && p.uid != u32::MAX {
        Some(p.uid)
    } else {
        known.as_ref().and_then(|k| k.uid)
    };
    let ppid = known.as_ref().map(|k| k.ppid);
    let parent_comm = ppid.and_then(|pp| ctx.procs.lookup(pp).map(|k| k.comm.clone()));
    let trigger = Trigger {
        pid: h.tgid,
        tid: h.tid,
        comm: cstr(&h.comm),
        uid: h.uid,
    };
    let victim = Victim {
        pid,
        comm: comm.clone(),
        cmdline: known
            .as_ref()
            .and_then(|k| k.cmdline.as_deref().map(String::from)),
        exe: known.as_ref().and_then(|k| k.exe.clone()),
        uid,
        rss_bytes: kb(p.anon_rss_kb + p.file_rss_kb + p.shmem_rss_kb),
        anon_rss_bytes: kb(p.anon_rss_kb),
        total_vm_bytes: kb(p.total_vm_kb),
        oom_score_adj: detail.then_some(p.oom_score_adj),
        ppid,
        parent_comm,
        cgroup: ctx.procs.cgroup(pid, "memory"),
    };
    OomKill {
        task: Task {
            time: ctx.clock.rfc3339(h.ktime_ns),
            pid,
            tid: pid,
            comm,
            uid: uid.unwrap_or(u32::MAX),
        },
        victim,
        trigger,
        memory_cgroup: None,
        top_holders: Vec::new(),
        growers: Vec::new(),
        victim_growth: None,
        growth_unknown: 0,
        pool: None,
        consequence: None,
        remedy: String::new(),
        k8s: ctx.k8s(pid),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        events::decode::tests::header,
        proctable::{Proc, ProcTable},
    };
    use threadtrace_common::EventKind;

    /// A kill of `comm[victim]` at 180 MiB in a 256 MiB cgroup, its own
    /// allocation the trigger, nothing else known.
    pub fn kill(victim: u32, comm: &str) -> OomKill {
        OomKill {
            task: Task {
                time: "2026-11-22T03:00:00.000000Z".into(),
                pid: victim,
                tid: victim,
                comm: comm.into(),
                uid: 1000,
            },
            victim: Victim {
                pid: victim,
                comm: comm.into(),
                cmdline: None,
                exe: None,
                uid: Some(1000),
                rss_bytes: Some(180 << 20),
                anon_rss_bytes: None,
                total_vm_bytes: None,
                oom_score_adj: Some(0),
                ppid: None,
                parent_comm: None,
                cgroup: Some("/sys/fs/cgroup/memory/app".into()),
            },
            trigger: Trigger {
                pid: victim,
                tid: victim,
                comm: comm.into(),
                uid: 1000,
            },
            memory_cgroup: Some(crate::diagnosis::oom::MemoryCgroup {
                path: "/sys/fs/cgroup/memory/app".into(),
                limit_bytes: 256 << 20,
                usage_bytes: None,
                grew_bytes: None,
                window_s: None,
            }),
            top_holders: Vec::new(),
            growers: Vec::new(),
            victim_growth: None,
            growth_unknown: 0,
            k8s: None,
            pool: None,
            consequence: None,
            remedy: String::new(),
        }
    }

    #[test]
    fn victim_and_trigger_differ_and_parent_is_named() {
        let mut t = ProcTable::default();
        t.insert(Proc {
            pid: 4_200_000,
            ppid: 4_200_001,
            comm: "python3".into(),
            alive: true,
            ..Default::default()
        });
        t.insert(Proc {
            pid: 4_200_001,
            ppid: 1,
            comm: "supervisord".into(),
            alive: true,
            ..Default::default()
        });
        let mut ctx = Context::new(t);
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"python3");
        let raw = Event {
            header: header(EventKind::OomVictim, 4_200_002, 4_200_003, "java"),
            payload: OomVictim {
                victim_pid: 4_200_000,
                has_detail: 1,
                uid: 1000,
                oom_score_adj: 0,
                total_vm_kb: 100,
                anon_rss_kb: 10,
                file_rss_kb: 1,
                shmem_rss_kb: 1,
                comm,
            },
        };
        let ev = enrich(&raw, &mut ctx);
        assert_eq!(ev.victim.pid, 4_200_000);
        assert_eq!(ev.victim.rss_bytes, Some(12 * 1024));
        assert_eq!(ev.victim.parent_comm.as_deref(), Some("supervisord"));
        assert_eq!(
            (ev.trigger.pid, ev.trigger.comm.as_str()),
            (4_200_002, "java")
        );
        assert_eq!(ev.task.pid, 4_200_000);
    }

    #[test]
    fn old_kernel_gives_only_pid() {
        let mut ctx = Context::new(ProcTable::default());
        let raw = Event {
            header: header(EventKind::OomVictim, 1, 1, "x"),
            payload: OomVictim {
                victim_pid: 4_200_009,
                has_detail: 0,
                uid: 0,
                oom_score_adj: 0,
                total_vm_kb: 0,
                anon_rss_kb: 0,
                file_rss_kb: 0,
                shmem_rss_kb: 0,
                comm: [0; 16],
            },
        };
        let ev = enrich(&raw, &mut ctx);
        assert_eq!(ev.victim.rss_bytes, None);
        assert_eq!(ev.victim.oom_score_adj, None);
    }
}
