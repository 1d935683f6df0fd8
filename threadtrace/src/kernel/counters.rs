//! The exact counters kept in the kernel: failures per (tgid, api, errno,
//! call site) and the health counters (drops, overflow). Summed over CPUs
//! here.
use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use threadtrace_common::{stat, Api, FailureKey, RecentFailure};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// (tgid, api, errno) → failures, for the calls that are task creation
    /// whatever their caller: pthread_create, clone, clone3, fork, vfork.
    pub failures: BTreeMap<(u32, u32, i32), u64>,
    /// (tgid, api, errno, site) → failures of mmap/mprotect calls that may
    /// be a thread's stack: they count as pthread_create failures when
    /// their site is inside pthread_create, which the collector decides.
    pub stack_setup: BTreeMap<(u32, u32, i32, u64), u64>,
    pub ringbuf_drops: u64,
    pub failures_overflow: u64,
    /// Failures past their process's detail budget: counted, not captured.
    pub detail_sampled_out: u64,
}

pub struct CounterMaps {
    failures: PerCpuHashMap<MapData, FailureKey, u64>,
    /// Each CPU's last key and its failures not yet in `failures`.
    recent: PerCpuArray<MapData, RecentFailure>,
    stats: PerCpuArray<MapData, u64>,
}

impl CounterMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, super::KernelError> {
        let missing = |n: &'static str| {
            super::KernelError::Map(n, aya::maps::MapError::InvalidName { name: n.into() })
        };
        let failures = ebpf
            .take_map("FAILURES")
            .ok_or_else(|| missing("FAILURES"))?;
        let stats = ebpf.take_map("STATS").ok_or_else(|| missing("STATS"))?;
        let recent = ebpf
            .take_map("RECENT_FAILURE")
            .ok_or_else(|| missing("RECENT_FAILURE"))?;
        Ok(Self {
            recent: PerCpuArray::try_from(recent)
                .map_err(|e| super::KernelError::Map("RECENT_FAILURE", e))?,
            failures: PerCpuHashMap::try_from(failures)
                .map_err(|e| super::KernelError::Map("FAILURES", e))?,
            stats: PerCpuArray::try_from(stats).map_err(|e| super::KernelError::Map("STATS", e))?,
        })
    }

    pub fn read(&self) -> Counters {
        let mut c = Counters::default();
        let recent = self
            .recent
            .get(&0, 0)
            .map(|v| {
                v.iter()
                    .filter(|r| r.pending > 0)
                    .map(|r| (r.key, r.pending))
                    .collect()
            })
            .unwrap_or_else(|_| Vec::new());
        let table = self
            .failures
            .iter()
            .flatten()
            .map(|(k, v)| (k, v.iter().sum::<u64>()));
        for (key, n) in table.chain(recent) {
            if Api::from_u32(key.api).is_some_and(Api::is_stack_setup) {
                *c.stack_setup
                    .entry((key.tgid, key.api, key.errno, key.site))
                    .or_default() += n;
            } else {
                *c.failures
                    .entry((key.tgid, key.api, key.errno))
                    .or_default() += n;
            }
        }
        let stat = |i: u32| self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        c.ringbuf_drops = stat(stat::RINGBUF_DROPS);
        c.failures_overflow = stat(stat::FAILURES_OVERFLOW);
        c.detail_sampled_out = stat(stat::DETAIL_SAMPLED_OUT);
        c
    }
}
