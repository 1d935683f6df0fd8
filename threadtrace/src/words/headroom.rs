//! How close a limit is, and how soon it runs out, in a few words.
use super::{bytes, count, thousands};
use crate::model::{Headroom, LimitNear};

/// What is used of which limit: "user 65534 has 54 tasks of the soft
/// RLIMIT_NPROC 60 of python3[812]".
pub fn used(h: &Headroom) -> String {
    let cgroup = h.cgroup.as_deref().unwrap_or("?");
    match h.kind.as_str() {
        "rlimit_nproc" => {
            let of = match (&h.comm, h.pid) {
                (Some(c), Some(p)) => format!(" of {c}[{p}]"),
                _ => String::new(),
            };
            format!(
                "user {} has {} of the soft RLIMIT_NPROC {}{of}",
                h.uid.map_or("?".to_string(), |u| u.to_string()),
                count(h.current, "task"),
                thousands(h.max)
            )
        }
        "cgroup_pids" => format!(
            "pids cgroup {cgroup} has {} of its pids.max {}",
            count(h.current, "task"),
            thousands(h.max)
        ),
        "memory_cgroup" => format!(
            "memory cgroup {cgroup} uses {} of its {} limit",
            bytes(h.current),
            bytes(h.max)
        ),
        "threads_max" => format!(
            "the host has {} of kernel.threads-max {}",
            count(h.current, "task"),
            thousands(h.max)
        ),
        "pid_max" => format!(
            "the host has {} in use of kernel.pid_max {}",
            count(h.current, "pid"),
            thousands(h.max)
        ),
        other => format!("{other}: {} of {}", h.current, h.max),
    }
}

/// "rising 600 a minute: full in about 6 s" or "not rising".
pub fn outlook(e: &LimitNear) -> String {
    let rate = if e.limit.kind == "memory_cgroup" {
        format!("{} a minute", bytes(e.rate_per_min.abs() as u64))
    } else {
        format!(
            "{} a minute",
            thousands(e.rate_per_min.abs().round() as u64)
        )
    };
    match e.exhausted_in_s {
        Some(s) => format!("rising {rate}: full in about {}", duration(s)),
        None if e.rate_per_min < 0.0 => format!("falling {rate}"),
        None => "not rising".to_string(),
    }
}

/// Seconds for people: "0.4 s", "12 s", "7 min", "3 h".
pub fn duration(s: f64) -> String {
    let s = s.max(0.0);
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.0} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_words() {
        let h = Headroom {
            kind: "rlimit_nproc".into(),
            current: 54,
            max: 60,
            ratio: 0.9,
            uid: Some(65534),
            pid: Some(812),
            comm: Some("python3".into()),
            ..Default::default()
        };
        assert_eq!(
            used(&h),
            "user 65534 has 54 tasks of the soft RLIMIT_NPROC 60 of python3[812]"
        );
        let m = Headroom {
            kind: "memory_cgroup".into(),
            current: 180 << 20,
            max: 200 << 20,
            cgroup: Some("/sys/fs/cgroup/app".into()),
            ..Default::default()
        };
        assert_eq!(
            used(&m),
            "memory cgroup /sys/fs/cgroup/app uses 180 MiB of its 200 MiB limit"
        );
        let mut e = LimitNear {
            time: String::new(),
            limit: h,
            threshold: 0.9,
            rate_per_min: 600.0,
            exhausted_in_s: Some(0.6),
            holders: vec![],
            memory_holders: vec![],
            inherited_from: None,
            set_by: None,
            remedy: String::new(),
        };
        assert_eq!(outlook(&e), "rising 600 a minute: full in about 0.6 s");
        e.exhausted_in_s = None;
        e.rate_per_min = 0.0;
        assert_eq!(outlook(&e), "not rising");
        assert_eq!(duration(1500.0), "25 min");
    }
}
