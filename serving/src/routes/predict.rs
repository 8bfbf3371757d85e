//! `POST /predict`: entity keys (and/or raw features) in, predictions out.
//!
//! The route parses the body, decides which arm answers each row, hands
//! each arm's rows to [`inference::run`], logs the rows' records once the
//! answer's latency is known, starts the policy's shadow on a copy, and
//! serializes the answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use feature_store::FeatureStatus;
use monitoring::{PredictionRecord, headline};
use serde::{Deserialize, Serialize};
use telemetry::Trace;

use crate::edge::RequestId;
use crate::error::AppError;
use crate::inference::{
    self, ARM_HEADER, ArmRows, Call, LoadedModel, MissingFeatures, Mode, Records, Served,
    ServingPolicy, ShadowRun, now_micros, sticky_hash,
};
use crate::metrics::ArmMetrics;
use crate::state::AppState;

pub use crate::inference::PredictRequest;

/// The most rows one request may ask for.
pub const MAX_ROWS: usize = feature_store::online::MAX_LOOKUP_ENTITIES;

/// The response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictResponse {
    /// One prediction per request row, in request order.
    pub predictions: Vec<RowPrediction>,
    /// The Delta version of each feature view's table the online values came
    /// from.
    pub feature_versions: BTreeMap<String, u64>,
}

/// The prediction for one row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowPrediction {
    /// The model name.
    pub model: String,
    /// The model version that answered.
    pub version: u64,
    /// The A/B arm that answered.
    pub arm: String,
    /// The model's answer for the row: its first float output, or for a
    /// two-column probability output (binary classifiers exported by
    /// skl2onnx: `[P(0), P(1)]`) the positive class's probability.
    pub prediction: f32,
    /// Every value of that output for the row, when it has more than one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f32>,
    /// Features that were not present, with their status; the model imputed
    /// them with their training means.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_statuses: BTreeMap<String, FeatureStatus>,
}

/// The `/predict` handler.
pub async fn predict(
    State(state): State<Arc<AppState>>,
    request_id: Option<Extension<RequestId>>,
    trace: Option<Extension<Trace>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let arrived = Instant::now();
    let time_micros = now_micros();
    let trace = trace.map(|Extension(t)| t).unwrap_or_default();
    let body = body?;
    let parse = trace.child("parse");
    let request = serde_json::from_slice::<PredictRequest>(&body).map_err(json_error);
    parse.end();
    let request = request?;
    if trace.is_on() {
        trace.set("aurum.model", request.model.clone());
    }
    state
        .metrics
        .parse_seconds
        .observe(arrived.elapsed().as_secs_f64());
    let request = Arc::new(request);
    let request_id = request_id.map_or_else(|| state.new_request_id(), |Extension(id)| id.0);
    let served = state.models.serving(&request.model)?;
    let policy = state.config.policy(&request.model);
    let rows = row_count(&request)?;
    trace.set("aurum.rows", rows as i64);
    let forced = forced_arm(&headers, &served, &request.model)?;
    let split = forced.is_none() && policy.arms.len() > 1;
    let entities = if state.prediction_log.is_some() || split || policy.shadow.is_some() {
        request.entity_labels(rows)
    } else {
        Vec::new()
    };
    let groups = group_rows(
        &served,
        policy,
        forced,
        &request.model,
        &entities,
        &request_id,
        rows,
    );

    let call = Call {
        request: &request,
        request_id: &request_id,
        time_micros,
        entities: &entities,
        trace: &trace,
    };
    let Answered {
        predictions,
        feature_versions,
        records,
        timings,
    } = run_arms(&state, call, policy.missing, &groups, rows).await?;
    if !records.is_empty() {
        let span = trace.child("log enqueue");
        span.set("aurum.rows", records.len() as i64);
        log_records(&state, records, arrived);
        span.end();
    }

    if let Some(alias) = &policy.shadow
        && let Some(model) = served.arm(alias)
        && groups
            .iter()
            .any(|(_, m, _)| m.version.version != model.version.version)
    {
        start_shadow(
            &state,
            ShadowRun {
                model: model.clone(),
                arm: alias.clone(),
                request: request.clone(),
                entities,
                request_id,
                time_micros,
                rows,
                trace: shadow_trace(&trace, alias, model),
            },
        );
    }
    respond(&state, predictions, feature_versions, timings, arrived)
}

/// One arm's rows: the arm, the version it serves and the request rows it
/// answers.
type Group<'a> = (&'a str, &'a Arc<LoadedModel>, Vec<usize>);

/// The live arms' answers to a request.
struct Answered {
    /// Per request row, its prediction.
    predictions: Vec<Option<RowPrediction>>,
    /// The Delta version of each view read.
    feature_versions: BTreeMap<String, u64>,
    /// The rows' prediction records, when predictions are logged.
    records: Vec<PredictionRecord>,
    /// The metrics of each arm that answered, for the request's time.
    timings: Vec<Arc<ArmMetrics>>,
}

/// The arm the `x-aurum-arm` header asks for, when it is sent: one the
/// model serves.
fn forced_arm<'h>(
    headers: &'h HeaderMap,
    served: &Served,
    model: &str,
) -> Result<Option<&'h str>, AppError> {
    let Some(value) = headers.get(ARM_HEADER) else {
        return Ok(None);
    };
    let alias = value.to_str().unwrap_or_default();
    if served.arm(alias).is_none() {
        let known: Vec<&str> = served.all().map(|(a, _)| a).collect();
        return Err(AppError::bad_request(
            "unknown_arm",
            format!(
                "{ARM_HEADER} asks for arm {alias:?}, which model {model} does not serve \
                 (serving: {})",
                known.join(", ")
            ),
        ));
    }
    Ok(Some(alias))
}

/// Which arm answers each row, grouped by arm: the header's, else by the
/// row's entity hash (the same entity always gets the same arm; a row
/// without entities hashes its request id). An arm whose alias is not set
/// (yet) falls back to the primary.
fn group_rows<'a>(
    served: &'a Served,
    policy: &'a ServingPolicy,
    forced: Option<&'a str>,
    name: &str,
    entities: &[String],
    request_id: &str,
    rows: usize,
) -> Vec<Group<'a>> {
    let split = forced.is_none() && policy.arms.len() > 1;
    let mut groups: Vec<Group<'a>> = Vec::new();
    for row in 0..rows {
        let alias = match forced {
            Some(alias) => alias,
            None if split => {
                let key = entities
                    .get(row)
                    .filter(|e| !e.is_empty())
                    .map_or(request_id.as_bytes(), |e| e.as_bytes());
                policy.arm_for(sticky_hash(&[name.as_bytes(), key]))
            }
            None => policy.arms[0].alias.as_str(),
        };
        let (arm, model) = match served.arm(alias) {
            Some(model) => (alias, model),
            None => (served.primary_arm.as_str(), &served.primary),
        };
        match groups.iter_mut().find(|(a, _, _)| *a == arm) {
            Some((_, _, rows)) => rows.push(row),
            None => groups.push((arm, model, vec![row])),
        }
    }
    groups
}

/// Runs each arm's rows and puts each row's answer in its place.
async fn run_arms(
    state: &AppState,
    call: Call<'_>,
    missing: MissingFeatures,
    groups: &[Group<'_>],
    rows: usize,
) -> Result<Answered, AppError> {
    let logging = state.prediction_log.is_some();
    let mut answered = Answered {
        predictions: vec![None; rows],
        feature_versions: BTreeMap::new(),
        records: Vec::new(),
        timings: Vec::with_capacity(groups.len()),
    };
    for &(arm, model, ref row_ids) in groups {
        let records = if logging {
            Records::Collect(&mut answered.records)
        } else {
            Records::Skip
        };
        let arm_rows = ArmRows {
            arm,
            model,
            rows: row_ids,
        };
        let mode = Mode::Live(missing);
        let ran = inference::run(state.inference(), call, arm_rows, mode, records).await?;
        answered.feature_versions.extend(ran.feature_versions);
        for ((&row, output), statuses) in row_ids.iter().zip(ran.outputs).zip(ran.statuses) {
            answered.predictions[row] = Some(RowPrediction {
                model: call.request.model.clone(),
                version: model.version.version,
                arm: arm.to_string(),
                prediction: headline(&output),
                scores: if output.len() > 1 { output } else { Vec::new() },
                feature_statuses: statuses,
            });
        }
        answered.timings.push(ran.metrics);
    }
    Ok(answered)
}

/// Hands the rows' records to the prediction log (never waited on), each
/// with the request's latency so far.
fn log_records(state: &AppState, records: Vec<PredictionRecord>, arrived: Instant) {
    let latency = arrived.elapsed();
    if let Some(log) = &state.prediction_log {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        for mut record in records {
            record.latency_micros = micros;
            log.record(record);
        }
    }
}

/// Starts a shadow run after the answer, bounded by the shadow limit: a
/// run over it is skipped and counted, never queued.
fn start_shadow(state: &Arc<AppState>, shadow: ShadowRun) {
    match state.admit_shadow() {
        Some(permit) => {
            let state = state.clone();
            tokio::spawn(async move {
                shadow
                    .run(state.inference(), state.prediction_log.as_ref())
                    .await;
                drop(permit);
            });
        }
        None => state.metrics.count_shadow_dropped(),
    }
}

/// The span of a shadow run: a child of the request's, naming the
/// challenger.
fn shadow_trace(trace: &Trace, alias: &str, model: &LoadedModel) -> Trace {
    let span = trace.child("shadow");
    if span.is_on() {
        span.set("aurum.arm", alias.to_string());
        span.set("aurum.model.version", model.version.version as i64);
    }
    span
}

/// Writes the answer, and observes the request's time at every arm that
/// answered.
fn respond(
    state: &AppState,
    predictions: Vec<Option<RowPrediction>>,
    feature_versions: BTreeMap<String, u64>,
    timings: Vec<Arc<ArmMetrics>>,
    arrived: Instant,
) -> Result<Response, AppError> {
    let serializing = Instant::now();
    let response = PredictResponse {
        predictions: predictions.into_iter().flatten().collect(),
        feature_versions,
    };
    let bytes = serde_json::to_vec(&response)
        .map_err(|e| AppError::internal(format!("writing the answer: {e}")))?;
    state
        .metrics
        .serialize_seconds
        .observe(serializing.elapsed().as_secs_f64());
    let total = arrived.elapsed().as_secs_f64();
    for metrics in timings {
        metrics.request_seconds.observe(total);
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

fn json_error(e: serde_json::Error) -> AppError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            AppError::unprocessable("invalid_json", format!("the body does not fit: {e}"))
        }
        Category::Syntax | Category::Eof | Category::Io => {
            AppError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
    }
}

fn row_count(request: &PredictRequest) -> Result<usize, AppError> {
    let mut rows: Option<(usize, &str)> = None;
    for (name, values) in request.entities.iter().chain(&request.features) {
        match rows {
            None => rows = Some((values.len(), name)),
            Some((n, first)) if n != values.len() => {
                return Err(AppError::bad_request(
                    "ragged_columns",
                    format!(
                        "column {name:?} has {} values but {first:?} has {n}",
                        values.len()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    match rows {
        None | Some((0, _)) => Err(AppError::bad_request(
            "no_rows",
            "give at least one row in \"entities\" or \"features\"",
        )),
        Some((n, _)) if n > MAX_ROWS => Err(AppError::bad_request(
            "too_many_rows",
            format!("{n} rows requested; at most {MAX_ROWS} per request"),
        )),
        Some((n, _)) => Ok(n),
    }
}
