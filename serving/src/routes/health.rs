//! `GET /health/live` (the process answers) and `GET /health/ready` (the
//! online store is warm, its shared tier, if any, answers, and the models
//! are loaded).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::state::AppState;

/// `GET /health/live`.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "live"}))
}

/// `GET /health/ready`: 503 until the server is ready.
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    if !state.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    } else if !state.online.is_ready() {
        // Serving wrong data is worse than not serving: a load balancer
        // sends the traffic elsewhere until the tier is back.
        // The tier's address is in the server's log, not in this open
        // answer.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "online_tier_unavailable"})),
        )
    } else {
        // A stream behind or cut off is reported, and serving goes on:
        // the values are older than they should be, not wrong.
        let now = chrono::Utc::now().timestamp_millis();
        let streams: Vec<serde_json::Value> = state
            .streams
            .read()
            .map(|s| {
                s.iter()
                    .map(|s| {
                        json!({
                            "source": s.source,
                            "topic": s.topic,
                            "state": s.state(now),
                            "lag": s.stats.total_lag(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if streams.is_empty() {
            (StatusCode::OK, Json(json!({"status": "ready"})))
        } else {
            (
                StatusCode::OK,
                Json(json!({"status": "ready", "streams": streams})),
            )
        }
    }
}
