//! Latency histograms (HDR, microsecond resolution) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks (larger values are clamped to it): one hour.
const LATENCY_MICROS_MAX: u64 = 3_600_000_000;
/// Significant decimal digits kept by the histograms (0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (1 <= low, high >= 2 * low,
        // digits <= 5): this cannot fail.
        let histogram =
            Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, SIGNIFICANT_DIGITS).expect("bounds");
        Latencies { histogram }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, LATENCY_MICROS_MAX);
        self.histogram.saturating_record(micros);
    }

    pub fn record_micros_n(&mut self, micros: u64, count: u64) {
        let micros = micros.clamp(1, LATENCY_MICROS_MAX);
        // `micros` is within the bounds, so only a count overflow could fail: saturate.
        let _ = self.histogram.record_n(micros, count);
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.histogram.len(),
            avg_ms: self.histogram.mean() / 1000.0,
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p95_ms: ms(self.histogram.value_at_quantile(0.95)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            p999_ms: ms(self.histogram.value_at_quantile(0.999)),
            max_ms: ms(self.histogram.max()),
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub avg_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut latencies = Latencies::new();
        for micros in 1..=1000u64 {
            latencies.record(Duration::from_micros(micros));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 0.5).abs() < 0.01, "{summary:?}");
        assert!((summary.p99_ms - 0.99).abs() < 0.01, "{summary:?}");
        assert!((summary.max_ms - 1.0).abs() < 0.01, "{summary:?}");
        let mut other = Latencies::new();
        other.record_micros_n(5_000, 10);
        latencies.merge(&other);
        assert_eq!(latencies.count(), 1010);
        assert!((latencies.summary().max_ms - 5.0).abs() < 0.01);
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(Latencies::new().summary(), LatencySummary::default());
        let mut latencies = Latencies::new();
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(100_000));
        let summary = latencies.summary();
        assert_eq!(summary.count, 2);
        assert!(summary.max_ms >= 3_600_000.0 * 0.999);
    }
}
