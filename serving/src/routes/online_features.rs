//! `POST /get-online-features` in Feast's request and response shapes, so
//! a Feast HTTP client works unchanged; and `GET /feature-views`.
//!
//! The response is column-major: `metadata.feature_names` lists the entity
//! key columns then the features, and `results` holds one column each with
//! `values`, `statuses` and `event_timestamps`, as Feast's feature server
//! answers. Statuses are enforced on read: a value older than its view's TTL
//! comes back as null with `OUTSIDE_MAX_AGE`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use feature_store::online::{EntityKeyError, FeatureBatch, LookupKeys, lookup_keys};
use feature_store::schema::split_ref;
use feature_store::{FeatureStatus, FeatureValue};
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AppError;
use crate::inference::now_micros;
use crate::state::AppState;

/// The request body (Feast's). Strings borrow from the request bytes.
///
/// Every field Feast's clients send is honoured (these are all the fields
/// of Feast 0.67's `GetOnlineFeaturesRequest`). A field unknown here is
/// ignored, as Feast's own server ignores it, and named in a debug log.
#[derive(Debug, Clone, Deserialize)]
pub struct OnlineFeaturesRequest<'a> {
    /// Join-key columns: key name → one value per entity.
    #[serde(borrow)]
    pub entities: BTreeMap<Cow<'a, str>, Vec<Value>>,
    /// `view:feature` references (or give `feature_service`).
    #[serde(borrow, default)]
    pub features: Option<Vec<Cow<'a, str>>>,
    /// A feature service's name, for its features.
    #[serde(borrow, default)]
    pub feature_service: Option<Cow<'a, str>>,
    /// Name features `view__feature` instead of `feature`.
    #[serde(default)]
    pub full_feature_names: bool,
    /// Answer with `metadata.feature_view_metadata`: each view's name and
    /// version (the Delta version of the gold table the online store last
    /// loaded it from; 0 when it holds pushed rows only).
    #[serde(default)]
    pub include_feature_view_version_metadata: bool,
}

/// The fields of [`OnlineFeaturesRequest`].
const REQUEST_FIELDS: [&str; 5] = [
    "entities",
    "features",
    "feature_service",
    "full_feature_names",
    "include_feature_view_version_metadata",
];

/// Names, in a debug log, the fields of a request body outside `known`
/// (they were ignored). Only parses the body again when debug logging is on.
pub(crate) fn log_ignored_fields(route: &str, body: &[u8], known: &[&str]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Ok(fields) = serde_json::from_slice::<BTreeMap<Cow<'_, str>, serde::de::IgnoredAny>>(body)
    else {
        return;
    };
    let ignored: Vec<&str> = fields
        .keys()
        .map(|k| k.as_ref())
        .filter(|k| !known.contains(k))
        .collect();
    if !ignored.is_empty() {
        tracing::debug!(
            route,
            ?ignored,
            "ignored request fields aurum does not know"
        );
    }
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Handles `POST /get-online-features`.
pub async fn get_online_features(
    State(state): State<Arc<AppState>>,
    trace: Option<axum::Extension<telemetry::Trace>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let trace = trace.map(|axum::Extension(t)| t).unwrap_or_default();
    let body = body?;
    let request: OnlineFeaturesRequest<'_> = serde_json::from_slice(&body).map_err(|e| {
        AppError::bad_request("invalid_request", format!("invalid request body: {e}"))
    })?;
    log_ignored_fields("/get-online-features", &body, &REQUEST_FIELDS);
    let features: Vec<Cow<'_, str>> = match (request.features, &request.feature_service) {
        (Some(features), None) => features,
        (None, Some(name)) => state
            .online
            .service(name)
            .ok_or_else(|| {
                AppError::not_found(
                    "unknown_feature_service",
                    format!("no feature service {name:?}"),
                )
            })?
            .iter()
            .map(|f| Cow::Owned(f.clone()))
            .collect(),
        _ => {
            return Err(AppError::bad_request(
                "invalid_request",
                "give either `features` or `feature_service`".to_string(),
            ));
        }
    };
    if features.is_empty() {
        return Err(AppError::bad_request(
            "invalid_request",
            "`features` lists no feature".to_string(),
        ));
    }
    let set = state
        .online
        .resolve(&features)
        .map_err(|_| unknown_reference(&state, &features))?;
    let LookupKeys {
        join_keys,
        columns,
        keys,
    } = lookup_keys(&set, &request.entities).map_err(|e| {
        let message = e.to_string();
        match e {
            EntityKeyError::MixedEntities { .. } => {
                AppError::bad_request("mixed_entities", message)
            }
            EntityKeyError::UnknownKey { .. } => {
                AppError::bad_request("unknown_entity_key", message)
            }
            EntityKeyError::MissingKey(_) => AppError::bad_request("missing_entity_key", message),
            EntityKeyError::Ragged => AppError::bad_request("ragged_entities", message),
            EntityKeyError::TooMany(_) => AppError::payload_too_large(message),
            EntityKeyError::InvalidKey { .. } => {
                AppError::bad_request("invalid_entity_key", message)
            }
        }
    })?;

    let started = std::time::Instant::now();
    let span = trace.child("online fetch");
    if span.is_on() {
        span.set("aurum.features", features.len() as i64);
        span.set("aurum.rows", keys.len() as i64);
    }
    let batch = state.online.fetch(&set, &keys, now_micros()).await;
    span.end();
    let batch = batch?;
    state
        .metrics
        .lookup_seconds
        .observe(started.elapsed().as_secs_f64());

    let mut names: Vec<Cow<'_, str>> = join_keys.iter().map(|k| Cow::from(k.as_str())).collect();
    for reference in &features {
        let (view, feature) = split_ref(reference).unwrap_or(("", reference));
        names.push(if request.full_feature_names {
            Cow::Owned(format!("{view}__{feature}"))
        } else {
            Cow::Borrowed(feature)
        });
    }
    let view_metadata: Vec<ViewMetadata<'_>> = if request.include_feature_view_version_metadata {
        let mut seen: Vec<ViewMetadata<'_>> = Vec::new();
        for reference in &features {
            let (view, _) = split_ref(reference).unwrap_or(("", reference));
            if !seen.iter().any(|v| v.name == view) {
                seen.push(ViewMetadata {
                    name: view,
                    version: state.online.delta_version(view).unwrap_or(0),
                });
            }
        }
        seen
    } else {
        Vec::new()
    };
    let answer = Answer {
        metadata: AnswerMetadata {
            feature_names: &names,
            feature_view_metadata: request
                .include_feature_view_version_metadata
                .then_some(view_metadata.as_slice()),
        },
        results: AnswerColumns {
            keys: &columns,
            batch: &batch,
            stamps: &StampTable::new(&batch, features.len()),
            features: features.len(),
        },
    };
    let mut bytes = Vec::with_capacity(256 + keys.len() * features.len() * 64);
    serde_json::to_writer(&mut bytes, &answer)
        .map_err(|e| AppError::internal(format!("encoding the answer: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The error for a reference the store could not resolve: an unknown view
/// or an unknown feature of a known view (both 404), or a malformed
/// reference (400).
fn unknown_reference(state: &AppState, references: &[Cow<'_, str>]) -> AppError {
    for reference in references {
        let Some((view_name, feature)) = split_ref(reference) else {
            return AppError::bad_request(
                "invalid_feature_reference",
                format!("{reference:?} is not a view:feature reference"),
            );
        };
        let Some(view) = state.online.view(view_name) else {
            return AppError::not_found(
                "unknown_feature_view",
                format!("no feature view {view_name:?} (in {reference:?})"),
            );
        };
        if !view.features.iter().any(|f| f == feature) {
            return AppError::not_found(
                "unknown_feature",
                format!("feature view {view_name:?} has no feature {feature:?}"),
            );
        }
    }
    AppError::internal("a feature reference resolved on the second look; retry")
}

/// The response body (Feast's), serialized straight from the looked-up
/// batch: column-major, entity keys first.
#[derive(Serialize)]
struct Answer<'a> {
    metadata: AnswerMetadata<'a>,
    results: AnswerColumns<'a>,
}

#[derive(Serialize)]
struct AnswerMetadata<'a> {
    feature_names: &'a [Cow<'a, str>],
    #[serde(skip_serializing_if = "Option::is_none")]
    feature_view_metadata: Option<&'a [ViewMetadata<'a>]>,
}

/// A view's entry in `metadata.feature_view_metadata` (Feast's shape).
#[derive(Serialize)]
struct ViewMetadata<'a> {
    name: &'a str,
    version: u64,
}

struct AnswerColumns<'a> {
    keys: &'a [&'a [Value]],
    batch: &'a FeatureBatch,
    stamps: &'a StampTable,
    features: usize,
}

impl Serialize for AnswerColumns<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.keys.len() + self.features))?;
        for key in self.keys {
            seq.serialize_element(&KeyColumn(key))?;
        }
        for i in 0..self.features {
            seq.serialize_element(&FeatureColumn {
                batch: self.batch,
                stamps: self.stamps,
                index: i,
            })?;
        }
        seq.end()
    }
}

/// An entity key column: the request's values, all PRESENT, at the epoch.
struct KeyColumn<'a>(&'a [Value]);

impl Serialize for KeyColumn<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut column = serializer.serialize_struct("ResultColumn", 3)?;
        column.serialize_field("values", self.0)?;
        column.serialize_field("statuses", &Repeat(FeatureStatus::Present, self.0.len()))?;
        column.serialize_field("event_timestamps", &Repeat(EPOCH, self.0.len()))?;
        column.end()
    }
}

struct Repeat<T>(T, usize);

impl<T: Serialize + Copy> Serialize for Repeat<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(std::iter::repeat_n(self.0, self.1))
    }
}

/// One feature's column of the batch.
struct FeatureColumn<'a> {
    batch: &'a FeatureBatch,
    stamps: &'a StampTable,
    index: usize,
}

impl Serialize for FeatureColumn<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let i = self.index;
        let rows = &self.batch.rows;
        let mut column = serializer.serialize_struct("ResultColumn", 3)?;
        column.serialize_field("values", &Values(rows, i))?;
        column.serialize_field("statuses", &Statuses(rows, i))?;
        column.serialize_field("event_timestamps", &Stamps(self.stamps, i))?;
        column.end()
    }
}

type Rows = [Vec<(FeatureValue, FeatureStatus)>];

struct Values<'a>(&'a Rows, usize);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A non-finite float is not JSON: it goes out as null.
        serializer.collect_seq(self.0.iter().map(|row| &row[self.1].0))
    }
}

struct Statuses<'a>(&'a Rows, usize);

impl Serialize for Statuses<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|row| row[self.1].1))
    }
}

struct Stamps<'a>(&'a StampTable, usize);

impl Serialize for Stamps<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let table = self.0;
        serializer.collect_seq((0..table.rows).map(|row| table.text(row, self.1)))
    }
}

/// Every event time of a batch formatted once: the features of one view
/// share their row's time, so each (entity, view) is formatted once, not
/// once per feature.
struct StampTable {
    texts: Vec<[u8; STAMP_LEN]>,
    /// Per (row, feature): an index into `texts`, or `u32::MAX` (no row).
    index: Vec<u32>,
    rows: usize,
    features: usize,
}

impl StampTable {
    fn new(batch: &FeatureBatch, features: usize) -> Self {
        let mut table = StampTable {
            texts: Vec::with_capacity(batch.event_micros.len()),
            index: Vec::with_capacity(batch.event_micros.len() * features),
            rows: batch.event_micros.len(),
            features,
        };
        for times in &batch.event_micros {
            let mut last: Option<(i64, u32)> = None;
            for time in times {
                let at = match (time, last) {
                    (None, _) => u32::MAX,
                    (Some(micros), Some((previous, at))) if *micros == previous => at,
                    (Some(micros), _) => match rfc3339_micros(*micros) {
                        Some(text) => {
                            let at = u32::try_from(table.texts.len()).unwrap_or(u32::MAX);
                            table.texts.push(text);
                            last = Some((*micros, at));
                            at
                        }
                        None => u32::MAX,
                    },
                };
                table.index.push(at);
            }
        }
        table
    }

    fn text(&self, row: usize, feature: usize) -> &str {
        self.index
            .get(row * self.features + feature)
            .and_then(|at| self.texts.get(*at as usize))
            .and_then(|text| std::str::from_utf8(text).ok())
            .unwrap_or(EPOCH)
    }
}

const STAMP_LEN: usize = 27;

/// Formats `micros` since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`
/// without allocating (years 0 to 9999; `None` outside them).
fn rfc3339_micros(micros: i64) -> Option<[u8; STAMP_LEN]> {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let two = |text: &mut [u8; STAMP_LEN], at: usize, value: i64| {
        text[at] = b'0' + (value / 10) as u8;
        text[at + 1] = b'0' + (value % 10) as u8;
    };
    two(&mut text, 0, year / 100);
    two(&mut text, 2, year % 100);
    two(&mut text, 5, month);
    two(&mut text, 8, day);
    two(&mut text, 11, of_day / 3_600);
    two(&mut text, 14, of_day / 60 % 60);
    two(&mut text, 17, of_day % 60);
    two(&mut text, 20, fraction / 10_000);
    two(&mut text, 22, fraction / 100 % 100);
    two(&mut text, 24, fraction % 100);
    Some(text)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_chrono() {
        for micros in [
            0,
            1,
            -1,
            951_782_400_000_000,     // 2000-02-29
            1_795_000_000_123_456,   // 2026
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            -62_135_596_800_000_000, // 0001-01-01
            4_107_542_399_000_000,   // 2100-02-28T23:59:59
        ] {
            let expected = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let text = rfc3339_micros(micros).unwrap();
            assert_eq!(std::str::from_utf8(&text).unwrap(), expected);
        }
        assert_eq!(rfc3339_micros(i64::MAX), None);
    }
}
