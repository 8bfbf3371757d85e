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

    /// Appends the histogram in Prometheus text format, with its header.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        header(name, help, "histogram", out);
        self.render_labeled(name, "", out);
    }

    /// Appends the histogram's samples only, each carrying `labels`
    /// (`key="value",...`, already escaped; may be empty), for a family of
    /// histograms under one [`header`].
    pub fn render_labeled(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = self.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {total}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum());
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// Appends a metric family's `# HELP` and `# TYPE` lines.
pub fn header(name: &str, help: &str, kind: &str, out: &mut String) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value for the Prometheus text format.
pub fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
