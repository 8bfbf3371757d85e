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
//! without; each change is announced ([`Monitor::announce`]: a counter, a
//! log line and the alert hook, which `aurum serve --retrain-on-drift`
//! uses).
//!
//! The monitor also remembers the most recent live predictions, so that
//! true outcomes can be matched to them ([`Monitor::apply_outcomes`]), and
//! keeps the live quality per version and arm that those outcomes give.
//!
//! Locks never nest and none is held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use delta::DeltaStore;
use drift::{Column, DriftOptions, DriftReport, Profile, Values};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::feedback::{self, FeedbackRow};
use crate::outcome::{Applied, NotApplied, OutcomeError, OutcomeTarget};
use crate::performance::{PerformanceRow, VersionPerformance};
use crate::recent::{Claim, Recent};
use crate::record::PredictionRecord;
use crate::window::Window;

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
    /// Predictions (rows) remembered for matching outcomes.
    pub recent_predictions: usize,
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
            recent_predictions: 200_000,
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

/// Counters of the monitor.
#[derive(Debug, Default)]
struct MonitorStats {
    evaluations: AtomicU64,
    alerts: AtomicU64,
    webhook_failures: AtomicU64,
}

/// A snapshot of the monitor's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MonitorCounts {
    /// Evaluation passes run.
    pub evaluations: u64,
    /// Alerts raised (resolutions are not counted).
    pub alerts: u64,
    /// Webhook deliveries that failed.
    pub webhook_failures: u64,
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

type Windows = HashMap<(Arc<str>, u64), Window, foldhash::fast::RandomState>;

/// The live monitor.
pub struct Monitor {
    options: MonitorOptions,
    windows: Mutex<Windows>,
    states: RwLock<BTreeMap<(String, u64), VersionState>>,
    profiles: Mutex<HashMap<(String, u64), Arc<Profile>>>,
    recent: Mutex<Recent>,
    performance: Mutex<BTreeMap<(String, u64, String), VersionPerformance>>,
    hook: OnceLock<AlertHook>,
    feedback_store: Option<DeltaStore>,
    stats: MonitorStats,
    not_applied: AtomicU64,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`, going on with the data of a thread that panicked holding
/// it (every update leaves it consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Monitor {
    /// A monitor watching as `options` says.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDriftOptions`] when the drift options are out of
    /// range; [`Error::InvalidWebhook`] when the webhook is not an http(s)
    /// URL.
    pub fn new(options: MonitorOptions) -> Result<Self> {
        options
            .drift
            .validate()
            .map_err(Error::InvalidDriftOptions)?;
        if let Some(url) = &options.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::InvalidWebhook);
        }
        Ok(Monitor {
            recent: Mutex::new(Recent::new(options.recent_predictions)),
            options,
            windows: Mutex::default(),
            states: RwLock::default(),
            profiles: Mutex::default(),
            performance: Mutex::default(),
            hook: OnceLock::new(),
            feedback_store: None,
            stats: MonitorStats::default(),
            not_applied: AtomicU64::new(0),
        })
    }

    /// The same monitor, appending outcomes to the `feedback` table of
    /// `store`.
    pub fn with_feedback_table(mut self, store: DeltaStore) -> Self {
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

    /// Takes in logged predictions (the prediction log's writer calls this):
    /// live rows are remembered for outcomes, and every row (shadow runs
    /// too) enters its version's window.
    pub fn observe(&self, records: Vec<PredictionRecord>) {
        if records.is_empty() {
            return;
        }
        {
            let mut recent = lock(&self.recent);
            for r in records.iter().filter(|r| !r.shadow) {
                recent.insert(r);
            }
        }
        let mut windows = lock(&self.windows);
        for r in records {
            windows
                .entry((r.model.clone(), r.version))
                .or_insert_with(|| Window::new(r.feature_names.clone()))
                .push(r, self.options.window_rows);
        }
    }

    /// Evaluates every window (a periodic pass: advances alert hysteresis)
    /// and returns the alert changes.
    pub fn evaluate_all(&self, registry: &registry::Registry) -> Vec<Alert> {
        let keys: Vec<(Arc<str>, u64)> = lock(&self.windows).keys().cloned().collect();
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
        self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
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
            let windows = lock(&self.windows);
            match windows.get(&(Arc::from(model), version)) {
                Some(w) => w.live_columns(cutoff),
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

    /// The latest periodic evaluations, by model and version.
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
        if let Some(cached) = lock(&self.profiles).get(&key) {
            return Some(cached.clone());
        }
        let loaded = match reference_profile(registry, model, version) {
            Ok(profile) => profile.map(Arc::new),
            Err(Error::Profile(e)) => {
                tracing::warn!(model, version, error = %e, "unreadable reference profile");
                None
            }
            Err(e) => {
                tracing::warn!(model, version, error = %e, "reading the reference profile");
                return None;
            }
        };
        // Found profiles are kept; a missing one is looked for again next
        // time (it may be set while the server runs).
        if let Some(profile) = &loaded {
            lock(&self.profiles).insert(key, profile.clone());
        }
        loaded
    }

    /// Announces an alert change: counts it (raised alerts only), logs it
    /// and calls the alert hook. Delivering the webhook is the caller's
    /// part (see [`Monitor::record_webhook_failure`]).
    pub fn announce(&self, alert: &Alert) {
        self.stats
            .alerts
            .fetch_add(u64::from(alert.state == "drift"), Ordering::Relaxed);
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
            hook(alert);
        }
    }

    /// Counts a webhook delivery that failed.
    pub fn record_webhook_failure(&self) {
        self.stats.webhook_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The monitor's counters now.
    pub fn counts(&self) -> MonitorCounts {
        MonitorCounts {
            evaluations: self.stats.evaluations.load(Ordering::Relaxed),
            alerts: self.stats.alerts.load(Ordering::Relaxed),
            webhook_failures: self.stats.webhook_failures.load(Ordering::Relaxed),
        }
    }

    /// Applies true outcomes to the remembered predictions they name.
    ///
    /// Each outcome is matched under one lock and its prediction marked, so
    /// that a prediction takes at most one outcome; those that match nothing
    /// (or a prediction already labelled) are listed with the reason, and
    /// counted in [`Monitor::outcomes_not_applied`]. The matched outcomes
    /// are then appended to the feedback table (when the monitor has one)
    /// before anything else: when that write fails the marks are undone and
    /// nothing is counted, so the batch can be sent again. Last, they enter
    /// the live quality of their version and arm.
    ///
    /// # Errors
    ///
    /// [`OutcomeError::NoneMatched`] when no outcome matches;
    /// [`OutcomeError::Table`] when the feedback table cannot be written.
    pub async fn apply_outcomes(
        &self,
        outcomes: &[(OutcomeTarget, f64)],
    ) -> std::result::Result<Applied, OutcomeError> {
        let received = chrono::Utc::now().timestamp_micros();
        let mut claimed: Vec<(Claim, f64)> = Vec::new();
        let mut not_applied = Vec::new();
        {
            let mut recent = lock(&self.recent);
            for (index, (target, outcome)) in outcomes.iter().enumerate() {
                match recent.claim(target) {
                    Ok(claim) => claimed.push((claim, *outcome)),
                    Err(reason) => not_applied.push(NotApplied { index, reason }),
                }
            }
        }
        self.not_applied
            .fetch_add(not_applied.len() as u64, Ordering::Relaxed);
        if claimed.is_empty() {
            return Err(OutcomeError::NoneMatched(not_applied));
        }
        // Durable first: if the table cannot be written, nothing is counted
        // and the marks are undone, so the caller can retry.
        if let Some(store) = &self.feedback_store {
            let rows: Vec<FeedbackRow> = claimed
                .iter()
                .map(|(claim, outcome)| {
                    (claim.request_id.as_ref(), claim.row, &claim.served, outcome)
                })
                .map(|(id, row, s, outcome)| FeedbackRow {
                    request_id: id.to_string(),
                    row,
                    model: s.model.to_string(),
                    version: s.version,
                    arm: s.arm.to_string(),
                    prediction_time_micros: s.time_micros,
                    prediction: s.prediction,
                    outcome: *outcome,
                    received_time_micros: received,
                })
                .collect();
            if let Err(e) = feedback::append(store, &rows).await {
                let mut recent = lock(&self.recent);
                for (claim, _) in &claimed {
                    recent.release(claim.slot);
                }
                return Err(OutcomeError::Table(e));
            }
        }
        {
            let window = self.options.performance_window.max(1);
            let mut performance = lock(&self.performance);
            for (Claim { served: s, .. }, outcome) in &claimed {
                performance
                    .entry((s.model.to_string(), s.version, s.arm.to_string()))
                    .or_default()
                    .push(f64::from(s.prediction), *outcome, window);
            }
        }
        Ok(Applied {
            accepted: claimed.len(),
            not_applied,
        })
    }

    /// Live quality of `model`, per version and arm (in that order).
    pub fn performance(&self, model: &str) -> Vec<PerformanceRow> {
        let performance = lock(&self.performance);
        performance
            .iter()
            .filter(|((m, _, _), _)| m == model)
            .map(|((_, version, arm), p)| p.quality(*version, arm))
            .collect()
    }

    /// Live quality of every model, per model, version and arm (in that
    /// order), each row with its model.
    pub fn all_performance(&self) -> Vec<(String, PerformanceRow)> {
        let performance = lock(&self.performance);
        performance
            .iter()
            .map(|((model, version, arm), p)| (model.clone(), p.quality(*version, arm)))
            .collect()
    }

    /// Outcomes not applied since the monitor started (no remembered
    /// prediction, or one already labelled).
    pub fn outcomes_not_applied(&self) -> u64 {
        self.not_applied.load(Ordering::Relaxed)
    }
}

/// The reference profile recorded for `model` at `version` in `registry`,
/// or `None` when it has none.
///
/// # Errors
///
/// [`Error::Registry`] when the registry cannot be read;
/// [`Error::Profile`] when the recorded profile cannot be parsed.
pub fn reference_profile(
    registry: &registry::Registry,
    model: &str,
    version: u64,
) -> Result<Option<Profile>> {
    let Some(bytes) = registry.attachment(model, version, drift::profile::REFERENCE_PROFILE)?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(Error::Profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, shadow: bool) -> PredictionRecord {
        PredictionRecord {
            request_id: Arc::from(id),
            row: 0,
            time_micros: chrono::Utc::now().timestamp_micros(),
            model: Arc::from("m"),
            version: 1,
            arm: Arc::from("champion"),
            shadow,
            entity: String::new(),
            feature_names: Arc::from(vec!["a".to_string()]),
            features: vec![1.0],
            outputs: vec![0.2, 0.8],
            latency_micros: 0,
        }
    }

    fn by_request(id: &str) -> OutcomeTarget {
        OutcomeTarget::Request {
            request_id: id.into(),
            row: 0,
        }
    }

    #[test]
    fn options_are_checked() {
        let bad = MonitorOptions {
            webhook: Some("ftp://example.com".into()),
            ..MonitorOptions::default()
        };
        assert_eq!(
            Monitor::new(bad).unwrap_err().to_string(),
            "the alert webhook is not an http(s) URL (it must start with http:// or https://)"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn outcomes_apply_once_and_shadows_are_not_remembered() {
        let monitor = Monitor::new(MonitorOptions::default()).unwrap();
        monitor.observe(vec![record("a", false), record("s", true)]);
        let applied = monitor
            .apply_outcomes(&[(by_request("a"), 1.0), (by_request("s"), 1.0)])
            .await
            .unwrap();
        assert_eq!(applied.accepted, 1);
        assert_eq!(
            applied.not_applied,
            [NotApplied {
                index: 1,
                reason: "no remembered prediction for request s row 0".into()
            }]
        );
        let again = monitor.apply_outcomes(&[(by_request("a"), 0.0)]).await;
        match again {
            Err(e @ OutcomeError::NoneMatched(_)) => assert_eq!(
                e.to_string(),
                "none of the 1 outcomes matches a remembered prediction (request a row 0 already has an outcome)"
            ),
            other => panic!("expected no match, got {other:?}"),
        }
        assert_eq!(monitor.outcomes_not_applied(), 2);
        let rows = monitor.performance("m");
        assert_eq!(
            (rows.len(), rows[0].feedback, rows[0].arm.as_str()),
            (1, 1, "champion")
        );
        assert_eq!(monitor.all_performance()[0].0, "m");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_feedback_write_undoes_the_marks() {
        // A store rooted at a file cannot create its tables.
        let file = tempfile::NamedTempFile::new().unwrap();
        let monitor = Monitor::new(MonitorOptions::default())
            .unwrap()
            .with_feedback_table(DeltaStore::new(file.path()));
        monitor.observe(vec![record("a", false)]);
        let failed = monitor.apply_outcomes(&[(by_request("a"), 1.0)]).await;
        assert!(matches!(&failed, Err(OutcomeError::Table(_))), "{failed:?}");
        assert!(monitor.performance("m").is_empty(), "nothing is counted");
        // The mark is undone: the same outcome is matched again (and fails
        // at the table again, not as already labelled).
        let again = monitor.apply_outcomes(&[(by_request("a"), 1.0)]).await;
        assert!(matches!(again, Err(OutcomeError::Table(_))), "{again:?}");
        assert_eq!(monitor.outcomes_not_applied(), 0);
    }

    #[test]
    fn an_evaluation_pass_is_counted_even_without_windows() {
        let dir = tempfile::tempdir().unwrap();
        let registry = registry::Registry::open(dir.path()).unwrap();
        let monitor = Monitor::new(MonitorOptions::default()).unwrap();
        assert!(monitor.evaluate_all(&registry).is_empty());
        monitor.observe(vec![record("a", false)]);
        assert!(monitor.evaluate_all(&registry).is_empty());
        let states = monitor.states();
        assert_eq!(states.len(), 1);
        assert!(states[0].report.is_none());
        assert!(
            states[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("has no reference profile")),
            "{:?}",
            states[0].note
        );
        assert_eq!(monitor.counts().evaluations, 2);
    }
}
