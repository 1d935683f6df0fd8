//! Kernel timestamps (CLOCK_MONOTONIC) to wall-clock time.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns, measured at start.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC now, the kernel's bpf_ktime_get_ns clock.
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_BOOTTIME now: the clock process start times (/proc/PID/stat
/// field 22) count from.
pub fn boottime_ns() -> u64 {
    now_ns(libc::CLOCK_BOOTTIME) as u64
}

/// CPU time of the calling thread: what a piece of work cost, without
/// the time the thread waited for a CPU.
pub fn thread_cpu_ns() -> u64 {
    now_ns(libc::CLOCK_THREAD_CPUTIME_ID) as u64
}

impl Clock {
    pub fn new() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (ktime_ns as i128 + self.offset_ns).max(0) as u128;
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }

    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        rfc3339(self.wall(ktime_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_monotonic_to_utc() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(c.rfc3339(1_500_000), "2023-11-14T22:13:20.001500Z");
    }
}
