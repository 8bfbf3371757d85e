//! The state every handler shares: the stores, the models served and how
//! they are served and reloaded, the protections, the metrics and the
//! prediction log and monitor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use feature_store::OnlineStore;
use feature_store::online::push::Pusher;
use monitoring::{Monitor, PredictionLog};
use registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::inference::reload::sync_once;
use crate::inference::{
    Env, ModelSet, ReloadOptions, ReloadStats, ServingConfig, Swapped, Watcher, now_micros,
};
use crate::metrics::Metrics;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The server's protections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests answered at once; beyond it, 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// The longest a request may take; beyond it, 503.
    pub request_timeout: Duration,
    /// Shadow runs at once; beyond it, shadow copies are skipped (counted).
    pub max_shadow_in_flight: usize,
    /// The tokens callers must present, with their roles (none: every
    /// route is open, the loopback default).
    pub tokens: auth::Tokens,
    /// The `Host` names requests may carry (lower case, without port);
    /// others are refused, so a page that rebinds its own name to the
    /// loopback address cannot reach the server. `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
    /// The longest an HTTP/1.1 client may take to send a request's headers
    /// (and a keep-alive connection may stay idle); then the connection is
    /// closed, so slow clients cannot hold connections open.
    pub header_read_timeout: Duration,
    /// The directory MLflow's `model-versions/create` may import model
    /// files from (the server's disk); `None`: no imports from disk.
    pub import_root: Option<std::path::PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 4096,
            request_timeout: Duration::from_secs(30),
            max_shadow_in_flight: 64,
            tokens: auth::Tokens::none(),
            allowed_hosts: None,
            header_read_timeout: Duration::from_secs(30),
            import_root: None,
        }
    }
}

/// The project's tables as last read for `/metrics`: freshness, size, the
/// last pipeline run.
#[derive(Debug, Default)]
pub struct TableHealthState {
    /// The last reading: every table that exists, and the last run.
    pub reading: std::sync::RwLock<TableReading>,
    /// Readings of a table that failed (the table is named in a warning).
    pub errors: AtomicU64,
}

/// One reading of the project's tables.
#[derive(Debug, Default, Clone)]
pub struct TableReading {
    /// When it was taken (milliseconds since the epoch; 0: never).
    pub at_ms: i64,
    /// The tables that exist.
    pub tables: Vec<feature_store::health::TableHealth>,
    /// The last pipeline run, once there was one.
    pub last_run: Option<feature_store::health::LastRun>,
}

/// A stream this server consumes, for `/metrics` and `/health/ready`.
#[derive(Debug, Clone)]
pub struct StreamStatus {
    /// The source.
    pub source: String,
    /// Its topic.
    pub topic: String,
    /// The consumer's counters.
    pub stats: Arc<stream::StreamStats>,
    /// When the consumer started, milliseconds since the epoch.
    pub started_ms: i64,
}

/// Lag (events the brokers hold that bronze does not) above which a
/// stream is reported behind.
pub const STREAM_BEHIND_EVENTS: i64 = 100_000;
/// Silence from the brokers after which a stream is reported
/// disconnected.
pub const STREAM_SILENT_MS: i64 = 30_000;

impl StreamStatus {
    /// `failed` (the consumer stopped on an error retrying cannot fix),
    /// `disconnected` (no answer from the brokers for
    /// [`STREAM_SILENT_MS`]), `behind` (lag over [`STREAM_BEHIND_EVENTS`])
    /// or `ok`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if self
            .stats
            .failed
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(false)
        {
            return "failed";
        }
        let contact = self
            .stats
            .last_contact_ms
            .load(std::sync::atomic::Ordering::Relaxed) as i64;
        let since = if contact == 0 {
            self.started_ms
        } else {
            contact
        };
        if now_ms - since > STREAM_SILENT_MS {
            "disconnected"
        } else if self.stats.total_lag() > STREAM_BEHIND_EVENTS {
            "behind"
        } else {
            "ok"
        }
    }
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    /// The online feature store.
    pub online: Arc<OnlineStore>,
    /// The model registry.
    pub registry: Registry,
    /// Models loaded for serving.
    pub models: ModelSet,
    /// The gold tables `POST /materialize` loads from, when configured.
    pub offline: Option<delta::DeltaStore>,
    /// Applies pushed rows (shared with Arrow Flight `DoPut`).
    pub pusher: Arc<Pusher>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// Counters of the model watcher.
    pub reload: ReloadStats,
    /// How the watcher loads models.
    pub reload_options: ReloadOptions,
    /// How each model is served (aliases, A/B split, shadow, batching).
    pub config: ServingConfig,
    /// Protections: in-flight limit, timeout, admin token.
    pub limits: Limits,
    /// Where predictions are logged, when they are.
    pub prediction_log: Option<PredictionLog>,
    /// The live drift and quality monitor, when on (it is fed by the
    /// prediction log's writer).
    pub monitor: Option<Arc<Monitor>>,
    /// The answers of writes made with an idempotency key.
    pub idempotency: crate::idempotency::Idempotency,
    /// The project's tables and last pipeline run, as last read
    /// ([`crate::tasks::spawn_table_health`]).
    pub tables: TableHealthState,
    /// The Kafka sources this server consumes (`aurum serve --stream`).
    pub streams: std::sync::RwLock<Vec<StreamStatus>>,
    in_flight: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    shadows: Arc<Semaphore>,
    request_ids: (u32, AtomicU64),
    ready: AtomicBool,
}

impl AppState {
    /// State over an online store and a registry, with no models loaded and
    /// not yet ready.
    pub fn new(online: Arc<OnlineStore>, registry: Registry) -> Self {
        AppState {
            pusher: Arc::new(Pusher::online_only(online.clone())),
            online,
            registry,
            models: ModelSet::default(),
            offline: None,
            metrics: Metrics::default(),
            reload: ReloadStats::default(),
            reload_options: ReloadOptions::default(),
            config: ServingConfig::default(),
            in_flight: Arc::new(Semaphore::new(Limits::default().max_in_flight)),
            writes: Arc::new(Semaphore::new(Limits::default().max_in_flight)),
            shadows: Arc::new(Semaphore::new(Limits::default().max_shadow_in_flight)),
            limits: Limits::default(),
            prediction_log: None,
            monitor: None,
            idempotency: crate::idempotency::Idempotency::default(),
            tables: TableHealthState::default(),
            streams: std::sync::RwLock::default(),
            request_ids: (std::process::id() ^ random_u32(), AtomicU64::new(0)),
            ready: AtomicBool::new(false),
        }
    }

    /// The same state serving models under `config`.
    pub fn with_config(mut self, config: ServingConfig) -> Self {
        self.config = config;
        self
    }

    /// The same state with these protections.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
        self.writes = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
        self.shadows = Arc::new(Semaphore::new(limits.max_shadow_in_flight));
        self.limits = limits;
        self
    }

    /// The same state, loading models as `options` says.
    pub fn with_reload(mut self, options: ReloadOptions) -> Self {
        self.reload_options = options;
        self
    }

    /// The same state, logging every prediction to `log`.
    pub fn with_prediction_log(mut self, log: PredictionLog) -> Self {
        self.prediction_log = Some(log);
        self
    }

    /// The same state with a live monitor. The monitor sees what the
    /// prediction log's writer hands it: start that log with
    /// [`PredictionLog::start_with`] and the same monitor.
    pub fn with_monitor(mut self, monitor: Arc<Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// A slot for one more request, or `None` at the in-flight limit.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.limits
            .max_in_flight
            .max(1)
            .saturating_sub(self.in_flight.available_permits())
    }

    /// A slot for one write (push, feedback) running to completion, or
    /// `None` at the limit. A write holds it past the request's timeout,
    /// until it has finished.
    pub fn admit_write(&self) -> Option<OwnedSemaphorePermit> {
        self.writes.clone().try_acquire_owned().ok()
    }

    /// Waits until no write is running (for shutdown: a write that started
    /// finishes before the process ends).
    pub async fn drain_writes(&self) {
        let all = u32::try_from(self.limits.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let _ = self.writes.acquire_many(all).await;
    }

    /// A slot for one shadow run, or `None` when too many run.
    pub fn admit_shadow(&self) -> Option<OwnedSemaphorePermit> {
        self.shadows.clone().try_acquire_owned().ok()
    }

    /// Waits until no shadow run is in progress (for shutdown, so their
    /// predictions reach the log).
    pub async fn drain_shadows(&self) {
        let all = u32::try_from(self.limits.max_shadow_in_flight).unwrap_or(u32::MAX);
        if all > 0 {
            let _ = self.shadows.acquire_many(all).await;
        }
    }

    /// Shadow runs in progress.
    pub fn shadow_in_flight(&self) -> usize {
        self.limits
            .max_shadow_in_flight
            .saturating_sub(self.shadows.available_permits())
    }

    /// A new request id, unique within this process and unlikely to repeat
    /// across processes.
    pub fn new_request_id(&self) -> Arc<str> {
        use std::io::Write;
        let n = self.request_ids.1.fetch_add(1, Ordering::Relaxed);
        let mut buffer = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut buffer[..]);
        let _ = write!(cursor, "{:08x}-{n:x}", self.request_ids.0);
        let end = usize::try_from(cursor.position()).unwrap_or(0);
        Arc::from(std::str::from_utf8(&buffer[..end]).unwrap_or_default())
    }

    /// The same state, materializing from (and pushing offline to) the
    /// gold tables of `store`. Starts the push writer task, so it must be
    /// called inside a tokio runtime.
    pub fn with_offline(mut self, store: delta::DeltaStore) -> Self {
        self.pusher = Arc::new(Pusher::with_offline(self.online.clone(), store.clone()));
        self.offline = Some(store);
        self
    }

    /// Marks the server ready (online store warm, models loaded).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the server is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// What a model run reads besides its model: the online store and the
    /// metrics.
    pub fn inference(&self) -> Env<'_> {
        Env {
            online: &self.online,
            metrics: &self.metrics,
        }
    }

    /// What a model watcher pass reads and changes.
    pub fn watcher(&self) -> Watcher<'_> {
        Watcher {
            registry: &self.registry,
            config: &self.config,
            models: &self.models,
            reload: &self.reload,
            reload_options: &self.reload_options,
        }
    }

    /// One model watcher pass now (blocking): see [`sync_once`]. Returns
    /// the `(model, alias, version)` swapped in.
    pub fn sync_models(&self) -> Swapped {
        sync_once(&self.watcher())
    }
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_micros() as u64);
    hasher.finish() as u32
}
