//! The tracer's own CPU, memory, file descriptors and start time, as every
//! Prometheus client names them (`process_*`), read from /proc/self at
//! each scrape.
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// File descriptors counted at most: the tracer holds a few hundred.
const FDS_MAX: usize = 1 << 20;

#[derive(Debug)]
pub struct TracerProcess {
    /// Clock ticks per second and the page size, for /proc/self/stat.
    hz: f64,
    page: f64,
    /// Seconds since the epoch, read once.
    start_time: Option<f64>,
}

impl TracerProcess {
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let (hz, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let start_time = stat()
            .and_then(|s| s.starttime)
            .and_then(crate::proctable::started_at)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        TracerProcess {
            hz: hz.max(1) as f64,
            page: page.max(1) as f64,
            start_time,
        }
    }
}

struct Stat {
    utime: u64,
    stime: u64,
    vsize: u64,
    rss: u64,
    starttime: Option<u64>,
}

fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command, which may hold spaces: field 3 is index 0.
    let f: Vec<&str> = text[text.rfind(')')? + 2..].split(' ').collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        utime: n(11)?,
        stime: n(12)?,
        starttime: n(19),
        vsize: n(20)?,
        rss: n(21)?,
    })
}

fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory's own fd is among them.
    Some(dir.take(FDS_MAX).count().saturating_sub(1) as u64)
}

fn max_fds() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0).then_some(r.rlim_cur)
}

impl Collector for TracerProcess {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
            let g = ConstGauge::new(v);
            g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
        }
        if let Some(s) = stat() {
            let c = ConstCounter::new((s.utime + s.stime) as f64 / self.hz);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time the tracer used, in seconds",
                None,
                c.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "The tracer's resident memory, in bytes",
                s.rss as f64 * self.page,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "The tracer's virtual memory, in bytes",
                s.vsize as f64,
            )?;
        }
        if let Some(n) = open_fds() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                n as f64,
            )?;
        }
        if let Some(n) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "The limit on open file descriptors",
                n as f64,
            )?;
        }
        if let Some(t) = self.start_time {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "When the tracer started, in seconds since the epoch",
                t,
            )?;
        }
        Ok(())
    }
}
