//! A registered version loaded for serving: its pool of ONNX Runtime
//! sessions, its micro-batcher when its policy asks for one, and the
//! handles resolved once and kept on it (per-arm metrics, per-view feature
//! sets).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use onnx::Model;
use registry::{ModelVersion, Registry};

use super::batcher::Batcher;
use super::error::Result;
use super::policy::BatchOptions;
use super::pool::{Outputs, SessionPool};
use crate::metrics::{ArmKey, ArmMetrics, Histogram, Metrics};

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
    /// How long this version's recent Open Inference Protocol runs took, in
    /// nanoseconds, smoothed (each run counts 1/8): whether a small one may
    /// run on the request's own thread.
    run_nanos: AtomicU64,
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
            .field("sessions", &self.pool.size())
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
        // Classifiers exported by skl2onnx answer a label (int64) first and
        // the probabilities (f32) second: read the first float output.
        let output = version
            .signature
            .outputs
            .iter()
            .position(|o| o.dtype == "f32");
        Ok(LoadedModel {
            pool: Arc::new(SessionPool::new(sessions, version.features.len(), output)),
            feature_names: Arc::from(version.features.clone()),
            version,
            batcher: None,
            arm_metrics: RwLock::default(),
            feeds: RwLock::default(),
            run_nanos: AtomicU64::new(0),
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
    pub fn predict(&self, features: Vec<f32>, rows: usize) -> Result<Outputs> {
        self.pool.run(&features, rows)
    }

    /// Like [`predict`](Self::predict), through the micro-batcher when the
    /// model has one.
    pub async fn infer(&self, features: Vec<f32>, rows: usize) -> Result<Outputs> {
        match &self.batcher {
            None => self.predict(features, rows),
            Some(batcher) => batcher.submit(features, rows).await,
        }
    }

    /// How long this version's recent runs took, smoothed (zero before the
    /// first).
    pub fn recent_run_time(&self) -> Duration {
        Duration::from_nanos(self.run_nanos.load(Ordering::Relaxed))
    }

    /// Counts a run that took `took` into [`recent_run_time`](Self::recent_run_time).
    /// Concurrent runs may lose one another's update; the figure is a
    /// guide, not a record.
    pub fn record_run(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.run_nanos.load(Ordering::Relaxed);
        let smoothed = old - old / 8 + took / 8;
        self.run_nanos.store(smoothed, Ordering::Relaxed);
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
        self.batcher.as_ref().map(Batcher::rows)
    }

    /// Requests waiting in the micro-batcher's queue (0 without batching).
    pub fn queued(&self) -> usize {
        self.batcher.as_ref().map_or(0, Batcher::depth)
    }
}
