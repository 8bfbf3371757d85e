//! Fixed-bucket histograms for the counters the feature store keeps (push
//! freshness) and the server exports (lookup latency).
//!
//! Observations are plain atomics (no locks, no allocation), so they can be
//! recorded on a request path; they are read and encoded (through
//! `prometheus-client`'s [`EncodeMetric`]) only when scraped.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Bucket bounds for request-path latencies, in seconds (1 µs to 100 ms).
pub const LATENCY_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1,
];

/// Bucket bounds for data freshness, in seconds (1 ms to a day).
pub const FRESHNESS_BUCKETS: &[f64] = &[1e-3, 1e-2, 0.1, 1.0, 10.0, 60.0, 600.0, 3_600.0, 86_400.0];

/// Bucket bounds for sizes counted in rows (batch sizes).
pub const ROW_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 10_000.0,
];

/// A histogram with fixed bucket bounds: of seconds ([`Histogram::new`]) or
/// of counts ([`Histogram::counts`]).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum of observations in units of `1 / scale` (nanoseconds for
    /// seconds, whole units for counts), so it stays an integer atomic.
    sum_scaled: AtomicU64,
    scale: f64,
    total: AtomicU64,
}

impl Histogram {
    /// An empty histogram of seconds with the given upper bucket bounds
    /// (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self::with_scale(bounds, 1e9)
    }

    /// An empty histogram of whole counts (rows, items).
    pub fn counts(bounds: &'static [f64]) -> Self {
        Self::with_scale(bounds, 1.0)
    }

    fn with_scale(bounds: &'static [f64], scale: f64) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_scaled: AtomicU64::new(0),
            scale,
            total: AtomicU64::new(0),
        }
    }

    /// Records one observation of `value`.
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let scaled = (value.max(0.0) * self.scale).min(u64::MAX as f64) as u64;
        self.sum_scaled.fetch_add(scaled, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The sum of the observations so far.
    pub fn sum(&self) -> f64 {
        self.sum_scaled.load(Ordering::Relaxed) as f64 / self.scale
    }
}

impl EncodeMetric for Histogram {
    /// Encodes the buckets, sum and count through `prometheus-client`, which
    /// writes them in the exposition format.
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        // The encoder takes each bucket's own count and accumulates them, and
        // writes a bucket bounded by infinity as `+Inf`.
        let mut buckets = Vec::with_capacity(self.bounds.len() + 1);
        let mut within = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let count = count.load(Ordering::Relaxed);
            within += count;
            buckets.push((*bound, count));
        }
        // Observations above the last bound are only in the total. Read
        // without a lock, the total can lag a bucket by an observation still
        // being recorded, so it never counts less than the buckets do.
        let total = self.total.load(Ordering::Relaxed).max(within);
        buckets.push((f64::INFINITY, total - within));
        encoder.encode_histogram::<NoLabelSet>(self.sum(), total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn buckets_are_cumulative_and_observations_past_the_last_bound_land_in_inf() {
        let histogram = Histogram::counts(&[1.0, 4.0]);
        for value in [1.0, 2.0, 3.0, 9.0] {
            histogram.observe(value);
        }
        let mut registry = Registry::default();
        registry.register("rows", "Rows", histogram);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert_eq!(
            text,
            "# HELP rows Rows.\n# TYPE rows histogram\n\
             rows_sum 15.0\nrows_count 4\n\
             rows_bucket{le=\"1.0\"} 1\nrows_bucket{le=\"4.0\"} 3\nrows_bucket{le=\"+Inf\"} 4\n\
             # EOF\n"
        );
    }
}
