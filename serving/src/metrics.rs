//! `GET /metrics`: Prometheus text exposition of the server's counters.
//!
//! Counters and histograms are plain atomics updated on the request path
//! (no locks, no allocation); the text is produced only when scraped.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

pub use feature_store::metrics::{Histogram, LATENCY_BUCKETS, ROW_BUCKETS, header, label_value};

use crate::AppState;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Online-store lookups of `/get-online-features`, per request.
    pub lookup_seconds: Histogram,
    /// `/predict`: reading and checking the JSON body.
    pub parse_seconds: Histogram,
    /// `/predict`: writing the JSON answer.
    pub serialize_seconds: Histogram,
    /// Requests refused with 503 because the server was at its in-flight
    /// limit.
    pub shed: AtomicU64,
    /// Requests that ran past the per-request timeout.
    pub timeouts: AtomicU64,
    /// Shadow runs skipped because too many were already running.
    pub shadow_dropped: AtomicU64,
    arms: RwLock<HashMap<ArmKey, Arc<ArmMetrics>>>,
    routes: RwLock<HashMap<String, Arc<Histogram>>>,
    errors: Mutex<BTreeMap<(String, u16, &'static str), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lookup_seconds: Histogram::new(LATENCY_BUCKETS),
            parse_seconds: Histogram::new(LATENCY_BUCKETS),
            serialize_seconds: Histogram::new(LATENCY_BUCKETS),
            shed: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            shadow_dropped: AtomicU64::new(0),
            arms: RwLock::default(),
            routes: RwLock::default(),
            errors: Mutex::default(),
        }
    }
}

/// Which model, version and arm a prediction metric is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArmKey {
    /// The model name.
    pub model: String,
    /// The version.
    pub version: u64,
    /// The arm (alias).
    pub arm: String,
    /// Whether these are shadow runs.
    pub shadow: bool,
}

/// Per model, version and arm: where a prediction's time goes.
#[derive(Debug)]
pub struct ArmMetrics {
    /// The whole request, arrival to answer ready (live arms).
    pub request_seconds: Histogram,
    /// Assembling the input: online-store lookups and request values.
    pub feature_seconds: Histogram,
    /// ONNX Runtime (including any wait in the micro-batcher).
    pub inference_seconds: Histogram,
    /// Rows per inference call.
    pub batch_rows: Histogram,
}

impl Default for ArmMetrics {
    fn default() -> Self {
        ArmMetrics {
            request_seconds: Histogram::new(LATENCY_BUCKETS),
            feature_seconds: Histogram::new(LATENCY_BUCKETS),
            inference_seconds: Histogram::new(LATENCY_BUCKETS),
            batch_rows: Histogram::counts(ROW_BUCKETS),
        }
    }
}

impl Metrics {
    /// The metrics of one model, version and arm (created on first use).
    pub fn arm(&self, key: &ArmKey) -> Arc<ArmMetrics> {
        if let Some(m) = self.arms.read().unwrap_or_else(|e| e.into_inner()).get(key) {
            return m.clone();
        }
        self.arms
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The latency histogram of a route (its matched path).
    pub fn route(&self, route: &str) -> Arc<Histogram> {
        if let Some(h) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
        {
            return h.clone();
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_string())
            .or_insert_with(|| Arc::new(Histogram::new(LATENCY_BUCKETS)))
            .clone()
    }

    /// Counts an error answer.
    pub fn error(&self, route: &str, status: u16, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_string(), status, code))
            .or_default() += 1;
    }

    fn render_predictions(&self, out: &mut String) {
        let arms: BTreeMap<ArmKey, Arc<ArmMetrics>> = self
            .arms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, help, pick) in [
            (
                "aurum_predict_request_seconds",
                "Whole /predict requests per model, version and arm.",
                (|m: &ArmMetrics| &m.request_seconds) as fn(&ArmMetrics) -> &Histogram,
            ),
            (
                "aurum_predict_feature_seconds",
                "Assembling a prediction's input (online-store lookups, request values).",
                |m| &m.feature_seconds,
            ),
            (
                "aurum_predict_inference_seconds",
                "ONNX Runtime per inference call, including any micro-batching wait.",
                |m| &m.inference_seconds,
            ),
            (
                "aurum_predict_batch_rows",
                "Rows per inference call.",
                |m| &m.batch_rows,
            ),
        ] {
            header(name, help, "histogram", out);
            for (key, metrics) in &arms {
                let labels = format!(
                    "model=\"{}\",version=\"{}\",arm=\"{}\",shadow=\"{}\"",
                    label_value(&key.model),
                    key.version,
                    label_value(&key.arm),
                    key.shadow
                );
                pick(metrics).render_labeled(name, &labels, out);
            }
        }
        header(
            "aurum_http_request_seconds",
            "Requests per route, arrival to answer.",
            "histogram",
            out,
        );
        let routes: BTreeMap<String, Arc<Histogram>> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (route, histogram) in routes {
            let labels = format!("route=\"{}\"", label_value(&route));
            histogram.render_labeled("aurum_http_request_seconds", &labels, out);
        }
        header(
            "aurum_http_errors_total",
            "Error answers by route, status and code.",
            "counter",
            out,
        );
        for ((route, status, code), n) in
            self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "aurum_http_errors_total{{route=\"{}\",status=\"{status}\",code=\"{code}\"}} {n}",
                label_value(route)
            );
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
    m.parse_seconds.render(
        "aurum_predict_parse_seconds",
        "Reading and checking a /predict body.",
        &mut out,
    );
    m.serialize_seconds.render(
        "aurum_predict_serialize_seconds",
        "Writing a /predict answer.",
        &mut out,
    );
    m.render_predictions(&mut out);
    if let Some(monitor) = &state.monitor {
        crate::monitor_metrics::render(monitor, &mut out);
    }
    let mut batch_lines = String::new();
    let mut served_lines = String::new();
    let mut queued_for_batching = 0;
    for (name, served) in state.models.all() {
        let mut seen = Vec::new();
        for (arm, model) in served.all() {
            let _ = writeln!(
                served_lines,
                "aurum_model_served_version{{model=\"{}\",arm=\"{}\"}} {}",
                label_value(&name),
                label_value(arm),
                model.version.version
            );
            if let Some(rows) = model.batch_rows()
                && !seen.contains(&model.version.version)
            {
                seen.push(model.version.version);
                queued_for_batching += model.queued();
                let labels = format!(
                    "model=\"{}\",version=\"{}\"",
                    label_value(&name),
                    model.version.version
                );
                rows.render_labeled("aurum_batch_inference_rows", &labels, &mut batch_lines);
            }
        }
    }
    header(
        "aurum_batch_inference_rows",
        "Rows per micro-batched inference, per model version.",
        "histogram",
        &mut out,
    );
    out.push_str(&batch_lines);
    header(
        "aurum_model_served_version",
        "The version each model serves at each arm.",
        "gauge",
        &mut out,
    );
    out.push_str(&served_lines);
    let log = state
        .prediction_log
        .as_ref()
        .map(|l| (l.stats(), l.queued()));
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
            "aurum_requests_in_flight",
            "Requests being answered now.",
            "gauge",
            state.in_flight() as u64,
        ),
        (
            "aurum_requests_shed_total",
            "Requests refused with 503 at the in-flight limit.",
            "counter",
            m.shed.load(Ordering::Relaxed),
        ),
        (
            "aurum_request_timeouts_total",
            "Requests that ran past the per-request timeout.",
            "counter",
            m.timeouts.load(Ordering::Relaxed),
        ),
        (
            "aurum_shadow_dropped_total",
            "Shadow runs skipped because too many were running.",
            "counter",
            m.shadow_dropped.load(Ordering::Relaxed),
        ),
        (
            "aurum_shadow_in_flight",
            "Shadow runs in progress.",
            "gauge",
            state.shadow_in_flight() as u64,
        ),
        (
            "aurum_batch_queue_depth",
            "Requests waiting in micro-batchers, over all models.",
            "gauge",
            queued_for_batching as u64,
        ),
        (
            "aurum_prediction_log_queue_depth",
            "Predictions waiting to be written to the log.",
            "gauge",
            log.map_or(0, |(_, q)| q as u64),
        ),
        (
            "aurum_prediction_log_written_total",
            "Predictions committed to the log table.",
            "counter",
            log.map_or(0, |(s, _)| s.written.load(Ordering::Relaxed)),
        ),
        (
            "aurum_prediction_log_dropped_total",
            "Predictions not logged: the queue was full or a commit failed.",
            "counter",
            log.map_or(0, |(s, _)| s.dropped.load(Ordering::Relaxed)),
        ),
        (
            "aurum_ready",
            "1 when the server is ready.",
            "gauge",
            u64::from(state.is_ready()),
        ),
    ] {
        header(name, help, kind, &mut out);
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
