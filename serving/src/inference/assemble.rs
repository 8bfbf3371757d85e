//! A model's input for some rows of a request: the request's own values
//! first, the rest from the online store (one lookup per view, through the
//! feature set resolved once and kept on the version), NaN where a value
//! is missing; and what becomes of those NaNs.

use std::collections::BTreeMap;

use feature_store::online::{EntityKeyError, entity_key, key_part};
use feature_store::{FeatureStatus, FeatureValue, OnlineStore};
use serde_json::Value;

use super::error::{Error, Result};
use super::model::LoadedModel;
use super::request::PredictRequest;

/// A model's input for some rows of a request, before imputation.
pub(crate) struct Assembled {
    /// Row-major values, NaN where missing.
    pub(crate) matrix: Vec<f32>,
    /// Per row, the features that were not present.
    pub(crate) statuses: Vec<BTreeMap<String, FeatureStatus>>,
    /// The Delta version of each view read.
    pub(crate) feature_versions: BTreeMap<String, u64>,
    /// Values per row.
    width: usize,
}

/// The rows being assembled: whose input, from which request, which of
/// its rows.
#[derive(Clone, Copy)]
struct Target<'a> {
    model: &'a LoadedModel,
    request: &'a PredictRequest,
    row_ids: &'a [usize],
}

/// The stored features left to fetch, by view, each with its input column.
type ByView<'a> = BTreeMap<&'a str, Vec<(usize, &'a String)>>;

/// Fetches `model`'s features for rows `row_ids` of `request`: request
/// values first, the rest from the online store.
pub(crate) async fn assemble(
    online: &OnlineStore,
    model: &LoadedModel,
    request: &PredictRequest,
    row_ids: &[usize],
    trace: &telemetry::Trace,
) -> Result<Assembled> {
    check_reads(model, request)?;
    let rows = row_ids.len();
    let width = model.version.features.len();
    let mut input = Assembled {
        matrix: vec![f32::NAN; rows * width],
        statuses: vec![BTreeMap::new(); rows],
        feature_versions: BTreeMap::new(),
        width,
    };
    let target = Target {
        model,
        request,
        row_ids,
    };
    let stored = input.fill_supplied(target)?;
    let now = now_micros();
    for (view, columns) in stored {
        let span = trace.child("online fetch");
        if span.is_on() {
            span.set("aurum.view", view.to_string());
            span.set("aurum.rows", rows as i64);
            span.set("aurum.features", columns.len() as i64);
        }
        let filled = input.fill_stored(online, target, view, &columns, now).await;
        if let Err(e) = &filled {
            span.fail(e.to_string());
        }
        span.end();
        filled?;
    }
    Ok(input)
}

/// Missing values get the training means recorded with the version, so
/// models that cannot take NaN are served too (aurum's own graphs impute
/// NaN the same way inside the model).
pub(crate) fn impute(model: &LoadedModel, values: &mut [f32]) {
    let means = &model.version.imputation;
    let width = model.version.features.len().max(1);
    for (i, value) in values.iter_mut().enumerate() {
        if value.is_nan() {
            *value = means.get(i % width).copied().unwrap_or(f32::NAN);
        }
    }
}

/// Under `missing_features = "reject"`: refuses rows with features that
/// were missing, null or stale, naming the first five.
pub(crate) fn reject_missing(
    model: &LoadedModel,
    row_ids: &[usize],
    statuses: &[BTreeMap<String, FeatureStatus>],
) -> Result<()> {
    let rows: Vec<(usize, Vec<(String, FeatureStatus)>)> = row_ids
        .iter()
        .zip(statuses)
        .filter(|(_, s)| !s.is_empty())
        .take(5)
        .map(|(&row, s)| (row, s.iter().map(|(f, st)| (f.clone(), *st)).collect()))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    Err(Error::MissingFeatures {
        model: model.version.name.clone(),
        rows,
    })
}

/// Microseconds since the epoch, now: the time online values are read at
/// (their TTL is enforced against it).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The version must have a feature list, and must read every column the
/// request supplies (one it does not read would otherwise be dropped
/// without a word).
fn check_reads(model: &LoadedModel, request: &PredictRequest) -> Result<()> {
    let features = &model.version.features;
    if features.is_empty() {
        return Err(Error::NoFeatureList {
            model: model.version.name.clone(),
            version: model.version.version,
        });
    }
    let reads = |key: &str| {
        features
            .iter()
            .any(|r| r == key || r.split_once(':').is_some_and(|(_, name)| name == key))
    };
    if let Some(unknown) = request.features.keys().find(|key| !reads(key)) {
        return Err(Error::UnknownFeature {
            model: model.version.name.clone(),
            version: model.version.version,
            feature: unknown.clone(),
            reads: features.clone(),
        });
    }
    Ok(())
}

impl Assembled {
    /// Copies the request's own values into the input and returns the
    /// features left to fetch, grouped by view, each with its input column.
    fn fill_supplied<'a>(&mut self, target: Target<'a>) -> Result<ByView<'a>> {
        let request = target.request;
        let mut by_view: ByView<'a> = BTreeMap::new();
        for (column, reference) in target.model.version.features.iter().enumerate() {
            let (view, name) = reference.split_once(':').unwrap_or(("", reference));
            let supplied = request
                .features
                .get(reference)
                .or_else(|| request.features.get(name));
            match supplied {
                Some(values) => self.fill_column(target.row_ids, column, reference, values)?,
                None => by_view.entry(view).or_default().push((column, reference)),
            }
        }
        Ok(by_view)
    }

    /// Copies one supplied column's values for `row_ids` into input column
    /// `column`.
    fn fill_column(
        &mut self,
        row_ids: &[usize],
        column: usize,
        reference: &str,
        values: &[Value],
    ) -> Result<()> {
        let width = self.width;
        for (k, &row) in row_ids.iter().enumerate() {
            let value = &values[row];
            match numeric(value) {
                Some(v) if v.is_finite() => self.matrix[k * width + column] = v,
                Some(_) => {
                    return Err(Error::FeatureValueOutOfRange {
                        feature: reference.to_string(),
                        row,
                        value: value.to_string(),
                    });
                }
                None if value.is_null() => {
                    self.statuses[k].insert(reference.to_string(), FeatureStatus::NullValue);
                }
                None => {
                    return Err(Error::FeatureValueNotNumber {
                        feature: reference.to_string(),
                        row,
                        value: feature_store::online::shown_key(value),
                    });
                }
            }
        }
        Ok(())
    }

    /// Looks up `columns` of view `view` for the rows, once, and copies the
    /// present values into the input (the others' statuses into the
    /// rows' statuses).
    async fn fill_stored(
        &mut self,
        online: &OnlineStore,
        target: Target<'_>,
        view: &str,
        columns: &[(usize, &String)],
        now: i64,
    ) -> Result<()> {
        let model = target.model;
        // The model's feature list comes from the registry: a view or
        // reference the store cannot resolve is a deployment fault, not the
        // caller's.
        let feed = model
            .feed(online, view, columns.iter().map(|(_, r)| *r))
            .ok_or_else(|| Error::ViewNotOnline {
                model: model.version.name.clone(),
                version: model.version.version,
                view: view.to_string(),
            })?;
        let keys = entity_keys(target.request, &feed.join_keys, view, target.row_ids)?;
        let batch = online
            .fetch(&feed.set, &keys, now)
            .await
            .map_err(|e| match e {
                feature_store::Error::OnlineTier { .. } => Error::OnlineTierUnavailable {
                    model: model.version.name.clone(),
                    version: model.version.version,
                    reason: e.to_string(),
                },
                e => Error::LookupFailed {
                    model: model.version.name.clone(),
                    version: model.version.version,
                    reason: e.to_string(),
                },
            })?;
        let width = self.width;
        for (k, values) in batch.rows.into_iter().enumerate() {
            for ((column, reference), (value, status)) in columns.iter().zip(values) {
                match (status, value.as_f64()) {
                    (FeatureStatus::Present, Some(v)) => self.matrix[k * width + column] = v as f32,
                    (FeatureStatus::Present, None) => {
                        return Err(Error::NonNumericFeature {
                            feature: (*reference).clone(),
                            value: describe(&value),
                        });
                    }
                    (status, _) => {
                        self.statuses[k].insert((*reference).clone(), status);
                    }
                }
            }
        }
        if let Some(version) = online.delta_version(view) {
            self.feature_versions.insert(view.to_string(), version);
        }
        Ok(())
    }
}

/// The rows' entity keys for a view keyed by `join_keys`.
fn entity_keys(
    request: &PredictRequest,
    join_keys: &[String],
    view: &str,
    row_ids: &[usize],
) -> Result<Vec<String>> {
    let mut columns = Vec::with_capacity(join_keys.len());
    for key in join_keys {
        let values = request
            .entities
            .get(key)
            .ok_or_else(|| Error::MissingEntityKey {
                model: request.model.clone(),
                key: key.clone(),
                view: view.to_string(),
            })?;
        let mut strings = Vec::with_capacity(row_ids.len());
        for &row in row_ids {
            let value = &values[row];
            strings.push(key_part(value).ok_or_else(|| {
                Error::InvalidEntityKey(EntityKeyError::InvalidKey {
                    key: key.clone(),
                    row,
                    value: feature_store::online::shown_key(value),
                })
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
