//! The admin routes (behind the admin token when one is set):
//! `POST /materialize`, which loads new gold commits into the online store
//! (the store lives in the server process, so this is how `aurum
//! materialize` reaches it), and `POST /admin/reload`, one model watcher
//! pass now.

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

/// Handles `POST /materialize`: loads new gold rows into the online store.
pub async fn materialize(
    State(state): State<Arc<AppState>>,
    body: Result<Json<MaterializeRequest>, JsonRejection>,
) -> Result<Json<MaterializeResponse>, AppError> {
    let Json(request) =
        body.map_err(|e| AppError::bad_request("invalid_request", e.body_text()))?;
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
        views.push(
            feature_store::online::materialize::materialize(
                store,
                &state.online,
                &view,
                request.incremental,
            )
            .await?,
        );
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
