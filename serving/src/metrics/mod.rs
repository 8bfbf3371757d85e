//! The server's metrics: counters and histograms that are plain atomics
//! updated on the request path (no locks, no allocation), with the per-arm
//! and per-route handles the handlers keep; and the OpenMetrics encoding of
//! them, run only when `GET /metrics` is scraped (`crate::routes::metrics`
//! walks the state; [`exposition`] hands each family to
//! `prometheus-client`'s encoder; [`monitor`] adds the drift monitor's
//! families).

pub mod exposition;
pub mod monitor;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::DescriptorEncoder;

pub use feature_store::metrics::{Histogram, LATENCY_BUCKETS, ROW_BUCKETS};

use exposition::{Label, counter_family, histogram_family};

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

    /// Counts a request refused at the in-flight limit.
    #[inline]
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that ran past the timeout.
    #[inline]
    pub fn count_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a shadow run skipped at the shadow limit.
    #[inline]
    pub fn count_shadow_dropped(&self) {
        self.shadow_dropped.fetch_add(1, Ordering::Relaxed);
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

    /// Encodes the per-arm histograms, the per-route latencies and the
    /// error answers.
    pub(crate) fn encode_requests(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
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
