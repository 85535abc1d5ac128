//! Small statistics shared by the benchmark binaries.

use std::time::Duration;

/// The `p` quantile (0..=1) of `samples`, nearest rank; zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    if s.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[idx.min(s.len() - 1)]
}

/// Milliseconds, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = [5u64, 1, 4, 2, 3]
            .iter()
            .map(|m| Duration::from_millis(*m))
            .collect();
        assert_eq!(percentile(&s, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&s, 0.5), Duration::from_millis(3));
        assert_eq!(percentile(&s, 1.0), Duration::from_millis(5));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(1500)), 1.5);
    }
}
