//! The aurum model server.
//!
//! An axum application ([`app`]) over shared state ([`AppState`]): the
//! online store, the registry, and the models loaded from it. `/predict`
//! fetches a model's features from the online store in the order recorded in
//! the registry, runs ONNX Runtime, and answers per row with the model name,
//! version and A/B arm.
//!
//! - [`inference`]: the models served and how they run, with no HTTP;
//! - [`routes`]: aurum's own routes, one file per route group;
//! - [`protocols`]: other systems' protocols (Open Inference Protocol,
//!   MLflow);
//! - [`edge`] (the middleware every request passes), [`error`] (every
//!   domain error mapped to a status and code), [`metrics`], [`state`] and
//!   [`tasks`] (the model watcher and the drift monitor's loop).
//!
//! This is the only crate that speaks HTTP. It uses the feature store and the
//! registry through their library APIs.

pub mod edge;
pub mod error;
pub mod idempotency;
pub mod inference;
pub mod metrics;
pub mod protocols;
pub mod routes;
pub mod state;
pub mod tasks;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use error::AppError;
pub use inference::{LoadedModel, ModelSet, ReloadOptions, ServingConfig, ServingPolicy};
pub use monitoring::PredictionLog;
pub use state::{AppState, Limits, MAX_BODY_BYTES};

/// The HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    use routes::{admin, drift, feedback, health, metrics, online_features, predict, push};
    let admin_routes = Router::new()
        .route("/materialize", post(admin::materialize))
        .route(
            "/materialize-incremental",
            post(admin::materialize_incremental),
        )
        .route("/admin/reload", post(admin::reload_now))
        .route_layer(from_fn(edge::require_json))
        .route_layer(from_fn_with_state(state.clone(), edge::require_admin));
    let mlflow = protocols::mlflow::routes()
        .route_layer(from_fn(edge::require_json))
        .route_layer(from_fn_with_state(
            state.clone(),
            edge::require_admin_for_writes,
        ));
    let read_routes = Router::new()
        .route("/predict", post(predict::predict))
        .route(
            "/get-online-features",
            post(online_features::get_online_features),
        )
        .route("/feature-views", get(online_features::feature_views))
        .route("/drift/{model}", get(drift::drift_report))
        .merge(protocols::oip::routes())
        .route_layer(from_fn_with_state(state.clone(), edge::require_read));
    let write_routes = Router::new()
        .route("/push", post(push::push))
        .route("/write-to-online-store", post(push::write_to_online_store))
        .route("/feedback", post(feedback::feedback))
        .route_layer(from_fn_with_state(state.clone(), idempotency::run_once))
        .route_layer(from_fn(edge::require_json))
        .route_layer(from_fn_with_state(state.clone(), edge::require_write));
    // Probes and the Prometheus scrape stay open.
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .merge(read_routes)
        .merge(write_routes)
        .merge(admin_routes)
        .merge(mlflow)
        .layer(from_fn_with_state(state.clone(), edge::edge))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves `app(state)` on `listener` (plain TCP, the default connection
/// cap) until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(
        listen::incoming(listener, listen::Options::default()),
        state,
        shutdown,
    )
    .await
}

/// Serves `app(state)` on the connections `incoming` takes (TLS and the
/// connection cap are its business) until `shutdown` completes, then lets
/// in-flight requests finish. HTTP/1.1 (a client must send a request's
/// headers within [`Limits::header_read_timeout`], which also closes a
/// keep-alive connection idle that long) and HTTP/2.
pub async fn serve_on(
    mut incoming: listen::Incoming,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use futures::StreamExt;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let app = app(state);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            conn = incoming.next() => match conn {
                Some(conn) => conn?,
                None => {
                    return Err(std::io::Error::other(
                        "the listener stopped accepting connections",
                    ));
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection(TokioIo::new(conn), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away, or is cut off by the header-read
            // timeout, is not the server's error.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "an HTTP connection ended with an error");
            }
        });
    }
    // Stop accepting, then let what is in flight finish.
    drop(incoming);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests;
