use std::time::Instant;

use prometheus_client::encoding::text;

use super::*;
use crate::model::{
    fixtures::{failure, pool_kill as oom_kill},
    OomKill,
};

fn metrics(labels: LabelFilter, max: usize) -> (Metrics, Registry) {
    new(&MetricsConfig {
        labels,
        max_label_sets: max,
    })
}

fn scrape(r: &Registry) -> String {
    let mut s = String::new();
    text::encode(&mut s, r).unwrap();
    s
}

/// The value of the sample whose line starts with `prefix` (name and
/// labels as encoded).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn failures(text: &str, library: &str, cause: &str, pod: &str) -> Option<f64> {
    let ns = if pod.is_empty() { "" } else { "shop" };
    let container = if pod.is_empty() { "" } else { "app" };
    sample(
        text,
        &format!(
            "threadtrace_thread_create_failures_total{{api=\"pthread_create\",errno=\"EAGAIN\",cause=\"{cause}\",library=\"{library}\",namespace=\"{ns}\",pod=\"{pod}\",container=\"{container}\"}}"
        ),
    )
}

fn in_pod(mut e: ThreadCreateFailed, pod: &str, uid: &str) -> ThreadCreateFailed {
    e.k8s = Some(K8s {
        namespace: Some("shop".into()),
        pod: Some(pod.into()),
        pod_uid: Some(uid.into()),
        container: Some("app".into()),
        container_id: Some("ab".repeat(32)),
        runtime: Some("containerd".into()),
        workload: Some("cart".into()),
        derived: vec!["workload".into()],
    });
    e
}

fn summary(rows: &[(u32, u64)]) -> Summary {
    Summary {
        by_process: rows
            .iter()
            .map(|&(pid, n)| crate::model::fixtures::eagain(pid, n))
            .collect(),
        ..Default::default()
    }
}

fn total(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("threadtrace_thread_create_failures_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// In a storm most failures come without detail: the counters still add
/// up to the kernel's exact count, shared by library as the detail was,
/// and never go down on the way.
#[test]
fn exact_counts_are_shared_by_library_and_cause_and_never_decrease() {
    let (mut m, r) = metrics(LabelFilter::default(), 100);
    for _ in 0..3 {
        m.failure(&failure(10, "omp", "libgomp", "rlimit_nproc"));
    }
    m.failure(&failure(10, "omp", "omp", "rlimit_nproc"));
    let t = scrape(&r);
    assert_eq!(failures(&t, "libgomp", "rlimit_nproc", ""), Some(3.0));
    assert_eq!(failures(&t, "omp", "rlimit_nproc", ""), Some(1.0));
    let mut last = 4.0;
    for count in [1000, 4000, 4000, 4000] {
        m.second(&summary(&[(10, count)]), false);
        let t = scrape(&r);
        let now = total(&t);
        assert!(now >= last, "{now} < {last}");
        last = now;
    }
    let t = scrape(&r);
    assert_eq!(failures(&t, "libgomp", "rlimit_nproc", ""), Some(3000.0));
    assert_eq!(failures(&t, "omp", "rlimit_nproc", ""), Some(1000.0));
    assert_eq!(total(&t), 4000.0, "the kernel's count, exactly");
}

/// Counters a second ahead of the events they include: nothing is shared
/// out before the detail had time to arrive.
#[test]
fn detail_arriving_after_its_count_is_not_counted_twice() {
    let (mut m, r) = metrics(LabelFilter::default(), 100);
    m.second(&summary(&[(11, 1)]), false);
    m.failure(&failure(11, "omp", "libgomp", "rlimit_nproc"));
    m.second(&summary(&[(11, 1)]), false);
    m.second(&summary(&[(11, 1)]), false);
    let t = scrape(&r);
    assert_eq!(total(&t), 1.0, "{t}");
    assert_eq!(failures(&t, "libgomp", "rlimit_nproc", ""), Some(1.0));
}

#[test]
fn failures_never_seen_in_detail_are_unknown_and_the_end_settles_at_once() {
    let (mut m, r) = metrics(LabelFilter::default(), 100);
    m.second(&summary(&[(12, 5)]), false);
    m.second(&summary(&[(12, 7)]), true);
    let t = scrape(&r);
    assert_eq!(failures(&t, "unknown", "unknown", ""), Some(7.0), "{t}");
}

#[test]
fn pods_are_labelled_as_cadvisor_does_and_hosts_are_empty() {
    let (mut m, r) = metrics(LabelFilter::default(), 100);
    m.failure(&in_pod(
        failure(20, "java", "libjvm", "cgroup_pids"),
        "cart-7d4b9c8f6d-x2x9k",
        "u1",
    ));
    m.failure(&failure(21, "omp", "libgomp", "rlimit_nproc"));
    let t = scrape(&r);
    assert_eq!(
        failures(&t, "libjvm", "cgroup_pids", "cart-7d4b9c8f6d-x2x9k"),
        Some(1.0),
        "{t}"
    );
    assert_eq!(failures(&t, "libgomp", "rlimit_nproc", ""), Some(1.0));
    assert!(!t.contains("pid="), "no pid labels");
    assert!(!t.contains("node="), "the scrape adds the node");
    assert!(!t.contains("pod_uid"), "{t}");
}

#[test]
fn dropped_labels_are_empty() {
    let (mut m, r) = metrics("namespace,container".parse().unwrap(), 100);
    m.failure(&in_pod(
        failure(20, "java", "libjvm", "cgroup_pids"),
        "a-1",
        "u1",
    ));
    m.failure(&in_pod(
        failure(22, "java", "libjvm", "cgroup_pids"),
        "a-2",
        "u2",
    ));
    let t = scrape(&r);
    assert!(
        t.contains("threadtrace_thread_create_failures_total{api=\"pthread_create\",errno=\"EAGAIN\",cause=\"cgroup_pids\",library=\"\",namespace=\"shop\",pod=\"\",container=\"app\"} 2"),
        "{t}"
    );
    assert!("pod,bogus".parse::<LabelFilter>().is_err());
    assert!(!"".parse::<LabelFilter>().unwrap().pod);
}

#[test]
fn label_sets_past_the_cap_fold_into_one_overflow_series_and_are_counted() {
    let (mut m, r) = metrics(LabelFilter::default(), 3);
    for i in 0..10 {
        let lib = format!("lib{i}");
        m.failure(&failure(30 + i, "x", &lib, "rlimit_nproc"));
        m.failure(&failure(30 + i, "x", &lib, "rlimit_nproc"));
    }
    let t = scrape(&r);
    let series = t
        .lines()
        .filter(|l| l.starts_with("threadtrace_thread_create_failures_total{"))
        .count();
    assert_eq!(series, 4, "3 and the overflow:\n{t}");
    assert_eq!(total(&t), 20.0, "nothing lost");
    assert_eq!(
        sample(
            &t,
            "threadtrace_metrics_folded_total{metric=\"threadtrace_thread_create_failures_total\"}"
        ),
        Some(14.0)
    );
    assert_eq!(sample(&t, "threadtrace_metrics_label_sets"), Some(3.0));
    assert!(t.contains("library=\"_overflow\""));
}

#[test]
fn a_pods_series_go_a_minute_after_its_last_process() {
    let (mut m, r) = metrics(LabelFilter::default(), 100);
    m.failure(&in_pod(
        failure(20, "java", "libjvm", "cgroup_pids"),
        "gone-1",
        "u1",
    ));
    m.failure(&in_pod(
        failure(21, "java", "libjvm", "cgroup_pids"),
        "stays-1",
        "u2",
    ));
    m.failure(&failure(22, "omp", "libgomp", "rlimit_nproc"));
    let t0 = Instant::now();
    let alive: HashSet<String> = ["u2".to_string()].into();
    m.live_pods(&alive, t0);
    m.live_pods(&alive, t0 + Duration::from_secs(30));
    assert!(scrape(&r).contains("pod=\"gone-1\""), "not before a minute");
    m.live_pods(&alive, t0 + POD_GRACE);
    let t = scrape(&r);
    assert!(!t.contains("pod=\"gone-1\""), "{t}");
    assert!(t.contains("pod=\"stays-1\""));
    assert_eq!(
        failures(&t, "libgomp", "rlimit_nproc", ""),
        Some(1.0),
        "host series stay"
    );
    assert_eq!(sample(&t, "threadtrace_metrics_label_sets"), Some(2.0));
    // A pod seen alive again within the minute keeps its series.
    m.live_pods(&HashSet::new(), t0 + POD_GRACE);
    m.live_pods(&alive, t0 + POD_GRACE * 2 - Duration::from_secs(1));
    m.live_pods(&alive, t0 + POD_GRACE * 3);
    assert!(scrape(&r).contains("pod=\"stays-1\""));
}

fn oom(pool: bool, k8s: bool) -> OomKill {
    let Record::OomKill(mut e) = oom_kill(7_000_007, pool) else {
        panic!("an OOM kill")
    };
    if k8s {
        e.k8s = in_pod(failure(7, "x", "x", "x"), "batch-0", "u9").k8s;
    }
    e
}

#[test]
fn oom_kills_pool_workers_limits_storms_and_health() {
    let (mut m, r) = metrics(LabelFilter::default(), 100);
    m.record(&Record::OomKill(oom(true, false)));
    m.record(&Record::OomKill(oom(false, true)));
    m.second(
        &Summary {
            events_lost: 5,
            events_sampled_out: 7,
            ..Default::default()
        },
        false,
    );
    m.second(
        &Summary {
            events_lost: 6,
            events_sampled_out: 7,
            ..Default::default()
        },
        false,
    );
    let t = scrape(&r);
    assert_eq!(
        sample(&t, "threadtrace_oom_kills_total{namespace=\"\",pod=\"\",container=\"\",memory_cgroup=\"/sys/fs/cgroup/memory/consumer\",pool_worker=\"true\"}"),
        Some(1.0),
        "{t}"
    );
    assert_eq!(
        sample(&t, "threadtrace_oom_kills_total{namespace=\"shop\",pod=\"batch-0\",container=\"app\",memory_cgroup=\"\",pool_worker=\"false\"}"),
        Some(1.0),
        "a pod's kill is named by the pod"
    );
    assert_eq!(
        sample(&t, "threadtrace_pool_workers_lost_total{namespace=\"\",pod=\"\",container=\"\",reason=\"oom_kill\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&t, "threadtrace_events_lost_total"), Some(6.0));
    assert_eq!(
        sample(&t, "threadtrace_events_sampled_out_total"),
        Some(7.0)
    );
}

/// What a scrape costs with 10,000 label sets, on the thread that serves
/// it (`cargo test --release -p threadtrace scrape_cost -- --ignored
/// --nocapture`): the figure in the README.
#[test]
#[ignore = "a measurement, not a check"]
fn scrape_cost() {
    let (mut m, r) = metrics(LabelFilter::default(), 10_000);
    for i in 0..10_000u32 {
        let e = in_pod(
            failure(
                100_000 + i,
                "worker",
                &format!("lib{}", i % 50),
                "rlimit_nproc",
            ),
            &format!("web-{}", i / 50),
            &format!("uid-{}", i / 50),
        );
        m.failure(&e);
    }
    let series = scrape(&r)
        .lines()
        .filter(|l| l.starts_with("threadtrace_thread_create_failures_total{"))
        .count();
    assert_eq!(series, 10_000);
    let rounds = 200;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        bytes = scrape(&r).len();
    }
    let wall = t0.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    let cpu = (cpu_time() - cpu0) * 1e3 / rounds as f64;
    println!(
        "scrape of {series} label sets ({bytes} bytes): {wall:.2} ms wall, {cpu:.2} ms CPU per scrape, mean of {rounds}"
    );
}

fn cpu_time() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
