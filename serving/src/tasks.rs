//! Work the server does beside its requests, each a task started once
//! (inside a tokio runtime): the model watcher, which keeps the served
//! versions in step with the registry ([`crate::inference::reload`]), and
//! the drift monitor's periodic evaluation with delivery of alert changes
//! to the webhook (reqwest, 5 s timeout, failures counted; the URL is
//! never logged, as webhook URLs carry tokens).

use std::sync::Arc;
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

/// POSTs `alert` to `url`. The error never holds the URL: webhook URLs
/// carry secrets (Slack and Teams put the token in the path).
async fn post_json(url: &str, alert: &Alert) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let response = client
        .post(url)
        .json(alert)
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
        if let Some(url) = &monitor.options().webhook
            && let Err(e) = post_json(url, &alert).await
        {
            monitor.record_webhook_failure();
            tracing::warn!(error = %e, "the drift alert webhook failed");
        }
    }
}
