//! `POST /predict`: entity keys (and/or raw features) in, predictions out.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use feature_store::online::{EntityKeyError, entity_key, key_part};
use feature_store::{FeatureStatus, FeatureValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::AppError;

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
    /// The model's first output for the row (a probability for classifiers).
    pub prediction: f32,
    /// Features that were not present, with their status; the model imputed
    /// them with their training means.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_statuses: BTreeMap<String, FeatureStatus>,
}

/// The `/predict` handler.
pub async fn predict(
    State(state): State<Arc<AppState>>,
    body: Result<Json<PredictRequest>, JsonRejection>,
) -> Result<Json<PredictResponse>, AppError> {
    let Json(request) = body?;
    let model = state.models.get(&request.model).ok_or_else(|| {
        AppError::not_found(
            "model_not_found",
            format!(
                "model {:?} is not served (served: {})",
                request.model,
                state.models.names().join(", ")
            ),
        )
    })?;
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
    let rows = row_count(&request)?;
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
                for (row, value) in values.iter().enumerate() {
                    match numeric(value) {
                        Some(v) => matrix[row * width + column] = v,
                        None if value.is_null() => {
                            statuses[row].insert(reference.clone(), FeatureStatus::NullValue);
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
        let view = state.online.view(view_name).ok_or_else(|| {
            AppError::internal(format!(
                "model {} v{} reads feature view {view_name:?}, which the online store does not hold",
                model.version.name, model.version.version
            ))
        })?;
        let keys = entity_keys(&request, &view.entity.join_keys, view_name, rows)?;
        let refs: Vec<String> = columns.iter().map(|(_, r)| (*r).clone()).collect();
        // The model's feature list comes from the registry: a reference the
        // store cannot resolve is a deployment fault, not the caller's.
        let batch = state.online.get(&refs, &keys, now).map_err(|e| {
            AppError::internal(format!(
                "model {} v{} cannot be fed: {e}",
                model.version.name, model.version.version
            ))
        })?;
        for (row, values) in batch.rows.into_iter().enumerate() {
            for ((column, reference), (value, status)) in columns.iter().zip(values) {
                match (status, value.as_f64()) {
                    (FeatureStatus::Present, Some(v)) => matrix[row * width + column] = v as f32,
                    (FeatureStatus::Present, None) => {
                        return Err(AppError::internal(format!(
                            "feature {reference:?} holds a non-numeric value {}",
                            describe(&value)
                        )));
                    }
                    (status, _) => {
                        statuses[row].insert((*reference).clone(), status);
                    }
                }
            }
        }
        if let Some(version) = state.online.delta_version(view_name) {
            feature_versions.insert(view_name.to_string(), version);
        }
    }

    // Missing values get the training means recorded with the version, so
    // models that cannot take NaN are served too (aurum's own graphs impute
    // NaN the same way inside the model).
    for (i, value) in matrix.iter_mut().enumerate() {
        if value.is_nan() {
            *value = model
                .version
                .imputation
                .get(i % width)
                .copied()
                .unwrap_or(f32::NAN);
        }
    }
    let outputs = model.predict(matrix, rows)?;
    let predictions = outputs
        .into_iter()
        .zip(statuses)
        .map(|(output, feature_statuses)| RowPrediction {
            model: model.version.name.clone(),
            version: model.version.version,
            arm: "default".to_string(),
            prediction: output.first().copied().unwrap_or(f32::NAN),
            feature_statuses,
        })
        .collect();
    Ok(Json(PredictResponse {
        predictions,
        feature_versions,
    }))
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
    rows: usize,
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
        let mut strings = Vec::with_capacity(rows);
        for (row, value) in values.iter().enumerate() {
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
    Ok((0..rows)
        .map(|row| entity_key(&columns.iter().map(|c| c[row].as_str()).collect::<Vec<_>>()))
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
