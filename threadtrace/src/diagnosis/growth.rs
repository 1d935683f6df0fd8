//! Who grew before an OOM kill. The OOM killer takes the process with the
//! most memory, which is not always the one whose memory grew: in incident
//! 5 it took a parameter server that had not grown at all while a worker's
//! JVM leaked beside it. This keeps a short history of resident memory per
//! process (and per memory cgroup with a limit), so that at a kill the
//! collector can say who grew the most in the window before it, and how
//! much the victim itself grew.
//!
//! Sampling runs in slices on the collector's thread: a round reads
//! /proc/PID/statm of every process the process table knows, at most
//! `SLICE_READS` files or `SLICE_BUDGET` per slice, `SLICE_GAP` apart, so
//! that draining the ring buffer never waits long; a round starts every
//! interval (rounds of many processes take longer and come back to back).
//! Memory is bounded: `MAX_PROCESSES` histories of `MAX_SAMPLES` samples of
//! 8 bytes, `MAX_CGROUPS` cgroup histories. Past `MAX_PROCESSES`, a new
//! process gets no history: at a kill it is judged by its start time alone
//! (started inside the window: all its memory is growth), else its growth
//! is unknown and counted as such in the event.
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::memory;
use crate::{
    clock,
    model::{Grower, SIGNIFICANT_GROWTH_BYTES},
    proctable::ProcTable,
};

/// Processes with a history at most (about 400 bytes each: 1.6 MiB).
pub const MAX_PROCESSES: usize = 4096;
/// Memory cgroups with a history at most.
const MAX_CGROUPS: usize = 256;
/// Samples per history at most: a window longer than this many intervals
/// keeps samples further apart (the newest is always the latest reading).
const MAX_SAMPLES: usize = 40;
/// Files read per slice at most, and the time a slice may take.
const SLICE_READS: usize = 64;
const SLICE_BUDGET: Duration = Duration::from_millis(1);
/// Pause between the slices of a round.
const SLICE_GAP: Duration = Duration::from_millis(20);
/// Growers named in an `oom_kill` event.
const GROWERS: usize = 5;
/// Processes read again at a kill, the likeliest growers first: bounds
/// the time a kill takes on a host with thousands of processes.
const FRESH_READS: usize = 64;
/// A memory cgroup's limit is looked up again after this many rounds.
const RESOLVE_EVERY: u64 = 15;
/// Samples count memory in these units (u32: up to 16 TiB).
const UNIT: u64 = 4096;
/// Kernel threads remembered as such at most.
const NO_MM_KEPT: usize = 8192;

/// What the history says at a kill.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AtKill {
    /// Most growth first, at most GROWERS, each with some growth.
    pub growers: Vec<Grower>,
    pub victim: Option<Grower>,
    /// Live processes in scope whose growth could not be measured.
    pub unknown: u32,
}

/// A process in the kill's scope, as the process table knows it.
#[derive(Debug, Clone)]
pub struct Member {
    pub pid: u32,
    pub comm: String,
    pub start_ticks: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Milliseconds since the history's origin.
    at_ms: u32,
    /// Resident memory in UNITs.
    units: u32,
}

impl Sample {
    fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }
}

#[derive(Debug, Default)]
struct RssSeries {
    samples: VecDeque<Sample>,
}

impl RssSeries {
    /// Keeps the samples of the last `window_ms`, at least `spacing_ms`
    /// apart: a sample closer than that to the one before the newest
    /// replaces the newest, so that the count stays bounded and the newest
    /// is always the latest reading.
    fn push(&mut self, s: Sample, spacing_ms: u32, window_ms: u32) {
        let n = self.samples.len();
        if n >= 2 && s.at_ms.saturating_sub(self.samples[n - 2].at_ms) < spacing_ms {
            self.samples[n - 1] = s;
        } else {
            if self.samples.capacity() == 0 {
                self.samples.reserve_exact(MAX_SAMPLES);
            }
            self.samples.push_back(s);
        }
        let from = s.at_ms.saturating_sub(window_ms);
        while self.samples.len() > 1 && self.samples[0].at_ms < from
            || self.samples.len() > MAX_SAMPLES
        {
            self.samples.pop_front();
        }
    }

    /// The oldest sample taken from `from_ms` to `to_ms`.
    fn first_between(&self, from_ms: u32, to_ms: u64) -> Option<Sample> {
        self.samples
            .iter()
            .take_while(|s| u64::from(s.at_ms) <= to_ms)
            .find(|s| s.at_ms >= from_ms)
            .copied()
    }

    fn last(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    /// The newest sample taken by `to_ms`, else the oldest after it.
    fn last_until(&self, to_ms: u64) -> Option<Sample> {
        self.samples
            .iter()
            .rev()
            .find(|s| u64::from(s.at_ms) <= to_ms)
            .or(self.samples.front())
            .copied()
    }
}

#[derive(Debug)]
struct Track {
    /// Tells this process from a later one with the same pid.
    start_ticks: Option<u64>,
    series: RssSeries,
    /// The round that last read it: a process no round reads has exited.
    round: u64,
}

/// Process start times (clock ticks since boot) on the monotonic clock the
/// history and the kernel's timestamps use.
#[derive(Debug, Clone, Copy)]
pub struct StartClock {
    /// CLOCK_BOOTTIME − CLOCK_MONOTONIC: the time spent suspended.
    pub suspended_ns: u64,
    pub ns_per_tick: u64,
}

impl StartClock {
    pub fn now() -> Self {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        StartClock {
            suspended_ns: clock::boottime_ns().saturating_sub(clock::monotonic_ns()),
            ns_per_tick: 1_000_000_000 / hz,
        }
    }

    pub fn monotonic_ns(&self, start_ticks: u64) -> u64 {
        (start_ticks * self.ns_per_tick).saturating_sub(self.suspended_ns)
    }
}

#[derive(Debug, Default, PartialEq)]
enum Phase {
    #[default]
    Idle,
    Processes,
    Cgroups,
}

/// Sampling figures: each round's with -vv, each minute's with -v.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    reads: u64,
    slices: u64,
    /// Wall time of the slices: what draining the ring buffer waited.
    busy: Duration,
    longest_slice: Duration,
    /// CPU time of the slices: what sampling cost.
    cpu_ns: u64,
    longest_cpu_ns: u64,
}

impl Tally {
    fn add(&mut self, reads: usize, took: Duration, cpu_ns: u64) {
        self.reads += reads as u64;
        self.slices += 1;
        self.busy += took;
        self.longest_slice = self.longest_slice.max(took);
        self.cpu_ns += cpu_ns;
        self.longest_cpu_ns = self.longest_cpu_ns.max(cpu_ns);
    }
}

#[derive(Debug, Default)]
struct SamplingStats {
    rounds: u64,
    round: Tally,
    minute: Tally,
    warned: bool,
}

/// The history of resident memory: fed by `step`, read by `at_kill`.
#[derive(Debug)]
pub struct RssHistory {
    interval: Duration,
    window_ms: u32,
    /// Samples are kept a quarter of a window longer than the window: a
    /// kill handled late, on a busy host, still finds where its window
    /// started.
    keep_ms: u32,
    spacing_ms: u32,
    /// The monotonic time sample times count from.
    origin_ns: u64,
    procs: HashMap<u32, Track>,
    /// Kernel threads, by (pid, start), with the round that last saw them.
    no_mm: HashMap<(u32, Option<u64>), u64>,
    cgroups: HashMap<String, (RssSeries, u64)>,
    /// Memory cgroup directory → the one whose limit applies, and the
    /// round it was looked up in.
    limited: HashMap<String, (Option<String>, u64)>,
    phase: Phase,
    /// This round's processes and where the round is in them.
    due: Vec<(u32, Option<u64>)>,
    cursor: usize,
    /// Memory cgroup directories of this round's processes, then left to
    /// read once the processes are done.
    dirs: Vec<String>,
    round: u64,
    next_round_ns: u64,
    untracked_now: usize,
    /// Live processes left without a history in the last round (past
    /// MAX_PROCESSES).
    pub untracked: usize,
    stats: SamplingStats,
}

impl RssHistory {
    pub fn new(interval: Duration, window: Duration, now_ns: u64) -> Self {
        let window_ms = window.as_millis().min(u32::MAX as u128 / 4) as u32;
        let interval_ms = interval.as_millis().min(u32::MAX as u128) as u32;
        let keep_ms = window_ms + window_ms / 4;
        RssHistory {
            interval,
            window_ms,
            keep_ms,
            spacing_ms: interval_ms.max(keep_ms / (MAX_SAMPLES as u32 - 2)),
            origin_ns: now_ns,
            procs: HashMap::new(),
            no_mm: HashMap::new(),
            cgroups: HashMap::new(),
            limited: HashMap::new(),
            phase: Phase::Idle,
            due: Vec::new(),
            cursor: 0,
            dirs: Vec::new(),
            round: 0,
            next_round_ns: now_ns,
            untracked_now: 0,
            untracked: 0,
            stats: SamplingStats::default(),
        }
    }

    /// How long until `step` has work to do.
    pub fn wait(&self, now_ns: u64) -> Duration {
        match self.phase {
            Phase::Idle => Duration::from_nanos(self.next_round_ns.saturating_sub(now_ns)),
            _ => SLICE_GAP,
        }
    }

    /// Milliseconds since the origin. Sample times are u32: past 24 days
    /// the origin moves forward, and the samples with it.
    fn ms(&mut self, now_ns: u64) -> u32 {
        let mut ms = now_ns.saturating_sub(self.origin_ns) / 1_000_000;
        if ms > u64::from(u32::MAX / 2) {
            let shift = ms - u64::from(self.keep_ms) - 1000;
            self.origin_ns += shift * 1_000_000;
            let shift = shift as u32;
            let series = self
                .procs
                .values_mut()
                .map(|t| &mut t.series)
                .chain(self.cgroups.values_mut().map(|c| &mut c.0));
            for s in series {
                s.samples.retain(|x| x.at_ms >= shift);
                for x in s.samples.iter_mut() {
                    x.at_ms -= shift;
                }
            }
            ms -= shift as u64;
        }
        ms as u32
    }

    /// Records a reading of a process: the pure half of `step`.
    pub fn note(&mut self, pid: u32, start_ticks: Option<u64>, now_ns: u64, rss: u64) {
        let at_ms = self.ms(now_ns);
        let (spacing, window, round) = (self.spacing_ms, self.keep_ms, self.round);
        let full = self.procs.len() >= MAX_PROCESSES;
        let track = match self.procs.entry(pid) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let t = e.into_mut();
                if t.start_ticks != start_ticks {
                    // The pid was reused: a new process, a new history.
                    t.series = RssSeries::default();
                    t.start_ticks = start_ticks;
                }
                t
            }
            std::collections::hash_map::Entry::Vacant(_) if full => {
                self.untracked_now += 1;
                return;
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Track {
                start_ticks,
                series: RssSeries::default(),
                round,
            }),
        };
        track.round = round;
        let units = (rss / UNIT).min(u64::from(u32::MAX)) as u32;
        track.series.push(Sample { at_ms, units }, spacing, window);
    }

    /// Records a memory cgroup's usage.
    pub fn note_cgroup(&mut self, path: &str, now_ns: u64, usage: u64) {
        let at_ms = self.ms(now_ns);
        let (spacing, window, round) = (self.spacing_ms, self.keep_ms, self.round);
        if !self.cgroups.contains_key(path) && self.cgroups.len() >= MAX_CGROUPS {
            return;
        }
        let c = self.cgroups.entry(path.to_string()).or_default();
        c.1 = round;
        let units = (usage / UNIT).min(u64::from(u32::MAX)) as u32;
        c.0.push(Sample { at_ms, units }, spacing, window);
    }

    /// One slice of sampling; starts a round when one is due.
    pub fn step(&mut self, procs: &ProcTable, now_ns: u64) {
        if self.phase == Phase::Idle {
            if now_ns < self.next_round_ns {
                return;
            }
            self.start_round(procs, now_ns);
        }
        let t0 = Instant::now();
        let cpu0 = clock::thread_cpu_ns();
        let mut reads = 0;
        while reads < SLICE_READS && t0.elapsed() < SLICE_BUDGET {
            match self.phase {
                Phase::Processes if self.cursor < self.due.len() => {
                    let (pid, start) = self.due[self.cursor];
                    self.cursor += 1;
                    reads += self.read_process(procs, pid, start);
                }
                Phase::Processes => {
                    self.phase = Phase::Cgroups;
                    self.dirs.sort_unstable();
                    self.dirs.dedup();
                }
                Phase::Cgroups => match self.dirs.pop() {
                    Some(dir) => reads += self.read_cgroup(&dir),
                    None => {
                        self.end_round();
                        break;
                    }
                },
                Phase::Idle => break,
            }
        }
        let took = t0.elapsed();
        let cpu = clock::thread_cpu_ns().saturating_sub(cpu0);
        self.stats.round.add(reads, took, cpu);
        self.stats.minute.add(reads, took, cpu);
        if self.phase == Phase::Idle {
            self.log_round();
        }
    }

    /// The figures `cargo xtask bench --growth-only` reads (-vv), and once
    /// a minute a summary (-v).
    fn log_round(&mut self) {
        let s = &mut self.stats;
        let r = std::mem::take(&mut s.round);
        log::debug!(
            "memory growth: round of {} reads in {} slices took {} µs ({} µs on CPU), longest slice {} µs ({} µs on CPU)",
            r.reads,
            r.slices,
            r.busy.as_micros(),
            r.cpu_ns / 1000,
            r.longest_slice.as_micros(),
            r.longest_cpu_ns / 1000
        );
        let per_minute = (60_000 / self.interval.as_millis().max(1)).max(1) as u64;
        if s.rounds.is_multiple_of(per_minute) {
            let m = std::mem::take(&mut s.minute);
            log::info!(
                "memory growth: {} processes, {} cgroups; {} reads in {per_minute} rounds took {:?} ({:?} on CPU), longest slice {:?}",
                self.procs.len(),
                self.cgroups.len(),
                m.reads,
                m.busy,
                Duration::from_nanos(m.cpu_ns),
                m.longest_slice
            );
        }
    }

    fn start_round(&mut self, procs: &ProcTable, now_ns: u64) {
        self.round += 1;
        self.due.clear();
        self.due
            .extend(procs.alive_procs().map(|p| (p.pid, p.start_ticks)));
        self.cursor = 0;
        self.dirs.clear();
        self.untracked_now = 0;
        self.phase = Phase::Processes;
        self.next_round_ns = now_ns + self.interval.as_nanos() as u64;
    }

    /// Reads one process; returns the files read.
    fn read_process(&mut self, procs: &ProcTable, pid: u32, start: Option<u64>) -> usize {
        if let Some(seen) = self.no_mm.get_mut(&(pid, start)) {
            *seen = self.round;
            return 0;
        }
        if !self.procs.contains_key(&pid) && self.procs.len() >= MAX_PROCESSES {
            self.untracked_now += 1;
            return 0;
        }
        let round = self.round;
        let track = self.procs.get_mut(&pid).filter(|t| t.start_ticks == start);
        match (memory::statm(pid), track) {
            (Some((size, rss)), _) if size > 0 => {
                self.note(pid, start, clock::monotonic_ns(), rss);
                if self.dirs.len() < MAX_CGROUPS {
                    if let Some(dir) = procs
                        .get(pid)
                        .and_then(|p| procs.mounts.path(&p.cgroups, "memory"))
                    {
                        self.dirs.push(dir);
                    }
                }
            }
            // Gone (or a zombie: no memory left) while the process table
            // still has it alive: its exit has not been handled yet, and
            // may come after a kill still in the ring buffer. Its history
            // stays until the table says it exited.
            (_, Some(t)) => t.round = round,
            (Some(_), None) => {
                if self.no_mm.len() < NO_MM_KEPT {
                    self.no_mm.insert((pid, start), round);
                }
            }
            (None, None) => {}
        }
        1
    }

    /// Reads the usage of the memory cgroup whose limit applies to `dir`;
    /// returns the files read.
    fn read_cgroup(&mut self, dir: &str) -> usize {
        let round = self.round;
        let mut reads = 0;
        let cached = self
            .limited
            .get(dir)
            .filter(|(_, at)| round - at < RESOLVE_EVERY)
            .map(|(p, _)| p.clone());
        let limited = match cached {
            Some(p) => p,
            None => {
                reads += 2;
                let p = memory::memory_cgroup(dir).map(|c| c.path);
                if self.limited.len() < MAX_CGROUPS * 4 {
                    self.limited.insert(dir.to_string(), (p.clone(), round));
                }
                p
            }
        };
        let Some(path) = limited else { return reads };
        if self.cgroups.get(&path).is_some_and(|c| c.1 == round) {
            return reads;
        }
        if let Some(usage) = memory::usage_bytes(&path) {
            self.note_cgroup(&path, clock::monotonic_ns(), usage);
        }
        reads + 1
    }

    /// Forgets processes and cgroups this round did not see.
    fn end_round(&mut self) {
        let round = self.round;
        self.procs.retain(|_, t| t.round == round);
        self.no_mm.retain(|_, r| *r == round);
        // A cgroup is read through its processes: when they all exited
        // at once (a kill), it keeps its history a few rounds longer.
        self.cgroups.retain(|_, c| round - c.1 < 3);
        self.limited
            .retain(|_, (_, at)| round - *at < RESOLVE_EVERY);
        self.untracked = self.untracked_now;
        self.phase = Phase::Idle;
        self.stats.rounds += 1;
        if self.untracked > 0 && !self.stats.warned {
            self.stats.warned = true;
            log::warn!(
                "memory growth: {} processes have no history (more than {MAX_PROCESSES}); at an OOM kill their growth is known only if they started inside the window",
                self.untracked
            );
        }
    }

    /// Growth in the window before a kill at `kill_ns` (the kernel's time
    /// of the kill: samples taken after it, while the collector was
    /// behind, do not count), of the processes
    /// in its scope: those alive at the kill, as the process table knows
    /// them when the kill's event is handled, so a process that exited
    /// before the kill is never a grower. The victim's resident memory is
    /// the kernel's at the kill (`victim_rss`); the others are read now,
    /// the likeliest growers first (`read`: None once exited, and then
    /// their last sample stands).
    pub fn at_kill(
        &self,
        members: &[Member],
        victim: (u32, Option<u64>),
        kill_ns: u64,
        starts: StartClock,
        mut read: impl FnMut(u32) -> Option<u64>,
    ) -> AtKill {
        let (kill_ms, from_ms) = self.window_ms_at(kill_ns);
        let from_ns = kill_ns.saturating_sub(u64::from(self.window_ms) * 1_000_000);
        let mut out = AtKill::default();
        let mut cands = Vec::new();
        for m in members {
            let track = self
                .procs
                .get(&m.pid)
                .filter(|t| t.start_ticks == m.start_ticks);
            let started = m
                .start_ticks
                .map(|t| starts.monotonic_ns(t))
                .filter(|&s| s >= from_ns && s <= kill_ns);
            let first = track.and_then(|t| t.series.first_between(from_ms, kill_ms));
            let (base, base_ns, inside) = match (started, first) {
                (Some(s), _) => (0, s, true),
                (None, Some(f)) => (
                    f.bytes(),
                    self.origin_ns + u64::from(f.at_ms) * 1_000_000,
                    false,
                ),
                (None, None) => {
                    out.unknown += 1;
                    continue;
                }
            };
            // Without a sample, it may have grown any amount: read it.
            let estimate = track
                .and_then(|t| t.series.last())
                .map_or(u64::MAX, |s| s.bytes().saturating_sub(base));
            cands.push(Candidate {
                member: m,
                track,
                base,
                base_ns,
                inside,
                estimate,
            });
        }
        let (victim_pid, victim_rss) = victim;
        let is_victim = |c: &Candidate| c.member.pid == victim_pid;
        cands.sort_by(|a, b| {
            is_victim(b)
                .cmp(&is_victim(a))
                .then(b.estimate.cmp(&a.estimate))
                .then(a.member.pid.cmp(&b.member.pid))
        });
        let mut reads = 0;
        for c in &cands {
            let last = || {
                c.track
                    .and_then(|t| t.series.last_until(kill_ms))
                    .map(|s| s.bytes())
            };
            let rss = if is_victim(c) {
                victim_rss.or_else(last)
            } else if reads < FRESH_READS {
                reads += 1;
                // Gone already: it exited after the kill (its exit comes
                // after the kill in the ring buffer, or it would not be a
                // member), while the collector was behind. Its last
                // sample stands for it.
                read(c.member.pid).or_else(last)
            } else {
                // The rest grew less in the samples than those read.
                break;
            };
            let Some(rss) = rss else { continue };
            let g = c.grower(rss, kill_ns, kill_ms, self.origin_ns);
            if is_victim(c) {
                out.victim = Some(g.clone());
            }
            if g.grew_bytes >= SIGNIFICANT_GROWTH_BYTES {
                out.growers.push(g);
            }
        }
        out.growers
            .sort_by(|a, b| b.grew_bytes.cmp(&a.grew_bytes).then(a.pid.cmp(&b.pid)));
        out.growers.truncate(GROWERS);
        out
    }

    /// How much a memory cgroup grew in the window before a kill at
    /// `kill_ns`, up to `at_kill` bytes: (grew, seconds measured over).
    pub fn cgroup_growth(&self, path: &str, at_kill: u64, kill_ns: u64) -> Option<(u64, f64)> {
        let (kill_ms, from_ms) = self.window_ms_at(kill_ns);
        let first = self.cgroups.get(path)?.0.first_between(from_ms, kill_ms)?;
        Some((
            at_kill.saturating_sub(first.bytes()),
            tenths(kill_ms.saturating_sub(first.at_ms.into()) as f64 / 1e3),
        ))
    }

    /// The last sampled resident memory of a process.
    pub fn latest(&self, pid: u32, start_ticks: Option<u64>) -> Option<u64> {
        let t = self
            .procs
            .get(&pid)
            .filter(|t| t.start_ticks == start_ticks)?;
        Some(t.series.last()?.bytes())
    }

    /// Now and the start of the window, in sample time (ms since origin).
    fn window_ms_at(&self, now_ns: u64) -> (u64, u32) {
        let now_ms = now_ns.saturating_sub(self.origin_ns) / 1_000_000;
        let from_ms = now_ms.saturating_sub(self.window_ms.into());
        (now_ms, from_ms.min(u32::MAX.into()) as u32)
    }
}

/// A process in a kill's scope whose growth can be measured.
struct Candidate<'a> {
    member: &'a Member,
    track: Option<&'a Track>,
    /// Resident memory at the start of the window (0 when it started
    /// inside it), and when that was.
    base: u64,
    base_ns: u64,
    inside: bool,
    /// Growth by the samples alone: who is read again first.
    estimate: u64,
}

impl Candidate<'_> {
    fn grower(&self, rss: u64, now_ns: u64, now_ms: u64, origin_ns: u64) -> Grower {
        let grew = rss.saturating_sub(self.base);
        let quarter = grew.div_ceil(4).max(1);
        let base_ms = self.base_ns.saturating_sub(origin_ns) / 1_000_000;
        let visible_s = self.track.and_then(|t| {
            t.series
                .samples
                .iter()
                .filter(|s| u64::from(s.at_ms) >= base_ms && u64::from(s.at_ms) <= now_ms)
                .find(|s| grew > 0 && s.bytes().saturating_sub(self.base) >= quarter)
                .map(|s| tenths(now_ms.saturating_sub(s.at_ms.into()) as f64 / 1e3))
        });
        Grower {
            pid: self.member.pid,
            comm: self.member.comm.clone(),
            rss_bytes: rss,
            grew_bytes: grew,
            window_s: tenths(now_ns.saturating_sub(self.base_ns) as f64 / 1e9),
            started_in_window: self.inside,
            visible_s,
        }
    }
}

fn tenths(s: f64) -> f64 {
    (s * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MIB: u64 = 1 << 20;
    /// 100 ticks a second, never suspended: tick t is second t/100.
    const STARTS: StartClock = StartClock {
        suspended_ns: 0,
        ns_per_tick: 10_000_000,
    };
    /// The history starts 1,000 s after boot.
    const T0: u64 = 1000 * S;

    fn ticks(at_ns: u64) -> Option<u64> {
        Some(at_ns / 10_000_000)
    }

    fn member(pid: u32, started_ns: u64) -> Member {
        Member {
            pid,
            comm: format!("p{pid}"),
            start_ticks: ticks(started_ns),
        }
    }

    /// A history of 1 s samples over a 10 s window.
    fn history() -> RssHistory {
        RssHistory::new(Duration::from_secs(1), Duration::from_secs(10), T0)
    }

    #[test]
    fn growth_is_measured_from_the_first_sample_inside_the_window() {
        let mut h = history();
        let started = T0 - 100 * S;
        // 1 MiB a second for 20 s: 1..=21 MiB.
        for s in 0..=20 {
            h.note(7, ticks(started), T0 + s * S, (s + 1) * MIB);
        }
        let now = T0 + 20 * S;
        let k = h.at_kill(&[member(7, started)], (1, None), now, STARTS, |_| {
            Some(25 * MIB)
        });
        // The window starts at 10 s, when it had 11 MiB; it has 25 now.
        assert_eq!(k.growers.len(), 1);
        let g = &k.growers[0];
        assert_eq!((g.pid, g.rss_bytes, g.grew_bytes), (7, 25 * MIB, 14 * MIB));
        assert_eq!(g.window_s, 10.0);
        assert!(!g.started_in_window);
        // A quarter of 14 MiB (3.5) showed at 15 MiB, 6 s before the kill.
        assert_eq!(g.visible_s, Some(6.0));
        assert_eq!(k.unknown, 0);
        // Half a second later the sample at 10 s has left the window.
        let later = h.at_kill(
            &[member(7, started)],
            (1, None),
            now + S / 2,
            STARTS,
            |_| Some(25 * MIB),
        );
        assert_eq!(later.growers[0].grew_bytes, 13 * MIB);
        assert_eq!(later.growers[0].window_s, 9.5);
    }

    #[test]
    fn a_process_started_inside_the_window_grew_all_its_memory() {
        let mut h = history();
        let started = T0 + 17 * S;
        h.note(8, ticks(started), T0 + 18 * S, 40 * MIB);
        h.note(8, ticks(started), T0 + 19 * S, 80 * MIB);
        let k = h.at_kill(
            &[member(8, started)],
            (1, None),
            T0 + 20 * S,
            STARTS,
            |_| Some(100 * MIB),
        );
        let g = &k.growers[0];
        assert_eq!(g.grew_bytes, 100 * MIB);
        assert_eq!(g.window_s, 3.0);
        assert!(g.started_in_window);
        assert_eq!(g.visible_s, Some(2.0), "40 MiB of 100 showed at 18 s");
        // Started and never sampled: read at the kill, all of it growth.
        let k = h.at_kill(
            &[member(9, started)],
            (1, None),
            T0 + 20 * S,
            STARTS,
            |_| Some(5 * MIB),
        );
        assert_eq!(k.growers[0].grew_bytes, 5 * MIB);
        assert_eq!(k.growers[0].visible_s, None);
    }

    #[test]
    fn a_process_first_seen_inside_the_window_is_measured_from_then() {
        let mut h = history();
        let started = T0 - 500 * S;
        h.note(9, ticks(started), T0 + 18 * S, 40 * MIB);
        let k = h.at_kill(
            &[member(9, started)],
            (1, None),
            T0 + 20 * S,
            STARTS,
            |_| Some(50 * MIB),
        );
        assert_eq!(k.growers[0].grew_bytes, 10 * MIB);
        assert_eq!(k.growers[0].window_s, 2.0);
        // Never sampled and older than the window: its growth is unknown.
        let k = h.at_kill(
            &[member(10, started)],
            (1, None),
            T0 + 20 * S,
            STARTS,
            |_| Some(50 * MIB),
        );
        assert!(k.growers.is_empty());
        assert_eq!(k.unknown, 1);
    }

    #[test]
    fn a_process_that_exited_before_the_kill_is_never_a_grower() {
        let mut h = history();
        let started = T0 + 15 * S;
        h.note(11, ticks(started), T0 + 16 * S, 900 * MIB);
        h.note(12, ticks(started), T0 + 16 * S, 10 * MIB);
        // 11's exit came before the kill: it is not among the members.
        let k = h.at_kill(
            &[member(12, started)],
            (1, None),
            T0 + 17 * S,
            STARTS,
            |pid| {
                assert_eq!(pid, 12);
                Some(20 * MIB)
            },
        );
        assert_eq!(
            k.growers.iter().map(|g| g.pid).collect::<Vec<_>>(),
            [12],
            "{k:?}"
        );
    }

    #[test]
    fn a_process_gone_by_the_time_the_kill_is_read_keeps_its_last_sample() {
        let mut h = history();
        let started = T0 + 15 * S;
        h.note(12, ticks(started), T0 + 16 * S, 95 * MIB);
        // It exited after the kill, before the collector got to it.
        let k = h.at_kill(
            &[member(12, started)],
            (1, None),
            T0 + 17 * S,
            STARTS,
            |_| None,
        );
        assert_eq!((k.growers[0].pid, k.growers[0].rss_bytes), (12, 95 * MIB));
        // Never sampled and gone: nothing to say.
        let k = h.at_kill(
            &[member(13, started)],
            (1, None),
            T0 + 17 * S,
            STARTS,
            |_| None,
        );
        assert!(k.growers.is_empty());
    }

    /// The collector may handle a kill seconds late (a busy host, a
    /// stopped tracer): what was sampled after the kill does not count.
    #[test]
    fn samples_after_the_kill_do_not_count() {
        let mut h = history();
        let started = T0 - 100 * S;
        for s in 0..=20 {
            h.note(7, ticks(started), T0 + s * S, (s + 1) * MIB);
            h.note_cgroup("/cg", T0 + s * S, (100 + s) * MIB);
        }
        // Killed at 18 s, handled at 20 s, the process gone by then.
        let kill = T0 + 18 * S;
        let k = h.at_kill(&[member(7, started)], (1, None), kill, STARTS, |_| None);
        let g = &k.growers[0];
        // From the sample at 8 s (9 MiB) to the last one by the kill
        // (19 MiB), not the one at 20 s.
        assert_eq!(
            (g.grew_bytes, g.rss_bytes, g.window_s),
            (10 * MIB, 19 * MIB, 10.0)
        );
        assert_eq!(g.visible_s, Some(7.0), "a quarter (2.5 MiB) showed at 11 s");
        assert_eq!(
            h.cgroup_growth("/cg", 200 * MIB, kill),
            Some((92 * MIB, 10.0))
        );
        // A kill before any sample: nothing measured.
        assert_eq!(h.cgroup_growth("/cg", 200 * MIB, T0 - S), None);
    }

    #[test]
    fn a_reused_pid_starts_a_new_history() {
        let mut h = history();
        let old = T0 - 100 * S;
        let new = T0 + 19 * S;
        h.note(13, ticks(old), T0 + 12 * S, 500 * MIB);
        h.note(13, ticks(new), T0 + 19 * S + S / 2, 30 * MIB);
        let k = h.at_kill(&[member(13, new)], (1, None), T0 + 20 * S, STARTS, |_| {
            Some(30 * MIB)
        });
        assert_eq!(k.growers[0].grew_bytes, 30 * MIB);
        assert!(k.growers[0].started_in_window);
        // The old process's samples do not describe the new one.
        assert_eq!(h.procs[&13].series.samples.len(), 1);
    }

    #[test]
    fn the_victim_is_measured_at_the_kill_by_the_kernel() {
        let mut h = history();
        let started = T0 - 100 * S;
        for s in 0..=20 {
            h.note(20, ticks(started), T0 + s * S, 180 * MIB);
            h.note(21, ticks(started), T0 + s * S, (10 + 7 * s) * MIB);
        }
        let members = [member(20, started), member(21, started)];
        let k = h.at_kill(
            &members,
            (20, Some(180 * MIB)),
            T0 + 20 * S + S / 10,
            STARTS,
            |pid| {
                assert_ne!(pid, 20, "the victim's memory may be reaped already");
                Some(150 * MIB)
            },
        );
        let v = k.victim.clone().unwrap();
        assert_eq!((v.pid, v.grew_bytes, v.rss_bytes), (20, 0, 180 * MIB));
        assert_eq!(k.growers.len(), 1, "no growth, no grower: {k:?}");
        // The window starts at 10.1 s: the sample at 11 s (87 MiB) is its
        // first.
        assert_eq!((k.growers[0].pid, k.growers[0].grew_bytes), (21, 63 * MIB));
        assert_eq!(k.growers[0].window_s, 9.1);
    }

    #[test]
    fn growers_are_sorted_and_capped() {
        let mut h = history();
        let started = T0 + 15 * S;
        let members: Vec<Member> = (0..10).map(|i| member(100 + i, started)).collect();
        let k = h.at_kill(&members, (1, None), T0 + 20 * S, STARTS, |pid| {
            Some(u64::from(pid % 100 + 1) * MIB)
        });
        let got: Vec<u64> = k.growers.iter().map(|g| g.grew_bytes / MIB).collect();
        assert_eq!(got, [10, 9, 8, 7, 6]);
        // At a kill on a host of thousands, a bounded number are read again.
        let many: Vec<Member> = (0..1000).map(|i| member(10_000 + i, started)).collect();
        let mut reads = 0;
        let k = h.at_kill(&many, (1, None), T0 + 20 * S, STARTS, |_| {
            reads += 1;
            Some(MIB)
        });
        assert_eq!((reads, k.growers.len()), (FRESH_READS, GROWERS));
        // A history is kept for at most MAX_PROCESSES processes.
        for pid in 0..MAX_PROCESSES as u32 + 10 {
            h.note(1000 + pid, Some(1), T0, MIB);
        }
        assert_eq!(h.procs.len(), MAX_PROCESSES);
        assert_eq!(h.untracked_now, 10);
    }

    /// A victim that touched a few more pages (seen: 52 KiB in a guest)
    /// did not grow: it is no grower, though its growth is still told.
    #[test]
    fn a_few_pages_more_is_no_growth() {
        let h = history();
        let started = T0 + 15 * S;
        let members = [member(100, started), member(101, started)];
        let k = h.at_kill(
            &members,
            (100, Some(52 * 1024)),
            T0 + 20 * S,
            STARTS,
            |pid| Some(if pid == 101 { 2 * MIB } else { 52 * 1024 }),
        );
        let pids: Vec<u32> = k.growers.iter().map(|g| g.pid).collect();
        assert_eq!(pids, [101]);
        assert_eq!(k.victim.map(|v| v.grew_bytes), Some(52 * 1024));
    }

    #[test]
    fn samples_are_bounded_whatever_the_window() {
        // 100 ms samples over an hour and a quarter would be 45,000: MAX_SAMPLES are kept,
        // spread over that time, the newest always the latest.
        let mut h = RssHistory::new(Duration::from_millis(100), Duration::from_secs(3600), T0);
        for i in 0..60_000u64 {
            h.note(1, Some(1), T0 + i * S / 10, i * 4096);
        }
        let s = &h.procs[&1].series.samples;
        assert!(s.len() <= MAX_SAMPLES, "{}", s.len());
        assert_eq!(s.back().unwrap().units, 59_999);
        let span_ms = s.back().unwrap().at_ms - s.front().unwrap().at_ms;
        assert!(
            (4_300_000..=4_500_000).contains(&span_ms),
            "they span the window and a quarter: {span_ms} ms"
        );
    }

    #[test]
    fn sample_times_survive_a_month_of_recording() {
        let mut h = history();
        let started = T0 - 100 * S;
        let month = 30 * 24 * 3600 * S;
        for s in 0..=20 {
            h.note(5, ticks(started), T0 + month + s * S, (s + 1) * MIB);
        }
        assert!(h.origin_ns > T0, "the origin moved forward");
        let k = h.at_kill(
            &[member(5, started)],
            (1, None),
            T0 + month + 20 * S,
            STARTS,
            |_| Some(21 * MIB),
        );
        assert_eq!(k.growers[0].grew_bytes, 10 * MIB);
        assert_eq!(k.growers[0].window_s, 10.0);
    }

    #[test]
    fn a_cgroup_grows_up_to_its_limit() {
        let mut h = history();
        for s in 0..=20 {
            h.note_cgroup("/sys/fs/cgroup/memory/app", T0 + s * S, (100 + s) * MIB);
        }
        assert_eq!(
            h.cgroup_growth("/sys/fs/cgroup/memory/app", 256 * MIB, T0 + 20 * S),
            Some((146 * MIB, 10.0))
        );
        assert_eq!(h.cgroup_growth("/other", 256 * MIB, T0 + 20 * S), None);
    }

    #[test]
    fn sampling_reads_this_process_in_slices() {
        let me = std::process::id();
        let mut t = ProcTable::default();
        t.insert(crate::proctable::read_proc_counted(me).unwrap().0);
        let (size, rss) = memory::statm(me).unwrap();
        assert!(size > 0 && rss > 0);
        let now = clock::monotonic_ns();
        let mut h = RssHistory::new(Duration::from_secs(1), Duration::from_secs(10), now);
        h.step(&t, now);
        for _ in 0..10 {
            if h.phase == Phase::Idle {
                break;
            }
            h.step(&t, clock::monotonic_ns());
        }
        assert_eq!(h.phase, Phase::Idle, "one process, one round");
        assert_eq!(h.procs[&me].series.samples.len(), 1);
        assert!(h.wait(clock::monotonic_ns()) <= Duration::from_secs(1));
        // Not due yet: nothing read.
        h.step(&t, clock::monotonic_ns());
        assert_eq!(h.procs[&me].series.samples.len(), 1);
    }

    /// A history follows the process table: kept while the table has the
    /// process alive, even when /proc no longer has it (its exit, maybe
    /// after a kill, is still to be handled), dropped once it exited.
    #[test]
    fn a_history_lasts_as_long_as_the_process_table_says_alive() {
        let gone = 4_399_999;
        let mut t = ProcTable::default();
        t.insert(crate::proctable::Proc {
            pid: gone,
            start_ticks: Some(7),
            alive: true,
            ..Default::default()
        });
        let now = clock::monotonic_ns();
        let mut h = RssHistory::new(Duration::from_secs(1), Duration::from_secs(10), now);
        h.note(gone, Some(7), now, 50 * MIB);
        let round = |h: &mut RssHistory, t: &ProcTable| {
            h.step(t, clock::monotonic_ns() + 10 * S);
            while h.phase != Phase::Idle {
                h.step(t, clock::monotonic_ns() + 10 * S);
            }
        };
        round(&mut h, &t);
        assert_eq!(h.latest(gone, Some(7)), Some(50 * MIB), "kept, not read");
        t.on_exit(gone, 9);
        h.next_round_ns = 0;
        round(&mut h, &t);
        assert_eq!(h.latest(gone, Some(7)), None, "dropped once it exited");
    }
}
