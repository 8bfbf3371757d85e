//! `GET /metrics`: Prometheus text exposition of the server's counters.
//!
//! Counters and histograms are plain atomics updated on the request path
//! (no locks, no allocation); the text is produced only when scraped.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

/// A histogram with fixed bucket bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
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

    fn render(&self, name: &str, help: &str, out: &mut String) {
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

const LATENCY: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1,
];
const FRESHNESS: &[f64] = &[1e-3, 1e-2, 0.1, 1.0, 10.0, 60.0, 600.0, 3_600.0, 86_400.0];

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Online-store lookups of `/get-online-features`, per request.
    pub lookup_seconds: Histogram,
    /// Event time → visible online, per pushed row.
    pub push_freshness_seconds: Histogram,
    /// Pushed rows accepted.
    pub push_accepted: AtomicU64,
    /// Pushed rows rejected.
    pub push_rejected: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lookup_seconds: Histogram::new(LATENCY),
            push_freshness_seconds: Histogram::new(FRESHNESS),
            push_accepted: AtomicU64::new(0),
            push_rejected: AtomicU64::new(0),
        }
    }
}

/// Handles `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    let m = &state.metrics;
    m.lookup_seconds.render(
        "aurum_online_lookup_seconds",
        "Online store lookup time per /get-online-features request.",
        &mut out,
    );
    m.push_freshness_seconds.render(
        "aurum_push_freshness_seconds",
        "Time from a pushed row's event time to its visibility online.",
        &mut out,
    );
    let stats = state.online.stats();
    for (name, help, kind, value) in [
        (
            "aurum_online_hits_total",
            "Lookups that found a row.",
            "counter",
            stats.hits,
        ),
        (
            "aurum_online_misses_total",
            "Lookups that found no row.",
            "counter",
            stats.misses,
        ),
        (
            "aurum_online_entries",
            "Rows held in the online store.",
            "gauge",
            stats.entries,
        ),
        (
            "aurum_online_evictions_total",
            "Rows evicted to stay within the memory budget.",
            "counter",
            stats.evictions,
        ),
        (
            "aurum_online_bytes",
            "Bytes held in the online store, as its weigher counts them.",
            "gauge",
            stats.weighted_bytes,
        ),
        (
            "aurum_push_rows_accepted_total",
            "Pushed rows accepted.",
            "counter",
            m.push_accepted.load(Ordering::Relaxed),
        ),
        (
            "aurum_push_rows_rejected_total",
            "Pushed rows rejected.",
            "counter",
            m.push_rejected.load(Ordering::Relaxed),
        ),
        (
            "aurum_ready",
            "1 when the server is ready.",
            "gauge",
            u64::from(state.is_ready()),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP aurum_feature_view_delta_version The gold version each view's online values came from."
    );
    let _ = writeln!(out, "# TYPE aurum_feature_view_delta_version gauge");
    for view in state.online.views() {
        if let Some(version) = state.online.delta_version(&view.name) {
            let _ = writeln!(
                out,
                "aurum_feature_view_delta_version{{view=\"{}\"}} {version}",
                view.name
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
