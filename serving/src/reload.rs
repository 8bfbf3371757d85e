//! Keeping the served models in step with the registry, without a restart.
//!
//! Each model is served at its alias (`champion` by default), or at its
//! newest `READY` version while it has no such alias. A watcher compares
//! that target with the version served, every `interval`; when they differ
//! it loads the new version on a blocking thread, warms it up with one
//! inference, and only then swaps it in (one pointer swap in the
//! [`ModelSet`](crate::ModelSet)): requests in flight keep the version they
//! started with, new ones get the new one, none fails. A version that fails
//! to load or warm up leaves the old one serving; the failure is logged,
//! counted in `/metrics`, and retried only when the target changes again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry::{ModelVersion, Registry};

use crate::AppState;
use crate::models::LoadedModel;

/// How the watcher chooses and loads versions.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// The alias served (models without it serve their newest version).
    pub alias: String,
    /// How often the registry is checked.
    pub interval: Duration,
    /// ONNX Runtime sessions per loaded model.
    pub sessions: usize,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            alias: registry::CHAMPION.to_string(),
            interval: Duration::from_secs(2),
            sessions: 2,
        }
    }
}

/// Counters of the watcher, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Versions swapped in.
    pub swaps: AtomicU64,
    /// Versions that failed to load or warm up.
    pub failures: AtomicU64,
    /// The last failure per model and version, so it is not retried until
    /// the target changes.
    failed: Mutex<HashMap<String, u64>>,
}

/// The version `name` should be served at: its `alias`, else its newest
/// `READY` version; `None` when it has neither.
pub fn target(
    registry: &Registry,
    name: &str,
    alias: &str,
) -> registry::Result<Option<ModelVersion>> {
    match registry.by_alias(name, alias) {
        Ok(version) => Ok(Some(version)),
        Err(registry::Error::AliasNotFound { .. }) => match registry.latest(name) {
            Ok(version) => Ok(Some(version)),
            Err(registry::Error::VersionNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// One pass over the registry (blocking): loads, warms up and swaps in every
/// model whose target differs from the version served. Returns the
/// `(model, version)` pairs swapped in.
pub fn sync_once(state: &AppState, options: &ReloadOptions) -> Vec<(String, u64)> {
    let mut swapped = Vec::new();
    let names = match state.registry.models() {
        Ok(names) => names,
        Err(e) => {
            tracing::error!(error = %e, "listing the registry's models");
            return swapped;
        }
    };
    for name in names {
        let wanted = match target(&state.registry, &name, &options.alias) {
            Ok(Some(version)) => version,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(model = %name, error = %e, "resolving the version to serve");
                continue;
            }
        };
        let served = state.models.get(&name).map(|m| m.version.version);
        if served == Some(wanted.version) {
            continue;
        }
        let stats = &state.reload;
        let mut failed = stats.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.get(&name) == Some(&wanted.version) {
            continue;
        }
        match load_and_warm(&state.registry, wanted.clone(), options.sessions) {
            Ok(model) => {
                failed.remove(&name);
                state.models.insert(&name, Arc::new(model));
                stats.swaps.fetch_add(1, Ordering::Relaxed);
                tracing::info!(model = %name, from = ?served, to = wanted.version, "serving a new version");
                swapped.push((name, wanted.version));
            }
            Err(e) => {
                failed.insert(name.clone(), wanted.version);
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    model = %name,
                    version = wanted.version,
                    still_serving = ?served,
                    error = %e,
                    "a new version failed to load; the old one keeps serving"
                );
            }
        }
    }
    swapped
}

/// Loads a version and runs one inference on it, so its first request pays
/// no start-up cost and a model that cannot run is never swapped in.
fn load_and_warm(
    registry: &Registry,
    version: ModelVersion,
    sessions: usize,
) -> Result<LoadedModel, String> {
    let width = version.features.len();
    let model = LoadedModel::load(registry, version, sessions).map_err(|e| e.to_string())?;
    if width > 0 {
        model
            .predict(vec![0.0; width], 1)
            .map_err(|e| format!("warm-up inference failed: {}", e.message))?;
    }
    Ok(model)
}

/// Runs [`sync_once`] every `options.interval` until the runtime stops.
pub fn spawn(state: Arc<AppState>, options: ReloadOptions) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(options.interval).await;
            let (state, options) = (state.clone(), options.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || sync_once(&state, &options)).await {
                tracing::error!(error = %e, "the model watcher stopped a pass");
            }
        }
    })
}
