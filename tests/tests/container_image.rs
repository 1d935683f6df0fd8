//! The container image, built from deploy/container/ with buildah, run the
//! way a container runtime runs the DaemonSet's container: its root
//! filesystem unpacked from the image, the host's /proc (hostPID) and /sys
//! mounted in, a network namespace of its own (no host network), and the
//! DaemonSet's exact command line. This machine cannot run containers, so
//! the test does what the runtime would with unshare and chroot.
use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use threadtrace_e2e::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `command:` list of deploy/kubernetes/daemonset.yaml.
fn daemonset_command() -> Vec<String> {
    let yaml = std::fs::read_to_string(repo().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "command:").skip(1);
    let mut cmd = Vec::new();
    for l in lines.by_ref() {
        let t = l.trim();
        if t.starts_with('#') {
            continue;
        }
        match t.strip_prefix("- ") {
            Some(arg) => cmd.push(arg.to_string()),
            None => break,
        }
    }
    assert!(!cmd.is_empty(), "no command in the DaemonSet");
    cmd
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blob(oci: &Path, digest: &str) -> PathBuf {
    oci.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// `GET path` from inside the network namespace of process `pid`.
fn get_in_netns(pid: u32, port: u16, path: &'static str) -> Option<(String, String)> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    std::thread::spawn(move || {
        // SAFETY: setns on this short-lived thread only (a network
        // namespace is per thread); the fd is open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        http_get(SocketAddr::from(([127, 0, 0, 1], port)), path)
    })
    .join()
    .ok()?
}

#[test]
fn the_image_runs_the_daemonsets_command_and_sees_a_real_failure() {
    if !require_root() {
        return;
    }
    let t0 = Instant::now();
    let dir = TempDir::new("image");
    let ctx = dir.0.join("context");
    run(Command::new(repo().join("deploy/container/context.sh"))
        .arg(bin())
        .arg(&ctx));
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(dir.0.join("storage"))
            .arg("--runroot")
            .arg(dir.0.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    run(buildah()
        .args(["build", "--layers=false", "-f"])
        .arg(ctx.join("Containerfile"))
        .args(["-t", "localhost/threadtrace-e2e"])
        .arg(&ctx));
    let oci = dir.0.join("oci");
    run(buildah()
        .args(["push", "localhost/threadtrace-e2e"])
        .arg(format!("oci:{}", oci.display())));
    let built = t0.elapsed();

    // Unpack the image as a runtime does: the manifest's layers, in order.
    let index: Value =
        serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(
            &oci,
            index["manifests"][0]["digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    let config: Value = serde_json::from_slice(
        &std::fs::read(blob(&oci, manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/threadtrace"])
    );
    let rootfs = dir.0.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut compressed = 0;
    for layer in manifest["layers"].as_array().unwrap() {
        compressed += layer["size"].as_u64().unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(blob(&oci, layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    let unpacked: u64 = run(Command::new("du").args(["-sb"]).arg(&rootfs))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "image: {:.1} MiB of layers, {:.1} MiB unpacked, built in {:.1} s",
        compressed as f64 / 1048576.0,
        unpacked as f64 / 1048576.0,
        built.as_secs_f64()
    );
    assert!(unpacked < 32 << 20, "a small image: {unpacked} bytes");

    // The DaemonSet's command, as the runtime would start it: its own
    // mount and network namespaces, the host's /proc and /sys.
    let cmd = daemonset_command();
    assert_eq!(cmd[0], "/threadtrace");
    let port: u16 = cmd
        .iter()
        .find_map(|a| a.strip_prefix("0.0.0.0:"))
        .expect("the DaemonSet listens on every interface of its pod")
        .parse()
        .unwrap();
    let r = rootfs.display();
    let script = format!(
        "set -e; ip link set lo up; mount --rbind /proc {r}/proc; mount --rbind /sys {r}/sys; \
         mount -t tmpfs tmpfs {r}/tmp; \
         mkdir -p {r}/var/lib/threadtrace; \
         exec chroot {r} {}",
        cmd.join(" ")
    );
    let log = dir.0.join("tracer.log");
    let mut container = Daemon::spawn(
        "the container",
        Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--fork",
                "--kill-child",
                "--",
                "sh",
                "-c",
            ])
            .arg(&script)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit()),
    );
    // The tracer is unshare's child (chroot execs it).
    let unshare = container.pid();
    let tracer: u32 = poll(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
    .expect("the container's process");
    let up = poll(Duration::from_secs(60), || {
        let (_, body) = get_in_netns(tracer, port, "/metrics")?;
        (sample(&body, "threadtrace_probes_attached", &[])? > 0.0).then_some(())
    });
    assert!(
        up.is_some(),
        "no metrics from the container: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{tracer}/root")).unwrap(),
        rootfs,
        "it runs in the image's root"
    );

    let out = as_nobody(
        "echo pid=$$; ulimit -u 1; exec /usr/bin/python3 -c 'import threading; threading.Thread(target=print).start()'",
    );
    let pid = field(&out, "pid").unwrap();
    let seen = poll(Duration::from_secs(10), || {
        let (head, body) = get_in_netns(tracer, port, "/metrics")?;
        // No Accept header: the classic text format.
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        sample(
            &body,
            "threadtrace_thread_create_failures_total",
            &[("errno", "EAGAIN"), ("cause", "rlimit_nproc")],
        )
    });
    assert!(
        seen.is_some_and(|n| n >= 1.0),
        "failure of {pid} not counted"
    );

    // SIGTERM, as the kubelet stops a pod.
    // SAFETY: kill(2) on the process this test started.
    unsafe { libc::kill(tracer as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut container.child, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the container did not stop cleanly: {status:?}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains("THREAD CREATE FAILED") && lines.contains(&format!("[{pid}]")),
        "{lines}"
    );
    // The flight recorder's set, in the volume: the failure is in it.
    let traces = rootfs.join("var/lib/threadtrace");
    let report = Command::new(bin())
        .args(["export", "--format", "jsonl"])
        .arg(&traces)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success()
            && text
                .lines()
                .any(|l| l.contains("\"kind\":\"thread_create_failed\"")
                    && l.contains(&format!("\"pid\":{pid}"))),
        "report of {}: {text} {}",
        traces.display(),
        String::from_utf8_lossy(&report.stderr)
    );
}
