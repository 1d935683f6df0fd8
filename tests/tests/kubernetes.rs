//! A Kubernetes node, simulated on this host: cgroups named as kubelet
//! names them (the cgroupfs driver, in the v1 pids hierarchy or in
//! cgroup2; the systemd driver in cgroup2: the hybrid layout's
//! /sys/fs/cgroup/unified or the unified /sys/fs/cgroup), kubelet's log directories in a scratch root (the tracer
//! is pointed there by THREADTRACE_K8S_LOG_ROOT), and each pod's process
//! in new UTS and mount namespaces with its pod's hostname. Its real
//! RLIMIT_NPROC failures must carry their pod and container, in the JSON
//! and in the metrics; a host process's must not.
use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{json, Value};
use threadtrace_e2e::*;

/// Cgroup directories made for a pod, removed (emptied first) at the end.
struct KubeCgroups(Vec<PathBuf>);

impl KubeCgroups {
    /// `rel` under `root`, every level remembered for removal.
    fn make(&mut self, root: &str, rel: &str) -> PathBuf {
        let mut p = PathBuf::from(root);
        for part in rel.split('/') {
            p.push(part);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.0.push(p.clone());
            }
        }
        p
    }
}

impl Drop for KubeCgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            remove_cgroup(dir);
        }
    }
}

fn hex(seed: u128, len: usize) -> String {
    let mut s = String::new();
    let mut x = seed;
    while s.len() < len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(&format!("{:016x}", (x >> 64) as u64));
    }
    s.truncate(len);
    s
}

fn uid(seed: u128) -> String {
    let h = hex(seed, 32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Runs a thread-creating Python as nobody with `ulimit -u 1`, in `cgroup`
/// (its cgroup.procs), in new UTS and mount namespaces whose hostname and
/// /etc/hostname are the pod's, as a container runtime sets them up. Its
/// output has `pid=PID`.
fn run_in_pod(cgroup: &Path, hostname: &str, scratch: &Path) -> std::process::Output {
    let etc_hostname = scratch.join(format!("hostname-{hostname}"));
    std::fs::write(&etc_hostname, format!("{hostname}\n")).unwrap();
    let python = scratch.join("start_thread.py");
    std::fs::write(&python, PYTHON).unwrap();
    let script = scratch.join(format!("pod-{hostname}.sh"));
    std::fs::write(
        &script,
        format!(
            "hostname {hostname}\n\
             mount --bind {etc} /etc/hostname\n\
             exec runuser -u nobody -- env HOSTNAME={hostname} /bin/bash -c 'ulimit -u 1; exec /usr/bin/python3 {py}'\n",
            etc = etc_hostname.display(),
            py = python.display(),
        ),
    )
    .unwrap();
    bash(&format!(
        "echo $$ > {}/cgroup.procs && exec unshare --uts --mount --fork -- sh {}",
        cgroup.display(),
        script.display()
    ))
}

/// Prints its pid, then starts a thread (which fails under ulimit -u 1).
const PYTHON: &str = "import os, threading\nprint(\"pid=%d\" % os.getpid(), flush=True)\nthreading.Thread(target=print).start()\n";

fn failure_of(rec: &Records, out: &std::process::Output) -> Value {
    let pid: u32 = field(out, "pid")
        .unwrap_or_else(|| panic!("{out:?}"))
        .parse()
        .unwrap();
    let f = rec.of_pid("thread_create_failed", pid);
    assert_eq!(f.len(), 1, "{out:?}");
    f[0].clone()
}

#[test]
fn pods_are_named_from_cgroups_log_directories_and_hostnames() {
    if !require_root() {
        return;
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        ^ std::process::id() as u128;
    let (uid_a, uid_b) = (uid(seed), uid(seed + 1));
    let (cid_a, cid_b) = (hex(seed + 2, 64), hex(seed + 3, 64));
    let dir = TempDir::new("kubernetes");

    // Where kubelet's two drivers put pods: on a cgroup v1 host the
    // cgroupfs driver in the pids hierarchy (among the others) and the
    // systemd driver in the hybrid layout's cgroup2 mount; on a cgroup v2
    // host both directly in /sys/fs/cgroup.
    let (cgroupfs_root, systemd_root) = if cgroup_v2() {
        (CGROUP_ROOT.to_string(), CGROUP_ROOT.to_string())
    } else {
        (
            cgroup_hierarchy("pids").display().to_string(),
            format!("{CGROUP_ROOT}/unified"),
        )
    };

    // Pod A: cgroupfs driver, burstable; named by kubelet's log
    // directories.
    let mut cgroups = KubeCgroups(Vec::new());
    let cg_a = cgroups.make(
        &cgroupfs_root,
        &format!("kubepods/burstable/pod{uid_a}/{cid_a}"),
    );
    let logs = dir.0.join("log");
    let pod_a = "cart-7d4b9c8f6d-x2x9k";
    let pod_dir = logs.join("pods").join(format!("shop_{pod_a}_{uid_a}"));
    std::fs::create_dir_all(pod_dir.join("app")).unwrap();
    std::fs::write(pod_dir.join("app/0.log"), "").unwrap();
    std::fs::create_dir_all(logs.join("containers")).unwrap();
    std::os::unix::fs::symlink(
        pod_dir.join("app/0.log"),
        logs.join("containers")
            .join(format!("{pod_a}_shop_app-{cid_a}.log")),
    )
    .unwrap();

    // Pod B: systemd driver in cgroup2, best effort, containerd; no log
    // directories (not mounted): its hostname is the only hint.
    let uid_b_ = uid_b.replace('-', "_");
    let cg_b = cgroups.make(
        &systemd_root,
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_b_}.slice/cri-containerd-{cid_b}.scope"
        ),
    );
    let pod_b = "batch-28312345-8w2lp";

    let metrics = free_port();
    let logs_s = logs.display().to_string();
    let t = Tracer::start_env(
        &["--lifecycle", "--metrics", &format!("127.0.0.1:{metrics}")],
        &[("THREADTRACE_K8S_LOG_ROOT", &logs_s)],
    );
    let out_a = run_in_pod(&cg_a, pod_a, &dir.0);
    let out_b = run_in_pod(&cg_b, pod_b, &dir.0);
    let host = as_nobody(&format!(
        "ulimit -u 1; exec /usr/bin/python3 {}",
        dir.0.join("start_thread.py").display()
    ));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    let scraped = poll(Duration::from_secs(10), || {
        let (_, body) = http_get(addr, "/metrics")?;
        sample(
            &body,
            "threadtrace_thread_create_failures_total",
            &[("namespace", "shop"), ("pod", pod_a), ("container", "app")],
        )?;
        Some(body)
    })
    .expect("pod A's failure in the metrics");
    let rec = t.stop();

    let a = failure_of(&rec, &out_a);
    assert_eq!(
        a["k8s"],
        json!({
            "namespace": "shop", "pod": pod_a, "pod_uid": uid_a, "container": "app",
            "container_id": cid_a, "runtime": null, "workload": "cart", "derived": ["workload"],
        }),
        "{a:#}"
    );
    let b = failure_of(&rec, &out_b);
    assert_eq!(
        b["k8s"],
        json!({
            "namespace": null, "pod": pod_b, "pod_uid": uid_b, "container": null,
            "container_id": cid_b, "runtime": "containerd", "workload": "batch",
            "derived": ["pod", "workload"],
        }),
        "{b:#}"
    );
    let h = failure_of(&rec, &host);
    assert!(h.get("k8s").is_none(), "no k8s outside Kubernetes: {h:#}");

    // Lifecycle events carry it too.
    let pid_a: u32 = field(&out_a, "pid").unwrap().parse().unwrap();
    let exit = rec.of_pid("process_exit", pid_a);
    assert_eq!(exit.len(), 1);
    assert_eq!(exit[0]["k8s"]["pod"], pod_a);

    // The metrics: cAdvisor's labels, the pod's hostname for pod B, empty
    // for the host process.
    assert_eq!(
        sample(
            &scraped,
            "threadtrace_thread_create_failures_total",
            &[("namespace", ""), ("pod", pod_b), ("container", "")]
        ),
        Some(1.0),
        "{scraped}"
    );
    assert_eq!(
        sample(
            &scraped,
            "threadtrace_thread_create_failures_total",
            &[
                ("cause", "rlimit_nproc"),
                ("namespace", ""),
                ("pod", ""),
                ("container", "")
            ]
        ),
        Some(1.0),
        "{scraped}"
    );
}
