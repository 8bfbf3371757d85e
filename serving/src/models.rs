//! Models loaded for serving: each version with a small pool of ONNX
//! Runtime sessions and, when its policy asks, a micro-batcher; and the set
//! of models served, each with its A/B arms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::Instant;

use onnx::{Matrix, Model};
use registry::{ModelVersion, Registry};

use crate::error::AppError;
use crate::metrics::{ArmKey, ArmMetrics, Histogram, Metrics, ROW_BUCKETS};
use crate::policy::BatchOptions;

/// Each row's output values.
pub type Outputs = Vec<Vec<f32>>;

pub use monitoring::headline;

/// A registered version loaded into ONNX Runtime.
pub struct LoadedModel {
    /// The registry's record of the version.
    pub version: ModelVersion,
    /// Its input names (the registered feature list), shared with every
    /// logged prediction.
    pub feature_names: Arc<[String]>,
    pool: Arc<SessionPool>,
    batcher: Option<Batcher>,
    /// This version's metrics per arm (and shadow), found without building
    /// a key on every request.
    arm_metrics: RwLock<Vec<(String, bool, Arc<ArmMetrics>)>>,
    /// How this version's features are fetched, per view (resolved once).
    feeds: RwLock<Vec<Arc<ViewFeed>>>,
}

/// A view's part of a model's input, resolved against the online store
/// once: its join keys and its features as a prepared set.
#[derive(Debug)]
pub struct ViewFeed {
    /// The view's name.
    pub view: String,
    /// The view's join keys, in key order.
    pub join_keys: Vec<String>,
    /// The references fetched from the view, in input order.
    pub references: Vec<String>,
    /// Those references, resolved.
    pub set: feature_store::online::FeatureSet,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.version.name)
            .field("version", &self.version.version)
            .field("sessions", &self.pool.sessions.len())
            .field("batching", &self.batcher.is_some())
            .finish()
    }
}

impl LoadedModel {
    /// Loads `version` from `registry` into `pool_size` sessions.
    /// (Running a [`Model`] needs exclusive access, so concurrent requests
    /// use different sessions of the pool.)
    pub fn load(
        registry: &Registry,
        version: ModelVersion,
        pool_size: usize,
    ) -> Result<Self, registry::Error> {
        let bytes = registry.model_bytes(&version)?;
        let label = format!("{}/{}", version.name, version.version);
        let sessions = (0..pool_size.max(1))
            .map(|_| Model::load(&label, &bytes).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(LoadedModel {
            pool: Arc::new(SessionPool {
                width: version.features.len(),
                // Classifiers exported by skl2onnx answer a label (int64)
                // first and the probabilities (f32) second: read the first
                // float output.
                output: version
                    .signature
                    .outputs
                    .iter()
                    .position(|o| o.dtype == "f32"),
                sessions,
                next: AtomicUsize::new(0),
            }),
            feature_names: Arc::from(version.features.clone()),
            version,
            batcher: None,
            arm_metrics: RwLock::default(),
            feeds: RwLock::default(),
        })
    }

    /// The same model with dynamic micro-batching: one worker thread per
    /// session collects concurrent [`infer`](Self::infer) calls into one
    /// inference.
    pub fn with_batching(mut self, options: BatchOptions) -> Self {
        self.batcher = Some(Batcher::start(
            &format!("{}-v{}", self.version.name, self.version.version),
            self.pool.clone(),
            options,
        ));
        self
    }

    /// Runs `f` with a session of the pool: the first free one from a
    /// rotating start, or waits on one when all are busy.
    pub fn with_session<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
        self.pool.with_session(f)
    }

    /// Runs the model on `rows` rows of `features` (row-major, one column
    /// per registered feature) now, on this thread, and returns each row's
    /// values of the model's first float output.
    pub fn predict(&self, features: Vec<f32>, rows: usize) -> Result<Outputs, AppError> {
        self.pool.run(&features, rows)
    }

    /// Like [`predict`](Self::predict), through the micro-batcher when the
    /// model has one.
    pub async fn infer(&self, features: Vec<f32>, rows: usize) -> Result<Outputs, AppError> {
        match &self.batcher {
            None => self.predict(features, rows),
            Some(batcher) => batcher.submit(features, rows).await,
        }
    }

    /// This version's metrics as served at `arm` (`shadow`: as a shadow),
    /// registered in `metrics` on first use.
    pub fn metrics_for(&self, metrics: &Metrics, arm: &str, shadow: bool) -> Arc<ArmMetrics> {
        let cached = self.arm_metrics.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, m)) = cached.iter().find(|(a, s, _)| a == arm && *s == shadow) {
            return m.clone();
        }
        drop(cached);
        let m = metrics.arm(&ArmKey {
            model: self.version.name.clone(),
            version: self.version.version,
            arm: arm.to_string(),
            shadow,
        });
        self.arm_metrics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((arm.to_string(), shadow, m.clone()));
        m
    }

    /// The feed of `view` for exactly `references`: cached after the first
    /// request, resolved with `online` on a miss. `None` when the store
    /// does not hold the view or cannot resolve a reference.
    pub fn feed<'a>(
        &self,
        online: &feature_store::OnlineStore,
        view: &str,
        references: impl ExactSizeIterator<Item = &'a String> + Clone,
    ) -> Option<Arc<ViewFeed>> {
        let same = |feed: &ViewFeed| {
            feed.view == view
                && feed.references.len() == references.len()
                && feed
                    .references
                    .iter()
                    .zip(references.clone())
                    .all(|(a, b)| a == b)
        };
        if let Some(feed) = self
            .feeds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|f| same(f))
        {
            return Some(feed.clone());
        }
        let definition = online.view(view)?;
        let references: Vec<String> = references.cloned().collect();
        let set = online.resolve(&references).ok()?;
        let feed = Arc::new(ViewFeed {
            view: view.to_string(),
            join_keys: definition.entity.join_keys,
            references,
            set,
        });
        let mut feeds = self.feeds.write().unwrap_or_else(|e| e.into_inner());
        // Requests that supply some features fetch other subsets; keep the
        // cache small.
        if feeds.len() < 16 {
            feeds.push(feed.clone());
        }
        Some(feed)
    }

    /// Rows per batched inference, when the model batches.
    pub fn batch_rows(&self) -> Option<&Histogram> {
        self.batcher.as_ref().map(|b| &*b.rows)
    }

    /// Requests waiting in the micro-batcher's queue (0 without batching).
    pub fn queued(&self) -> usize {
        self.batcher
            .as_ref()
            .map_or(0, |b| b.depth.load(Ordering::Relaxed))
    }
}

struct SessionPool {
    width: usize,
    output: Option<usize>,
    sessions: Vec<Mutex<Model>>,
    next: AtomicUsize,
}

impl SessionPool {
    fn with_session<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
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

    fn run(&self, features: &[f32], rows: usize) -> Result<Outputs, AppError> {
        let width = self.width;
        if features.len() != rows * width {
            return Err(AppError::internal(format!(
                "assembled {} values for {rows} rows of {width} features",
                features.len()
            )));
        }
        // Built before a session is taken, so the lock covers only the run.
        // The onnx errors read "building the input tensor: …", "ONNX
        // Runtime failed: …" and "reading the model output: …".
        let input =
            Matrix::new(features, rows, width).map_err(|e| AppError::internal(e.to_string()))?;
        let output = self.output.ok_or_else(|| {
            AppError::internal("the model has no float output for /predict to answer with")
        })?;
        self.with_session(|session| {
            let outputs = session
                .run_matrix(input)
                .map_err(|e| AppError::internal(e.to_string()))?;
            let (shape, values) = outputs
                .f32(output)
                .map_err(|e| AppError::internal(e.to_string()))?;
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

/// A request waiting to be batched.
struct Job {
    features: Vec<f32>,
    rows: usize,
    reply: tokio::sync::oneshot::Sender<Result<Outputs, AppError>>,
}

/// The queue in front of a model's batching workers. Dropping it closes the
/// queue, and the workers exit once it is empty.
struct Batcher {
    queue: mpsc::SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    rows: Arc<Histogram>,
}

/// Requests a batcher queues before refusing more (per model).
const BATCH_QUEUE: usize = 4096;

impl Batcher {
    fn start(label: &str, pool: Arc<SessionPool>, options: BatchOptions) -> Self {
        let (queue, jobs) = mpsc::sync_channel::<Job>(BATCH_QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let depth = Arc::new(AtomicUsize::new(0));
        let rows = Arc::new(Histogram::counts(ROW_BUCKETS));
        for worker in 0..pool.sessions.len() {
            let (jobs, pool, depth, rows) =
                (jobs.clone(), pool.clone(), depth.clone(), rows.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("batch-{label}-{worker}"))
                .spawn(move || batch_worker(&jobs, &pool, &depth, &rows, options));
            if let Err(e) = spawned {
                tracing::error!(model = label, error = %e, "starting a batching worker");
            }
        }
        Batcher { queue, depth, rows }
    }

    async fn submit(&self, features: Vec<f32>, rows: usize) -> Result<Outputs, AppError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self
            .queue
            .try_send(Job {
                features,
                rows,
                reply,
            })
            .is_err()
        {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(AppError::overloaded(
                "the model's batching queue is full; retry shortly",
            ));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(AppError::internal("the batching worker stopped")))
    }
}

/// Takes the first waiting job, then more until `max_rows` rows or
/// `max_delay` after the first, runs them as one inference and answers
/// each. Workers take turns collecting (the queue's lock), and run in
/// parallel.
fn batch_worker(
    jobs: &Mutex<mpsc::Receiver<Job>>,
    pool: &SessionPool,
    depth: &AtomicUsize,
    batch_rows: &Histogram,
    options: BatchOptions,
) {
    loop {
        let mut batch = Vec::new();
        {
            let queue = jobs.lock().unwrap_or_else(|e| e.into_inner());
            let Ok(first) = queue.recv() else { return };
            let deadline = Instant::now() + options.max_delay;
            let mut rows = first.rows;
            batch.push(first);
            while rows < options.max_rows {
                let left = deadline.saturating_duration_since(Instant::now());
                match queue.recv_timeout(left) {
                    Ok(job) => {
                        rows += job.rows;
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        depth.fetch_sub(batch.len(), Ordering::Relaxed);
        let rows: usize = batch.iter().map(|j| j.rows).sum();
        batch_rows.observe(rows as f64);
        let mut features = Vec::with_capacity(rows * pool.width);
        for job in &batch {
            features.extend_from_slice(&job.features);
        }
        match pool.run(&features, rows) {
            Ok(outputs) => {
                let mut outputs = outputs.into_iter();
                for job in batch {
                    let mine: Outputs = outputs.by_ref().take(job.rows).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

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

/// The models a server serves, by name, and the versions loaded on demand.
#[derive(Debug, Default)]
pub struct ModelSet {
    served: RwLock<HashMap<String, Arc<Served>>>,
    versions: RwLock<HashMap<(String, u64), Arc<LoadedModel>>>,
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
    /// and kept.
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
