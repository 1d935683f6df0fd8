//! Oversubscription (incident 2, docs/incidents.md): a pool library runs
//! more threads than the CPUs its process may use, because it sized itself
//! by the host's CPUs.
use super::remedy::pool_variable;
use crate::model::Oversubscribed;

fn read(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// CPUs a cgroup's quota allows, walking up to the root: (cpus, source).
pub fn quota_cpus(cpu_cgroup: &str) -> Option<(u64, &'static str)> {
    let mut dir = std::path::Path::new(cpu_cgroup);
    let mut best: Option<(u64, &'static str)> = None;
    loop {
        let found = if let (Some(q), Some(p)) = (
            read(&dir.join("cpu.cfs_quota_us")),
            read(&dir.join("cpu.cfs_period_us")),
        ) {
            match (q.parse::<i64>(), p.parse::<i64>()) {
                (Ok(q), Ok(p)) if q > 0 && p > 0 => {
                    Some(((q as u64).div_ceil(p as u64), "cgroup cpu.cfs_quota_us"))
                }
                _ => None,
            }
        } else if let Some(max) = read(&dir.join("cpu.max")) {
            let mut f = max.split_whitespace();
            match (
                f.next().and_then(|q| q.parse::<u64>().ok()),
                f.next().and_then(|p| p.parse::<u64>().ok()),
            ) {
                (Some(q), Some(p)) if p > 0 => Some((q.div_ceil(p), "cgroup cpu.max")),
                _ => None,
            }
        } else if best.is_none() && !dir.join("cgroup.procs").exists() {
            return None;
        } else {
            None
        };
        if let Some(f) = found {
            if best.is_none_or(|b| f.0 < b.0) {
                best = Some(f);
            }
        }
        dir = match dir.parent() {
            Some(p) if p.join("cgroup.procs").exists() => p,
            _ => return best,
        };
    }
}

/// CPUs in the process's affinity mask.
pub fn affinity_cpus(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    Some(
        list.split(',')
            .filter_map(|r| match r.split_once('-') {
                Some((a, b)) => Some(b.parse::<u64>().ok()? - a.parse::<u64>().ok()? + 1),
                None => r.parse::<u64>().ok().map(|_| 1),
            })
            .sum(),
    )
}

/// The CPUs a process may use, and what limits it.
pub fn cpus_allowed(pid: u32, cpu_cgroup: Option<&str>) -> Option<(u64, String)> {
    fewest(cpu_cgroup.and_then(quota_cpus), affinity_cpus(pid))
}

/// The tighter of a cgroup quota and an affinity mask.
pub fn fewest(quota: Option<(u64, &'static str)>, affinity: Option<u64>) -> Option<(u64, String)> {
    match (quota, affinity) {
        (Some(q), Some(a)) if q.0 < a => Some((q.0, q.1.into())),
        (Some(q), None) => Some((q.0, q.1.into())),
        (_, Some(a)) => Some((a, "affinity".into())),
        (None, None) => None,
    }
}

/// A finding when a pool library's threads exceed the CPUs allowed.
pub fn check(
    pid: u32,
    comm: &str,
    library: &str,
    created: i64,
    cpus: (u64, String),
    time: &str,
) -> Option<Oversubscribed> {
    let var = pool_variable(library)?;
    let threads = created as u64 + 1;
    if threads <= cpus.0 {
        return None;
    }
    Some(Oversubscribed {
        time: time.to_string(),
        pid,
        comm: comm.to_string(),
        library: library.to_string(),
        threads,
        cpus_allowed: cpus.0,
        remedy: format!(
            "set {var}={} for {comm} (it may use {} CPUs by its {}), before {library} loads; its {threads} threads only contend",
            cpus.0, cpus.0, cpus.1
        ),
        source: cpus.1,
        k8s: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_from_v1_and_v2_files() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("v1");
        std::fs::create_dir(&v1).unwrap();
        std::fs::write(v1.join("cgroup.procs"), "").unwrap();
        std::fs::write(v1.join("cpu.cfs_quota_us"), "150000\n").unwrap();
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(
            quota_cpus(v1.to_str().unwrap()),
            Some((2, "cgroup cpu.cfs_quota_us"))
        );
        std::fs::write(v1.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        assert_eq!(quota_cpus(v1.to_str().unwrap()), None);
        let v2 = d.path().join("v2");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("cgroup.procs"), "").unwrap();
        std::fs::write(v2.join("cpu.max"), "100000 100000\n").unwrap();
        assert_eq!(
            quota_cpus(v2.to_str().unwrap()),
            Some((1, "cgroup cpu.max"))
        );
        std::fs::write(v2.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(quota_cpus(v2.to_str().unwrap()), None);
    }

    #[test]
    fn a_pool_larger_than_its_cpus_is_a_finding() {
        let f = check(
            7,
            "python3",
            "libopenblas",
            23,
            (4, "cgroup cpu.max".into()),
            "t",
        )
        .unwrap();
        assert_eq!((f.threads, f.cpus_allowed), (24, 4));
        assert!(
            f.remedy
                .starts_with("set OPENBLAS_NUM_THREADS=4 for python3"),
            "{}",
            f.remedy
        );
        assert!(check(7, "python3", "libopenblas", 3, (4, "affinity".into()), "t").is_none());
        assert!(
            check(7, "app", "libfoo", 99, (1, "affinity".into()), "t").is_none(),
            "not a pool library"
        );
        assert!(affinity_cpus(std::process::id()).unwrap() >= 1);
    }
}
