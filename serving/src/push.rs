//! `POST /push`: Feast's push API. Rows for a feature view arrive
//! column-major, are validated against the view's schema, and go to the
//! online store, to the view's gold Delta table, or both.
//!
//! A batch with a bad row is rejected whole, naming the row and column,
//! unless the request sets `allow_partial`: then the good rows are applied
//! and the bad ones returned with reasons. Offline writes go through one
//! group-commit writer per server, so concurrent pushes share Delta commits
//! instead of making one commit per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use feature_store::online::{OnlineRow, entity_key};
use feature_store::{CommitLineage, DeltaStore, FeatureValue, FeatureView};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::AppState;
use crate::error::AppError;
use crate::predict::{MAX_ROWS, key_part};

/// Where pushed rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushTo {
    /// The online store only.
    Online,
    /// The gold Delta table only.
    Offline,
    /// Both.
    OnlineAndOffline,
}

/// The request body (Feast's, plus `allow_partial`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The feature view (aurum's push sources are feature views).
    pub push_source_name: String,
    /// Columns: join keys, the event timestamp, optionally the created
    /// timestamp, and every feature of the view.
    pub df: BTreeMap<String, Vec<Value>>,
    /// Where the rows go (default: online).
    #[serde(default = "online")]
    pub to: PushTo,
    /// Apply the good rows and report the bad ones instead of rejecting
    /// the whole batch.
    #[serde(default)]
    pub allow_partial: bool,
}

fn online() -> PushTo {
    PushTo::Online
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResponse {
    /// Rows accepted.
    pub accepted: usize,
    /// Rows written online (a row older than the stored one is not).
    pub online_written: usize,
    /// The gold table version the rows were committed in, when written
    /// offline.
    pub offline_version: Option<u64>,
    /// Rows rejected, with reasons (only with `allow_partial`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedRow>,
}

/// A rejected row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The row index in the request.
    pub row: usize,
    /// What is wrong, naming the column.
    pub reason: String,
}

struct ParsedRow {
    keys: Vec<Value>,
    event_micros: i64,
    created_micros: i64,
    values: Vec<FeatureValue>,
}

/// Handles `POST /push`.
pub async fn push(
    State(state): State<Arc<AppState>>,
    body: Result<Json<PushRequest>, JsonRejection>,
) -> Result<Json<PushResponse>, AppError> {
    let Json(request) =
        body.map_err(|e| AppError::bad_request("invalid_request", e.body_text()))?;
    let view = state
        .online
        .view(&request.push_source_name)
        .ok_or_else(|| {
            AppError::not_found(
                "unknown_push_source",
                format!("no feature view {:?} to push to", request.push_source_name),
            )
        })?;
    let rows = check_columns(&view, &request.df)?;
    if rows > MAX_ROWS {
        return Err(AppError::payload_too_large(format!(
            "{rows} rows in one push; the limit is {MAX_ROWS}"
        )));
    }
    let now = crate::predict::now_micros();
    let mut parsed = Vec::with_capacity(rows);
    let mut rejected = Vec::new();
    for row in 0..rows {
        match parse_row(&view, &request.df, row, now) {
            Ok(p) => parsed.push(p),
            Err(reason) if request.allow_partial => rejected.push(RejectedRow { row, reason }),
            Err(reason) => {
                state
                    .metrics
                    .push_rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(AppError::bad_request(
                    "invalid_row",
                    format!("row {row}: {reason}; nothing was applied"),
                ));
            }
        }
    }

    let counted = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    state.metrics.push_rejected.fetch_add(
        counted(rejected.len()),
        std::sync::atomic::Ordering::Relaxed,
    );
    // Offline first: when the commit fails, nothing went online either.
    let mut offline_version = None;
    if matches!(request.to, PushTo::Offline | PushTo::OnlineAndOffline) && !parsed.is_empty() {
        let writer = state.push_writer.as_ref().ok_or_else(|| {
            AppError::not_found(
                "no_offline_store",
                "this server was started without gold tables to push to".to_string(),
            )
        })?;
        let frame = rows_frame(&view, &parsed)?;
        offline_version = Some(writer.append(view.name.clone(), frame).await?);
    }
    let mut online_written = 0;
    if matches!(request.to, PushTo::Online | PushTo::OnlineAndOffline) {
        for row in &parsed {
            let parts: Vec<String> = row
                .keys
                .iter()
                .map(|k| key_part(k).unwrap_or_default())
                .collect();
            let written = state.online.upsert(
                &view.name,
                &entity_key(&parts),
                OnlineRow {
                    event_micros: row.event_micros,
                    created_micros: row.created_micros,
                    values: row.values.clone().into_boxed_slice(),
                },
            )?;
            online_written += usize::from(written);
            let visible = crate::predict::now_micros();
            state
                .metrics
                .push_freshness_seconds
                .observe((visible - row.event_micros) as f64 / 1e6);
        }
    }
    state
        .metrics
        .push_accepted
        .fetch_add(counted(parsed.len()), std::sync::atomic::Ordering::Relaxed);
    Ok(Json(PushResponse {
        accepted: parsed.len(),
        online_written,
        offline_version,
        rejected,
    }))
}

fn check_columns(view: &FeatureView, df: &BTreeMap<String, Vec<Value>>) -> Result<usize, AppError> {
    let mut required: Vec<&String> = view.entity.join_keys.iter().collect();
    required.push(&view.timestamp_column);
    required.extend(view.features.iter());
    for column in &required {
        if !df.contains_key(*column) {
            return Err(AppError::bad_request(
                "missing_column",
                format!("push to {:?} needs column {column:?}", view.name),
            ));
        }
    }
    if let Some(extra) = df
        .keys()
        .find(|c| !required.contains(c) && **c != view.created_column)
    {
        return Err(AppError::bad_request(
            "unknown_column",
            format!("feature view {:?} has no column {extra:?}", view.name),
        ));
    }
    let rows = df.values().next().map(Vec::len).unwrap_or(0);
    if let Some((name, _)) = df.iter().find(|(_, v)| v.len() != rows) {
        return Err(AppError::bad_request(
            "ragged_columns",
            format!("column {name:?} has a different length from the others"),
        ));
    }
    Ok(rows)
}

fn parse_row(
    view: &FeatureView,
    df: &BTreeMap<String, Vec<Value>>,
    row: usize,
    now: i64,
) -> Result<ParsedRow, String> {
    let cell = |column: &str| {
        df.get(column)
            .and_then(|c| c.get(row))
            .unwrap_or(&Value::Null)
    };
    let mut keys = Vec::with_capacity(view.entity.join_keys.len());
    for key in &view.entity.join_keys {
        let value = cell(key);
        key_part(value).map_err(|e| format!("{key}: {e} is not an integer or a string key"))?;
        keys.push(value.clone());
    }
    let time = |column: &str, required: bool| -> Result<Option<i64>, String> {
        match cell(column) {
            Value::Null if !required => Ok(None),
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.timestamp_micros()))
                .map_err(|_| format!("{column}: {s:?} is not an RFC 3339 timestamp")),
            other => Err(format!("{column}: {other} is not an RFC 3339 timestamp")),
        }
    };
    let event_micros = time(&view.timestamp_column, true)?.unwrap_or(now);
    let created_micros = time(&view.created_column, false)?.unwrap_or(now);
    let mut values = Vec::with_capacity(view.features.len());
    for (i, feature) in view.features.iter().enumerate() {
        let declared = view.feature_types.get(i).map(String::as_str).unwrap_or("");
        values.push(feature_value(feature, declared, cell(feature))?);
    }
    Ok(ParsedRow {
        keys,
        event_micros,
        created_micros,
        values,
    })
}

fn feature_value(feature: &str, declared: &str, value: &Value) -> Result<FeatureValue, String> {
    let wrong = || format!("{feature}: {value} is not a {declared}");
    Ok(match (declared, value) {
        (_, Value::Null) => FeatureValue::Null,
        (d, Value::Number(n)) if d.is_empty() || d == "float64" || d.starts_with("decimal") => {
            FeatureValue::Float(n.as_f64().ok_or_else(wrong)?)
        }
        ("int64", Value::Number(n)) => FeatureValue::Int(n.as_i64().ok_or_else(wrong)?),
        ("bool" | "", Value::Bool(b)) => FeatureValue::Bool(*b),
        ("string" | "categorical" | "", Value::String(s)) => FeatureValue::Str(s.as_str().into()),
        _ => return Err(wrong()),
    })
}

/// The rows as a frame in the gold table's layout.
fn rows_frame(view: &FeatureView, rows: &[ParsedRow]) -> Result<DataFrame, AppError> {
    let failed = |e: PolarsError| AppError::internal(format!("building pushed rows: {e}"));
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let mut columns: Vec<Column> = Vec::new();
    for (k, key) in view.entity.join_keys.iter().enumerate() {
        let values: Vec<&Value> = rows.iter().map(|r| &r.keys[k]).collect();
        columns.push(if values.iter().all(|v| v.is_i64()) {
            Column::new(
                key.as_str().into(),
                values.iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
            )
        } else {
            Column::new(
                key.as_str().into(),
                values
                    .iter()
                    .map(|v| key_part(v).unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
        });
    }
    let stamps = |name: &str, micros: Vec<i64>| -> Result<Column, AppError> {
        Ok(Series::new(name.into(), micros)
            .cast(&utc)
            .map_err(failed)?
            .into())
    };
    columns.push(stamps(
        &view.timestamp_column,
        rows.iter().map(|r| r.event_micros).collect(),
    )?);
    columns.push(stamps(
        &view.created_column,
        rows.iter().map(|r| r.created_micros).collect(),
    )?);
    for (i, feature) in view.features.iter().enumerate() {
        let values = rows.iter().map(|r| &r.values[i]);
        let declared = view
            .feature_types
            .get(i)
            .map(String::as_str)
            .unwrap_or("float64");
        columns.push(match declared {
            "int64" => Column::new(
                feature.as_str().into(),
                values
                    .map(|v| {
                        if let FeatureValue::Int(x) = v {
                            Some(*x)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            ),
            "string" | "categorical" => Column::new(
                feature.as_str().into(),
                values
                    .map(|v| {
                        if let FeatureValue::Str(s) = v {
                            Some(s.to_string())
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            ),
            "bool" => Column::new(
                feature.as_str().into(),
                values
                    .map(|v| {
                        if let FeatureValue::Bool(b) = v {
                            Some(*b)
                        } else {
                            None
                        }
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => Column::new(
                feature.as_str().into(),
                values.map(FeatureValue::as_f64).collect::<Vec<_>>(),
            ),
        });
    }
    DataFrame::new_infer_height(columns).map_err(failed)
}

/// Where a queued push's commit result goes.
type Reply = oneshot::Sender<Result<u64, String>>;
/// A queued push: view, rows, reply.
type Pending = (String, DataFrame, Reply);

/// Appends pushed rows to gold tables in group commits: requests that
/// arrive while a commit is being written share the next one.
#[derive(Debug, Clone)]
pub struct PushWriter {
    sender: mpsc::Sender<Pending>,
}

impl PushWriter {
    /// Starts the writer task over `store`.
    pub fn start(store: DeltaStore) -> Self {
        let (sender, receiver) = mpsc::channel::<Pending>(1024);
        tokio::spawn(write_batches(store, receiver));
        PushWriter { sender }
    }

    /// Appends `frame` to view `view`'s gold table and returns the version
    /// that holds it.
    pub async fn append(&self, view: String, frame: DataFrame) -> Result<u64, AppError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((view, frame, reply))
            .await
            .map_err(|_| AppError::internal("the push writer has stopped"))?;
        answer
            .await
            .map_err(|_| AppError::internal("the push writer has stopped"))?
            .map_err(|message| AppError::bad_request("offline_write_failed", message))
    }
}

async fn write_batches(store: DeltaStore, mut receiver: mpsc::Receiver<Pending>) {
    while let Some(first) = receiver.recv().await {
        // Whatever else is already queued joins this commit.
        let mut batch = vec![first];
        tokio::time::sleep(Duration::from_millis(2)).await;
        while let Ok(next) = receiver.try_recv() {
            batch.push(next);
        }
        let mut by_view: BTreeMap<String, Vec<(DataFrame, Reply)>> = BTreeMap::new();
        for (view, frame, reply) in batch {
            by_view.entry(view).or_default().push((frame, reply));
        }
        for (view, parts) in by_view {
            let mut frames = parts.iter().map(|(f, _)| f.clone());
            let mut all = frames.next().unwrap_or_default();
            let mut result: Result<u64, String> = Ok(0);
            for f in frames {
                if let Err(e) = all.vstack_mut(&f) {
                    result = Err(format!("stacking pushed rows: {e}"));
                }
            }
            if result.is_ok() {
                let lineage = CommitLineage {
                    operation: "push".into(),
                    ..CommitLineage::default()
                };
                result = store
                    .write(
                        &view,
                        &all,
                        &feature_store::offline::WriteOptions::append(),
                        &lineage,
                    )
                    .await
                    .map_err(|e| e.to_string());
            }
            for (_, reply) in parts {
                let _ = reply.send(result.clone());
            }
        }
    }
}
