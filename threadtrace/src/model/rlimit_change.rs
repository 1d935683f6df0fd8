//! `rlimit_change`: setrlimit or prlimit64 set a resource limit: who
//! changed which limit of whom, from what to what.
use serde::{Deserialize, Serialize};
use threadtrace_common::RLIM_INFINITY;

use super::{K8s, Task};

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
    pub k8s: Option<K8s>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_is_a_string_and_reads_back() {
        let l = Limits {
            soft: Limit::from_raw(1024),
            hard: Limit::from_raw(RLIM_INFINITY),
        };
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
