//! The models a server serves: per name, the version at its primary alias
//! and those at its other arms' (and shadow's) aliases, replaced whole on
//! every change; and the versions loaded on demand by number.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use registry::Registry;

use super::error::{Error, Result};
use super::model::LoadedModel;

/// A served model: the version at its primary alias and those at its other
/// arms' (and shadow's) aliases. Replaced whole on every change, so a
/// request sees one consistent set.
#[derive(Debug, Clone)]
pub struct Served {
    /// The version at the primary alias (or the newest, without it).
    pub primary: Arc<LoadedModel>,
    /// What the primary is served as: the alias, or `latest`.
    pub primary_arm: String,
    arms: Vec<(String, Arc<LoadedModel>)>,
}

impl Served {
    /// The model at `alias`, when loaded.
    pub fn arm(&self, alias: &str) -> Option<&Arc<LoadedModel>> {
        if alias == self.primary_arm {
            return Some(&self.primary);
        }
        self.arms.iter().find(|(a, _)| a == alias).map(|(_, m)| m)
    }

    /// Every loaded model with the alias it serves.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Arc<LoadedModel>)> {
        std::iter::once((self.primary_arm.as_str(), &self.primary))
            .chain(self.arms.iter().map(|(a, m)| (a.as_str(), m)))
    }
}

/// The versions loaded on demand (by number, through the Open Inference
/// Protocol) that are kept at once; the least recently used go first.
pub const MAX_ON_DEMAND_VERSIONS: u64 = 16;

/// The models a server serves, by name, and the versions loaded on demand.
#[derive(Debug)]
pub struct ModelSet {
    served: RwLock<HashMap<String, Arc<Served>>>,
    versions: moka::sync::Cache<(String, u64), Arc<LoadedModel>>,
}

impl Default for ModelSet {
    fn default() -> Self {
        ModelSet {
            served: RwLock::default(),
            versions: moka::sync::Cache::new(MAX_ON_DEMAND_VERSIONS),
        }
    }
}

impl ModelSet {
    /// Loads the latest version of `name` and serves it (as `latest`).
    pub fn load_latest(
        &self,
        registry: &Registry,
        name: &str,
        pool_size: usize,
    ) -> Result<Arc<LoadedModel>, registry::Error> {
        let version = registry.latest(name)?;
        let model = Arc::new(LoadedModel::load(registry, version, pool_size)?);
        self.insert(name, "latest", model.clone());
        Ok(model)
    }

    /// The model served as `name` (its primary arm).
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.served(name).map(|s| s.primary.clone())
    }

    /// Everything served as `name`, or why there is nothing: the names
    /// that are served.
    pub fn serving(&self, name: &str) -> Result<Arc<Served>> {
        self.served(name).ok_or_else(|| Error::ModelNotServed {
            model: name.to_string(),
            served: self.names(),
        })
    }

    /// The model served as `name` (its primary arm), or why there is none.
    pub fn primary(&self, name: &str) -> Result<Arc<LoadedModel>> {
        self.serving(name).map(|s| s.primary.clone())
    }

    /// Everything served as `name`.
    pub fn served(&self, name: &str) -> Option<Arc<Served>> {
        self.served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every served model.
    pub fn all(&self) -> Vec<(String, Arc<Served>)> {
        let mut all: Vec<_> = self
            .served
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Version `version` of `name`: a served one if it is that version,
    /// else loaded from the registry on first use (any `READY` version)
    /// and kept, up to [`MAX_ON_DEMAND_VERSIONS`] (a request holding an
    /// evicted one finishes with it).
    pub fn version(
        &self,
        registry: &Registry,
        name: &str,
        version: u64,
        pool_size: usize,
    ) -> Result<Arc<LoadedModel>, registry::Error> {
        if let Some(served) = self.served(name)
            && let Some((_, model)) = served.all().find(|(_, m)| m.version.version == version)
        {
            return Ok(model.clone());
        }
        let key = (name.to_string(), version);
        if let Some(loaded) = self.versions.get(&key) {
            return Ok(loaded);
        }
        let record = registry.version(name, version)?;
        let model = Arc::new(LoadedModel::load(registry, record, pool_size)?);
        Ok(self.versions.entry(key).or_insert(model).into_value())
    }

    /// Versions loaded on demand and kept now.
    pub fn on_demand(&self) -> u64 {
        self.versions.run_pending_tasks();
        self.versions.entry_count()
    }

    /// Serves `model` as `name`'s primary arm, served as `arm`, replacing
    /// what was served (requests that already hold the old one finish with
    /// it). The other arms stay.
    pub fn insert(&self, name: &str, arm: &str, model: Arc<LoadedModel>) {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        let arms = served.get(name).map(|s| s.arms.clone()).unwrap_or_default();
        served.insert(
            name.to_string(),
            Arc::new(Served {
                primary: model,
                primary_arm: arm.to_string(),
                arms,
            }),
        );
    }

    /// Serves `model` at `alias` beside `name`'s primary (or stops serving
    /// that alias, with `None`). Ignored while `name` has no primary.
    pub fn set_arm(&self, name: &str, alias: &str, model: Option<Arc<LoadedModel>>) {
        let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
        let Some(current) = served.get(name) else {
            return;
        };
        let mut next = Served::clone(current);
        next.arms.retain(|(a, _)| a != alias);
        if let Some(model) = model {
            next.arms.push((alias.to_string(), model));
        }
        served.insert(name.to_string(), Arc::new(next));
    }

    /// Names of the models served.
    pub fn names(&self) -> Vec<String> {
        self.all().into_iter().map(|(n, _)| n).collect()
    }
}
