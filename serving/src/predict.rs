//! `POST /predict`: entity keys (and/or raw features) in, predictions out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use feature_store::online::{EntityKeyError, entity_key, key_part};
use feature_store::{FeatureStatus, FeatureValue};
use monitoring::PredictionRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::edge::RequestId;
use crate::error::AppError;
use crate::models::{LoadedModel, headline};
use crate::policy::{ARM_HEADER, MissingFeatures, sticky_hash};

/// The most rows one request may ask for.
pub const MAX_ROWS: usize = feature_store::online::MAX_LOOKUP_ENTITIES;

/// The request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// The model name.
    pub model: String,
    /// Join-key columns: key name → one value per row.
    #[serde(default)]
    pub entities: BTreeMap<String, Vec<Value>>,
    /// Request-time feature columns (`view:feature` or bare feature name →
    /// one value per row); they take precedence over stored values.
    #[serde(default)]
    pub features: BTreeMap<String, Vec<Value>>,
}

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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let arrived = Instant::now();
    let time_micros = now_micros();
    let body = body?;
    let request: PredictRequest = serde_json::from_slice(&body).map_err(json_error)?;
    state
        .metrics
        .parse_seconds
        .observe(arrived.elapsed().as_secs_f64());
    let request = Arc::new(request);
    let request_id = request_id.map_or_else(|| state.new_request_id(), |Extension(id)| id.0);
    let served = state.models.served(&request.model).ok_or_else(|| {
        AppError::not_found(
            "model_not_found",
            format!(
                "model {:?} is not served (served: {})",
                request.model,
                state.models.names().join(", ")
            ),
        )
    })?;
    let policy = state.config.policy(&request.model);
    let rows = row_count(&request)?;

    // Which arm answers each row: the header's, else by the row's entity
    // hash (the same entity always gets the same arm).
    let forced = match headers.get(ARM_HEADER) {
        None => None,
        Some(value) => {
            let alias = value.to_str().unwrap_or_default();
            if served.arm(alias).is_none() {
                let known: Vec<&str> = served.all().map(|(a, _)| a).collect();
                return Err(AppError::bad_request(
                    "unknown_arm",
                    format!(
                        "{ARM_HEADER} asks for arm {alias:?}, which model {} does not serve \
                         (serving: {})",
                        request.model,
                        known.join(", ")
                    ),
                ));
            }
            Some(alias.to_string())
        }
    };
    let logging = state.prediction_log.is_some();
    let split = forced.is_none() && policy.arms.len() > 1;
    let entities = if logging || split || policy.shadow.is_some() {
        entity_labels(&request, rows)
    } else {
        Vec::new()
    };
    let mut groups: Vec<(&str, &Arc<LoadedModel>, Vec<usize>)> = Vec::new();
    for row in 0..rows {
        let alias = match &forced {
            Some(alias) => alias.as_str(),
            None if split => {
                let key = entities
                    .get(row)
                    .filter(|e| !e.is_empty())
                    .map_or(request_id.as_bytes(), |e| e.as_bytes());
                policy.arm_for(sticky_hash(&[request.model.as_bytes(), key]))
            }
            None => policy.arms[0].alias.as_str(),
        };
        // An arm whose alias is not set (yet) falls back to the primary.
        let (arm, model) = match served.arm(alias) {
            Some(model) => (alias, model),
            None => (served.primary_arm.as_str(), &served.primary),
        };
        match groups.iter_mut().find(|(a, _, _)| *a == arm) {
            Some((_, _, rows)) => rows.push(row),
            None => groups.push((arm, model, vec![row])),
        }
    }

    let mut predictions: Vec<Option<RowPrediction>> = vec![None; rows];
    let mut feature_versions = BTreeMap::new();
    let mut records = Vec::new();
    let mut timings = Vec::with_capacity(groups.len());
    for (arm, model, row_ids) in &groups {
        let started = Instant::now();
        let Assembled {
            matrix,
            statuses,
            feature_versions: versions,
        } = assemble(&state, model, &request, row_ids)?;
        if policy.missing == MissingFeatures::Reject {
            reject_missing(model, row_ids, &statuses)?;
        }
        // The log keeps the values as assembled (missing as NaN).
        let (mut input, raw) = if logging {
            (matrix.clone(), matrix)
        } else {
            (matrix, Vec::new())
        };
        impute(model, &mut input);
        let fetched = started.elapsed();
        let outputs = model.infer(input, row_ids.len()).await?;
        let inferred = started.elapsed() - fetched;
        let metrics = model.metrics_for(&state.metrics, arm, false);
        metrics.feature_seconds.observe(fetched.as_secs_f64());
        metrics.inference_seconds.observe(inferred.as_secs_f64());
        metrics.batch_rows.observe(row_ids.len() as f64);
        timings.push(metrics);
        feature_versions.extend(versions);
        let arm_name: Arc<str> = Arc::from(*arm);
        let model_name: Arc<str> = Arc::from(request.model.as_str());
        let width = model.version.features.len();
        let one_row = row_ids.len() == 1;
        let mut raw = Some(raw);
        for ((k, &row), (output, statuses)) in row_ids
            .iter()
            .enumerate()
            .zip(outputs.into_iter().zip(statuses))
        {
            if logging {
                records.push(PredictionRecord {
                    request_id: request_id.clone(),
                    row: u32::try_from(row).unwrap_or(u32::MAX),
                    time_micros,
                    model: model_name.clone(),
                    version: model.version.version,
                    arm: arm_name.clone(),
                    shadow: false,
                    entity: entities.get(row).cloned().unwrap_or_default(),
                    feature_names: model.feature_names.clone(),
                    // One row: the record takes the assembled values.
                    features: match (one_row, &mut raw) {
                        (true, raw) => raw.take().unwrap_or_default(),
                        (false, Some(raw)) => raw[k * width..(k + 1) * width].to_vec(),
                        (false, None) => Vec::new(),
                    },
                    outputs: output.clone(),
                    latency_micros: 0,
                });
            }
            predictions[row] = Some(RowPrediction {
                model: request.model.clone(),
                version: model.version.version,
                arm: (*arm).to_string(),
                prediction: headline(&output),
                scores: if output.len() > 1 { output } else { Vec::new() },
                feature_statuses: statuses,
            });
        }
    }
    let latency = arrived.elapsed();
    if let Some(log) = &state.prediction_log {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        for mut record in records {
            record.latency_micros = micros;
            log.record(record);
        }
    }

    if let Some(shadow) = &policy.shadow
        && let Some(model) = served.arm(shadow)
        && groups
            .iter()
            .any(|(_, m, _)| m.version.version != model.version.version)
    {
        match state.admit_shadow() {
            Some(permit) => {
                let shadow_run = ShadowRun {
                    state: state.clone(),
                    model: model.clone(),
                    arm: shadow.clone(),
                    request: request.clone(),
                    entities,
                    request_id,
                    time_micros,
                };
                tokio::spawn(async move {
                    shadow_run.run().await;
                    drop(permit);
                });
            }
            None => {
                state
                    .metrics
                    .shadow_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

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

/// A challenger run on a copy of a request, after its answer has gone.
struct ShadowRun {
    state: Arc<AppState>,
    model: Arc<LoadedModel>,
    arm: String,
    request: Arc<PredictRequest>,
    entities: Vec<String>,
    request_id: Arc<str>,
    time_micros: i64,
}

impl ShadowRun {
    async fn run(self) {
        let started = Instant::now();
        let rows = row_count(&self.request).unwrap_or(0);
        let row_ids: Vec<usize> = (0..rows).collect();
        let assembled = match assemble(&self.state, &self.model, &self.request, &row_ids) {
            Ok(assembled) => assembled,
            Err(e) => {
                tracing::debug!(request_id = %self.request_id, error = %e.message, "shadow input");
                return;
            }
        };
        let mut input = assembled.matrix.clone();
        impute(&self.model, &mut input);
        let fetched = started.elapsed();
        let outputs = match self.model.infer(input, rows).await {
            Ok(outputs) => outputs,
            Err(e) => {
                tracing::warn!(request_id = %self.request_id, error = %e.message, "shadow inference failed");
                return;
            }
        };
        let inferred = started.elapsed() - fetched;
        let metrics = self.model.metrics_for(&self.state.metrics, &self.arm, true);
        metrics.feature_seconds.observe(fetched.as_secs_f64());
        metrics.inference_seconds.observe(inferred.as_secs_f64());
        metrics.batch_rows.observe(rows as f64);
        metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        let Some(log) = &self.state.prediction_log else {
            return;
        };
        let width = self.model.version.features.len();
        let arm: Arc<str> = Arc::from(self.arm.as_str());
        let model: Arc<str> = Arc::from(self.request.model.as_str());
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        for (row, output) in outputs.into_iter().enumerate() {
            log.record(PredictionRecord {
                request_id: self.request_id.clone(),
                row: u32::try_from(row).unwrap_or(u32::MAX),
                time_micros: self.time_micros,
                model: model.clone(),
                version: self.model.version.version,
                arm: arm.clone(),
                shadow: true,
                entity: self.entities.get(row).cloned().unwrap_or_default(),
                feature_names: self.model.feature_names.clone(),
                features: assembled.matrix[row * width..(row + 1) * width].to_vec(),
                outputs: output,
                latency_micros: micros,
            });
        }
    }
}

/// A model's input for some rows of a request, before imputation.
struct Assembled {
    /// Row-major values, NaN where missing.
    matrix: Vec<f32>,
    /// Per row, the features that were not present.
    statuses: Vec<BTreeMap<String, FeatureStatus>>,
    /// The Delta version of each view read.
    feature_versions: BTreeMap<String, u64>,
}

/// Fetches `model`'s features for rows `row_ids` of `request`: request
/// values first, the rest from the online store.
fn assemble(
    state: &AppState,
    model: &LoadedModel,
    request: &PredictRequest,
    row_ids: &[usize],
) -> Result<Assembled, AppError> {
    let features = &model.version.features;
    if features.is_empty() {
        return Err(AppError::bad_request(
            "no_feature_list",
            format!(
                "model {} v{} was registered without a feature list (the {} tag when \
                 registered through MLflow), so /predict cannot assemble its input",
                model.version.name,
                model.version.version,
                crate::mlflow::FEATURES_TAG
            ),
        ));
    }
    let rows = row_ids.len();
    let width = features.len();
    let mut matrix = vec![f32::NAN; rows * width];
    let mut statuses: Vec<BTreeMap<String, FeatureStatus>> = vec![BTreeMap::new(); rows];
    let mut feature_versions = BTreeMap::new();

    // A supplied column the model does not read would otherwise be dropped
    // without a word.
    let reads = |key: &str| {
        features
            .iter()
            .any(|r| r == key || r.split_once(':').is_some_and(|(_, name)| name == key))
    };
    if let Some(unknown) = request.features.keys().find(|key| !reads(key)) {
        return Err(AppError::bad_request(
            "unknown_feature",
            format!(
                "model {} v{} does not read feature {unknown:?}; it reads {}",
                model.version.name,
                model.version.version,
                features.join(", ")
            ),
        ));
    }

    // Group the stored features by view, keeping each one's input column.
    let mut by_view: BTreeMap<&str, Vec<(usize, &String)>> = BTreeMap::new();
    for (column, reference) in features.iter().enumerate() {
        let (view, name) = reference.split_once(':').unwrap_or(("", reference));
        let supplied = request
            .features
            .get(reference)
            .or_else(|| request.features.get(name));
        match supplied {
            Some(values) => {
                for (k, &row) in row_ids.iter().enumerate() {
                    let value = &values[row];
                    match numeric(value) {
                        Some(v) if v.is_finite() => matrix[k * width + column] = v,
                        Some(_) => {
                            return Err(AppError::bad_request(
                                "invalid_feature_value",
                                format!(
                                    "feature {reference:?} row {row}: {value} does not fit a \
                                     32-bit float"
                                ),
                            ));
                        }
                        None if value.is_null() => {
                            statuses[k].insert(reference.clone(), FeatureStatus::NullValue);
                        }
                        None => {
                            return Err(AppError::bad_request(
                                "invalid_feature_value",
                                format!("feature {reference:?} row {row}: {value} is not a number"),
                            ));
                        }
                    }
                }
            }
            None => by_view.entry(view).or_default().push((column, reference)),
        }
    }

    let now = now_micros();
    for (view_name, columns) in by_view {
        // The model's feature list comes from the registry: a view or
        // reference the store cannot resolve is a deployment fault, not the
        // caller's.
        let feed = model
            .feed(&state.online, view_name, columns.iter().map(|(_, r)| *r))
            .ok_or_else(|| {
                AppError::internal(format!(
                    "model {} v{} reads features of view {view_name:?} that the online store \
                     does not hold",
                    model.version.name, model.version.version
                ))
            })?;
        let keys = entity_keys(request, &feed.join_keys, view_name, row_ids)?;
        let batch = state.online.get_set(&feed.set, &keys, now).map_err(|e| {
            AppError::internal(format!(
                "model {} v{} cannot be fed: {e}",
                model.version.name, model.version.version
            ))
        })?;
        for (k, values) in batch.rows.into_iter().enumerate() {
            for ((column, reference), (value, status)) in columns.iter().zip(values) {
                match (status, value.as_f64()) {
                    (FeatureStatus::Present, Some(v)) => matrix[k * width + column] = v as f32,
                    (FeatureStatus::Present, None) => {
                        return Err(AppError::internal(format!(
                            "feature {reference:?} holds a non-numeric value {}",
                            describe(&value)
                        )));
                    }
                    (status, _) => {
                        statuses[k].insert((*reference).clone(), status);
                    }
                }
            }
        }
        if let Some(version) = state.online.delta_version(view_name) {
            feature_versions.insert(view_name.to_string(), version);
        }
    }
    Ok(Assembled {
        matrix,
        statuses,
        feature_versions,
    })
}

/// Missing values get the training means recorded with the version, so
/// models that cannot take NaN are served too (aurum's own graphs impute
/// NaN the same way inside the model).
fn impute(model: &LoadedModel, values: &mut [f32]) {
    let means = &model.version.imputation;
    let width = model.version.features.len().max(1);
    for (i, value) in values.iter_mut().enumerate() {
        if value.is_nan() {
            *value = means.get(i % width).copied().unwrap_or(f32::NAN);
        }
    }
}

/// Under `missing_features = "reject"`: a 422 naming the first rows and
/// features that were missing, null or stale.
fn reject_missing(
    model: &LoadedModel,
    row_ids: &[usize],
    statuses: &[BTreeMap<String, FeatureStatus>],
) -> Result<(), AppError> {
    let missing: Vec<String> = row_ids
        .iter()
        .zip(statuses)
        .filter(|(_, s)| !s.is_empty())
        .take(5)
        .map(|(row, s)| {
            let list: Vec<String> = s.iter().map(|(f, st)| format!("{f} {st:?}")).collect();
            format!("row {row}: {}", list.join(", "))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(AppError::unprocessable(
        "missing_features",
        format!(
            "model {} serves with missing_features = \"reject\" and features are missing: {}",
            model.version.name,
            missing.join("; ")
        ),
    ))
}

/// Per row, its entity key as `name=value` pairs (entity columns in name
/// order), or empty without entities.
fn entity_labels(request: &PredictRequest, rows: usize) -> Vec<String> {
    (0..rows)
        .map(|row| {
            let mut label = String::new();
            for (name, values) in &request.entities {
                if !label.is_empty() {
                    label.push(',');
                }
                label.push_str(name);
                label.push('=');
                if let Some(part) = values.get(row).and_then(key_part) {
                    label.push_str(&part);
                }
            }
            label
        })
        .collect()
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

fn entity_keys(
    request: &PredictRequest,
    join_keys: &[String],
    view: &str,
    row_ids: &[usize],
) -> Result<Vec<String>, AppError> {
    let mut columns = Vec::with_capacity(join_keys.len());
    for key in join_keys {
        let values = request.entities.get(key).ok_or_else(|| {
            AppError::bad_request(
                "missing_entity_key",
                format!(
                    "model {} needs entity key {key:?} for feature view {view:?}",
                    request.model
                ),
            )
        })?;
        let mut strings = Vec::with_capacity(row_ids.len());
        for &row in row_ids {
            let value = &values[row];
            strings.push(key_part(value).ok_or_else(|| {
                let error = EntityKeyError::InvalidKey {
                    key: key.clone(),
                    row,
                    value: value.to_string(),
                };
                AppError::bad_request("invalid_entity_key", error.to_string())
            })?);
        }
        columns.push(strings);
    }
    Ok((0..row_ids.len())
        .map(|k| entity_key(&columns.iter().map(|c| c[k].as_str()).collect::<Vec<_>>()))
        .collect())
}

fn numeric(value: &Value) -> Option<f32> {
    match value {
        Value::Number(n) => n.as_f64().map(|v| v as f32),
        Value::Bool(b) => Some(f32::from(u8::from(*b))),
        _ => None,
    }
}

fn describe(value: &FeatureValue) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
