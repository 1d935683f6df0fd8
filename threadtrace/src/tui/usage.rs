//! The tracer's own cost, for the header: CPU (all its threads) and
//! resident memory, from /proc/self, and the trace file's size.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::data::Usage;

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11);
    Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split(' ').nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(0) as u64)
}

pub struct Sampler {
    trace: Option<PathBuf>,
    hz: f64,
    last: Option<(Instant, u64)>,
}

impl Sampler {
    pub fn new(trace: Option<PathBuf>) -> Sampler {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Sampler {
            trace,
            hz: if hz > 0 { hz as f64 } else { 100.0 },
            last: None,
        }
    }

    /// CPU since the previous sample, as a percentage of one CPU.
    pub fn sample(&mut self) -> Usage {
        let now = Instant::now();
        let ticks = cpu_ticks();
        let cpu_percent = match (self.last, ticks) {
            (Some((then, before)), Some(t)) => {
                let wall = now
                    .saturating_duration_since(then)
                    .max(Duration::from_millis(1));
                t.saturating_sub(before) as f64 / self.hz / wall.as_secs_f64() * 100.0
            }
            _ => 0.0,
        };
        if let Some(t) = ticks {
            self.last = Some((now, t));
        }
        Usage {
            cpu_percent,
            rss_bytes: rss_bytes().unwrap_or(0),
            trace_bytes: self
                .trace
                .as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_and_memory() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"12345").unwrap();
        let mut s = Sampler::new(Some(f.path().to_path_buf()));
        let first = s.sample();
        assert!(first.rss_bytes > 1 << 20, "{first:?}");
        assert_eq!(first.trace_bytes, Some(5));
        assert_eq!(first.cpu_percent, 0.0, "no interval yet");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(200) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let busy = s.sample();
        assert!(busy.cpu_percent > 0.0, "200 ms of spinning: {busy:?}");
    }
}
