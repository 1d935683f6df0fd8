//! `oom_kill` from the kernel's `mark_victim`: the victim and the task
//! whose allocation triggered the kill (the task the probe ran in), as the
//! process table knows them. Diagnosis adds the rest while the victim is
//! still being killed.
use threadtrace_common::{Event, OomVictim};

use super::{cstr, Context};
use crate::{
    model::{OomKill, Task, Trigger, Victim},
    proctable,
};

pub fn enrich(e: &Event<OomVictim>, ctx: &mut Context) -> OomKill {
    let p = &e.payload;
    let h = &e.header;
    // The kernel names the task it marked, which is a thread of the
    // victim when its main thread had already let go of the memory (a
    // victim killed again by memory.oom.group, a main thread that exited
    // first): the victim is its process.
    let pid = match ctx.procs.get(p.victim_pid) {
        Some(_) => p.victim_pid,
        None => proctable::tgid(p.victim_pid).unwrap_or(p.victim_pid),
    };
    let known = ctx.procs.lookup(pid).cloned();
    let detail = p.has_detail != 0;
    // mark_victim records sizes in kB (its format prints them as %lukB).
    let kb = |n: u64| detail.then_some(n * 1024);
    let comm = match (cstr(&p.comm), &known) {
        // A thread's name is not its process's.
        (_, Some(k)) if pid != p.victim_pid => k.comm.clone(),
        (c, _) if !c.is_empty() => c,
        (_, k) => k.as_ref().map(|k| k.comm.clone()).unwrap_or_default(),
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
        group_kill: None,
        k8s: ctx.k8s(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::decode::tests::header,
        proctable::{Proc, ProcTable},
    };
    use threadtrace_common::EventKind;

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
