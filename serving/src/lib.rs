//! The aurum model server.
//!
//! An axum application ([`app`]) over shared state ([`AppState`]): the
//! online store, the registry, and the models loaded from it. `/predict`
//! fetches a model's features from the online store in the order recorded in
//! the registry, runs ONNX Runtime, and answers per row with the model name,
//! version and A/B arm.
//!
//! This is the only crate that speaks HTTP. It uses the feature store and the
//! registry through their library APIs.

pub mod edge;
pub mod error;
pub mod feedback;
pub mod metrics;
pub mod mlflow;
pub mod models;
pub mod monitor;
mod monitor_metrics;
pub mod oip;
pub mod online_features;
pub mod policy;
pub mod predict;
pub mod push;
pub mod reload;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use feature_store::OnlineStore;
use registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use edge::Limits;
pub use error::AppError;
pub use models::{LoadedModel, ModelSet};
pub use monitoring::PredictionLog;
pub use policy::{ServingConfig, ServingPolicy};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The online feature store.
    pub online: Arc<OnlineStore>,
    /// The model registry.
    pub registry: Registry,
    /// Models loaded for serving.
    pub models: ModelSet,
    /// The gold tables `POST /materialize` loads from, when configured.
    pub offline: Option<delta::DeltaStore>,
    /// Applies pushed rows (shared with Arrow Flight `DoPut`).
    pub pusher: Arc<feature_store::online::push::Pusher>,
    /// Counters and histograms for `/metrics`.
    pub metrics: metrics::Metrics,
    /// Counters of the model watcher.
    pub reload: reload::ReloadStats,
    /// How the watcher loads models.
    pub reload_options: reload::ReloadOptions,
    /// How each model is served (aliases, A/B split, shadow, batching).
    pub config: ServingConfig,
    /// Protections: in-flight limit, timeout, admin token.
    pub limits: Limits,
    /// Where predictions are logged, when they are.
    pub prediction_log: Option<PredictionLog>,
    /// The live drift and quality monitor, when on (it is fed by the
    /// prediction log's writer).
    pub monitor: Option<Arc<monitoring::Monitor>>,
    in_flight: Arc<Semaphore>,
    shadows: Arc<Semaphore>,
    request_ids: (u32, AtomicU64),
    ready: AtomicBool,
}

impl AppState {
    /// State over an online store and a registry, with no models loaded and
    /// not yet ready.
    pub fn new(online: Arc<OnlineStore>, registry: Registry) -> Self {
        AppState {
            pusher: Arc::new(feature_store::online::push::Pusher::online_only(
                online.clone(),
            )),
            online,
            registry,
            models: ModelSet::default(),
            offline: None,
            metrics: metrics::Metrics::default(),
            reload: reload::ReloadStats::default(),
            reload_options: reload::ReloadOptions::default(),
            config: ServingConfig::default(),
            in_flight: Arc::new(Semaphore::new(Limits::default().max_in_flight)),
            shadows: Arc::new(Semaphore::new(Limits::default().max_shadow_in_flight)),
            limits: Limits::default(),
            prediction_log: None,
            monitor: None,
            request_ids: (std::process::id() ^ random_u32(), AtomicU64::new(0)),
            ready: AtomicBool::new(false),
        }
    }

    /// The same state serving models under `config`.
    pub fn with_config(mut self, config: ServingConfig) -> Self {
        self.config = config;
        self
    }

    /// The same state with these protections.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
        self.shadows = Arc::new(Semaphore::new(limits.max_shadow_in_flight));
        self.limits = limits;
        self
    }

    /// The same state, loading models as `options` says.
    pub fn with_reload(mut self, options: reload::ReloadOptions) -> Self {
        self.reload_options = options;
        self
    }

    /// The same state, logging every prediction to `log`.
    pub fn with_prediction_log(mut self, log: PredictionLog) -> Self {
        self.prediction_log = Some(log);
        self
    }

    /// The same state with a live monitor. The monitor sees what the
    /// prediction log's writer hands it: start that log with
    /// [`PredictionLog::start_with`] and the same monitor.
    pub fn with_monitor(mut self, monitor: Arc<monitoring::Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// A slot for one more request, or `None` at the in-flight limit.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.limits
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.available_permits())
    }

    /// A slot for one shadow run, or `None` when too many run.
    pub fn admit_shadow(&self) -> Option<OwnedSemaphorePermit> {
        self.shadows.clone().try_acquire_owned().ok()
    }

    /// Waits until no shadow run is in progress (for shutdown, so their
    /// predictions reach the log).
    pub async fn drain_shadows(&self) {
        let all = u32::try_from(self.limits.max_shadow_in_flight).unwrap_or(u32::MAX);
        if all > 0 {
            let _ = self.shadows.acquire_many(all).await;
        }
    }

    /// Shadow runs in progress.
    pub fn shadow_in_flight(&self) -> usize {
        self.limits
            .max_shadow_in_flight
            .saturating_sub(self.shadows.available_permits())
    }

    /// A new request id, unique within this process and unlikely to repeat
    /// across processes.
    pub fn new_request_id(&self) -> Arc<str> {
        use std::io::Write;
        let n = self.request_ids.1.fetch_add(1, Ordering::Relaxed);
        let mut buffer = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        let _ = write!(cursor, "{:08x}-{n:x}", self.request_ids.0);
        let end = usize::try_from(cursor.position()).unwrap_or(0);
        Arc::from(std::str::from_utf8(&buffer[..end]).unwrap_or_default())
    }

    /// The same state, materializing from (and pushing offline to) the
    /// gold tables of `store`. Starts the push writer task, so it must be
    /// called inside a tokio runtime.
    pub fn with_offline(mut self, store: delta::DeltaStore) -> Self {
        self.pusher = Arc::new(feature_store::online::push::Pusher::with_offline(
            self.online.clone(),
            store.clone(),
        ));
        self.offline = Some(store);
        self
    }

    /// Marks the server ready (online store warm, models loaded).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the server is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route("/materialize", post(online_features::materialize))
        .route("/admin/reload", post(reload::reload_now))
        .route_layer(from_fn_with_state(state.clone(), edge::require_admin));
    let mlflow = mlflow::routes().route_layer(from_fn_with_state(
        state.clone(),
        edge::require_admin_for_writes,
    ));
    Router::new()
        .route("/predict", post(predict::predict))
        .route(
            "/get-online-features",
            post(online_features::get_online_features),
        )
        .route("/feature-views", get(online_features::feature_views))
        .route("/push", post(push::push))
        .route("/drift/{model}", get(monitor::drift_report))
        .route("/feedback", post(feedback::feedback))
        .route("/metrics", get(metrics::metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(admin)
        .merge(mlflow)
        .merge(oip::routes())
        .layer(from_fn_with_state(state.clone(), edge::edge))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(predict::now_micros() as u64);
    hasher.finish() as u32
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Answers go out as soon as they are written (no Nagle delay).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "live"}))
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    if state.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

#[cfg(test)]
mod tests;
