//! `GET /metrics`: Prometheus text exposition of the server's counters.
//!
//! Counters and histograms are plain atomics updated on the request path
//! (no locks, no allocation); the text is produced only when scraped.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub use feature_store::metrics::{Histogram, LATENCY_BUCKETS};

use crate::AppState;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Online-store lookups of `/get-online-features`, per request.
    pub lookup_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lookup_seconds: Histogram::new(LATENCY_BUCKETS),
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
    let push = state.pusher.stats();
    push.freshness_seconds.render(
        "aurum_push_freshness_seconds",
        "Time from a pushed row's event time to its visibility online.",
        &mut out,
    );
    let stats = state.online.stats();
    for (name, help, kind, value) in [
        (
            "aurum_model_swaps_total",
            "Model versions swapped in without a restart.",
            "counter",
            state.reload.swaps.load(Ordering::Relaxed),
        ),
        (
            "aurum_model_load_failures_total",
            "Model versions that failed to load or warm up (the old version kept serving).",
            "counter",
            state.reload.failures.load(Ordering::Relaxed),
        ),
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
            push.accepted.load(Ordering::Relaxed),
        ),
        (
            "aurum_push_rows_rejected_total",
            "Pushed rows rejected.",
            "counter",
            push.rejected.load(Ordering::Relaxed),
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
    let per_view = state.online.view_stats();
    for (name, help, value) in [
        (
            "aurum_online_view_entries",
            "Entities held per feature view.",
            (|v: &feature_store::online::ViewStats| v.entries) as fn(&_) -> u64,
        ),
        (
            "aurum_online_view_bytes",
            "Bytes held per feature view, as the weigher counts them.",
            |v| v.bytes,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for view in &per_view {
            let _ = writeln!(out, "{name}{{view=\"{}\"}} {}", view.view, value(view));
        }
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
