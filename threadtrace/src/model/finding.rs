//! A finding: what a recording means, for one screen at 3 a.m.: a title,
//! its evidence and one remedy, ranked by impact.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Finding {
    /// thread_create_failed, oom_kill, pool_worker_died, oversubscribed.
    pub kind: String,
    /// Orders findings: a hung pool first, then kills, then failures by
    /// count, then oversubscription.
    pub impact: u64,
    pub title: String,
    pub evidence: Vec<String>,
    pub remedy: String,
}
