//! Work the server does beside its requests, each a task started once
//! (inside a tokio runtime): the model watcher, which keeps the served
//! versions in step with the registry ([`crate::inference::reload`]), and
//! the drift monitor's periodic evaluation with delivery of alert changes
//! to the webhook (reqwest, 5 s timeout, failures counted; the URL is
//! never logged, as webhook URLs carry tokens), and the reading of the
//! project's tables for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monitoring::{Alert, Monitor};

use crate::state::AppState;

/// Runs a model watcher pass every `state.reload_options.interval` until
/// the runtime stops.
pub fn spawn_model_watcher(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(state.reload_options.interval).await;
            let state = state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || state.sync_models()).await {
                tracing::error!(error = %e, "the model watcher stopped a pass");
            }
        }
    })
}

/// Starts the drift monitor's periodic evaluation, when the monitor is on
/// (inside a tokio runtime). Alert changes are announced as they come: the
/// monitor's counter, log line and hook, then the webhook.
pub fn spawn_drift_monitor(state: Arc<AppState>) {
    let Some(monitor) = state.monitor.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(monitor.options().interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let (m, registry) = (monitor.clone(), state.registry.clone());
            match tokio::task::spawn_blocking(move || m.evaluate_all(&registry)).await {
                Ok(alerts) => announce(&monitor, alerts).await,
                Err(e) => tracing::error!(error = %e, "a drift evaluation stopped"),
            }
        }
    });
}

/// Reads the project's tables (versions, commit times, newest event times,
/// rows, the last pipeline run) every `interval` for `/metrics`, from their
/// Delta logs and the quality table. A table that cannot be read is
/// counted, warned about (once per failure streak) and left out of that
/// reading.
pub fn spawn_table_health(
    state: Arc<AppState>,
    project: Arc<feature_store::Project>,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // One store for the task's life: its history cache makes each
        // reading read only the commits made since the last.
        let mut store = None;
        loop {
            ticks.tick().await;
            if store.is_none() {
                store = project.delta_store().ok();
            }
            let Some(store) = &store else {
                state.tables.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let read = read_tables(&project, store).await;
            let (reading, errors) = match read {
                Ok(read) => read,
                Err(e) => {
                    state.tables.errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(error = %e, "the project's tables could not be read for /metrics");
                    }
                    failing = true;
                    continue;
                }
            };
            for e in &errors {
                state.tables.errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, "a table could not be read for /metrics");
                }
            }
            failing = !errors.is_empty();
            if let Ok(mut last) = state.tables.reading.write() {
                *last = reading;
            }
        }
    });
}

/// One reading of `project`'s tables, and the tables that failed.
async fn read_tables(
    project: &feature_store::Project,
    store: &delta::DeltaStore,
) -> feature_store::Result<(crate::state::TableReading, Vec<feature_store::Error>)> {
    use feature_store::health;
    let mut tables = Vec::new();
    let mut errors = Vec::new();
    for table in health::tables(project, store).await? {
        match table {
            Ok(table) => tables.push(table),
            Err(e) => errors.push(e),
        }
    }
    // A last run that cannot be read costs only itself, not the tables.
    let last_run = match health::last_run(store, &tables).await {
        Ok(run) => run,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Ok((
        crate::state::TableReading {
            at_ms,
            tables,
            last_run,
        },
        errors,
    ))
}

/// POSTs `alert` to `url`. The error never holds the URL: webhook URLs
/// carry secrets (Slack and Teams put the token in the path).
async fn post_json(url: &str, alert: &Alert, trace: &telemetry::Trace) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let mut request = client.post(url).json(alert);
    // The receiver can join the alert to its trace (W3C `traceparent`).
    for (name, value) in trace.headers() {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {}", response.status()))
    }
}

/// Announces alert changes one by one: the monitor's counter, log line and
/// hook, then the webhook POST (when one is set).
async fn announce(monitor: &Monitor, alerts: Vec<Alert>) {
    for alert in alerts {
        monitor.announce(&alert);
        if let Some(url) = &monitor.options().webhook {
            let trace = telemetry::Trace::root("drift alert webhook");
            if trace.is_on() {
                trace.set("aurum.model", alert.model.clone());
                trace.set("aurum.model.version", alert.version as i64);
                trace.set("aurum.drift.state", alert.state);
            }
            if let Err(e) = post_json(url, &alert, &trace).await {
                monitor.record_webhook_failure();
                trace.fail(e.clone());
                tracing::warn!(error = %e, trace_id = trace.trace_id().unwrap_or_default(), "the drift alert webhook failed");
            }
            trace.end();
        }
    }
}
