//! End to end with the real servers: Debian's Prometheus scrapes `record
//! --metrics` and evaluates the shipped rules, Debian's Alertmanager sends
//! the alerts to a webhook this test runs, all on loopback. A real
//! RLIMIT_NPROC failure and a real memory-cgroup OOM kill of a pool worker
//! must show in Prometheus's query API with the right labels, and their
//! alerts arrive at the webhook. Everything started is stopped by Drop,
//! even when an assertion fails.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use threadtrace_e2e::*;

/// Alerts posted by Alertmanager, with when they arrived.
struct Webhook {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
    stop: Arc<AtomicBool>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                if let Some(body) = read_post(&mut conn) {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        r.lock().unwrap().push((Instant::now(), v));
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Webhook {
            addr,
            received,
            stop,
        }
    }

    /// When the first notification with alert `name` and these labels
    /// arrived after `since`, and the alert (other failures on the host
    /// can raise the same alert with other labels).
    fn alert(
        &self,
        name: &str,
        since: Instant,
        labels: &[(&str, &str)],
    ) -> Option<(Instant, Value)> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|(at, _)| *at >= since)
            .find_map(|(at, v)| {
                v["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["labels"]["alertname"] == name
                            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
                    })
                    .map(|a| (*at, a.clone()))
            })
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_post(conn: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while data.len() < end + 4 + len {
            let n = conn.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
        }
        return Some(data[end + 4..end + 4 + len].to_vec());
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prometheus's instant query API: the result vector.
fn query(prometheus: SocketAddr, q: &str) -> Vec<Value> {
    let Some((_, body)) = http_get(prometheus, &format!("/api/v1/query?query={}", urlencode(q)))
    else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The rules with the named alerts' `for:` set to 0s.
fn without_waiting(rules: &str, alerts: &[&str]) -> String {
    let mut current = "";
    let mut out = String::new();
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            current = name.trim();
        }
        match line.split_once("for: ") {
            Some((indent, _)) if alerts.contains(&current) && indent.trim().is_empty() => {
                out.push_str(indent);
                out.push_str("for: 0s");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn ready(addr: SocketAddr, path: &str) -> bool {
    http_get(addr, path).is_some_and(|(head, _)| {
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")
    })
}

#[test]
fn prometheus_scrapes_the_counters_and_alertmanager_delivers_the_alerts() {
    if !require_root() {
        return;
    }
    let t_start = Instant::now();
    let dir = TempDir::new("prometheus");
    // The shipped rules, with the limit alerts' `for:` at 0 s: their
    // expressions are what runs here (promtool tests their `for:` on
    // synthetic series), so that the test does not wait 5 minutes.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/threadtrace.rules.yml"),
    )
    .unwrap();
    let rules = dir.0.join("threadtrace.rules.yml");
    std::fs::write(
        &rules,
        without_waiting(
            &shipped,
            &[
                "ThreadLimitNearlyExhausted",
                "ThreadLimitExhaustionPredicted",
            ],
        ),
    )
    .unwrap();
    let (metrics, prom, am) = (free_port(), free_port(), free_port());
    let hook = Webhook::start();

    std::fs::write(
        dir.0.join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{}/alerts\n        send_resolved: false\n",
            hook.addr
        ),
    )
    .unwrap();
    let _alertmanager = Daemon::spawn(
        "alertmanager",
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.0.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.0.join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    std::fs::write(
        dir.0.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am}']\n\
             scrape_configs:\n  - job_name: threadtrace\n    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let _prometheus = Daemon::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let prom = SocketAddr::from(([127, 0, 0, 1], prom));
    let am = SocketAddr::from(([127, 0, 0, 1], am));
    assert!(
        poll(Duration::from_secs(60), || (ready(prom, "/-/ready")
            && ready(am, "/-/ready"))
        .then_some(()))
        .is_some(),
        "Prometheus and Alertmanager ready"
    );
    let t = Tracer::start(&["--metrics", &format!("127.0.0.1:{metrics}")]);
    assert!(
        poll(Duration::from_secs(30), || query(
            prom,
            "up{job=\"threadtrace\"} == 1"
        )
        .first()
        .cloned())
        .is_some(),
        "Prometheus scrapes the tracer"
    );

    // Before the limit: nobody adding 5 threads a second under
    // `ulimit -u 200`. The predicted-exhaustion alert reaches the webhook
    // while the workload still climbs, before its first failure.
    let climb_from = Instant::now();
    let mut climber = Command::new("runuser")
        .args(["-u", "nobody", "--", "bash", "-c"])
        .arg(
            "ulimit -u 200; exec /usr/bin/python3 -c '
import threading, time
for i in range(400):
    try:
        threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
    except RuntimeError:
        print(\"failed at\", i, flush=True); break
    time.sleep(0.2)
'",
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = poll(Duration::from_secs(90), || {
        if let Some((_, a)) = hook.alert(
            "ThreadLimitExhaustionPredicted",
            climb_from,
            &[("kind", "rlimit_nproc"), ("limit", "uid 65534")],
        ) {
            return Some(Some(a));
        }
        // It failed (and exited) before any alert.
        matches!(climber.try_wait(), Ok(Some(_))).then_some(None)
    });
    let predicted = match seen {
        Some(Some(a)) => a,
        _ => panic!("no ThreadLimitExhaustionPredicted alert before the workload failed"),
    };
    assert!(
        climber.try_wait().unwrap().is_none(),
        "the alert came while the workload still climbed: {predicted}"
    );
    let climbed = climber.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&climbed.stdout).contains("failed at"),
        "the workload then reached its limit: {climbed:?}"
    );
    assert!(
        predicted["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("rlimit_nproc of uid 65534"),
        "{predicted}"
    );

    // A real RLIMIT_NPROC failure, as nobody.
    let failed_at = Instant::now();
    let out = as_nobody(
        "echo pid=$$; ulimit -u 1; exec /usr/bin/python3 -c 'import threading; threading.Thread(target=print).start()'",
    );
    let pid: u32 = field(&out, "pid").unwrap().parse().unwrap();
    assert!(
        poll(Duration::from_secs(30), || {
            query(
                prom,
                "threadtrace_thread_create_failures_total{cause=\"rlimit_nproc\",errno=\"EAGAIN\"}",
            )
            .first()
            .cloned()
        })
        .is_some(),
        "the failure in Prometheus"
    );
    // Both formats, by the Accept header: the classic one passes promtool's
    // checks (OpenMetrics' info type is unknown to it), OpenMetrics is what
    // Prometheus asked for above.
    let metrics_at = SocketAddr::from(([127, 0, 0, 1], metrics));
    for (accept, want) in [
        (
            Some("text/plain;version=0.0.4"),
            "text/plain; version=0.0.4",
        ),
        (None, "text/plain; version=0.0.4"),
        (
            Some("application/openmetrics-text;version=1.0.0"),
            "application/openmetrics-text; version=1.0.0",
        ),
    ] {
        let (head, body) = http_get_accepting(metrics_at, "/metrics", accept).unwrap();
        assert!(head.contains(&format!("Content-Type: {want}")), "{head}");
        if want.starts_with("text/plain") {
            assert!(
                sample(
                    &body,
                    "threadtrace_thread_create_failures_total",
                    &[("cause", "rlimit_nproc")]
                )
                .is_some(),
                "{body}"
            );
            let mut check = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            check
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let out = check.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            assert!(body.ends_with("# EOF\n"), "{body}");
        }
    }
    let (alert_at, alert) = poll(Duration::from_secs(60), || {
        hook.alert(
            "ThreadCreationFailingOnHost",
            failed_at,
            &[("cause", "rlimit_nproc"), ("errno", "EAGAIN")],
        )
    })
    .expect("the alert at the webhook");
    assert_eq!(alert["labels"]["cause"], "rlimit_nproc");
    assert_eq!(alert["labels"]["errno"], "EAGAIN");
    let to_alert = alert_at - failed_at;

    // A real OOM kill of a multiprocessing pool worker in a memory cgroup.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/pool_oom.py");
    let cg = Cgroup::new("memory", "prometheus");
    cg.set_memory_max(200 << 20);
    bash(&format!(
        "echo $$ > {}/cgroup.procs; timeout -s KILL 60 /usr/bin/python3 {} > {} 2>&1",
        cg.path.display(),
        script.display(),
        dir.0.join("pool.out").display()
    ));
    let cg_path = cg.path.display().to_string();
    let kill = poll(Duration::from_secs(30), || {
        query(prom, "threadtrace_oom_kills_total{pool_worker=\"true\"}")
            .first()
            .cloned()
    })
    .expect("the OOM kill in Prometheus");
    assert_eq!(kill["metric"]["memory_cgroup"], cg_path.as_str(), "{kill}");
    assert!(
        !query(
            prom,
            "threadtrace_pool_workers_lost_total{reason=\"oom_kill\"}"
        )
        .is_empty(),
        "the lost pool worker"
    );
    let (_, oom_alert) = poll(Duration::from_secs(60), || {
        hook.alert(
            "PoolWorkerOomKilled",
            failed_at,
            &[("memory_cgroup", &cg_path)],
        )
    })
    .expect("the OOM alert at the webhook");
    assert_eq!(oom_alert["labels"]["memory_cgroup"], cg_path.as_str());

    let rec = t.stop();
    assert_eq!(
        rec.counted(pid, "pthread_create") + rec.counted(pid, "clone3"),
        1
    );
    // The series has the labels of the event the tracer printed (other
    // failures on the host may share it: at least 1). The target is gone
    // now: its last value.
    let e = rec.of_pid("thread_create_failed", pid);
    assert_eq!(e.len(), 1);
    let e = e[0];
    let library = e["library"].as_str().unwrap_or("unknown");
    let cause = e["cause"]["kind"].as_str().unwrap();
    assert_eq!(cause, "rlimit_nproc", "{e:#}");
    let q = format!(
        "last_over_time(threadtrace_thread_create_failures_total{{api=\"{}\",errno=\"{}\",cause=\"{cause}\",library=\"{library}\"}}[5m])",
        e["api"].as_str().unwrap(),
        e["error"].as_str().unwrap(),
    );
    let series = query(prom, &q);
    assert_eq!(series.len(), 1, "{q}: {series:?}");
    let labels = &series[0]["metric"];
    assert_eq!(labels["job"], "threadtrace");
    assert!(
        labels.get("pod").is_none()
            && labels.get("namespace").is_none()
            && labels.get("container").is_none(),
        "a host process has empty pod labels: {labels}"
    );
    assert!(
        series[0]["value"][1]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 1.0
    );
    eprintln!(
        "failure to alert at the webhook: {:.1} s; test {:.1} s \
         (scrape and evaluation every 1 s, group_wait 1 s)",
        to_alert.as_secs_f64(),
        t_start.elapsed().as_secs_f64()
    );
}
