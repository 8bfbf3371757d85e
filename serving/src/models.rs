//! Models loaded for serving, with a small pool of ONNX Runtime sessions each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ort::session::Session;
use ort::value::TensorRef;
use registry::{ModelVersion, Registry};

use crate::error::AppError;

/// A registered version loaded into ONNX Runtime.
pub struct LoadedModel {
    /// The registry's record of the version.
    pub version: ModelVersion,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.version.name)
            .field("version", &self.version.version)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl LoadedModel {
    /// Loads `version` from `registry` into `pool_size` sessions.
    /// (`Session::run` needs exclusive access, so concurrent requests use
    /// different sessions of the pool.)
    pub fn load(
        registry: &Registry,
        version: ModelVersion,
        pool_size: usize,
    ) -> Result<Self, registry::Error> {
        let bytes = registry.model_bytes(&version)?;
        let label = format!("{}/{}", version.name, version.version);
        let sessions = (0..pool_size.max(1))
            .map(|_| registry::runtime::load_session(&label, &bytes).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(LoadedModel {
            version,
            sessions,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` with a session of the pool: the first free one from a
    /// rotating start, or waits on one when all are busy.
    pub fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.sessions.len();
        let mut guard = (0..n)
            .find_map(|k| self.sessions[(start + k) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.sessions[start % n]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
            });
        f(&mut guard)
    }

    /// Runs the model on `rows` rows of `features` (row-major, one column
    /// per registered feature) and returns each row's first output values.
    pub fn predict(&self, features: Vec<f32>, rows: usize) -> Result<Vec<Vec<f32>>, AppError> {
        let width = self.version.features.len();
        if features.len() != rows * width {
            return Err(AppError::internal(format!(
                "assembled {} values for {rows} rows of {width} features",
                features.len()
            )));
        }
        let input = TensorRef::from_array_view(([rows, width], features.as_slice()))
            .map_err(|e| AppError::internal(format!("building the input tensor: {e}")))?;
        self.with_session(|session| {
            let outputs = session
                .run(ort::inputs![input])
                .map_err(|e| AppError::internal(format!("ONNX Runtime failed: {e}")))?;
            let (shape, values) = outputs[0]
                .try_extract_tensor::<f32>()
                .map_err(|e| AppError::internal(format!("reading the model output: {e}")))?;
            let per_row = values.len().checked_div(rows).unwrap_or(0);
            if per_row * rows != values.len() {
                return Err(AppError::internal(format!(
                    "model output shape {shape:?} does not split into {rows} rows"
                )));
            }
            Ok(values.chunks(per_row.max(1)).map(<[f32]>::to_vec).collect())
        })
    }
}

/// The models a server serves, by name, and the versions loaded on demand.
#[derive(Debug, Default)]
pub struct ModelSet {
    models: RwLock<HashMap<String, Arc<LoadedModel>>>,
    versions: RwLock<HashMap<(String, u64), Arc<LoadedModel>>>,
}

impl ModelSet {
    /// Loads the latest version of `name` and serves it.
    pub fn load_latest(
        &self,
        registry: &Registry,
        name: &str,
        pool_size: usize,
    ) -> Result<Arc<LoadedModel>, registry::Error> {
        let version = registry.latest(name)?;
        let model = Arc::new(LoadedModel::load(registry, version, pool_size)?);
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), model.clone());
        Ok(model)
    }

    /// The model served as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Version `version` of `name`: the served one if it is that version,
    /// else loaded from the registry on first use (any `READY` version)
    /// and kept.
    pub fn version(
        &self,
        registry: &Registry,
        name: &str,
        version: u64,
        pool_size: usize,
    ) -> Result<Arc<LoadedModel>, registry::Error> {
        if let Some(served) = self.get(name).filter(|m| m.version.version == version) {
            return Ok(served);
        }
        let key = (name.to_string(), version);
        if let Some(loaded) = self
            .versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(loaded.clone());
        }
        let record = registry.version(name, version)?;
        let model = Arc::new(LoadedModel::load(registry, record, pool_size)?);
        Ok(self
            .versions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(model)
            .clone())
    }

    /// Serves `model` as `name`, replacing what was served (requests that
    /// already hold the old one finish with it).
    pub fn insert(&self, name: &str, model: Arc<LoadedModel>) {
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), model);
    }

    /// Names of the models served.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }
}
