//! The exact counters kept in the kernel: failures per (tgid, api, errno)
//! and the health counters (drops, overflow). Summed over CPUs here.
use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use threadtrace_common::{stat, FailureKey, LiveKey};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// (tgid, api, errno) → failures.
    pub failures: BTreeMap<(u32, u32, i32), u64>,
    pub ringbuf_drops: u64,
    pub failures_overflow: u64,
    pub inflight_full: u64,
    /// Failures past their process's detail budget: counted, not captured.
    pub detail_sampled_out: u64,
    /// (tgid, pthread_create's caller) → threads alive that it created
    /// since recording started.
    pub live: BTreeMap<(u32, u64), i64>,
}

pub struct CounterMaps {
    failures: PerCpuHashMap<MapData, FailureKey, u64>,
    stats: PerCpuArray<MapData, u64>,
    live: PerCpuHashMap<MapData, LiveKey, i64>,
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
        let live = ebpf
            .take_map("LIVE_THREADS")
            .ok_or_else(|| missing("LIVE_THREADS"))?;
        Ok(Self {
            failures: PerCpuHashMap::try_from(failures)
                .map_err(|e| super::KernelError::Map("FAILURES", e))?,
            stats: PerCpuArray::try_from(stats).map_err(|e| super::KernelError::Map("STATS", e))?,
            live: PerCpuHashMap::try_from(live)
                .map_err(|e| super::KernelError::Map("LIVE_THREADS", e))?,
        })
    }

    pub fn read(&self) -> Counters {
        let mut c = Counters::default();
        for (key, values) in self.failures.iter().flatten() {
            let n: u64 = values.iter().sum();
            *c.failures
                .entry((key.tgid, key.api, key.errno))
                .or_default() += n;
        }
        let stat = |i: u32| self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        c.ringbuf_drops = stat(stat::RINGBUF_DROPS);
        c.failures_overflow = stat(stat::FAILURES_OVERFLOW);
        c.inflight_full = stat(stat::INFLIGHT_FULL);
        c.detail_sampled_out = stat(stat::DETAIL_SAMPLED_OUT);
        for (key, values) in self.live.iter().flatten() {
            let n: i64 = values.iter().sum();
            if n > 0 {
                c.live.insert((key.tgid, key.caller), n);
            }
        }
        c
    }

    /// Drops the live counts of processes that no longer exist, so that the
    /// map holds only the living.
    pub fn prune_live(&mut self, alive: impl Fn(u32) -> bool) {
        let dead: Vec<LiveKey> = self
            .live
            .keys()
            .flatten()
            .filter(|k| !alive(k.tgid))
            .collect();
        for k in dead {
            let _ = self.live.remove(&k);
        }
    }
}
