//! Counts and sizes.

/// `n` and a noun, "1 thread" or "2 threads", "2 processes".
/// Thousands are separated: "1,711 processes".
pub fn count(n: impl Into<i128> + Copy + std::fmt::Display, noun: &str) -> String {
    let v: i128 = n.into();
    let shown = match u64::try_from(v) {
        Ok(u) => thousands(u),
        Err(_) => v.to_string(),
    };
    if v == 1 {
        format!("{shown} {noun}")
    } else if noun.ends_with('s') {
        format!("{shown} {noun}es")
    } else {
        format!("{shown} {noun}s")
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const KIB: f64 = 1024.0;
const MIB: f64 = KIB * KIB;

/// Memory in sentences: whole MiB, or GiB with one decimal from 1 GiB:
/// "180 MiB", "1.5 GiB".
pub fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (MIB * KIB))
    } else {
        format!("{:.0} MiB", n as f64 / MIB)
    }
}

/// Memory in a table cell, to a tenth of its unit: "512 B", "3.2 KiB",
/// "194.1 MiB".
pub fn bytes_fine(n: u64) -> String {
    match n as f64 {
        b if b < KIB => format!("{n} B"),
        b if b < MIB => format!("{:.1} KiB", b / KIB),
        b if b < MIB * KIB => format!("{:.1} MiB", b / MIB),
        b => format!("{:.1} GiB", b / MIB / KIB),
    }
}

/// A growth in 4 characters or so, for narrow columns: "194M", "1.2G".
pub fn bytes_short(n: u64) -> String {
    match n as f64 / MIB {
        m if m >= KIB => format!("{:.1}G", m / KIB),
        m => format!("{m:.0}M"),
    }
}

/// A limit, u64::MAX (no limit) as "∞", for table cells.
pub fn limit_or_infinity(n: u64) -> String {
    if n == u64::MAX {
        "∞".into()
    } else {
        n.to_string()
    }
}

/// A limit, u64::MAX (no limit) as "unlimited", for sentences.
pub fn limit_or_unlimited(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        assert_eq!(count(1, "thread"), "1 thread");
        assert_eq!(count(0, "thread"), "0 threads");
        assert_eq!(count(2, "process"), "2 processes");
        assert_eq!(count(1711, "process"), "1,711 processes");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(bytes(180 << 20), "180 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes_fine(512), "512 B");
        assert_eq!(bytes_fine(194 << 20), "194.0 MiB");
        assert_eq!(bytes_short(194 << 20), "194M");
        assert_eq!(bytes_short(3 << 29), "1.5G");
        assert_eq!(limit_or_infinity(u64::MAX), "∞");
        assert_eq!(limit_or_unlimited(u64::MAX), "unlimited");
        assert_eq!(limit_or_unlimited(6), "6");
    }
}
