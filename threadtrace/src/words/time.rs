//! Times of day and lengths of time.

/// "2026-11-22T03:00:00.123456Z" → "03:00:00.123": event lines.
pub fn clock_ms(time: &str) -> &str {
    time.get(11..23).unwrap_or(time)
}

/// "2026-11-22T03:00:00.123456Z" → "03:00:00": table cells.
pub fn clock_s(time: &str) -> &str {
    time.get(11..19).unwrap_or(time)
}

/// Seconds as "m:ss", or "h:mm:ss" from an hour.
pub fn uptime(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        assert_eq!(clock_ms("2026-11-22T03:00:00.123456Z"), "03:00:00.123");
        assert_eq!(clock_s("2026-11-22T03:00:00.123456Z"), "03:00:00");
        assert_eq!(clock_ms("short"), "short");
        assert_eq!(uptime(75.0), "1:15");
        assert_eq!(uptime(3725.0), "1:02:05");
    }
}
