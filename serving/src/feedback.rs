//! `POST /feedback`: true outcomes for served predictions, matched by
//! request id (and row) or by entity (and time), turned into live model
//! quality per version and arm and appended to the `feedback` Delta table
//! (which `aurum ab report` reads).
//!
//! Matching uses the predictions the monitor remembers (the most recent
//! [`crate::monitor::MonitorOptions::recent_requests`] request ids). An
//! outcome for a prediction that is not remembered, or that already has
//! one, is not applied and is listed in the answer with the reason; when
//! none applies the answer is 404 `unknown_predictions`. A malformed item
//! refuses the whole request (400) before anything is applied.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use feature_store::metrics::{header as metric_header, label_value};
use feature_store::offline::WriteOptions;
use feature_store::{CommitLineage, DeltaStore};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::AppError;
use crate::monitor::Monitor;
use crate::prediction_log::PredictionRecord;

/// The Delta table outcomes are appended to (beside the prediction log).
pub const TABLE: &str = "feedback";

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A prediction for an entity: when, the request, the row.
type EntityRow = (i64, Arc<str>, u32);

/// Entity rows remembered per model and entity key.
const PER_ENTITY: usize = 8;

/// A remembered prediction.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    model: Arc<str>,
    version: u64,
    arm: Arc<str>,
    prediction: f32,
    time_micros: i64,
    labelled: bool,
}

/// The most recent predictions, by request id and by entity.
#[derive(Debug)]
pub(crate) struct Recent {
    capacity: usize,
    by_request: FastMap<Arc<str>, Vec<(u32, Served)>>,
    order: VecDeque<Arc<str>>,
    by_entity: FastMap<(Arc<str>, String), VecDeque<EntityRow>>,
}

impl Recent {
    pub(crate) fn new(capacity: usize) -> Self {
        Recent {
            capacity: capacity.max(1),
            by_request: FastMap::default(),
            order: VecDeque::new(),
            by_entity: FastMap::default(),
        }
    }

    /// Remembers `r`'s answer; takes its entity label (the caller keeps
    /// the rest of the record).
    pub(crate) fn insert(&mut self, r: &mut PredictionRecord) {
        let served = Served {
            model: r.model.clone(),
            version: r.version,
            arm: r.arm.clone(),
            prediction: if r.outputs.is_empty() {
                f32::NAN
            } else {
                crate::models::headline(&r.outputs)
            },
            time_micros: r.time_micros,
            labelled: false,
        };
        match self.by_request.get_mut(&r.request_id) {
            Some(rows) => rows.push((r.row, served)),
            None => {
                self.by_request
                    .insert(r.request_id.clone(), vec![(r.row, served)]);
                self.order.push_back(r.request_id.clone());
            }
        }
        if !r.entity.is_empty() {
            let rows = self
                .by_entity
                .entry((r.model.clone(), std::mem::take(&mut r.entity)))
                .or_default();
            if rows.len() == PER_ENTITY {
                rows.pop_front();
            }
            rows.push_back((r.time_micros, r.request_id.clone(), r.row));
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.by_request.remove(&old);
            }
        }
        // Entity entries of forgotten requests fail their lookup and are
        // pruned when the index outgrows the requests remembered.
        if self.by_entity.len() > 2 * self.capacity {
            let requests = &self.by_request;
            self.by_entity.retain(|_, rows| {
                rows.retain(|(_, id, _)| requests.contains_key(id));
                !rows.is_empty()
            });
        }
    }

    fn by_entity(&self, model: &str, entity: &str, at: Option<i64>) -> Option<(Arc<str>, u32)> {
        let rows = self
            .by_entity
            .get(&(Arc::from(model), entity.to_string()))?;
        rows.iter()
            .rev()
            .find(|(t, id, _)| at.is_none_or(|at| *t <= at) && self.by_request.contains_key(id))
            .map(|(_, id, row)| (id.clone(), *row))
    }

    fn get_mut(&mut self, request_id: &str, row: u32) -> Option<&mut Served> {
        self.by_request
            .get_mut(request_id)?
            .iter_mut()
            .find(|(r, _)| *r == row)
            .map(|(_, s)| s)
    }
}

/// Labelled predictions of one version at one arm.
#[derive(Debug, Default)]
pub(crate) struct VersionPerformance {
    pairs: VecDeque<(f64, f64)>,
    total: u64,
}

/// Counters of `/feedback`.
#[derive(Debug, Default)]
pub(crate) struct FeedbackStats {
    unknown: AtomicU64,
}

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

/// An outcome that was not applied.
#[derive(Debug, Serialize)]
pub struct Unapplied {
    index: usize,
    reason: String,
}

/// The answer of `POST /feedback`.
#[derive(Debug, Serialize)]
pub struct FeedbackAnswer {
    accepted: usize,
    not_applied: Vec<Unapplied>,
}

enum Target {
    Request(String, u32),
    Entity(String, String, Option<i64>),
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
    let request: FeedbackRequest = serde_json::from_slice(&body).map_err(|e| {
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
    // Every item checked before any is applied.
    let mut targets = Vec::with_capacity(request.outcomes.len());
    for (i, item) in request.outcomes.iter().enumerate() {
        if !item.outcome.is_finite() {
            return Err(AppError::bad_request(
                "invalid_outcome",
                format!("outcome {i} is not a finite number"),
            ));
        }
        let target = match (&item.request_id, &item.entity) {
            (Some(id), None) => {
                if item.time.is_some() || item.model.is_some() {
                    return Err(AppError::bad_request(
                        "invalid_feedback",
                        format!(
                            "outcome {i}: `time` and `model` go with `entity`, not `request_id`"
                        ),
                    ));
                }
                Target::Request(id.clone(), item.row.unwrap_or(0))
            }
            (None, Some(entity)) => {
                let Some(model) = item.model.clone().or_else(|| request.model.clone()) else {
                    return Err(AppError::bad_request(
                        "invalid_feedback",
                        format!("outcome {i} names an entity but no model (set `model`)"),
                    ));
                };
                if entity.is_empty() || item.row.is_some() {
                    return Err(AppError::bad_request(
                        "invalid_feedback",
                        format!(
                            "outcome {i}: `entity` must name at least one key, and takes no `row`"
                        ),
                    ));
                }
                let mut label = String::new();
                for (name, value) in entity {
                    let Some(part) = feature_store::online::key_part(value) else {
                        return Err(AppError::bad_request(
                            "invalid_feedback",
                            format!(
                                "outcome {i}: entity key {name} must be a string or an integer"
                            ),
                        ));
                    };
                    if !label.is_empty() {
                        label.push(',');
                    }
                    let _ = write!(label, "{name}={part}");
                }
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
                Target::Entity(model, label, at)
            }
            _ => {
                return Err(AppError::bad_request(
                    "invalid_feedback",
                    format!("outcome {i} needs exactly one of `request_id` and `entity`"),
                ));
            }
        };
        targets.push(target);
    }

    // Match under the lock, marking what is applied.
    let received = chrono::Utc::now().timestamp_micros();
    let mut rows: Vec<(String, u32, Served, f64)> = Vec::new();
    let mut not_applied = Vec::new();
    {
        let mut recent = monitor.recent.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (target, item)) in targets.into_iter().zip(&request.outcomes).enumerate() {
            let found = match &target {
                Target::Request(id, row) => Ok((Arc::<str>::from(id.as_str()), *row)),
                Target::Entity(model, entity, at) => {
                    recent.by_entity(model, entity, *at).ok_or_else(|| {
                        format!("no remembered prediction of {model} for {entity} at that time")
                    })
                }
            };
            let (id, row) = match found {
                Ok(found) => found,
                Err(reason) => {
                    not_applied.push(Unapplied { index: i, reason });
                    continue;
                }
            };
            match recent.get_mut(&id, row) {
                None => not_applied.push(Unapplied {
                    index: i,
                    reason: format!("no remembered prediction for request {id} row {row}"),
                }),
                Some(s) if s.labelled => not_applied.push(Unapplied {
                    index: i,
                    reason: format!("request {id} row {row} already has an outcome"),
                }),
                Some(s) => {
                    s.labelled = true;
                    rows.push((id.to_string(), row, s.clone(), item.outcome));
                }
            }
        }
    }
    monitor
        .feedback_stats
        .unknown
        .fetch_add(not_applied.len() as u64, Ordering::Relaxed);
    if rows.is_empty() {
        let first: Vec<String> = not_applied
            .iter()
            .take(3)
            .map(|u| u.reason.clone())
            .collect();
        return Err(AppError::not_found(
            "unknown_predictions",
            format!(
                "none of the {} outcomes matches a remembered prediction ({})",
                not_applied.len(),
                first.join("; ")
            ),
        ));
    }
    // Durable first: if the table cannot be written, nothing is counted
    // and the marks are undone, so the caller can retry.
    if let Some(store) = &monitor.feedback_store
        && let Err(e) = append(store, &rows, received).await
    {
        let mut recent = monitor.recent.lock().unwrap_or_else(|e| e.into_inner());
        for (id, row, _, _) in &rows {
            if let Some(s) = recent.get_mut(id, *row) {
                s.labelled = false;
            }
        }
        return Err(AppError::internal(format!(
            "writing the feedback table: {e}"
        )));
    }
    {
        let window = monitor.options().performance_window.max(1);
        let mut performance = monitor
            .performance
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (_, _, s, outcome) in &rows {
            let p = performance
                .entry((s.model.to_string(), s.version, s.arm.to_string()))
                .or_default();
            if p.pairs.len() == window {
                p.pairs.pop_front();
            }
            p.pairs.push_back((f64::from(s.prediction), *outcome));
            p.total += 1;
        }
    }
    Ok(Json(FeedbackAnswer {
        accepted: rows.len(),
        not_applied,
    }))
}

async fn append(
    store: &DeltaStore,
    rows: &[(String, u32, Served, f64)],
    received: i64,
) -> Result<(), String> {
    let micros = |name: &str, v: Vec<i64>| -> PolarsResult<Column> {
        Ok(Series::new(name.into(), v)
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))?
            .into())
    };
    let frame = (|| -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            Series::new(
                "request_id".into(),
                rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
            )
            .into(),
            Series::new(
                "row".into(),
                rows.iter().map(|r| i64::from(r.1)).collect::<Vec<_>>(),
            )
            .into(),
            Series::new(
                "model".into(),
                rows.iter().map(|r| &*r.2.model).collect::<Vec<_>>(),
            )
            .into(),
            Series::new(
                "version".into(),
                rows.iter()
                    .map(|r| i64::try_from(r.2.version).unwrap_or(i64::MAX))
                    .collect::<Vec<_>>(),
            )
            .into(),
            Series::new(
                "arm".into(),
                rows.iter().map(|r| &*r.2.arm).collect::<Vec<_>>(),
            )
            .into(),
            micros(
                "prediction_time",
                rows.iter().map(|r| r.2.time_micros).collect(),
            )?,
            Series::new(
                "prediction".into(),
                rows.iter().map(|r| r.2.prediction).collect::<Vec<_>>(),
            )
            .into(),
            Series::new(
                "outcome".into(),
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )
            .into(),
            micros("received_time", vec![received; rows.len()])?,
        ])
    })()
    .map_err(|e| e.to_string())?;
    let lineage = CommitLineage {
        operation: "feedback".into(),
        ..CommitLineage::default()
    };
    store
        .write(TABLE, &frame, &WriteOptions::append(), &lineage)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Live quality of one version at one arm.
#[derive(Debug, Clone, Serialize)]
pub struct PerformanceRow {
    /// The version.
    pub version: u64,
    /// The arm.
    pub arm: String,
    /// Outcomes received since the server started.
    pub feedback: u64,
    /// Outcomes in the quality window.
    pub window: usize,
    /// Classifier quality, when every outcome in the window is 0 or 1.
    pub classification: Option<drift::performance::Classification>,
    /// Regressor quality, otherwise.
    pub regression: Option<drift::performance::Regression>,
}

/// Live quality of `model`, per version and arm.
pub(crate) fn performance_rows(monitor: &Monitor, model: &str) -> Vec<PerformanceRow> {
    let performance = monitor
        .performance
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    performance
        .iter()
        .filter(|((m, _, _), _)| m == model)
        .map(|((_, version, arm), p)| row(*version, arm, p))
        .collect()
}

fn row(version: u64, arm: &str, p: &VersionPerformance) -> PerformanceRow {
    let binary = p.pairs.iter().all(|(_, y)| *y == 0.0 || *y == 1.0);
    let (classification, regression) = if binary {
        let pairs: Vec<(f64, bool)> = p.pairs.iter().map(|(s, y)| (*s, *y == 1.0)).collect();
        (drift::performance::classification(&pairs), None)
    } else {
        let pairs: Vec<(f64, f64)> = p.pairs.iter().copied().collect();
        (None, drift::performance::regression(&pairs))
    };
    PerformanceRow {
        version,
        arm: arm.to_string(),
        feedback: p.total,
        window: p.pairs.len(),
        classification,
        regression,
    }
}

/// The live quality as a report table.
pub(crate) fn performance_table(rows: &[PerformanceRow]) -> drift::html::Table {
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

/// The feedback gauges.
pub(crate) fn render_metrics(monitor: &Monitor, out: &mut String) {
    let performance = monitor
        .performance
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut totals = String::new();
    let mut quality: BTreeMap<&str, String> = BTreeMap::new();
    for ((model, version, arm), p) in performance.iter() {
        let labels = format!(
            "model=\"{}\",version=\"{version}\",arm=\"{}\"",
            label_value(model),
            label_value(arm)
        );
        let _ = writeln!(totals, "aurum_feedback_total{{{labels}}} {}", p.total);
        let r = row(*version, arm, p);
        let mut put = |name: &'static str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                let _ = writeln!(quality.entry(name).or_default(), "{name}{{{labels}}} {v}");
            }
        };
        if let Some(c) = &r.classification {
            put("aurum_model_roc_auc", c.roc_auc);
            put("aurum_model_accuracy", Some(c.accuracy));
            put("aurum_model_calibration_error", Some(c.calibration_error));
            put("aurum_model_brier", Some(c.brier));
        }
        if let Some(g) = &r.regression {
            put("aurum_model_rmse", Some(g.rmse));
            put("aurum_model_mae", Some(g.mae));
        }
    }
    metric_header(
        "aurum_feedback_total",
        "Outcomes received per model version and arm.",
        "counter",
        out,
    );
    out.push_str(&totals);
    metric_header(
        "aurum_feedback_not_applied_total",
        "Outcomes that matched no remembered prediction (or one already labelled).",
        "counter",
        out,
    );
    let _ = writeln!(
        out,
        "aurum_feedback_not_applied_total {}",
        monitor.feedback_stats.unknown.load(Ordering::Relaxed)
    );
    for (name, help) in [
        (
            "aurum_model_roc_auc",
            "Live ROC AUC over the quality window.",
        ),
        (
            "aurum_model_accuracy",
            "Live accuracy at 0.5 over the quality window.",
        ),
        (
            "aurum_model_calibration_error",
            "Live expected calibration error (10 bins).",
        ),
        ("aurum_model_brier", "Live Brier score."),
        ("aurum_model_rmse", "Live RMSE over the quality window."),
        ("aurum_model_mae", "Live MAE over the quality window."),
    ] {
        metric_header(name, help, "gauge", out);
        if let Some(body) = quality.get(name) {
            out.push_str(body);
        }
    }
}
