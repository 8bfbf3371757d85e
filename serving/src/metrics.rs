//! `GET /metrics`: the server's counters in the OpenMetrics text format,
//! encoded by `prometheus-client`.
//!
//! Counters and histograms are plain atomics updated on the request path
//! (no locks, no allocation), and the handlers keep the per-arm and
//! per-route handles they update. A scrape registers a [`Collector`] that
//! walks that state and hands each family to the library's encoder, so the
//! request path never pays for the exposition.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

pub use feature_store::metrics::{Histogram, LATENCY_BUCKETS, ROW_BUCKETS};

use crate::{AppError, AppState};

/// The OpenMetrics text format's content type: `prometheus-client` writes
/// OpenMetrics (counters' `_total` samples, the closing `# EOF`).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

    /// The per-arm histograms, the per-route latencies and the error
    /// answers.
    fn encode_requests(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        // Copied out (handles only) so the hot path's read lock is not held
        // while encoding, and sorted so scrapes list arms in a stable order.
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
            histogram_family(
                encoder,
                name,
                help,
                arms.iter().map(|(key, metrics)| {
                    let labels = [
                        ("model", Label::Text(&key.model)),
                        ("version", Label::Int(key.version)),
                        ("arm", Label::Text(&key.arm)),
                        ("shadow", Label::Bool(key.shadow)),
                    ];
                    (labels, pick(metrics))
                }),
            )?;
        }
        let routes: BTreeMap<String, Arc<Histogram>> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        histogram_family(
            encoder,
            "aurum_http_request_seconds",
            "Requests per route, arrival to answer.",
            routes
                .iter()
                .map(|(route, histogram)| ([("route", Label::Text(route))], &**histogram)),
        )?;
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        counter_family(
            encoder,
            "aurum_http_errors",
            "Error answers by route, status and code.",
            errors.iter().map(|((route, status, code), n)| {
                (
                    [
                        ("route", Label::Text(route)),
                        ("status", Label::Int(u64::from(*status))),
                        ("code", Label::Text(code)),
                    ],
                    *n,
                )
            }),
        )
    }
}

/// A label value. `prometheus-client` writes label values as they are
/// given, and model, arm, route and view names are free text, so text is
/// escaped here (`\`, `"` and line feeds, as the exposition formats ask).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Label<'a> {
    /// Free text (the encoder escapes it).
    Text(&'a str),
    /// A whole number (a version, a status).
    Int(u64),
    /// A flag, as `true` or `false`.
    Bool(bool),
}

impl EncodeLabelValue for Label<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        match *self {
            // prometheus-client (from 0.25.2, the version pinned) escapes
            // `\\`, `"` and newlines in label values itself.
            Label::Text(text) => encoder.write_str(text),
            Label::Int(n) => EncodeLabelValue::encode(&n, encoder),
            Label::Bool(b) => EncodeLabelValue::encode(&b, encoder),
        }
    }
}

/// Encodes a histogram family of one unlabelled histogram.
fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> fmt::Result {
    EncodeMetric::encode(
        histogram,
        encoder.encode_descriptor(name, help, None, MetricType::Histogram)?,
    )
}

/// Encodes a histogram family, one histogram per label set.
fn histogram_family<S: EncodeLabelSet, H: Deref<Target = Histogram>>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, H)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        EncodeMetric::encode(&*histogram, family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes a counter family of one unlabelled counter. `name` comes without
/// `_total`: the encoder appends it to the sample.
pub(crate) fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// Encodes a counter family, one sample per label set. `name` comes without
/// `_total`: the encoder appends it to each sample.
pub(crate) fn counter_family<S: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Encodes a gauge family of one unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Encodes a gauge family, one sample per label set.
pub(crate) fn gauge_family<S: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, V)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// One scrape: the server's state, walked when the registry encodes it.
#[derive(Debug)]
struct Scrape(Arc<AppState>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let state = &*self.0;
        let encoder = &mut encoder;
        let m = &state.metrics;
        histogram(
            encoder,
            "aurum_online_lookup_seconds",
            "Online store lookup time per /get-online-features request.",
            &m.lookup_seconds,
        )?;
        histogram(
            encoder,
            "aurum_predict_parse_seconds",
            "Reading and checking a /predict body.",
            &m.parse_seconds,
        )?;
        histogram(
            encoder,
            "aurum_predict_serialize_seconds",
            "Writing a /predict answer.",
            &m.serialize_seconds,
        )?;
        m.encode_requests(encoder)?;
        if let Some(monitor) = &state.monitor {
            crate::monitor_metrics::encode(monitor, encoder)?;
        }
        let served = state.models.all();
        // A batcher is shared by the arms that serve the same version: its
        // rows and its queue are counted once per model and version.
        let mut batched: Vec<(&str, u64, &Histogram)> = Vec::new();
        let mut queued_for_batching: usize = 0;
        for (name, models) in &served {
            let name = name.as_str();
            for (_, model) in models.all() {
                let version = model.version.version;
                if let Some(rows) = model.batch_rows()
                    && !batched.iter().any(|&(n, v, _)| n == name && v == version)
                {
                    batched.push((name, version, rows));
                    queued_for_batching += model.queued();
                }
            }
        }
        histogram_family(
            encoder,
            "aurum_batch_inference_rows",
            "Rows per micro-batched inference, per model version.",
            batched.iter().map(|&(name, version, rows)| {
                (
                    [
                        ("model", Label::Text(name)),
                        ("version", Label::Int(version)),
                    ],
                    rows,
                )
            }),
        )?;
        gauge_family(
            encoder,
            "aurum_model_served_version",
            "The version each model serves at each arm.",
            served.iter().flat_map(|(name, models)| {
                models.all().map(move |(arm, model)| {
                    (
                        [("model", Label::Text(name)), ("arm", Label::Text(arm))],
                        model.version.version,
                    )
                })
            }),
        )?;
        let log = state
            .prediction_log
            .as_ref()
            .map(|l| (l.stats(), l.queued()));
        let push = state.pusher.stats();
        histogram(
            encoder,
            "aurum_push_freshness_seconds",
            "Time from a pushed row's event time to its visibility online.",
            &push.freshness_seconds,
        )?;
        let stats = state.online.stats();
        // Counters are named without `_total`: the encoder appends it, so
        // the samples read `aurum_model_swaps_total` and so on.
        for (name, help, kind, value) in [
            (
                "aurum_model_swaps",
                "Model versions swapped in without a restart.",
                MetricType::Counter,
                state.reload.swaps.load(Ordering::Relaxed),
            ),
            (
                "aurum_model_load_failures",
                "Model versions that failed to load or warm up (the old version kept serving).",
                MetricType::Counter,
                state.reload.failures.load(Ordering::Relaxed),
            ),
            (
                "aurum_online_hits",
                "Lookups that found a row.",
                MetricType::Counter,
                stats.hits,
            ),
            (
                "aurum_online_misses",
                "Lookups that found no row.",
                MetricType::Counter,
                stats.misses,
            ),
            (
                "aurum_online_entries",
                "Rows held in the online store.",
                MetricType::Gauge,
                stats.entries,
            ),
            (
                "aurum_online_evictions",
                "Rows evicted to stay within the memory budget.",
                MetricType::Counter,
                stats.evictions,
            ),
            (
                "aurum_online_bytes",
                "Bytes held in the online store, as its weigher counts them.",
                MetricType::Gauge,
                stats.weighted_bytes,
            ),
            (
                "aurum_push_rows_accepted",
                "Pushed rows accepted.",
                MetricType::Counter,
                push.accepted.load(Ordering::Relaxed),
            ),
            (
                "aurum_push_rows_rejected",
                "Pushed rows rejected.",
                MetricType::Counter,
                push.rejected.load(Ordering::Relaxed),
            ),
            (
                "aurum_requests_in_flight",
                "Requests being answered now.",
                MetricType::Gauge,
                state.in_flight() as u64,
            ),
            (
                "aurum_requests_shed",
                "Requests refused with 503 at the in-flight limit.",
                MetricType::Counter,
                m.shed.load(Ordering::Relaxed),
            ),
            (
                "aurum_request_timeouts",
                "Requests that ran past the per-request timeout.",
                MetricType::Counter,
                m.timeouts.load(Ordering::Relaxed),
            ),
            (
                "aurum_shadow_dropped",
                "Shadow runs skipped because too many were running.",
                MetricType::Counter,
                m.shadow_dropped.load(Ordering::Relaxed),
            ),
            (
                "aurum_shadow_in_flight",
                "Shadow runs in progress.",
                MetricType::Gauge,
                state.shadow_in_flight() as u64,
            ),
            (
                "aurum_batch_queue_depth",
                "Requests waiting in micro-batchers, over all models.",
                MetricType::Gauge,
                queued_for_batching as u64,
            ),
            (
                "aurum_prediction_log_queue_depth",
                "Predictions waiting to be written to the log.",
                MetricType::Gauge,
                log.map_or(0, |(_, q)| q as u64),
            ),
            (
                "aurum_prediction_log_written",
                "Predictions committed to the log table.",
                MetricType::Counter,
                log.map_or(0, |(s, _)| s.written.load(Ordering::Relaxed)),
            ),
            (
                "aurum_prediction_log_dropped",
                "Predictions not logged: the queue was full or a commit failed.",
                MetricType::Counter,
                log.map_or(0, |(s, _)| s.dropped.load(Ordering::Relaxed)),
            ),
            (
                "aurum_ready",
                "1 when the server is ready.",
                MetricType::Gauge,
                u64::from(state.is_ready()),
            ),
        ] {
            match kind {
                MetricType::Counter => counter(encoder, name, help, value)?,
                _ => gauge(encoder, name, help, value)?,
            }
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
            gauge_family(
                encoder,
                name,
                help,
                per_view
                    .iter()
                    .map(|view| ([("view", Label::Text(&view.view))], value(view))),
            )?;
        }
        let views = state.online.views();
        gauge_family(
            encoder,
            "aurum_feature_view_delta_version",
            "The gold version each view's online values came from.",
            views.iter().filter_map(|view| {
                let version = state.online.delta_version(&view.name)?;
                Some(([("view", Label::Text(&view.name))], version))
            }),
        )
    }
}

/// Handles `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, AppError> {
    // A registry per scrape, holding a collector over the shared state: it
    // costs two small allocations, and the state needs no registry of its
    // own that the request path would have to know about.
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(state)));
    let mut body = String::with_capacity(16 << 10);
    text::encode(&mut body, &registry)
        .map_err(|_| AppError::internal("the metrics could not be encoded"))?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One gauge whose model label needs every escape.
    #[derive(Debug)]
    struct Quoted;

    impl Collector for Quoted {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
            let labels = [
                ("model", Label::Text("a\"b\\c\nd")),
                ("version", Label::Int(3)),
                ("shadow", Label::Bool(false)),
            ];
            gauge_family(&mut encoder, "g", "A gauge.", [(labels, 1u64)])?;
            counter(&mut encoder, "c", "A counter.", 2)
        }
    }

    #[test]
    fn label_text_is_escaped_and_counters_get_their_total_suffix() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Quoted));
        let mut out = String::new();
        text::encode(&mut out, &registry).unwrap();
        assert_eq!(
            out,
            "# HELP g A gauge.\n# TYPE g gauge\n\
             g{model=\"a\\\"b\\\\c\\nd\",version=\"3\",shadow=\"false\"} 1\n\
             # HELP c A counter.\n# TYPE c counter\nc_total 2\n\
             # EOF\n"
        );
    }
}
