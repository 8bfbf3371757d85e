//! The admin routes (behind the admin token when one is set):
//! `POST /materialize`, which loads new gold commits into the online store
//! (the store lives in the server process, so this is how `aurum
//! materialize` reaches it), and `POST /admin/reload`, one model watcher
//! pass now.
//!
//! Feast's SDK, with a remote online store, delegates `materialize` and
//! `materialize_incremental` to these routes (`/materialize` and
//! `/materialize-incremental` with Feast's `MaterializeRequest`). aurum's
//! online store always holds each entity's latest gold row, so a Feast
//! materialization loads the views named (all of them by default) fully or
//! incrementally; `start_ts` changes nothing (rows older than a view's TTL
//! read as `OUTSIDE_MAX_AGE` anyway), and an `end_ts` in the past is
//! refused rather than answered as if it were now.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::state::AppState;

/// The body of `POST /materialize`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaterializeRequest {
    /// Read only the gold commits since the version loaded last (default),
    /// or everything.
    #[serde(default = "yes")]
    pub incremental: bool,
    /// The views to load (default: every registered view).
    #[serde(default)]
    pub views: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// The answer of `POST /materialize`: one report per view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaterializeResponse {
    /// Per view.
    pub views: Vec<feature_store::online::materialize::MaterializeReport>,
}

/// Feast's `MaterializeRequest` (and `MaterializeIncrementalRequest`).
#[derive(Debug, Clone, Deserialize)]
pub struct FeastMaterializeRequest {
    /// Ignored: aurum loads each entity's latest row.
    #[serde(default)]
    pub start_ts: Option<String>,
    /// Must not be in the past (aurum materializes as of now).
    #[serde(default)]
    pub end_ts: Option<String>,
    /// The views (default: every registered view).
    #[serde(default)]
    pub feature_views: Option<Vec<String>>,
}

/// How far in the past a Feast `end_ts` may be and still mean "now" (the
/// client's clock and the request's time in flight).
const END_TS_SLACK_SECONDS: i64 = 300;

impl FeastMaterializeRequest {
    fn into_request(self, incremental: bool) -> Result<MaterializeRequest, AppError> {
        if let Some(end) = &self.end_ts {
            let micros = feature_store::online::push::parse_time(end).ok_or_else(|| {
                AppError::bad_request(
                    "invalid_request",
                    format!("end_ts {end:?} is not an ISO 8601 time"),
                )
            })?;
            let now = chrono::Utc::now().timestamp_micros();
            if micros < now - END_TS_SLACK_SECONDS * 1_000_000 {
                return Err(AppError::bad_request(
                    "unsupported_end_ts",
                    format!(
                        "end_ts {end:?} is in the past: aurum's online store holds each entity's \
                         latest gold row and cannot materialize as of an earlier time"
                    ),
                ));
            }
        }
        Ok(MaterializeRequest {
            incremental,
            views: self.feature_views,
        })
    }
}

/// The fields that mark a `/materialize` body as Feast's.
const FEAST_FIELDS: [&str; 3] = ["start_ts", "end_ts", "feature_views"];

/// Handles `POST /materialize`: loads new gold rows into the online store
/// (aurum's request), or every row (Feast's).
pub async fn materialize(
    State(state): State<Arc<AppState>>,
    trace: Option<axum::Extension<telemetry::Trace>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<MaterializeResponse>, AppError> {
    let trace = trace.map(|axum::Extension(t)| t).unwrap_or_default();
    let Json(body) = body.map_err(|e| AppError::bad_request("invalid_request", e.body_text()))?;
    let from_feast = FEAST_FIELDS.iter().any(|f| body.get(f).is_some());
    let invalid = |e: serde_json::Error| {
        AppError::bad_request("invalid_request", format!("invalid request body: {e}"))
    };
    let request = if from_feast {
        serde_json::from_value::<FeastMaterializeRequest>(body)
            .map_err(invalid)?
            .into_request(false)?
    } else {
        serde_json::from_value::<MaterializeRequest>(body).map_err(invalid)?
    };
    run_materialize(&state, request, &trace).await
}

/// Handles `POST /materialize-incremental` (Feast's): loads the gold
/// commits since the version loaded last.
pub async fn materialize_incremental(
    State(state): State<Arc<AppState>>,
    trace: Option<axum::Extension<telemetry::Trace>>,
    body: Result<Json<FeastMaterializeRequest>, JsonRejection>,
) -> Result<Json<MaterializeResponse>, AppError> {
    let trace = trace.map(|axum::Extension(t)| t).unwrap_or_default();
    let Json(request) =
        body.map_err(|e| AppError::bad_request("invalid_request", e.body_text()))?;
    run_materialize(&state, request.into_request(true)?, &trace).await
}

async fn run_materialize(
    state: &Arc<AppState>,
    request: MaterializeRequest,
    trace: &telemetry::Trace,
) -> Result<Json<MaterializeResponse>, AppError> {
    let Some(store) = &state.offline else {
        return Err(AppError::not_found(
            "no_offline_store",
            "this server was started without gold tables to materialize from".to_string(),
        ));
    };
    let selected = match &request.views {
        None => state.online.views(),
        Some(names) => names
            .iter()
            .map(|name| {
                state.online.view(name).ok_or_else(|| {
                    AppError::not_found(
                        "unknown_feature_view",
                        format!("no feature view {name:?} to materialize"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut views = Vec::new();
    for view in selected {
        let span = trace.child("materialize");
        span.set("aurum.view", view.name.clone());
        let loaded = feature_store::online::materialize::materialize(
            store,
            &state.online,
            &view,
            request.incremental,
        )
        .await;
        match &loaded {
            Ok(report) => {
                span.set("aurum.rows_in", report.rows_read as i64);
                span.set("aurum.rows_out", report.written as i64);
            }
            Err(e) => span.fail(e.to_string()),
        }
        span.end();
        views.push(loaded?);
    }
    Ok(Json(MaterializeResponse { views }))
}

/// `POST /admin/reload`: one watcher pass now, answering what was swapped
/// in (for deployments that move an alias and want it served at once).
pub async fn reload_now(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, AppError> {
    let swapped = tokio::task::spawn_blocking(move || state.sync_models())
        .await
        .map_err(|e| AppError::internal(format!("the reload pass failed: {e}")))?;
    let swapped: Vec<serde_json::Value> = swapped
        .into_iter()
        .map(|(model, alias, version)| {
            serde_json::json!({"model": model, "alias": alias, "version": version})
        })
        .collect();
    Ok(Json(serde_json::json!({ "swapped": swapped })))
}
