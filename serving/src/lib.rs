//! The aurum model server.
//!
//! An axum application ([`app`]) over shared state ([`AppState`]): the
//! online store, the registry, and the models loaded from it. `/predict`
//! fetches a model's features from the online store in the order recorded in
//! the registry, runs ONNX Runtime, and answers per row with the model name,
//! version and A/B arm.
//!
//! This is the only crate that speaks HTTP. It uses the feature store, the
//! registry and drift through their library APIs.

pub mod error;
pub mod models;
pub mod predict;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use feature_store::OnlineStore;
use registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;

pub use error::AppError;
pub use models::{LoadedModel, ModelSet};

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The online feature store.
    pub online: Arc<OnlineStore>,
    /// The model registry.
    pub registry: Registry,
    /// Models loaded for serving.
    pub models: ModelSet,
    ready: AtomicBool,
}

impl AppState {
    /// State over an online store and a registry, with no models loaded and
    /// not yet ready.
    pub fn new(online: Arc<OnlineStore>, registry: Registry) -> Self {
        AppState {
            online,
            registry,
            models: ModelSet::default(),
            ready: AtomicBool::new(false),
        }
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
    Router::new()
        .route("/predict", post(predict::predict))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
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
