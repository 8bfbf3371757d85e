//! `POST /feedback`: true outcomes for served predictions, matched by
//! request id (and row) or by entity (and time).
//!
//! The body is checked here: a malformed item refuses the whole request
//! (400) before anything is applied. The outcomes are then applied by
//! [`monitoring::Monitor::apply_outcomes`], which matches them to the
//! predictions the monitor remembers, appends them to the `feedback` Delta
//! table and turns them into live quality per version and arm. An outcome
//! for a prediction that is not remembered, or that already has one, is not
//! applied and is listed in the answer with the reason; when none applies
//! the answer is 404 `unknown_predictions`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use monitoring::{NotApplied, OutcomeError, OutcomeTarget};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AppError;
use crate::state::AppState;

/// One item of a `/feedback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    row: Option<u32>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    entity: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    time: Option<String>,
    outcome: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    #[serde(default)]
    model: Option<String>,
    outcomes: Vec<Item>,
}

/// The answer of `POST /feedback`.
#[derive(Debug, Serialize)]
pub struct FeedbackAnswer {
    accepted: usize,
    not_applied: Vec<NotApplied>,
}

/// The most outcomes one request may carry.
const MAX_ITEMS: usize = 100_000;

/// `POST /feedback`.
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<FeedbackAnswer>, AppError> {
    let Some(monitor) = state.monitor.clone() else {
        return Err(AppError::not_found(
            "monitoring_off",
            "feedback needs the monitor, which is off on this server (started with --no-monitor)",
        ));
    };
    let request = parse(&body)?;
    // Every item checked before any is applied.
    let mut outcomes = Vec::with_capacity(request.outcomes.len());
    for (i, item) in request.outcomes.iter().enumerate() {
        outcomes.push(check(i, item, request.model.as_deref())?);
    }
    match monitor.apply_outcomes(&outcomes).await {
        Ok(applied) => Ok(Json(FeedbackAnswer {
            accepted: applied.accepted,
            not_applied: applied.not_applied,
        })),
        Err(e @ OutcomeError::NoneMatched(_)) => {
            Err(AppError::not_found("unknown_predictions", e.to_string()))
        }
        Err(e @ OutcomeError::Table(_)) => Err(AppError::internal(e.to_string())),
    }
}

/// The body, holding between one and [`MAX_ITEMS`] outcomes.
fn parse(body: &[u8]) -> Result<FeedbackRequest, AppError> {
    let request: FeedbackRequest = serde_json::from_slice(body).map_err(|e| {
        AppError::bad_request(
            "invalid_json",
            format!("the feedback body does not fit: {e}"),
        )
    })?;
    if request.outcomes.is_empty() {
        return Err(AppError::bad_request(
            "empty_feedback",
            "`outcomes` is empty",
        ));
    }
    if request.outcomes.len() > MAX_ITEMS {
        return Err(AppError::bad_request(
            "too_much_feedback",
            format!(
                "{} outcomes in one request; send at most {MAX_ITEMS}",
                request.outcomes.len()
            ),
        ));
    }
    Ok(request)
}

/// Item `i` as the monitor takes it: the prediction it is about and its
/// outcome. `model` is the request's default model.
fn check(i: usize, item: &Item, model: Option<&str>) -> Result<(OutcomeTarget, f64), AppError> {
    if !item.outcome.is_finite() {
        return Err(AppError::bad_request(
            "invalid_outcome",
            format!("outcome {i} is not a finite number"),
        ));
    }
    let target = match (&item.request_id, &item.entity) {
        (Some(id), None) => by_request(i, item, id)?,
        (None, Some(entity)) => by_entity(i, item, entity, model)?,
        _ => {
            return Err(AppError::bad_request(
                "invalid_feedback",
                format!("outcome {i} needs exactly one of `request_id` and `entity`"),
            ));
        }
    };
    Ok((target, item.outcome))
}

/// An outcome for row `row` (default 0) of request `id`.
fn by_request(i: usize, item: &Item, id: &str) -> Result<OutcomeTarget, AppError> {
    if item.time.is_some() || item.model.is_some() {
        return Err(AppError::bad_request(
            "invalid_feedback",
            format!("outcome {i}: `time` and `model` go with `entity`, not `request_id`"),
        ));
    }
    Ok(OutcomeTarget::Request {
        request_id: id.to_string(),
        row: item.row.unwrap_or(0),
    })
}

/// An outcome for the prediction a model made for `entity` (at `time`, or
/// the latest).
fn by_entity(
    i: usize,
    item: &Item,
    entity: &BTreeMap<String, Value>,
    default_model: Option<&str>,
) -> Result<OutcomeTarget, AppError> {
    let Some(model) = item.model.as_deref().or(default_model).map(str::to_string) else {
        return Err(AppError::bad_request(
            "invalid_feedback",
            format!("outcome {i} names an entity but no model (set `model`)"),
        ));
    };
    if entity.is_empty() || item.row.is_some() {
        return Err(AppError::bad_request(
            "invalid_feedback",
            format!("outcome {i}: `entity` must name at least one key, and takes no `row`"),
        ));
    }
    let label = entity_label(i, entity)?;
    let at = match &item.time {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| {
                    AppError::bad_request(
                        "invalid_feedback",
                        format!("outcome {i}: time {t:?} is not RFC 3339: {e}"),
                    )
                })?
                .timestamp_micros(),
        ),
    };
    Ok(OutcomeTarget::Entity {
        model,
        entity: label,
        at_micros: at,
    })
}

/// The entity's key as the prediction log writes it: `name=value` pairs
/// in name order.
fn entity_label(i: usize, entity: &BTreeMap<String, Value>) -> Result<String, AppError> {
    let mut label = String::new();
    for (name, value) in entity {
        let Some(part) = feature_store::online::key_part(value) else {
            return Err(AppError::bad_request(
                "invalid_feedback",
                format!(
                    "outcome {i}: entity key {name} must be an integer or a string of at most \
                     {} bytes",
                    feature_store::online::MAX_KEY_BYTES
                ),
            ));
        };
        if !label.is_empty() {
            label.push(',');
        }
        let _ = write!(label, "{name}={part}");
    }
    Ok(label)
}
