//! `POST /push`: Feast's push API. Rows for a feature view arrive
//! column-major as JSON, are validated against the view's schema here, and
//! are applied by the feature store's shared [`Pusher`] (the same one Arrow
//! Flight `DoPut` uses): online, to the view's gold Delta table in group
//! commits, or both.
//!
//! A batch with a bad row is rejected whole, naming the row and column,
//! unless the request sets `allow_partial`: then the good rows are applied
//! and the bad ones returned with reasons.
//!
//! `POST /write-to-online-store` is the route Feast's SDK writes through
//! when its online store is `remote` (`FeatureStore.push`,
//! `write_to_online_store`): the same rows with Feast's column names for
//! the timestamps (`event_timestamp`, `created`), applied online.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use feature_store::online::push::{
    KeyValue, MAX_PUSH_ROWS, PushOutcome, PushRow, PushTo, Pusher, RejectedRow, check_columns,
    coerce,
};
use feature_store::{FeatureValue, FeatureView};
use serde::Deserialize;
use serde_json::Value;

use crate::error::AppError;
use crate::state::AppState;

/// The request body (Feast's, plus `allow_partial`). Feast's
/// `allow_registry_cache` and `transform_on_write` are accepted and change
/// nothing (aurum has no registry cache and no on-write transformations);
/// other unknown fields are ignored and named in a debug log.
#[derive(Debug, Clone, Deserialize)]
pub struct PushRequest {
    /// The feature view (aurum's push sources are feature views).
    pub push_source_name: String,
    /// Columns: join keys, the event timestamp, optionally the created
    /// timestamp, and every feature of the view.
    pub df: BTreeMap<String, Vec<Value>>,
    /// Where the rows go (default: online).
    #[serde(default)]
    pub to: PushTo,
    /// Apply the good rows and report the bad ones instead of rejecting
    /// the whole batch.
    #[serde(default)]
    pub allow_partial: bool,
}

const PUSH_FIELDS: [&str; 6] = [
    "push_source_name",
    "df",
    "to",
    "allow_partial",
    "allow_registry_cache",
    "transform_on_write",
];

/// The body of `POST /write-to-online-store` (Feast's
/// `WriteToFeatureStoreRequest`).
#[derive(Debug, Clone, Deserialize)]
pub struct WriteToOnlineStoreRequest {
    /// The feature view.
    pub feature_view_name: String,
    /// Columns: join keys, `event_timestamp`, optionally `created`, and the
    /// view's features.
    pub df: BTreeMap<String, Vec<Value>>,
}

const WRITE_FIELDS: [&str; 4] = [
    "feature_view_name",
    "df",
    "allow_registry_cache",
    "transform_on_write",
];

/// Handles `POST /push`.
pub async fn push(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushOutcome>, AppError> {
    let body = body?;
    let request: PushRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::bad_request("invalid_request", format!("invalid request body: {e}"))
    })?;
    super::online_features::log_ignored_fields("/push", &body, &PUSH_FIELDS);
    apply(&state, request).await
}

/// Handles `POST /write-to-online-store`: Feast's SDK writing rows of a
/// view to a remote online store. Applied as a push to the online store.
pub async fn write_to_online_store(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PushOutcome>, AppError> {
    let body = body?;
    let request: WriteToOnlineStoreRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::bad_request("invalid_request", format!("invalid request body: {e}"))
    })?;
    super::online_features::log_ignored_fields("/write-to-online-store", &body, &WRITE_FIELDS);
    let view = state
        .online
        .view(&request.feature_view_name)
        .ok_or_else(|| {
            AppError::not_found(
                "unknown_feature_view",
                format!("no feature view {:?}", request.feature_view_name),
            )
        })?;
    // Feast names the timestamps `event_timestamp` and `created` whatever
    // the view calls them.
    let mut df = request.df;
    for (feast, ours) in [
        ("event_timestamp", &view.timestamp_column),
        ("created", &view.created_column),
    ] {
        if feast != ours.as_str()
            && let Some(column) = df.remove(feast)
        {
            df.insert(ours.clone(), column);
        }
    }
    apply(
        &state,
        PushRequest {
            push_source_name: request.feature_view_name,
            df,
            to: PushTo::Online,
            allow_partial: false,
        },
    )
    .await
}

async fn apply(state: &Arc<AppState>, request: PushRequest) -> Result<Json<PushOutcome>, AppError> {
    let view = state
        .online
        .view(&request.push_source_name)
        .ok_or_else(|| {
            AppError::not_found(
                "unknown_push_source",
                format!("no feature view {:?} to push to", request.push_source_name),
            )
        })?;
    let (rows, rejected) = parse_rows(&view, &request, &state.pusher)?;
    // Applied in a task of its own: a client that goes away while the
    // offline commit is written must not leave the rows in gold but not
    // online.
    let pusher = state.pusher.clone();
    let to = request.to;
    let applied = tokio::spawn(async move { pusher.apply(&view, rows, rejected, to).await })
        .await
        .map_err(|e| AppError::internal(format!("applying the push stopped: {e}")))??;
    Ok(Json(applied))
}

/// Validates every row of the request: all of them, or (with
/// `allow_partial`) the good ones plus the reasons for the bad ones.
fn parse_rows(
    view: &FeatureView,
    request: &PushRequest,
    pusher: &Pusher,
) -> Result<(Vec<PushRow>, Vec<RejectedRow>), AppError> {
    let df = &request.df;
    check_columns(view, df.keys().map(String::as_str))?;
    let rows = df.values().next().map(Vec::len).unwrap_or(0);
    if let Some((name, _)) = df.iter().find(|(_, v)| v.len() != rows) {
        return Err(AppError::bad_request(
            "ragged_columns",
            format!("column {name:?} has a different length from the others"),
        ));
    }
    if rows > MAX_PUSH_ROWS {
        return Err(AppError::payload_too_large(format!(
            "{rows} rows in one push; the limit is {MAX_PUSH_ROWS}"
        )));
    }
    let now = feature_store::online::push::now_micros();
    let latest = pusher.latest_event_micros();
    let mut parsed = Vec::with_capacity(rows);
    let mut rejected = Vec::new();
    for row in 0..rows {
        match parse_row(view, df, row, now, latest) {
            Ok(p) => parsed.push(p),
            Err(reason) if request.allow_partial => rejected.push(RejectedRow { row, reason }),
            Err(reason) => {
                pusher.count_rejected(1);
                return Err(AppError::bad_request(
                    "invalid_row",
                    format!("row {row}: {reason}; nothing was applied"),
                ));
            }
        }
    }
    Ok((parsed, rejected))
}

fn parse_row(
    view: &FeatureView,
    df: &BTreeMap<String, Vec<Value>>,
    row: usize,
    now: i64,
    latest: i64,
) -> Result<PushRow, String> {
    let cell = |column: &str| {
        df.get(column)
            .and_then(|c| c.get(row))
            .unwrap_or(&Value::Null)
    };
    let mut keys = Vec::with_capacity(view.entity.join_keys.len());
    for key in &view.entity.join_keys {
        keys.push(match cell(key) {
            Value::String(s) => KeyValue::text(key, s)?,
            Value::Number(n) if n.is_i64() => KeyValue::Int(n.as_i64().unwrap_or_default()),
            other => {
                return Err(format!(
                    "{key}: {} is not an integer or a string key",
                    feature_store::online::shown_key(other)
                ));
            }
        });
    }
    let time = |column: &str, required: bool| -> Result<Option<i64>, String> {
        match cell(column) {
            Value::Null if !required => Ok(None),
            Value::String(s) => feature_store::online::push::parse_time(s)
                .map(Some)
                .ok_or_else(|| format!("{column}: {s:?} is not an RFC 3339 timestamp")),
            other => Err(format!("{column}: {other} is not an RFC 3339 timestamp")),
        }
    };
    let event_micros = time(&view.timestamp_column, true)?.unwrap_or(now);
    let event_micros =
        feature_store::online::push::check_time(&view.timestamp_column, event_micros, latest)?;
    let created_micros = time(&view.created_column, false)?.unwrap_or(now);
    let mut values = Vec::with_capacity(view.features.len());
    for (i, feature) in view.features.iter().enumerate() {
        let declared = view.feature_types.get(i).map(String::as_str).unwrap_or("");
        values.push(coerce(
            feature,
            declared,
            json_value(feature, cell(feature))?,
        )?);
    }
    Ok(PushRow {
        keys,
        event_micros,
        created_micros,
        values,
    })
}

fn json_value(feature: &str, value: &Value) -> Result<FeatureValue, String> {
    Ok(match value {
        Value::Null => FeatureValue::Null,
        Value::Bool(b) => FeatureValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FeatureValue::Int(i),
            None => FeatureValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => FeatureValue::Str(s.as_str().into()),
        Value::Array(_) | Value::Object(_) => {
            return Err(format!("{feature}: {value} is not a scalar"));
        }
    })
}
