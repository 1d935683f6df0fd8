//! `rlimit_change` from the kernel's record of a setrlimit or prlimit64:
//! whose limit, from what to what (the old value read in the kernel).
use threadtrace_common::{Event, Rlimit, RlimitApi, RlimitChange as RawChange};

use super::Context;
use crate::model::{names, Limit, Limits, Outcome, RlimitChange};

fn limits(r: Rlimit) -> Limits {
    Limits {
        soft: Limit::from_raw(r.soft),
        hard: Limit::from_raw(r.hard),
    }
}

pub fn enrich(e: &Event<RawChange>, ctx: &mut Context) -> RlimitChange {
    let p = &e.payload;
    let target_pid = if p.target_pid == 0 {
        e.header.tgid
    } else {
        p.target_pid as u32
    };
    let target_comm = ctx.procs.lookup(target_pid).map(|p| p.comm.clone());
    let new: Option<Limits> = (p.has_new != 0).then(|| limits(p.new));
    let old: Option<Limits> = (p.has_old != 0).then(|| limits(p.old));
    RlimitChange {
        changed: p.result != 0 || old.is_none() || new != old,
        task: ctx.task(&e.header),
        api: if p.api == RlimitApi::Setrlimit as u32 {
            "setrlimit"
        } else {
            "prlimit64"
        }
        .into(),
        resource: names::resource_name(p.resource),
        target_pid,
        target_comm,
        new,
        old,
        result: if p.result == 0 {
            Outcome::Ok(0)
        } else {
            Outcome::Err(names::errno_name(-p.result))
        },
        k8s: ctx.k8s(e.header.tgid),
    }
}
