//! `rlimit_change`: setrlimit or prlimit64 set a resource limit.
use serde::{Deserialize, Serialize};
use threadtrace_common::{Event, Rlimit, RlimitApi, RlimitChange as RawChange, RLIM_INFINITY};

use super::{names, Context, Task};

/// A limit value; RLIM_INFINITY is the string "unlimited".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
pub enum Limit {
    Value(u64),
    Unlimited(Unlimited),
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unlimited {
    Unlimited,
}

impl Limit {
    pub fn from_raw(v: u64) -> Self {
        if v == RLIM_INFINITY {
            Limit::Unlimited(Unlimited::Unlimited)
        } else {
            Limit::Value(v)
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Unlimited(_) => f.write_str("unlimited"),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub soft: Limit,
    pub hard: Limit,
}

impl From<Rlimit> for Limits {
    fn from(r: Rlimit) -> Self {
        Limits {
            soft: Limit::from_raw(r.soft),
            hard: Limit::from_raw(r.hard),
        }
    }
}

/// 0, or the errno name of the failure.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Outcome {
    Ok(u8),
    Err(String),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RlimitChange {
    #[serde(flatten)]
    pub task: Task,
    /// "setrlimit" or "prlimit64" (glibc's setrlimit() is prlimit64).
    pub api: String,
    pub resource: String,
    /// The process whose limit changed (the caller itself for pid 0).
    pub target_pid: u32,
    pub target_comm: Option<String>,
    pub new: Option<Limits>,
    /// The limit before the change, when the kernel or the caller's own
    /// limits told us.
    pub old: Option<Limits>,
    pub result: Outcome,
    /// False when a successful call set the value already in force (login
    /// tools re-set every limit): kept in trace files, not printed.
    pub changed: bool,
    /// The process's Kubernetes pod and container; absent outside one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub k8s: Option<crate::pods::K8s>,
}

pub fn enrich(e: &Event<RawChange>, ctx: &mut Context) -> RlimitChange {
    let p = &e.payload;
    let target_pid = if p.target_pid == 0 {
        e.header.tgid
    } else {
        p.target_pid as u32
    };
    let target_comm = ctx.procs.lookup(target_pid).map(|p| p.comm.clone());
    let new: Option<Limits> = (p.has_new != 0).then(|| p.new.into());
    let old: Option<Limits> = (p.has_old != 0).then(|| p.old.into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_is_a_string_and_reads_back() {
        let l = Limits::from(Rlimit {
            soft: 1024,
            hard: RLIM_INFINITY,
        });
        let j = serde_json::to_string(&l).unwrap();
        assert_eq!(j, r#"{"soft":1024,"hard":"unlimited"}"#);
        assert_eq!(serde_json::from_str::<Limits>(&j).unwrap(), l);
        assert_eq!(serde_json::to_string(&Outcome::Ok(0)).unwrap(), "0");
        assert_eq!(
            serde_json::to_string(&Outcome::Err("EPERM".into())).unwrap(),
            r#""EPERM""#
        );
    }
}
