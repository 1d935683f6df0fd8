//! Exact counts by library and cause. The kernel counts every failure per
//! (process, api, errno), exactly; which library asked and which limit
//! was hit is known only for the failures captured in detail (in a storm,
//! --detail-rate captures a sample, and a full ring buffer loses some).
//! A process's exact count is shared among its (library, cause) groups as
//! its detailed failures were: the dashboard's panel and the metrics'
//! counters both use this.

/// `total` split in proportion to `weights`, largest remainders first so
/// that the parts sum to `total` exactly. When `total` is at least the sum
/// of the weights, each part is at least its weight. All zero weights
/// share nothing (every part 0).
pub fn share(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts: Vec<u64> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    let mut given: u64 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let exact = w as u128 * total as u128;
        let part = (exact / sum) as u64;
        parts.push(part);
        given += part;
        remainders.push((exact % sum, i));
    }
    // Stable: equal remainders go to the first groups.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take((total - given) as usize) {
        parts[i] += 1;
    }
    parts
}

/// A process's exact count shared among its groups: each group gets at
/// least the failures it saw in detail (events can arrive before the
/// counters that include them).
pub fn exact_by_group(exact: u64, detailed: &[u64]) -> Vec<u64> {
    let seen: u64 = detailed.iter().sum();
    share(exact.max(seen), detailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_sum_to_the_total_in_proportion() {
        assert_eq!(share(4000, &[3, 1]), vec![3000, 1000]);
        assert_eq!(share(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(share(0, &[5, 2]), vec![0, 0]);
        assert_eq!(share(7, &[0, 0]), vec![0, 0]);
        assert_eq!(share(7, &[]), Vec::<u64>::new());
        assert_eq!(
            share(u64::MAX, &[u64::MAX, 1]).iter().sum::<u64>(),
            u64::MAX
        );
        for total in 0..200u64 {
            let w = [7, 0, 3, 11, 1];
            let p = share(total, &w);
            assert_eq!(p.iter().sum::<u64>(), total);
            assert_eq!(p[1], 0, "no detail, no share");
        }
    }

    #[test]
    fn groups_keep_at_least_what_they_saw() {
        assert_eq!(exact_by_group(4000, &[3, 1]), vec![3000, 1000]);
        assert_eq!(
            exact_by_group(2, &[3, 1]),
            vec![3, 1],
            "counters behind the events"
        );
        for exact in 4..100 {
            let p = exact_by_group(exact, &[3, 1]);
            assert!(p[0] >= 3 && p[1] >= 1 && p.iter().sum::<u64>() == exact);
        }
    }
}
