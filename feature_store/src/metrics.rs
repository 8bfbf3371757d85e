//! Fixed-bucket histograms for the counters the feature store keeps (push
//! freshness) and the server exports (lookup latency).
//!
//! Observations are plain atomics (no locks, no allocation), so they can be
//! recorded on a request path; rendering happens only when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bucket bounds for request-path latencies, in seconds (1 µs to 100 ms).
pub const LATENCY_BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1,
];

/// Bucket bounds for data freshness, in seconds (1 ms to a day).
pub const FRESHNESS_BUCKETS: &[f64] = &[1e-3, 1e-2, 0.1, 1.0, 10.0, 60.0, 600.0, 3_600.0, 86_400.0];

/// A histogram with fixed bucket bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    /// An empty histogram with the given upper bucket bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// Records one observation of `seconds`.
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = (seconds.max(0.0) * 1e9).min(u64::MAX as f64) as u64;
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the histogram in Prometheus text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {total}");
    }
}
