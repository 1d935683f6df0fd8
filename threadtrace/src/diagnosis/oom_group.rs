//! Group kills (memory.oom.group). When the victim's memory cgroup, or
//! one above it up to the cgroup whose limit was reached, has
//! memory.oom.group 1, the kernel kills the victim it chose and then
//! every other process of that cgroup, in the same call: one after the
//! other, under the OOM killer's lock (so no other OOM interleaves), from
//! the same allocating task. The sweep takes the chosen victim again; the
//! kernel marks it only once, but a thread of it may be marked anew. This
//! tells the kernel's choice from the processes killed with it, and a
//! second kill of a process from a new one.
use std::{collections::HashSet, path::Path};

use crate::model::{GroupKill, MemoryCgroup};

/// Between two kills of one sweep at most. The kernel sends them back to
/// back, but logs each: a slow console stretches that to milliseconds.
pub const GAP_NS: u64 = 1_000_000_000;
/// Pids remembered per sweep, to know a second kill of one of them.
const KILLED_KEPT: usize = 4096;

/// The sweep under way.
struct Sweep {
    group: GroupKill,
    trigger_tid: u32,
    last_ns: u64,
    killed: HashSet<u32>,
    /// The chosen victim's, for the records of those killed with it.
    memory_cgroup: Option<MemoryCgroup>,
}

/// What a kill is, given the sweep under way.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// No sweep of its cgroup is under way: a kill of its own, which the
    /// kernel chose (and which may start a sweep).
    New,
    /// Killed with its cgroup, not chosen: what its record gets.
    WithGroup {
        group: GroupKill,
        memory_cgroup: Option<MemoryCgroup>,
    },
    /// Already killed in this sweep (the chosen victim, taken again): not
    /// a new kill.
    Again,
}

/// The group kill under way, if any: one at a time, as the kernel does.
#[derive(Default)]
pub struct GroupKills {
    sweep: Option<Sweep>,
}

impl GroupKills {
    /// A kill of `victim` (in memory cgroup `victim_cgroup`, when known)
    /// by the allocation of `trigger_tid` at `at_ns` (CLOCK_MONOTONIC):
    /// part of the sweep under way when it comes from the same
    /// allocation, within GAP_NS of the sweep's last kill, in its cgroup.
    pub fn seen(
        &mut self,
        victim: u32,
        victim_cgroup: Option<&str>,
        trigger_tid: u32,
        at_ns: u64,
    ) -> Seen {
        let Some(s) = self.sweep.as_mut() else {
            return Seen::New;
        };
        let in_group = victim_cgroup.is_none_or(|c| Path::new(c).starts_with(&s.group.cgroup));
        if s.trigger_tid != trigger_tid || at_ns.saturating_sub(s.last_ns) > GAP_NS || !in_group {
            self.sweep = None;
            return Seen::New;
        }
        s.last_ns = s.last_ns.max(at_ns);
        if victim == s.group.chosen || s.killed.contains(&victim) {
            return Seen::Again;
        }
        if s.killed.len() < KILLED_KEPT {
            s.killed.insert(victim);
        }
        Seen::WithGroup {
            group: GroupKill {
                role: GroupKill::KILLED_WITH_GROUP.into(),
                ..s.group.clone()
            },
            memory_cgroup: s.memory_cgroup.clone(),
        }
    }

    /// The kernel chose `victim` (`comm`), and memory.oom.group is set on
    /// `cgroup`: the kills that follow from the same allocation in that
    /// cgroup are the group's. Returns what the chosen victim's record
    /// gets.
    pub fn chosen(
        &mut self,
        cgroup: String,
        victim: u32,
        comm: &str,
        trigger_tid: u32,
        at_ns: u64,
        memory_cgroup: Option<MemoryCgroup>,
    ) -> GroupKill {
        let group = GroupKill {
            cgroup,
            chosen: victim,
            chosen_comm: comm.to_string(),
            role: GroupKill::CHOSEN.into(),
        };
        self.sweep = Some(Sweep {
            group: group.clone(),
            trigger_tid,
            last_ns: at_ns,
            killed: HashSet::new(),
            memory_cgroup,
        });
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CG: &str = "/sys/fs/cgroup/app";
    const MS: u64 = 1_000_000;

    fn role(s: &Seen) -> (&str, u32) {
        match s {
            Seen::WithGroup { group, .. } => (group.role.as_str(), group.chosen),
            Seen::New => ("new", 0),
            Seen::Again => ("again", 0),
        }
    }

    /// The shape seen on Debian's 6.1: python3[692] chosen, then
    /// sleep[689] and sleep[690] from the same allocation, then
    /// python3[692] again (a thread of it, named as its process).
    #[test]
    fn the_chosen_victim_then_its_group_then_the_victim_again() {
        let mut g = GroupKills::default();
        assert_eq!(g.seen(692, Some(CG), 692, 100 * MS), Seen::New);
        let mine = g.chosen(CG.into(), 692, "python3", 692, 100 * MS, None);
        assert_eq!((mine.role.as_str(), mine.chosen), ("chosen", 692));
        let s = g.seen(689, Some(CG), 692, 103 * MS);
        assert_eq!(role(&s), ("killed_with_group", 692));
        let Seen::WithGroup { group, .. } = &s else {
            unreachable!()
        };
        assert_eq!(
            (group.cgroup.as_str(), group.chosen_comm.as_str()),
            (CG, "python3")
        );
        // A process of a cgroup below the group's is the group's too.
        let below = format!("{CG}/worker");
        assert_eq!(
            role(&g.seen(690, Some(&below), 692, 111 * MS)),
            ("killed_with_group", 692)
        );
        assert_eq!(g.seen(692, Some(CG), 692, 115 * MS), Seen::Again);
        assert_eq!(g.seen(689, Some(CG), 692, 116 * MS), Seen::Again);
    }

    #[test]
    fn another_allocation_another_cgroup_or_later_is_a_kill_of_its_own() {
        let mut g = GroupKills::default();
        g.chosen(CG.into(), 10, "a", 7, 0, None);
        // Another allocating task: another OOM.
        assert_eq!(g.seen(11, Some(CG), 8, MS), Seen::New);
        g.chosen(CG.into(), 10, "a", 7, 0, None);
        // Outside the group's cgroup (a sibling whose name begins the same).
        assert_eq!(g.seen(11, Some("/sys/fs/cgroup/app2"), 7, MS), Seen::New);
        g.chosen(CG.into(), 10, "a", 7, 0, None);
        // Long after the sweep's last kill.
        assert_eq!(g.seen(11, Some(CG), 7, GAP_NS + MS), Seen::New);
        // And once a kill has ended the sweep, the chosen one is new again.
        assert_eq!(g.seen(10, Some(CG), 7, GAP_NS + 2 * MS), Seen::New);
        // No memory.oom.group: no sweep at all.
        let mut none = GroupKills::default();
        assert_eq!(none.seen(11, Some(CG), 7, MS), Seen::New);
    }

    /// A process whose cgroup was not known is taken as the group's when
    /// the allocation and the time say so.
    #[test]
    fn an_unknown_cgroup_goes_by_the_allocation_and_the_time() {
        let mut g = GroupKills::default();
        g.chosen(CG.into(), 10, "a", 7, 0, None);
        assert_eq!(role(&g.seen(11, None, 7, MS)), ("killed_with_group", 10));
    }
}
