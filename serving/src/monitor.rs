//! Live drift monitoring: per model version, a sliding window of the
//! features it was served and the predictions it made, compared with the
//! version's reference profile every [`MonitorOptions::interval`].
//!
//! The monitor never touches the request path: it is fed by the prediction
//! log's writer (which already receives every record), after the records
//! are committed, so its cost is a move of each row into a ring buffer on
//! that background thread. Evaluation runs on a blocking thread.
//!
//! Windows hold at most [`MonitorOptions::window_rows`] rows and only rows
//! younger than [`MonitorOptions::window_age`] are evaluated. A window with
//! fewer than [`MonitorOptions::min_rows`] rows is not judged (its state
//! says so). Alerts have hysteresis: a version starts alerting after
//! [`MonitorOptions::alert_after`] consecutive evaluations with dataset
//! drift, and stops after [`MonitorOptions::clear_after`] consecutive ones
//! without; each change is a log line, an optional webhook POST and a call
//! of the alert hook (which `aurum serve --retrain-on-drift` uses).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use drift::{Column, DriftOptions, DriftReport, Profile, Values};
use feature_store::metrics::{header as metric_header, label_value};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::AppError;
use crate::feedback::{Recent, VersionPerformance};
use crate::prediction_log::PredictionRecord;

/// How the monitor watches.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// The most rows a version's window holds (oldest dropped first).
    pub window_rows: usize,
    /// Rows older than this are not evaluated.
    pub window_age: Duration,
    /// How often windows are evaluated.
    pub interval: Duration,
    /// Windows with fewer rows are not judged.
    pub min_rows: usize,
    /// Tests, thresholds and the dataset share.
    pub drift: DriftOptions,
    /// Consecutive drifted evaluations before an alert.
    pub alert_after: u32,
    /// Consecutive clean evaluations before the alert clears.
    pub clear_after: u32,
    /// Where alerts are POSTed as JSON, if anywhere.
    pub webhook: Option<String>,
    /// Request ids remembered for `/feedback`.
    pub recent_requests: usize,
    /// Labelled predictions kept per version and arm for live quality.
    pub performance_window: usize,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            window_rows: 10_000,
            window_age: Duration::from_secs(3600),
            interval: Duration::from_secs(30),
            min_rows: 100,
            drift: DriftOptions::default(),
            alert_after: 2,
            clear_after: 2,
            webhook: None,
            recent_requests: 200_000,
            performance_window: 10_000,
        }
    }
}

/// An alert raised or cleared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// `drift` when raised, `resolved` when cleared.
    pub state: &'static str,
    /// Share of drifted features.
    pub drift_share: f64,
    /// The features that drifted.
    pub drifted_features: Vec<String>,
    /// Rows evaluated.
    pub window_rows: usize,
    /// When (RFC 3339).
    pub at: String,
}

/// Counters of the monitor, for `/metrics`.
#[derive(Debug, Default)]
pub struct MonitorStats {
    /// Evaluation passes run.
    pub evaluations: std::sync::atomic::AtomicU64,
    /// Alerts raised.
    pub alerts: std::sync::atomic::AtomicU64,
    /// Webhook deliveries that failed.
    pub webhook_failures: std::sync::atomic::AtomicU64,
}

/// The latest evaluation of one version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionState {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// Rows evaluated.
    pub window_rows: usize,
    /// When (RFC 3339).
    pub evaluated_at: String,
    /// Why there is no report (no profile, too few rows).
    pub note: Option<String>,
    /// Whether the version is alerting.
    pub alerting: bool,
    /// The report, when one was made.
    pub report: Option<DriftReport>,
    #[serde(skip)]
    drift_streak: u32,
    #[serde(skip)]
    clear_streak: u32,
}

/// A hook called with every alert change.
pub type AlertHook = Box<dyn Fn(&Alert) + Send + Sync>;

/// The live monitor.
pub struct Monitor {
    options: MonitorOptions,
    windows: Mutex<HashMap<(Arc<str>, u64), Window, foldhash::fast::RandomState>>,
    states: RwLock<BTreeMap<(String, u64), VersionState>>,
    profiles: Mutex<HashMap<(String, u64), Arc<Profile>>>,
    pub(crate) recent: Mutex<Recent>,
    pub(crate) performance: Mutex<BTreeMap<(String, u64, String), VersionPerformance>>,
    hook: OnceLock<AlertHook>,
    pub(crate) feedback_store: Option<feature_store::DeltaStore>,
    /// The monitor's counters.
    pub stats: MonitorStats,
    pub(crate) feedback_stats: crate::feedback::FeedbackStats,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

struct Window {
    feature_names: Arc<[String]>,
    rows: VecDeque<WindowRow>,
}

struct WindowRow {
    time_micros: i64,
    features: Vec<f32>,
    prediction: f32,
}

impl Monitor {
    /// A monitor watching as `options` says.
    pub fn new(options: MonitorOptions) -> Result<Self, AppError> {
        options
            .drift
            .validate()
            .map_err(|e| AppError::bad_request("invalid_drift_options", e.to_string()))?;
        if let Some(url) = &options.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(AppError::bad_request(
                "invalid_webhook",
                format!("the alert webhook {url:?} is not an http(s) URL"),
            ));
        }
        Ok(Monitor {
            recent: Mutex::new(Recent::new(options.recent_requests)),
            options,
            windows: Mutex::default(),
            states: RwLock::default(),
            profiles: Mutex::default(),
            performance: Mutex::default(),
            hook: OnceLock::new(),
            feedback_store: None,
            stats: MonitorStats::default(),
            feedback_stats: Default::default(),
        })
    }

    /// The same monitor, appending outcomes to the `feedback` table of
    /// `store`.
    pub fn with_feedback_table(mut self, store: feature_store::DeltaStore) -> Self {
        self.feedback_store = Some(store);
        self
    }

    /// The options.
    pub fn options(&self) -> &MonitorOptions {
        &self.options
    }

    /// Calls `hook` with every alert change (set once).
    pub fn set_alert_hook(&self, hook: AlertHook) {
        let _ = self.hook.set(hook);
    }

    /// Takes in logged predictions (the prediction log's writer calls this).
    pub fn observe(&self, records: Vec<PredictionRecord>) {
        if records.is_empty() {
            return;
        }
        let mut records = records;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for r in records.iter_mut().filter(|r| !r.shadow) {
                recent.insert(r);
            }
        }
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            let window = windows
                .entry((r.model.clone(), r.version))
                .or_insert_with(|| Window {
                    feature_names: r.feature_names.clone(),
                    rows: VecDeque::new(),
                });
            if window.rows.len() >= self.options.window_rows {
                window.rows.pop_front();
            }
            let prediction = if r.outputs.is_empty() {
                f32::NAN
            } else {
                crate::models::headline(&r.outputs)
            };
            window.rows.push_back(WindowRow {
                time_micros: r.time_micros,
                features: r.features,
                prediction,
            });
        }
    }

    /// Evaluates every window (a periodic pass: advances alert hysteresis)
    /// and returns the alert changes.
    pub fn evaluate_all(&self, registry: &registry::Registry) -> Vec<Alert> {
        let keys: Vec<(Arc<str>, u64)> = {
            let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            windows.keys().cloned().collect()
        };
        let mut alerts = Vec::new();
        for (model, version) in keys {
            let fresh = self.evaluate(registry, &model, version);
            let mut states = self.states.write().unwrap_or_else(|e| e.into_inner());
            let key = (model.to_string(), version);
            let previous = states.remove(&key);
            let mut state = fresh;
            let (mut drift_streak, mut clear_streak, mut alerting) = previous
                .map(|p| (p.drift_streak, p.clear_streak, p.alerting))
                .unwrap_or((0, 0, false));
            if let Some(report) = &state.report {
                if report.dataset_drift {
                    drift_streak += 1;
                    clear_streak = 0;
                } else {
                    clear_streak += 1;
                    drift_streak = 0;
                }
                let change = if !alerting && drift_streak >= self.options.alert_after.max(1) {
                    alerting = true;
                    Some("drift")
                } else if alerting && clear_streak >= self.options.clear_after.max(1) {
                    alerting = false;
                    Some("resolved")
                } else {
                    None
                };
                if let Some(change) = change {
                    alerts.push(Alert {
                        model: key.0.clone(),
                        version,
                        state: change,
                        drift_share: report.drift_share,
                        drifted_features: report
                            .columns
                            .iter()
                            .filter(|c| c.drifted)
                            .map(|c| c.column.clone())
                            .collect(),
                        window_rows: state.window_rows,
                        at: state.evaluated_at.clone(),
                    });
                }
            }
            state.drift_streak = drift_streak;
            state.clear_streak = clear_streak;
            state.alerting = alerting;
            states.insert(key, state);
        }
        self.stats
            .evaluations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        alerts
    }

    /// A fresh evaluation of one version's window (alert state untouched).
    pub fn evaluate(
        &self,
        registry: &registry::Registry,
        model: &str,
        version: u64,
    ) -> VersionState {
        let now = chrono::Utc::now();
        let cutoff = now.timestamp_micros()
            - i64::try_from(self.options.window_age.as_micros()).unwrap_or(i64::MAX);
        let (names, columns, predictions, rows) = {
            let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            match windows.get(&(Arc::from(model), version)) {
                Some(w) => {
                    let live: Vec<&WindowRow> =
                        w.rows.iter().filter(|r| r.time_micros >= cutoff).collect();
                    let width = w.feature_names.len();
                    let columns: Vec<Vec<f64>> = (0..width)
                        .map(|j| {
                            live.iter()
                                .map(|r| r.features.get(j).map_or(f64::NAN, |v| f64::from(*v)))
                                .collect()
                        })
                        .collect();
                    let predictions: Vec<f64> =
                        live.iter().map(|r| f64::from(r.prediction)).collect();
                    (w.feature_names.clone(), columns, predictions, live.len())
                }
                None => (Arc::from(Vec::new()), Vec::new(), Vec::new(), 0),
            }
        };
        let alerting = self
            .states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(model.to_string(), version))
            .is_some_and(|s| s.alerting);
        let mut state = VersionState {
            model: model.to_string(),
            version,
            window_rows: rows,
            evaluated_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            note: None,
            alerting,
            report: None,
            drift_streak: 0,
            clear_streak: 0,
        };
        let Some(profile) = self.profile(registry, model, version) else {
            state.note = Some(format!(
                "version {version} of {model} has no reference profile: versions trained by \
                 `aurum train` get one; for others run `aurum drift --model {model} --version \
                 {version} --set-reference <data>`"
            ));
            return state;
        };
        if rows < self.options.min_rows {
            state.note = Some(format!(
                "{rows} predictions in the window; drift is judged from {} on",
                self.options.min_rows
            ));
            return state;
        }
        let current: Vec<Column> = names
            .iter()
            .zip(columns)
            .map(|(name, values)| Column {
                name: name.clone(),
                values: Values::Numeric(values),
            })
            .collect();
        let prediction = Column {
            name: "prediction".into(),
            values: Values::Numeric(predictions),
        };
        match profile.compare(&current, Some(&prediction), &self.options.drift) {
            Ok(report) => state.report = Some(report),
            Err(e) => state.note = Some(format!("drift could not be computed: {e}")),
        }
        state
    }

    /// The latest periodic evaluations.
    pub fn states(&self) -> Vec<VersionState> {
        self.states
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn profile(
        &self,
        registry: &registry::Registry,
        model: &str,
        version: u64,
    ) -> Option<Arc<Profile>> {
        let key = (model.to_string(), version);
        if let Some(cached) = self
            .profiles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(cached.clone());
        }
        let loaded = match registry.attachment(model, version, drift::profile::REFERENCE_PROFILE) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Profile>(&bytes) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    tracing::warn!(model, version, error = %e, "unreadable reference profile");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(model, version, error = %e, "reading the reference profile");
                return None;
            }
        };
        // Found profiles are kept; a missing one is looked for again next
        // time (it may be set while the server runs).
        if let Some(profile) = &loaded {
            self.profiles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, profile.clone());
        }
        loaded
    }

    /// Announces alert changes: a log line each, the webhook, the hook.
    pub async fn announce(&self, alerts: Vec<Alert>) {
        for alert in alerts {
            self.stats.alerts.fetch_add(
                u64::from(alert.state == "drift"),
                std::sync::atomic::Ordering::Relaxed,
            );
            if alert.state == "drift" {
                tracing::warn!(
                    model = %alert.model,
                    version = alert.version,
                    drift_share = alert.drift_share,
                    features = %alert.drifted_features.join(","),
                    "drift alert: the served data no longer looks like the training data"
                );
            } else {
                tracing::info!(model = %alert.model, version = alert.version, "drift alert resolved");
            }
            if let Some(hook) = self.hook.get() {
                hook(&alert);
            }
            if let Some(url) = &self.options.webhook {
                let delivered = post_json(url, &alert).await;
                if let Err(e) = delivered {
                    self.stats
                        .webhook_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(url, error = %e, "the drift alert webhook failed");
                }
            }
        }
    }

    /// The monitor's gauges in Prometheus' text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        let states = self.states();
        let mut scores = String::new();
        let mut p_values = String::new();
        let mut drifted = String::new();
        let mut share = String::new();
        let mut dataset = String::new();
        let mut alerting = String::new();
        let mut rows = String::new();
        for s in &states {
            let base = format!(
                "model=\"{}\",version=\"{}\"",
                label_value(&s.model),
                s.version
            );
            let _ = writeln!(rows, "aurum_drift_window_rows{{{base}}} {}", s.window_rows);
            let _ = writeln!(
                alerting,
                "aurum_drift_alerting{{{base}}} {}",
                u8::from(s.alerting)
            );
            let Some(report) = &s.report else { continue };
            let _ = writeln!(share, "aurum_drift_share{{{base}}} {}", report.drift_share);
            let _ = writeln!(
                dataset,
                "aurum_drift_dataset_drifted{{{base}}} {}",
                u8::from(report.dataset_drift)
            );
            for c in report.columns.iter().chain(&report.prediction) {
                let Some(method) = c.method else { continue };
                let Some(statistic) = c.statistic else {
                    continue;
                };
                let labels = format!(
                    "{base},feature=\"{}\",test=\"{}\"",
                    label_value(&c.column),
                    method.as_str()
                );
                let _ = writeln!(scores, "aurum_drift_score{{{labels}}} {statistic}");
                if let Some(p) = c.p_value {
                    let _ = writeln!(p_values, "aurum_drift_p_value{{{labels}}} {p}");
                }
                let _ = writeln!(
                    drifted,
                    "aurum_drift_feature_drifted{{{labels}}} {}",
                    u8::from(c.drifted)
                );
            }
        }
        for (name, help, body) in [
            (
                "aurum_drift_score",
                "The drift statistic per feature (and the prediction) of the last evaluation.",
                &scores,
            ),
            (
                "aurum_drift_p_value",
                "The p-value per feature, for hypothesis tests.",
                &p_values,
            ),
            (
                "aurum_drift_feature_drifted",
                "1 when the feature drifted at the last evaluation.",
                &drifted,
            ),
            (
                "aurum_drift_share",
                "The share of tested features that drifted.",
                &share,
            ),
            (
                "aurum_drift_dataset_drifted",
                "1 when the dataset drifted at the last evaluation.",
                &dataset,
            ),
            (
                "aurum_drift_alerting",
                "1 while a drift alert is raised (with hysteresis).",
                &alerting,
            ),
            (
                "aurum_drift_window_rows",
                "Rows in the evaluated window.",
                &rows,
            ),
        ] {
            metric_header(name, help, "gauge", out);
            out.push_str(body);
        }
        for (name, help, counter) in [
            (
                "aurum_drift_evaluations_total",
                "Evaluation passes of the drift monitor.",
                &self.stats.evaluations,
            ),
            (
                "aurum_drift_alerts_total",
                "Drift alerts raised.",
                &self.stats.alerts,
            ),
            (
                "aurum_drift_webhook_failures_total",
                "Alert webhook deliveries that failed.",
                &self.stats.webhook_failures,
            ),
        ] {
            metric_header(name, help, "counter", out);
            let _ = writeln!(out, "{name} {}", counter.load(Relaxed));
        }
        crate::feedback::render_metrics(self, out);
    }
}

async fn post_json(url: &str, alert: &Alert) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .post(url)
        .json(alert)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", response.status()))
    }
}

/// Starts the periodic evaluation (inside a tokio runtime).
pub fn spawn(state: Arc<AppState>) {
    let Some(monitor) = state.monitor.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(monitor.options.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let (m, registry) = (monitor.clone(), state.registry.clone());
            match tokio::task::spawn_blocking(move || m.evaluate_all(&registry)).await {
                Ok(alerts) => monitor.announce(alerts).await,
                Err(e) => tracing::error!(error = %e, "a drift evaluation stopped"),
            }
        }
    });
}

/// Query of `GET /drift/{model}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftQuery {
    /// `json` (default) or `html`.
    #[serde(default)]
    format: Option<String>,
    /// The version to report (default: the primary served version).
    #[serde(default)]
    version: Option<u64>,
}

/// The answer of `GET /drift/{model}`.
#[derive(Debug, Serialize)]
struct DriftAnswer {
    model: String,
    version: u64,
    served: Vec<ServedArm>,
    #[serde(flatten)]
    state: VersionState,
    performance: Vec<crate::feedback::PerformanceRow>,
}

#[derive(Debug, Serialize)]
struct ServedArm {
    arm: String,
    version: u64,
}

/// `GET /drift/{model}`: a fresh evaluation of the model's window against
/// its reference (`?format=html` for the report page).
pub async fn drift_report(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    query: Result<Query<DriftQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request("invalid_query", e.body_text()))?;
    let html = match query.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(other) => {
            return Err(AppError::bad_request(
                "invalid_format",
                format!("format {other:?} is not json or html"),
            ));
        }
    };
    let Some(monitor) = state.monitor.clone() else {
        return Err(AppError::not_found(
            "monitoring_off",
            "drift monitoring is off on this server (it needs the prediction stream: start \
             `aurum serve` without --no-monitor)",
        ));
    };
    let Some(served) = state.models.served(&model) else {
        return Err(AppError::not_found(
            "model_not_found",
            format!("model {model:?} is not served here"),
        ));
    };
    let arms: Vec<ServedArm> = served
        .all()
        .map(|(arm, m)| ServedArm {
            arm: arm.to_string(),
            version: m.version.version,
        })
        .collect();
    let version = query.version.unwrap_or(served.primary.version.version);
    let (m, registry, name) = (monitor.clone(), state.registry.clone(), model.clone());
    let fresh = tokio::task::spawn_blocking(move || m.evaluate(&registry, &name, version))
        .await
        .map_err(|e| AppError::internal(format!("the drift evaluation stopped: {e}")))?;
    let performance = crate::feedback::performance_rows(&monitor, &model);
    if html {
        let page = render_html(
            &model,
            version,
            &arms,
            &fresh,
            &performance,
            monitor.options(),
        );
        return Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response());
    }
    Ok(axum::Json(DriftAnswer {
        model,
        version,
        served: arms,
        state: fresh,
        performance,
    })
    .into_response())
}

fn render_html(
    model: &str,
    version: u64,
    arms: &[ServedArm],
    state: &VersionState,
    performance: &[crate::feedback::PerformanceRow],
    options: &MonitorOptions,
) -> String {
    let served = arms
        .iter()
        .map(|a| format!("{} → v{}", a.arm, a.version))
        .collect::<Vec<_>>()
        .join(", ");
    let subtitle = format!(
        "version {version}; serving {served}; window: the last {} predictions within {} s ({} rows), evaluated {}{}",
        options.window_rows,
        options.window_age.as_secs(),
        state.window_rows,
        state.evaluated_at,
        if state.alerting { "; ALERTING" } else { "" }
    );
    // Live quality joins the page once outcomes have arrived.
    let tables: Vec<drift::html::Table> = (!performance.is_empty())
        .then(|| crate::feedback::performance_table(performance))
        .into_iter()
        .collect();
    let empty;
    let report = match &state.report {
        Some(r) => r,
        None => {
            empty = DriftReport {
                reference_rows: 0,
                current_rows: state.window_rows as u64,
                columns: Vec::new(),
                prediction: None,
                tested_columns: 0,
                drifted_columns: 0,
                drift_share: 0.0,
                drift_share_threshold: options.drift.drift_share,
                dataset_drift: false,
                note: state.note.clone(),
            };
            &empty
        }
    };
    drift::html::render(&format!("Drift — {model}"), &subtitle, report, &tables)
}
