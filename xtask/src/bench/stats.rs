//! Statistics for figures measured on noisy machines: the median, and a
//! bootstrap interval for the median of paired ratios (each round measures
//! every configuration once, in turn, so a drift of the machine hits the
//! pair alike).

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A deterministic generator (xorshift64*): the interval is the same for
/// the same measurements.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The median of `ratios` and its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    pub fn of(ratios: &[f64]) -> Estimate {
        const RESAMPLES: usize = 4000;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut medians: Vec<f64> = (0..RESAMPLES)
            .map(|_| {
                let sample: Vec<f64> = (0..ratios.len())
                    .map(|_| ratios[rng.below(ratios.len())])
                    .collect();
                median(&sample)
            })
            .collect();
        medians.sort_by(|a, b| a.total_cmp(b));
        Estimate {
            median: median(ratios),
            low: medians[RESAMPLES * 25 / 1000],
            high: medians[RESAMPLES * 975 / 1000],
        }
    }

    /// "+2.1% [+0.8, +3.4]" for a ratio.
    pub fn percent(&self) -> String {
        format!(
            "{:+.1}% [{:+.1}, {:+.1}]",
            (self.median - 1.0) * 100.0,
            (self.low - 1.0) * 100.0,
            (self.high - 1.0) * 100.0
        )
    }

    /// The interval contains "no difference".
    pub fn within_noise(&self) -> bool {
        self.low <= 1.0 && 1.0 <= self.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn an_interval_holds_its_median_and_tells_noise_from_a_shift() {
        let noisy = [0.97, 1.02, 1.01, 0.99, 1.03, 0.98, 1.00, 1.01, 0.99, 1.02];
        let e = Estimate::of(&noisy);
        assert!(e.low <= e.median && e.median <= e.high);
        assert!(e.within_noise(), "{e:?}");
        let shifted: Vec<f64> = noisy.iter().map(|r| r + 0.1).collect();
        assert!(!Estimate::of(&shifted).within_noise());
        assert_eq!(Estimate::of(&noisy), Estimate::of(&noisy), "deterministic");
    }
}
