//! `POST /get-online-features` in Feast's request and response shapes, so
//! a Feast HTTP client works unchanged.
//!
//! The response is column-major: `metadata.feature_names` lists the entity
//! key columns then the features, and `results` holds one column each with
//! `values`, `statuses` and `event_timestamps`, as Feast's feature server
//! answers. Statuses are enforced on read: a value older than its view's TTL
//! comes back as null with `OUTSIDE_MAX_AGE`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use feature_store::definitions::split_ref;
use feature_store::online::entity_key;
use feature_store::{FeatureStatus, FeatureValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::AppError;
use crate::predict::{MAX_ROWS, invalid_key, key_part};

/// The request body (Feast's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineFeaturesRequest {
    /// Join-key columns: key name → one value per entity.
    pub entities: BTreeMap<String, Vec<Value>>,
    /// `view:feature` references.
    pub features: Vec<String>,
    /// Name features `view__feature` instead of `feature`.
    #[serde(default)]
    pub full_feature_names: bool,
}

/// The response body (Feast's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnlineFeaturesResponse {
    /// Column names.
    pub metadata: Metadata,
    /// One column per name in `metadata.feature_names`.
    pub results: Vec<ResultColumn>,
}

/// Column names of the response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    /// Entity key columns, then features.
    pub feature_names: Vec<String>,
}

/// One column of the response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultColumn {
    /// One value per entity.
    pub values: Vec<Value>,
    /// One status per entity.
    pub statuses: Vec<FeatureStatus>,
    /// The event time of each value's row (RFC 3339; the epoch when there
    /// was no row).
    pub event_timestamps: Vec<String>,
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Handles `POST /get-online-features`.
pub async fn get_online_features(
    State(state): State<Arc<AppState>>,
    body: Result<Json<OnlineFeaturesRequest>, JsonRejection>,
) -> Result<Json<OnlineFeaturesResponse>, AppError> {
    let Json(request) =
        body.map_err(|e| AppError::bad_request("invalid_request", e.body_text()))?;
    if request.features.is_empty() {
        return Err(AppError::bad_request(
            "invalid_request",
            "`features` lists no feature".to_string(),
        ));
    }
    // Every referenced view must exist and share one set of join keys.
    let mut join_keys: Option<Vec<String>> = None;
    // Each view's definition is fetched once per request, however many of
    // its features are asked for.
    let mut views: BTreeMap<&str, feature_store::FeatureView> = BTreeMap::new();
    for reference in &request.features {
        let Some((view_name, feature)) = split_ref(reference) else {
            return Err(AppError::bad_request(
                "invalid_feature_reference",
                format!("{reference:?} is not a view:feature reference"),
            ));
        };
        let view = match views.entry(view_name) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(state.online.view(view_name).ok_or_else(|| {
                AppError::not_found(
                    "unknown_feature_view",
                    format!("no feature view {view_name:?} (in {reference:?})"),
                )
            })?),
        };
        if !view.features.iter().any(|f| f == feature) {
            return Err(AppError::not_found(
                "unknown_feature",
                format!("feature view {view_name:?} has no feature {feature:?}"),
            ));
        }
        match &join_keys {
            None => join_keys = Some(view.entity.join_keys.clone()),
            Some(keys) if *keys != view.entity.join_keys => {
                return Err(AppError::bad_request(
                    "mixed_entities",
                    format!(
                        "feature view {view_name:?} is keyed by {:?}, other requested views by {keys:?}",
                        view.entity.join_keys
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let join_keys = join_keys.unwrap_or_default();
    if let Some(extra) = request.entities.keys().find(|k| !join_keys.contains(k)) {
        return Err(AppError::bad_request(
            "unknown_entity_key",
            format!("{extra:?} is not a join key of the requested views ({join_keys:?})"),
        ));
    }
    let mut columns: Vec<&Vec<Value>> = Vec::with_capacity(join_keys.len());
    for key in &join_keys {
        columns.push(request.entities.get(key).ok_or_else(|| {
            AppError::bad_request(
                "missing_entity_key",
                format!("the requested views need entity key {key:?}"),
            )
        })?);
    }
    let rows = columns.first().map(|c| c.len()).unwrap_or(0);
    if columns.iter().any(|c| c.len() != rows) {
        return Err(AppError::bad_request(
            "ragged_entities",
            "entity key columns have different lengths".to_string(),
        ));
    }
    if rows > MAX_ROWS {
        return Err(AppError::payload_too_large(format!(
            "{rows} entities in one request; the limit is {MAX_ROWS}"
        )));
    }
    let mut keys = Vec::with_capacity(rows);
    for row in 0..rows {
        let mut parts = Vec::with_capacity(columns.len());
        for (key, column) in join_keys.iter().zip(&columns) {
            parts.push(key_part(&column[row]).map_err(|e| {
                AppError::bad_request("invalid_entity_key", invalid_key(key, row, e))
            })?);
        }
        keys.push(entity_key(&parts));
    }

    let started = std::time::Instant::now();
    let batch = state
        .online
        .get(&request.features, &keys, crate::predict::now_micros())?;
    state
        .metrics
        .lookup_seconds
        .observe(started.elapsed().as_secs_f64());
    let mut names = join_keys.clone();
    let mut results: Vec<ResultColumn> = columns
        .iter()
        .map(|column| ResultColumn {
            values: (*column).clone(),
            statuses: vec![FeatureStatus::Present; rows],
            event_timestamps: vec![EPOCH.to_string(); rows],
        })
        .collect();
    for (i, reference) in request.features.iter().enumerate() {
        let (view, feature) = split_ref(reference).unwrap_or(("", reference));
        names.push(if request.full_feature_names {
            format!("{view}__{feature}")
        } else {
            feature.to_string()
        });
        let mut column = ResultColumn {
            values: Vec::with_capacity(rows),
            statuses: Vec::with_capacity(rows),
            event_timestamps: Vec::with_capacity(rows),
        };
        for (row, times) in batch.rows.iter().zip(&batch.event_micros) {
            let (value, status) = &row[i];
            column.values.push(json_value(value));
            column.statuses.push(*status);
            column
                .event_timestamps
                .push(times[i].map(rfc3339).unwrap_or_else(|| EPOCH.to_string()));
        }
        results.push(column);
    }
    Ok(Json(OnlineFeaturesResponse {
        metadata: Metadata {
            feature_names: names,
        },
        results,
    }))
}

fn json_value(value: &FeatureValue) -> Value {
    match value {
        FeatureValue::Null => Value::Null,
        FeatureValue::Int(v) => Value::from(*v),
        FeatureValue::Float(v) => serde_json::Number::from_f64(*v)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        FeatureValue::Bool(v) => Value::Bool(*v),
        FeatureValue::Str(s) => Value::String(s.to_string()),
    }
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| EPOCH.to_string())
}

/// One feature of a view, as `GET /feature-views` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureInfo {
    /// The feature name.
    pub name: String,
    /// Its value type (`float64`, `int64`, `string`, …; empty if unknown).
    #[serde(rename = "type")]
    pub value_type: String,
}

/// One view, as `GET /feature-views` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewInfo {
    /// The view name.
    pub name: String,
    /// The entity name.
    pub entity: String,
    /// The entity's join keys.
    pub join_keys: Vec<String>,
    /// The view's TTL in seconds.
    pub ttl_seconds: u64,
    /// The features with their types.
    pub features: Vec<FeatureInfo>,
    /// The gold table version the online values were loaded from, if any.
    pub delta_version: Option<u64>,
}

/// Handles `GET /feature-views`.
pub async fn feature_views(State(state): State<Arc<AppState>>) -> Json<Vec<ViewInfo>> {
    Json(
        state
            .online
            .views()
            .into_iter()
            .map(|view| ViewInfo {
                delta_version: state.online.delta_version(&view.name),
                features: view
                    .features
                    .iter()
                    .enumerate()
                    .map(|(i, name)| FeatureInfo {
                        name: name.clone(),
                        value_type: view.feature_types.get(i).cloned().unwrap_or_default(),
                    })
                    .collect(),
                ttl_seconds: view.ttl.as_secs(),
                entity: view.entity.name.clone(),
                join_keys: view.entity.join_keys.clone(),
                name: view.name,
            })
            .collect(),
    )
}

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
    pub views: Vec<feature_store::materialize::MaterializeReport>,
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
            feature_store::materialize::materialize(
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
