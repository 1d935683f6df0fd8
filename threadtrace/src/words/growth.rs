//! How the growth before an OOM kill is told: whether the victim is the
//! process that grew, and one sentence for every surface.
use super::bytes;
use crate::model::{Grower, OomKill, SIGNIFICANT_GROWTH_BYTES as SIGNIFICANT};

/// What the growers say about a kill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GrowthVerdict<'a> {
    /// Another process grew more than the victim did.
    NotTheGrower(&'a Grower),
    /// The victim grew the most.
    Grower(&'a Grower),
    /// No process grew by a MiB, by the samples: the victim's growth.
    NoGrowth(&'a Grower),
    /// Nothing was sampled (`--rss-interval off`), or the victim's growth
    /// is not known.
    Unknown,
}

pub fn verdict(k: &OomKill) -> GrowthVerdict<'_> {
    let Some(v) = &k.victim_growth else {
        return GrowthVerdict::Unknown;
    };
    match k.growers.iter().find(|g| g.pid != k.victim.pid) {
        Some(o) if o.grew_bytes > v.grew_bytes && o.grew_bytes >= SIGNIFICANT => {
            GrowthVerdict::NotTheGrower(o)
        }
        _ if v.grew_bytes >= SIGNIFICANT => GrowthVerdict::Grower(v),
        _ => GrowthVerdict::NoGrowth(v),
    }
}

/// "grew 150 MiB in 60 s", or "in 12 s, since it started".
pub fn grew(g: &Grower) -> String {
    format!(
        "grew {} in {:.0} s{}",
        bytes(g.grew_bytes),
        g.window_s,
        if g.started_in_window {
            ", since it started"
        } else {
            ""
        }
    )
}

/// Whether the victim held the most memory of the processes seen at the
/// kill (its own size is the kernel's, at the kill).
fn largest(k: &OomKill) -> bool {
    let Some(rss) = k.victim.rss_bytes else {
        return false;
    };
    let others = k
        .top_holders
        .iter()
        .map(|h| (h.pid, h.rss_bytes))
        .chain(k.growers.iter().map(|g| (g.pid, g.rss_bytes)))
        .filter(|&(pid, _)| pid != k.victim.pid);
    let mut seen = false;
    for (_, other) in others {
        seen = true;
        if other > rss {
            return false;
        }
    }
    seen
}

/// Who grew, in one sentence, for every surface: "killed python3[A]
/// (largest, 180 MiB, grew 0 MiB in 60 s); python3[B] grew 150 MiB in 60
/// s". None when nothing was sampled.
pub fn sentence(k: &OomKill) -> Option<String> {
    let v = &k.victim;
    let size = match (largest(k), v.rss_bytes) {
        (true, Some(b)) => format!("largest, {}, ", bytes(b)),
        (false, Some(b)) => format!("{}, ", bytes(b)),
        (_, None) => String::new(),
    };
    let killed = |g: &Grower| format!("killed {}[{}] ({size}{})", v.comm, v.pid, grew(g));
    let others = |skip: u32| {
        k.growers
            .iter()
            .filter(|g| g.pid != v.pid && g.pid != skip)
            .take(2)
            .map(|g| format!("{}[{}] {}", g.comm, g.pid, grew(g)))
            .collect::<Vec<_>>()
    };
    match verdict(k) {
        GrowthVerdict::NotTheGrower(o) => Some(format!(
            "{}; {}[{}] {}",
            killed(k.victim_growth.as_ref()?),
            o.comm,
            o.pid,
            grew(o)
        )),
        GrowthVerdict::Grower(g) => {
            let next = others(v.pid);
            Some(if next.is_empty() {
                format!("{}: it grew the most", killed(g))
            } else {
                format!("{}: it grew the most; then {}", killed(g), next.join(", "))
            })
        }
        GrowthVerdict::NoGrowth(g) => Some(format!(
            "{}; no process {} grew by a MiB in that window, by the samples",
            killed(g),
            if k.memory_cgroup.is_some() {
                "of its memory cgroup"
            } else {
                "of the host"
            }
        )),
        GrowthVerdict::Unknown if !k.growers.is_empty() => Some(format!(
            "killed {}[{}] ({size}growth not measured); {}",
            v.comm,
            v.pid,
            others(v.pid).join(", ")
        )),
        GrowthVerdict::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{grower, holder, kill, not_the_grower, MIB};

    #[test]
    fn the_sentence_says_the_victim_is_not_the_grower() {
        let k = not_the_grower();
        assert!(matches!(verdict(&k), GrowthVerdict::NotTheGrower(g) if g.pid == 200));
        assert_eq!(
            sentence(&k).unwrap(),
            "killed python3[100] (largest, 180 MiB, grew 0 MiB in 60 s); python3[200] grew 150 MiB in 60 s"
        );
    }

    #[test]
    fn the_sentence_does_not_blame_another_when_the_victim_grew_the_most() {
        let mut k = kill(100, "python3");
        let mut v = grower(100, "python3", 180 * MIB, 170 * MIB, 4.2);
        v.started_in_window = true;
        k.victim_growth = Some(Box::new(v.clone()));
        k.growers = vec![v, grower(97, "python3", 12 * MIB, 12 * MIB, 4.0)];
        k.top_holders = vec![holder(100, 180 * MIB), holder(97, 12 * MIB)];
        assert!(matches!(verdict(&k), GrowthVerdict::Grower(g) if g.pid == 100));
        assert_eq!(
            sentence(&k).unwrap(),
            "killed python3[100] (largest, 180 MiB, grew 170 MiB in 4 s, since it started): it grew the most; then python3[97] grew 12 MiB in 4 s"
        );
        // Another process that grew less than a MiB more is not blamed,
        // and nobody is said to have grown.
        k.victim_growth = Some(Box::new(grower(100, "python3", 180 * MIB, 0, 60.0)));
        k.growers = vec![grower(97, "python3", 12 * MIB, MIB / 2, 60.0)];
        assert!(matches!(verdict(&k), GrowthVerdict::NoGrowth(_)));
        assert_eq!(
            sentence(&k).unwrap(),
            "killed python3[100] (largest, 180 MiB, grew 0 MiB in 60 s); no process of its memory cgroup grew by a MiB in that window, by the samples"
        );
    }

    #[test]
    fn without_samples_nothing_is_said_about_growth() {
        let mut k = kill(100, "python3");
        assert_eq!(verdict(&k), GrowthVerdict::Unknown);
        assert_eq!(sentence(&k), None);
        // Not the largest: its size is said without the word.
        k.top_holders = vec![holder(100, 180 * MIB), holder(200, 190 * MIB)];
        k.victim_growth = Some(Box::new(grower(100, "python3", 180 * MIB, 0, 60.0)));
        k.growers = vec![grower(200, "java", 190 * MIB, 150 * MIB, 60.0)];
        assert_eq!(
            sentence(&k).unwrap(),
            "killed python3[100] (180 MiB, grew 0 MiB in 60 s); java[200] grew 150 MiB in 60 s"
        );
    }
}
