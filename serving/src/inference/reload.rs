//! Keeping the served models in step with the registry, without a restart.
//!
//! Each model is served at its alias (`champion` by default), or at its
//! newest `READY` version while it has no such alias. A watcher compares
//! that target with the version served, every `interval`; when they differ
//! it loads the new version on a blocking thread, warms it up with one
//! inference, and only then swaps it in (one pointer swap in the
//! [`ModelSet`]): requests in flight keep the version they
//! started with, new ones get the new one, none fails. A version that fails
//! to load or warm up leaves the old one serving; the failure is logged,
//! counted in `/metrics`, and retried only when the target changes again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry::{ModelVersion, Registry};

use super::model::LoadedModel;
use super::model_set::ModelSet;
use super::policy::{BatchOptions, ServingConfig};

/// How the watcher loads versions.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// How often the registry is checked.
    pub interval: Duration,
    /// ONNX Runtime sessions per loaded model.
    pub sessions: usize,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
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
    /// The last failure per model, alias and version, so it is not retried
    /// until the target changes.
    failed: Mutex<HashMap<(String, String), u64>>,
}

/// What a watcher pass reads and changes (borrowed from the server's
/// state, under the same names): the registry, the serving policies, the
/// served models, the watcher's counters and how versions are loaded.
#[derive(Debug, Clone, Copy)]
pub struct Watcher<'a> {
    /// Where versions and aliases are read.
    pub registry: &'a Registry,
    /// Which aliases each model serves.
    pub config: &'a ServingConfig,
    /// What is served, swapped as the registry moves.
    pub models: &'a ModelSet,
    /// Swaps and failures, counted.
    pub reload: &'a ReloadStats,
    /// Sessions per loaded version.
    pub reload_options: &'a ReloadOptions,
}

/// The versions a pass swapped in: `(model, alias, version)`.
pub type Swapped = Vec<(String, String, u64)>;

/// The version `name`'s primary arm should serve, and what it is served
/// as: its `alias`, else its newest `READY` version (as `latest`); `None`
/// when it has neither.
pub fn target(
    registry: &Registry,
    name: &str,
    alias: &str,
) -> registry::Result<Option<(ModelVersion, String)>> {
    match registry.by_alias(name, alias) {
        Ok(version) => Ok(Some((version, alias.to_string()))),
        Err(registry::Error::AliasNotFound { .. }) => match registry.latest(name) {
            Ok(version) => Ok(Some((version, "latest".to_string()))),
            Err(registry::Error::VersionNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// One pass over the registry (blocking): for every model, loads, warms
/// up and swaps in each alias its policy serves (the primary, the other
/// A/B arms, the shadow) whose version differs from the one served; an
/// arm whose alias was removed stops being served (its traffic goes to
/// the primary). Returns the `(model, alias, version)` swapped in.
pub fn sync_once(state: &Watcher<'_>) -> Swapped {
    let mut swapped = Vec::new();
    let names = match state.registry.models() {
        Ok(names) => names,
        Err(e) => {
            tracing::error!(error = %e, "listing the registry's models");
            return swapped;
        }
    };
    let primary_alias = state.config.default_alias.as_str();
    for name in names {
        let policy = state.config.policy(&name);
        // The primary: the default alias, or the newest version.
        let (primary, primary_arm) = match target(state.registry, &name, primary_alias) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(model = %name, error = %e, "resolving the version to serve");
                continue;
            }
        };
        let served = state.models.served(&name);
        let current = served
            .as_ref()
            .map(|s| (s.primary.version.version, s.primary_arm.clone()));
        if current.as_ref().map(|(v, _)| *v) != Some(primary.version) {
            if let Some(model) = load(state, &name, primary_alias, primary, policy.batch) {
                state.models.insert(&name, &primary_arm, model.clone());
                swapped.push((name.clone(), primary_arm.clone(), model.version.version));
            }
        } else if current.as_ref().map(|(_, a)| a.as_str()) != Some(primary_arm.as_str())
            && let Some(served) = &served
        {
            // Same version, now reached through the alias (or no longer).
            state
                .models
                .insert(&name, &primary_arm, served.primary.clone());
        }
        if state.models.served(&name).is_none() {
            continue;
        }
        // The other arms and the shadow: only at their aliases.
        for alias in policy.aliases().filter(|a| *a != primary_alias) {
            let served = state.models.served(&name);
            let loaded = served
                .as_ref()
                .and_then(|s| s.arm(alias))
                .map(|m| m.version.version);
            match state.registry.by_alias(&name, alias) {
                Ok(version) if loaded == Some(version.version) => {}
                Ok(version) => {
                    let wanted = version.version;
                    // Another arm may already hold this version.
                    let shared = served.as_ref().and_then(|s| {
                        s.all()
                            .find(|(_, m)| m.version.version == wanted)
                            .map(|(_, m)| m.clone())
                    });
                    let model = shared.or_else(|| load(state, &name, alias, version, policy.batch));
                    if let Some(model) = model {
                        state.models.set_arm(&name, alias, Some(model));
                        swapped.push((name.clone(), alias.to_string(), wanted));
                    }
                }
                Err(registry::Error::AliasNotFound { .. }) => {
                    if loaded.is_some() {
                        tracing::info!(model = %name, alias, "alias removed; its arm's traffic goes to the primary");
                        state.models.set_arm(&name, alias, None);
                    }
                }
                Err(e) => {
                    tracing::error!(model = %name, alias, error = %e, "resolving an arm's version");
                }
            }
        }
    }
    swapped
}

/// Loads and warms up `version` for `name` at `alias`, counting and
/// remembering a failure (not retried until the alias moves).
fn load(
    state: &Watcher<'_>,
    name: &str,
    alias: &str,
    version: ModelVersion,
    batch: Option<BatchOptions>,
) -> Option<Arc<LoadedModel>> {
    let stats = state.reload;
    let key = (name.to_string(), alias.to_string());
    let number = version.version;
    let mut failed = stats.failed.lock().unwrap_or_else(|e| e.into_inner());
    if failed.get(&key) == Some(&number) {
        return None;
    }
    match load_and_warm(state.registry, version, state.reload_options.sessions) {
        Ok(model) => {
            failed.remove(&key);
            stats.swaps.fetch_add(1, Ordering::Relaxed);
            tracing::info!(model = %name, alias, version = number, "serving a new version");
            let model = match batch {
                Some(options) => model.with_batching(options),
                None => model,
            };
            Some(Arc::new(model))
        }
        Err(e) => {
            failed.insert(key, number);
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                model = %name,
                alias,
                version = number,
                error = %e,
                "a new version failed to load; the old one keeps serving"
            );
            None
        }
    }
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
            .map_err(|e| format!("warm-up inference failed: {e}"))?;
    }
    Ok(model)
}
