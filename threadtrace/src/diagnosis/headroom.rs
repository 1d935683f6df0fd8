//! How close each limit is, how fast it is being used up, and when it
//! crosses a threshold: pure bookkeeping over samples that the collector
//! reads (`collector/headroom.rs`), so that every rule is a unit test.
//!
//! The rate is the least-squares slope of the samples of the last
//! `WINDOW`; the time to exhaustion is what is left at that rate. A
//! threshold fires once when the usage reaches it and is armed again only
//! once the usage has fallen `HYSTERESIS` below it, so that a limit
//! hovering at a threshold makes one event, not a stream.
use std::collections::{HashMap, VecDeque};

/// How far back the rate looks.
pub const WINDOW: f64 = 120.0;
/// Samples kept per limit at most (fast samples near a limit come ten a
/// second).
const SAMPLES_KEPT: usize = 512;
/// How far below a threshold the usage must fall before it fires again.
pub const HYSTERESIS: f64 = 0.05;
/// Limits tracked at most; the least recently seen go first.
pub const LIMITS_KEPT: usize = 4096;

/// Which limit: its kind and what it is the limit of ("uid 65534", a
/// cgroup's path, "host").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: &'static str,
    pub subject: String,
}

/// A threshold crossed, with the outlook at that sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub threshold: f64,
    pub ratio: f64,
    pub rate_per_min: f64,
    pub exhausted_in_s: Option<f64>,
}

struct Series {
    /// (seconds, current)
    samples: VecDeque<(f64, f64)>,
    max: u64,
    current: u64,
    /// Per threshold: fired and not yet armed again.
    fired: Vec<bool>,
    seen: f64,
}

impl Series {
    fn rate_per_s(&self) -> f64 {
        slope(&self.samples)
    }
}

/// The least-squares slope of (t, y); 0 with fewer than two distinct times.
fn slope(s: &VecDeque<(f64, f64)>) -> f64 {
    let n = s.len() as f64;
    if s.len() < 2 {
        return 0.0;
    }
    let (mt, my) = s
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, y)| (a + t / n, b + y / n));
    let (num, den) = s.iter().fold((0.0, 0.0), |(num, den), (t, y)| {
        (num + (t - mt) * (y - my), den + (t - mt) * (t - mt))
    });
    if den <= f64::EPSILON {
        0.0
    } else {
        num / den
    }
}

pub struct Tracker {
    /// Ascending fractions of the maximum.
    thresholds: Vec<f64>,
    series: HashMap<Key, Series>,
    /// Limits forgotten to stay within LIMITS_KEPT.
    pub evicted: u64,
}

/// The outlook of one limit now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlook {
    pub current: u64,
    pub max: u64,
    pub ratio: f64,
    pub rate_per_min: f64,
    pub exhausted_in_s: Option<f64>,
}

impl Tracker {
    pub fn new(mut thresholds: Vec<f64>) -> Self {
        thresholds.sort_by(f64::total_cmp);
        thresholds.dedup();
        Tracker {
            thresholds,
            series: HashMap::new(),
            evicted: 0,
        }
    }

    /// The lowest threshold: limits above a margin below it are watched
    /// closely.
    pub fn lowest(&self) -> f64 {
        self.thresholds.first().copied().unwrap_or(1.0)
    }

    /// A sample of `key` at `at` seconds: the highest threshold it newly
    /// reached, if any. A limit of 0 (or none) is not a limit.
    pub fn observe(&mut self, key: &Key, at: f64, current: u64, max: u64) -> Option<Crossing> {
        if max == 0 {
            return None;
        }
        if !self.series.contains_key(key) && self.series.len() >= LIMITS_KEPT {
            self.evict_oldest();
        }
        let n = self.thresholds.len();
        let s = self.series.entry(key.clone()).or_insert_with(|| Series {
            samples: VecDeque::new(),
            max,
            current,
            fired: vec![false; n],
            seen: at,
        });
        s.samples.push_back((at, current as f64));
        while s.samples.len() > SAMPLES_KEPT
            || s.samples.front().is_some_and(|(t, _)| at - t > WINDOW)
        {
            s.samples.pop_front();
        }
        s.max = max;
        s.current = current;
        s.seen = at;
        let ratio = current as f64 / max as f64;
        let mut crossed = None;
        for (i, &t) in self.thresholds.iter().enumerate() {
            if ratio >= t {
                if !s.fired[i] {
                    s.fired[i] = true;
                    crossed = Some(t);
                }
            } else if ratio < t - HYSTERESIS {
                s.fired[i] = false;
            }
        }
        let threshold = crossed?;
        let o = outlook(s);
        Some(Crossing {
            threshold,
            ratio,
            rate_per_min: o.rate_per_min,
            exhausted_in_s: o.exhausted_in_s,
        })
    }

    /// Where `key` stands, as last sampled.
    pub fn outlook(&self, key: &Key) -> Option<Outlook> {
        self.series.get(key).map(outlook)
    }

    /// Every limit's outlook, closest to its maximum first.
    pub fn closest(&self, n: usize) -> Vec<(Key, Outlook)> {
        let mut all: Vec<(Key, Outlook)> = self
            .series
            .iter()
            .map(|(k, s)| (k.clone(), outlook(s)))
            .collect();
        all.sort_by(|a, b| b.1.ratio.total_cmp(&a.1.ratio).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Forgets the limits not sampled since `before` (gone processes,
    /// removed cgroups).
    pub fn forget_older(&mut self, before: f64) {
        self.series.retain(|_, s| s.seen >= before);
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .series
            .iter()
            .min_by(|a, b| a.1.seen.total_cmp(&b.1.seen))
            .map(|(k, _)| k.clone())
        {
            self.series.remove(&k);
            self.evicted += 1;
        }
    }
}

fn outlook(s: &Series) -> Outlook {
    let rate = s.rate_per_s();
    let left = s.max.saturating_sub(s.current) as f64;
    Outlook {
        current: s.current,
        max: s.max,
        ratio: s.current as f64 / s.max.max(1) as f64,
        rate_per_min: rate * 60.0,
        // Rising by less than one a day is not rising.
        exhausted_in_s: (rate > 1.0 / 86_400.0).then(|| left / rate),
    }
}

/// `--near`: "0.8,0.9,0.95" (fractions or percents), or "off".
pub fn parse_thresholds(s: &str) -> Result<Vec<f64>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (number, percent) = match part.strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (part, false),
        };
        let v: f64 = number
            .parse()
            .map_err(|_| format!("{part:?} is not a number: give fractions such as 0.8,0.9,0.95, percents such as 80%, or off"))?;
        let v = if percent || v > 1.0 { v / 100.0 } else { v };
        if !(v > 0.0 && v <= 1.0 && v.is_finite()) {
            return Err(format!(
                "{part}: a threshold is a fraction of the limit above 0 and at most 1 (or a percent up to 100%)"
            ));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err("give at least one threshold, such as 0.8,0.9,0.95, or off".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            kind: "rlimit_nproc",
            subject: "uid 65534".into(),
        }
    }

    #[test]
    fn each_threshold_fires_once_on_the_way_up_with_a_falling_estimate() {
        let mut t = Tracker::new(vec![0.95, 0.8, 0.9]);
        let mut fired = Vec::new();
        // A thread every 100 ms under a limit of 60.
        for i in 0..=58u64 {
            if let Some(c) = t.observe(&key(), i as f64 * 0.1, i + 1, 60) {
                fired.push(c);
            }
        }
        let at: Vec<f64> = fired.iter().map(|c| c.threshold).collect();
        assert_eq!(at, vec![0.8, 0.9, 0.95]);
        for c in &fired {
            assert!((c.rate_per_min - 600.0).abs() < 1.0, "{c:?}");
        }
        let eta: Vec<f64> = fired.iter().map(|c| c.exhausted_in_s.unwrap()).collect();
        assert!(eta[0] > eta[1] && eta[1] > eta[2], "{eta:?}");
        assert!((eta[0] - 1.2).abs() < 0.05, "{eta:?}");
    }

    #[test]
    fn a_limit_hovering_at_a_threshold_fires_once() {
        let mut t = Tracker::new(vec![0.9]);
        let mut n = 0;
        for i in 0..100 {
            // 18 and 17 of 20: 90% and 85%, never HYSTERESIS below.
            let current = if i % 2 == 0 { 18 } else { 17 };
            n += t.observe(&key(), i as f64, current, 20).is_some() as u32;
        }
        assert_eq!(n, 1);
        // Well below, then back: a new event.
        assert!(t.observe(&key(), 100.0, 10, 20).is_none());
        assert!(t.observe(&key(), 101.0, 18, 20).is_some());
    }

    #[test]
    fn jumping_past_several_thresholds_reports_the_highest() {
        let mut t = Tracker::new(vec![0.8, 0.9, 0.95]);
        assert!(t.observe(&key(), 0.0, 10, 100).is_none());
        let c = t.observe(&key(), 1.0, 97, 100).unwrap();
        assert_eq!(c.threshold, 0.95);
        assert!(t.observe(&key(), 2.0, 98, 100).is_none());
    }

    #[test]
    fn not_rising_has_no_estimate_and_old_samples_leave_the_rate() {
        let mut t = Tracker::new(vec![0.5]);
        for i in 0..10 {
            t.observe(&key(), i as f64, 60, 100);
        }
        let o = t.outlook(&key()).unwrap();
        assert_eq!((o.rate_per_min, o.exhausted_in_s), (0.0, None));
        // A climb long ago, then flat for longer than the window.
        let k = Key {
            kind: "cgroup_pids",
            subject: "/x".into(),
        };
        t.observe(&k, 0.0, 10, 100);
        t.observe(&k, 1.0, 50, 100);
        for i in 0..=(WINDOW as u64) {
            t.observe(&k, 10.0 + i as f64, 50, 100);
        }
        let o = t.outlook(&k).unwrap();
        assert!(
            o.rate_per_min.abs() < 1e-9 && o.exhausted_in_s.is_none(),
            "{o:?}"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut t = Tracker::new(vec![0.9]);
        for i in 0..(LIMITS_KEPT + 10) {
            let k = Key {
                kind: "cgroup_pids",
                subject: format!("/cg{i}"),
            };
            t.observe(&k, i as f64, 1, 100);
        }
        assert_eq!(t.len(), LIMITS_KEPT);
        assert_eq!(t.evicted, 10);
        t.forget_older(LIMITS_KEPT as f64);
        assert_eq!(t.len(), 10);
        assert_eq!(t.closest(3).len(), 3);
        assert!(t.observe(&key(), 0.0, 5, 0).is_none(), "no limit");
    }

    #[test]
    fn thresholds_from_the_command_line() {
        assert_eq!(
            parse_thresholds("0.8,0.9,0.95").unwrap(),
            vec![0.8, 0.9, 0.95]
        );
        assert_eq!(parse_thresholds("80%, 90").unwrap(), vec![0.8, 0.9]);
        assert!(parse_thresholds("off").unwrap().is_empty());
        for bad in ["", "x", "0", "-0.5", "150%", "NaN"] {
            assert!(parse_thresholds(bad).is_err(), "{bad}");
        }
    }
}
