//! `GET /drift/{model}`: a fresh evaluation of a model's live window
//! against its reference ([`monitoring::Monitor`]), as JSON or, with
//! `?format=html`, the drift crate's report page with the live quality
//! from `/feedback`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use drift::DriftReport;
use monitoring::{MonitorOptions, PerformanceRow, VersionState};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::state::AppState;

/// Query of `GET /drift/{model}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    /// `json` (default) or `html`.
    #[serde(default)]
    format: Option<String>,
    /// The version to report (default: the primary served version).
    #[serde(default)]
    version: Option<u64>,
}

/// The answer of `GET /drift/{model}`.
#[derive(Debug, Serialize)]
struct DriftAnswer {
    model: String,
    version: u64,
    served: Vec<ServedArm>,
    #[serde(flatten)]
    state: VersionState,
    performance: Vec<PerformanceRow>,
}

#[derive(Debug, Serialize)]
struct ServedArm {
    arm: String,
    version: u64,
}

/// `GET /drift/{model}`: a fresh evaluation of the model's window against
/// its reference (`?format=html` for the report page).
pub async fn drift_report(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    query: Result<Query<DriftQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let html = match query.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(other) => {
            return Err(AppError::bad_request(
                "invalid_format",
                format!("format {other:?} is not json or html"),
            ));
        }
    };
    let Some(monitor) = state.monitor.clone() else {
        return Err(AppError::not_found(
            "monitoring_off",
            "drift monitoring is off on this server (it needs the prediction stream: start \
             `aurum serve` without --no-monitor)",
        ));
    };
    let Some(served) = state.models.served(&model) else {
        return Err(AppError::not_found(
            "model_not_found",
            format!("model {model:?} is not served here"),
        ));
    };
    let arms: Vec<ServedArm> = served
        .all()
        .map(|(arm, m)| ServedArm {
            arm: arm.to_string(),
            version: m.version.version,
        })
        .collect();
    let version = query.version.unwrap_or(served.primary.version.version);
    let (m, registry, name) = (monitor.clone(), state.registry.clone(), model.clone());
    let fresh = tokio::task::spawn_blocking(move || m.evaluate(&registry, &name, version))
        .await
        .map_err(|e| AppError::internal(format!("the drift evaluation stopped: {e}")))?;
    let performance = monitor.performance(&model);
    if html {
        let page = render_html(
            &model,
            version,
            &arms,
            &fresh,
            &performance,
            monitor.options(),
        );
        return Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response());
    }
    Ok(axum::Json(DriftAnswer {
        model,
        version,
        served: arms,
        state: fresh,
        performance,
    })
    .into_response())
}

fn render_html(
    model: &str,
    version: u64,
    arms: &[ServedArm],
    state: &VersionState,
    performance: &[PerformanceRow],
    options: &MonitorOptions,
) -> String {
    let served = arms
        .iter()
        .map(|a| format!("{} → v{}", a.arm, a.version))
        .collect::<Vec<_>>()
        .join(", ");
    let subtitle = format!(
        "version {version}; serving {served}; window: the last {} predictions within {} s ({} rows), evaluated {}{}",
        options.window_rows,
        options.window_age.as_secs(),
        state.window_rows,
        state.evaluated_at,
        if state.alerting { "; ALERTING" } else { "" }
    );
    // Live quality joins the page once outcomes have arrived.
    let tables: Vec<drift::html::Table> = (!performance.is_empty())
        .then(|| performance_table(performance))
        .into_iter()
        .collect();
    let empty;
    let report = match &state.report {
        Some(r) => r,
        None => {
            empty = DriftReport {
                reference_rows: 0,
                current_rows: state.window_rows as u64,
                columns: Vec::new(),
                prediction: None,
                tested_columns: 0,
                drifted_columns: 0,
                drift_share: 0.0,
                drift_share_threshold: options.drift.drift_share,
                dataset_drift: false,
                note: state.note.clone(),
            };
            &empty
        }
    };
    drift::html::render(&format!("Drift — {model}"), &subtitle, report, &tables)
}

/// The live quality as a report table.
fn performance_table(rows: &[PerformanceRow]) -> drift::html::Table {
    let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.4}"));
    drift::html::Table {
        caption: "Live quality from /feedback".into(),
        headers: [
            "version",
            "arm",
            "outcomes",
            "window",
            "ROC AUC",
            "accuracy",
            "calibration error",
            "Brier",
            "RMSE",
            "MAE",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                let c = r.classification.as_ref();
                let g = r.regression.as_ref();
                vec![
                    r.version.to_string(),
                    r.arm.clone(),
                    r.feedback.to_string(),
                    r.window.to_string(),
                    f(c.and_then(|c| c.roc_auc)),
                    f(c.map(|c| c.accuracy)),
                    f(c.map(|c| c.calibration_error)),
                    f(c.map(|c| c.brier)),
                    f(g.map(|g| g.rmse)),
                    f(g.map(|g| g.mae)),
                ]
            })
            .collect(),
    }
}
