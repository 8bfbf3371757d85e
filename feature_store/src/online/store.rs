//! The online store: the latest feature row per entity, in process memory.
//!
//! Rows live in one moka cache keyed by (view, entity key), bounded by a
//! memory budget through a weigher. A lookup resolves its feature references
//! to (view, column) once, then costs one hash probe per entity and view, so
//! its cost does not grow with the number of registered views. TTL is
//! enforced on read: a row older than its view's TTL is reported as
//! `OUTSIDE_MAX_AGE` and its values are withheld.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use moka::ops::compute::Op;
use moka::sync::Cache;
use polars::prelude::*;
use polars_arrow::array::Array as _;
use serde::{Deserialize, Serialize};

use super::shared::{self, SharedTier};
use crate::error::{Error, Result};
use crate::schema::{FeatureService, FeatureView, split_ref};
use crate::window::WindowPlan;
use crate::window::history::{column_inputs, entity_keys as event_keys, micros};
use crate::window::live::LiveTiles;

/// One feature value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FeatureValue {
    /// No value.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(Arc<str>),
}

impl FeatureValue {
    /// The value as a number, when it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FeatureValue::Int(v) => Some(*v as f64),
            FeatureValue::Float(v) => Some(*v),
            FeatureValue::Bool(v) => Some(f64::from(u8::from(*v))),
            FeatureValue::Null | FeatureValue::Str(_) => None,
        }
    }

    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                FeatureValue::Str(s) => s.len(),
                _ => 0,
            }
    }
}

/// The status of one feature of one entity, named as Feast names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeatureStatus {
    /// The value is present and fresh.
    Present,
    /// No row exists for the entity.
    NotFound,
    /// A row exists but the feature is null.
    NullValue,
    /// The row is older than the view's TTL.
    OutsideMaxAge,
}

/// The latest row of one entity in one view.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineRow {
    /// The row's event time, microseconds since the epoch.
    pub event_micros: i64,
    /// The row's created time, microseconds since the epoch (breaks ties).
    pub created_micros: i64,
    /// Feature values in the view's feature order.
    pub values: Box<[FeatureValue]>,
}

/// The outcome of materializing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaterializeStats {
    /// Entities whose row was written.
    pub written: usize,
    /// Entities skipped because the store already held a newer row.
    pub skipped_older: usize,
}

/// Feature values for a batch of entities, row-major, in the order of the
/// requested feature references.
#[derive(Debug, Clone)]
pub struct FeatureBatch {
    /// One row per entity: (value, status) per feature.
    pub rows: Vec<Vec<(FeatureValue, FeatureStatus)>>,
    /// One row per entity: the event time (microseconds) of the stored row
    /// each value came from, when there was one.
    pub event_micros: Vec<Vec<Option<i64>>>,
}

/// The stored rows. Keys are hashed with foldhash (seeded per process):
/// several times faster than the default SipHash on short keys, which is a
/// visible share of a microsecond lookup.
type Rows = Cache<RowKey, Arc<OnlineRow>, foldhash::fast::RandomState>;

/// Resolved references: the view slot and column of each.
type Columns = Vec<(Arc<ViewSlot>, usize)>;

/// Feature references resolved to stored columns ([`OnlineStore::resolve`]).
#[derive(Debug, Clone)]
pub struct FeatureSet {
    features: Vec<String>,
    columns: Columns,
    /// The store's view generation when resolved.
    generation: u32,
}

impl FeatureSet {
    /// The definitions of the views the references name, each once, in
    /// order of first reference.
    pub fn views(&self) -> Vec<&FeatureView> {
        let mut views: Vec<&FeatureView> = Vec::new();
        for (slot, _) in &self.columns {
            if !views.iter().any(|v| v.name == slot.view.name) {
                views.push(&slot.view);
            }
        }
        views
    }
}

/// The most entities one lookup request may name (over HTTP or Flight).
pub const MAX_LOOKUP_ENTITIES: usize = 10_000;

/// Why a lookup request's entity columns do not fit the requested views.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityKeyError {
    /// The requested views have different join keys.
    #[error("feature view {view:?} is keyed by {keys:?}, other requested views by {expected:?}")]
    MixedEntities {
        /// The view that differs.
        view: String,
        /// Its join keys.
        keys: Vec<String>,
        /// The first view's join keys.
        expected: Vec<String>,
    },
    /// A column that is no join key of the views.
    #[error("{key:?} is not a join key of the requested views ({join_keys:?})")]
    UnknownKey {
        /// The column.
        key: String,
        /// The views' join keys.
        join_keys: Vec<String>,
    },
    /// A join key without a column.
    #[error("the requested views need entity key {0:?}")]
    MissingKey(String),
    /// Key columns of different lengths.
    #[error("entity key columns have different lengths")]
    Ragged,
    /// More entities than [`MAX_LOOKUP_ENTITIES`].
    #[error("{0} entities in one request; the limit is {MAX_LOOKUP_ENTITIES}")]
    TooMany(usize),
    /// A key value that is neither an integer nor a string of at most
    /// [`MAX_KEY_BYTES`].
    #[error(
        "entity key {key:?} row {row}: {value} is not an integer or a string of at most \
         {MAX_KEY_BYTES} bytes"
    )]
    InvalidKey {
        /// The join key.
        key: String,
        /// The row.
        row: usize,
        /// The value, as JSON.
        value: String,
    },
}

/// A lookup request's entity columns, checked against the requested views.
#[derive(Debug)]
pub struct LookupKeys<'a> {
    /// The views' join keys, in order.
    pub join_keys: Vec<String>,
    /// The request's column of each join key.
    pub columns: Vec<&'a [serde_json::Value]>,
    /// The online key of each entity.
    pub keys: Vec<String>,
}

/// Checks a request's `entities` (join key → one JSON value per entity)
/// against the views of `set` and builds each entity's online key.
pub fn lookup_keys<'a, K: std::borrow::Borrow<str> + Ord>(
    set: &FeatureSet,
    entities: &'a std::collections::BTreeMap<K, Vec<serde_json::Value>>,
) -> Result<LookupKeys<'a>, EntityKeyError> {
    let views = set.views();
    let join_keys = views
        .first()
        .map(|v| v.entity.join_keys.clone())
        .unwrap_or_default();
    if let Some(other) = views.iter().find(|v| v.entity.join_keys != join_keys) {
        return Err(EntityKeyError::MixedEntities {
            view: other.name.clone(),
            keys: other.entity.join_keys.clone(),
            expected: join_keys,
        });
    }
    if let Some(extra) = entities
        .keys()
        .map(|k| k.borrow())
        .find(|k| !join_keys.iter().any(|j| j == k))
    {
        return Err(EntityKeyError::UnknownKey {
            key: extra.to_string(),
            join_keys,
        });
    }
    let mut columns = Vec::with_capacity(join_keys.len());
    for key in &join_keys {
        let column = entities
            .get(key.as_str())
            .ok_or_else(|| EntityKeyError::MissingKey(key.clone()))?;
        columns.push(column.as_slice());
    }
    let rows = columns.first().map_or(0, |c| c.len());
    if columns.iter().any(|c| c.len() != rows) {
        return Err(EntityKeyError::Ragged);
    }
    if rows > MAX_LOOKUP_ENTITIES {
        return Err(EntityKeyError::TooMany(rows));
    }
    let part = |key: &String, row: usize, value: &serde_json::Value| {
        key_part(value).ok_or_else(|| EntityKeyError::InvalidKey {
            key: key.clone(),
            row,
            value: shown_key(value),
        })
    };
    let mut keys = Vec::with_capacity(rows);
    for row in 0..rows {
        keys.push(match (join_keys.as_slice(), columns.as_slice()) {
            // One join key: the key is its text, without the join.
            ([key], [column]) => part(key, row, &column[row])?,
            _ => entity_key(
                &join_keys
                    .iter()
                    .zip(&columns)
                    .map(|(key, column)| part(key, row, &column[row]))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        });
    }
    Ok(LookupKeys {
        join_keys,
        columns,
        keys,
    })
}

/// The longest string entity-key value, in bytes. Longer ones are refused
/// on lookups and pushes alike, so one request cannot fill the store's
/// index, the prediction log's queue or the monitor's index with a huge key.
pub const MAX_KEY_BYTES: usize = 1024;

/// One entity-key value as the online store keys it: a string (of at most
/// [`MAX_KEY_BYTES`]) as it is, an integer in decimal; anything else has no
/// key.
pub fn key_part(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.len() <= MAX_KEY_BYTES => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A key value as an error message shows it: as JSON, cut after 64
/// characters (a refused key may be huge).
pub fn shown_key(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text,
    }
}

/// Cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OnlineStats {
    /// Lookups that found a row.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Rows held.
    pub entries: u64,
    /// Bytes held, as the weigher counts them.
    pub weighted_bytes: u64,
    /// Rows evicted to stay within the memory budget.
    pub evictions: u64,
}

/// A stored row's key: the view's id (4 bytes, little-endian), then the
/// entity key's bytes. A byte string, so a lookup can probe with a key
/// built on the stack (`Box<[u8]>: Borrow<[u8]>`) instead of allocating.
type RowKey = Box<[u8]>;

const VIEW_ID_BYTES: usize = 4;

fn row_key(view: u32, entity: &str) -> RowKey {
    let mut key = Vec::with_capacity(VIEW_ID_BYTES + entity.len());
    key.extend_from_slice(&view.to_le_bytes());
    key.extend_from_slice(entity.as_bytes());
    key.into_boxed_slice()
}

fn key_view(key: &[u8]) -> u32 {
    let mut id = [0u8; VIEW_ID_BYTES];
    id.copy_from_slice(&key[..VIEW_ID_BYTES]);
    u32::from_le_bytes(id)
}

/// Calls `probe` with the key of (`view`, `entity`), built on the stack when
/// it is short.
fn with_row_key<R>(view: u32, entity: &str, probe: impl FnOnce(&[u8]) -> R) -> R {
    const STACK: usize = 64;
    let len = VIEW_ID_BYTES + entity.len();
    if len <= STACK {
        let mut key = [0u8; STACK];
        key[..VIEW_ID_BYTES].copy_from_slice(&view.to_le_bytes());
        key[VIEW_ID_BYTES..len].copy_from_slice(entity.as_bytes());
        probe(&key[..len])
    } else {
        probe(&row_key(view, entity))
    }
}

/// Rows and bytes one view holds. Maintained on write and in the removal
/// listener (replacement, eviction, invalidation), so it is exact once the
/// cache's pending maintenance has run.
#[derive(Debug, Default)]
struct ViewUsage {
    entries: AtomicI64,
    bytes: AtomicI64,
}

impl ViewUsage {
    fn add(&self, entries: i64, bytes: i64) {
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Per-view usage, by view id: shared with the cache's removal listener.
type UsageById = Arc<RwLock<HashMap<u32, Arc<ViewUsage>>>>;

#[derive(Debug)]
struct ViewSlot {
    id: u32,
    view: FeatureView,
    ttl_micros: i64,
    /// The Delta version last materialized, plus one (0: none yet).
    delta_version_plus_one: AtomicU64,
    usage: Arc<ViewUsage>,
    /// Feature name → column, so resolving a reference is one probe.
    columns: HashMap<String, usize>,
    /// A hash of the join keys and features: the shared tier keys rows by
    /// it, so a redefined view never reads rows of another layout.
    layout: String,
    /// The view's live window tiles, when its windows are valued at the
    /// read ([`FeatureView::request_windows`]); replaced whole on a full
    /// reload, so a read never sees half of one.
    live: Option<RwLock<Arc<LiveTiles>>>,
    /// Per feature column: its index among the window plan's values
    /// (`None`: taken from the stored row).
    at_read: Vec<Option<usize>>,
    /// The events-table version the live tiles hold, plus one.
    events_version_plus_one: AtomicU64,
    /// This process has recorded the view's TTL in the shared tier (for
    /// its sweep).
    ttl_recorded: AtomicBool,
}

impl ViewSlot {
    fn live(&self) -> Option<Arc<LiveTiles>> {
        self.live
            .as_ref()
            .map(|l| l.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// The request-time values of entity `entity` read at `now`, when the
    /// view has them and the entity has an event within the TTL: its
    /// stored (gold) row's, or one its tiles hold (a stream event not yet
    /// through the pipeline). Otherwise the row's status stands: not
    /// found, or outside max age.
    fn values_at(
        &self,
        entity: &str,
        stored: Option<&OnlineRow>,
        now: i64,
    ) -> Option<Vec<Option<f64>>> {
        let live = self.live()?;
        let fresh = |t: i64| now.saturating_sub(t) <= self.ttl_micros;
        if !stored.is_some_and(|row| fresh(row.event_micros))
            && !live.newest(entity).is_some_and(fresh)
        {
            return None;
        }
        thread_local! {
            // A lookup's scratch aggregates, reused: no allocation per read.
            static AGGS: std::cell::RefCell<Vec<crate::window::Agg>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut out = Vec::with_capacity(live.plan().names.len());
        AGGS.with_borrow_mut(|aggs| {
            live.aggregates(entity, now, aggs);
            live.plan().finish(aggs, &|_| None, &mut out);
        });
        Some(out)
    }
}

/// Rows and memory one feature view holds in the online store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ViewStats {
    /// The feature view.
    pub view: String,
    /// Entities held.
    pub entries: u64,
    /// Bytes held, as the weigher counts them.
    pub bytes: u64,
}

/// Where events applied to a view's window tiles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsFrom {
    /// Every event of the events table at this version: the tiles are
    /// rebuilt from them.
    Table(u64),
    /// Events just received from a stream: added to the tiles, and each
    /// one's time from its event time to visible observed.
    Stream,
    /// Events that reached bronze after the events table's version the
    /// tiles were loaded from (a restart catching up): added, not timed.
    Landed,
}

/// The in-memory online store.
pub struct OnlineStore {
    views: RwLock<HashMap<String, Arc<ViewSlot>>>,
    services: RwLock<HashMap<String, Arc<[String]>>>,
    usage: UsageById,
    rows: Rows,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    evictions: Arc<AtomicU64>,
    /// Held while the store lives; the housekeeper stops when it is gone.
    _alive: Arc<()>,
    next_view_id: std::sync::atomic::AtomicU32,
    /// The shared tier this store caches (L1), when there is one.
    tier: OnceLock<Arc<SharedTier>>,
}

/// The bytes a stored row costs, as the weigher counts them: key, row
/// header and values (strings by length).
fn row_weight(key: &RowKey, row: &OnlineRow) -> u32 {
    let bytes = std::mem::size_of::<RowKey>()
        + key.len()
        + std::mem::size_of::<OnlineRow>()
        + row.values.iter().map(FeatureValue::weight).sum::<usize>();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl std::fmt::Debug for OnlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnlineStore")
            .field("entries", &self.rows.entry_count())
            .finish()
    }
}

impl OnlineStore {
    /// An empty store that holds at most `memory_budget_bytes` of rows.
    pub fn new(memory_budget_bytes: u64) -> Self {
        let evictions = Arc::new(AtomicU64::new(0));
        let evicted = evictions.clone();
        let usage: UsageById = Arc::default();
        let listener_usage = usage.clone();
        let rows = Cache::builder()
            .max_capacity(memory_budget_bytes)
            .weigher(|key: &RowKey, row: &Arc<OnlineRow>| row_weight(key, row))
            .support_invalidation_closures()
            // Rows dropped to stay within the budget are counted: serving
            // NOT_FOUND for an evicted entity must be visible in metrics.
            // Every removal (a replaced row included) leaves its view's usage.
            .eviction_listener(move |key: Arc<RowKey>, row: Arc<OnlineRow>, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evicted.fetch_add(1, Ordering::Relaxed);
                }
                let by_id = listener_usage.read().unwrap_or_else(|e| e.into_inner());
                if let Some(usage) = by_id.get(&key_view(&key)) {
                    usage.add(-1, -i64::from(row_weight(&key, &row)));
                }
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        let hits = Arc::new(AtomicU64::new(0));
        let misses = Arc::new(AtomicU64::new(0));
        let alive = Arc::new(());
        start_housekeeper(
            rows.clone(),
            Arc::downgrade(&alive),
            hits.clone(),
            misses.clone(),
        );
        OnlineStore {
            views: RwLock::new(HashMap::new()),
            services: RwLock::new(HashMap::new()),
            usage,
            rows,
            hits,
            misses,
            _alive: alive,
            evictions,
            next_view_id: std::sync::atomic::AtomicU32::new(0),
            tier: OnceLock::new(),
        }
    }

    /// Puts this store in front of a shared tier: from now on rows are
    /// written to the tier (once, for every replica) and read through this
    /// store as a bounded L1 cache that writes anywhere invalidate. Starts
    /// the tier's subscriber and health check (inside a tokio runtime).
    pub fn attach_tier(self: &Arc<Self>, tier: SharedTier) -> Result<()> {
        let tier = Arc::new(tier);
        self.tier
            .set(tier.clone())
            .map_err(|_| Error::Internal("the online store already has a shared tier".into()))?;
        tier.start(Arc::downgrade(self));
        Ok(())
    }

    /// The shared tier, when the store caches one.
    pub fn tier(&self) -> Option<&Arc<SharedTier>> {
        self.tier.get()
    }

    /// Whether lookups can be answered: always for the memory store; with a
    /// shared tier, while it answers and its invalidations arrive.
    pub fn is_ready(&self) -> bool {
        self.tier().is_none_or(|tier| tier.is_ready())
    }

    /// Empties L1 (the shared tier's rows stay).
    pub(crate) fn clear_l1(&self) {
        self.rows.invalidate_all();
    }

    /// Drops rows of one view from L1 (the view looked up once); how many
    /// L1 held.
    pub(crate) fn invalidate_l1_rows(&self, view: &str, layout: &str, entities: &[&str]) -> usize {
        let Ok(slot) = self.slot(view) else {
            return 0;
        };
        if slot.layout != layout {
            return 0;
        }
        entities
            .iter()
            .filter(|entity| with_row_key(slot.id, entity, |key| self.rows.remove(key)).is_some())
            .count()
    }

    /// Garbage collection of the shared tier: deletes the rows whose TTL
    /// ended longer ago than the grace ([`shared::sweep_cutoff`]); returns
    /// how many. The TTLs are those the writers recorded in the tier (every
    /// view and layout written, by any replica or command), this store's
    /// own views taking precedence. Replicas run it about once an hour, one
    /// at a time; nothing to do without a tier.
    pub async fn sweep_tier(&self) -> Result<usize> {
        let Some(tier) = self.tier() else {
            return Ok(0);
        };
        let mut ttls = tier.recorded_ttls().await?;
        for slot in self
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            ttls.insert(
                format!("{}:{}", slot.view.name, slot.layout),
                slot.ttl_micros,
            );
        }
        let now = super::push::now_micros();
        let views: Vec<(String, i64)> = ttls
            .into_iter()
            .filter_map(|(suffix, ttl)| Some((suffix, shared::sweep_cutoff(ttl, now)?)))
            .collect();
        tier.sweep(&views).await
    }

    /// Reads the versions recorded in the shared tier into the views'
    /// served versions (another replica may have materialized).
    pub(crate) async fn refresh_versions(&self) -> Result<()> {
        let Some(tier) = self.tier() else {
            return Ok(());
        };
        let versions = tier.loaded_versions().await?;
        let views: Vec<Arc<ViewSlot>> = self
            .views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in views {
            if let Some(version) = versions.get(&format!("{}:{}", slot.view.name, slot.layout)) {
                slot.delta_version_plus_one
                    .fetch_max(version.saturating_add(1), Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Registers (or replaces the definition of) a feature view.
    ///
    /// A replaced view gets a fresh identity, so rows stored under the old
    /// definition (whose feature layout may differ) are never read through
    /// the new one; they age out of the cache.
    pub fn register_view(&self, view: FeatureView) {
        let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
        // The id doubles as the store's view generation (FeatureSet).
        let id = self.next_view_id.fetch_add(1, Ordering::AcqRel);
        if let Some(old) = views.get(&view.name) {
            let old_id = old.id;
            // Dropping the old rows eagerly frees the budget for the new ones.
            let _ = self
                .rows
                .invalidate_entries_if(move |key, _| key_view(key) == old_id);
        }
        let usage = Arc::new(ViewUsage::default());
        self.usage
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, usage.clone());
        let columns = view
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        let (live, at_read) = match &view.request_windows {
            Some(windows) => match WindowPlan::new(windows, &[]) {
                Ok(plan) => {
                    let at_read = view
                        .features
                        .iter()
                        .map(|f| plan.names.iter().position(|n| n == f))
                        .collect();
                    let tiles = LiveTiles::new(plan, 0, Arc::default());
                    (Some(RwLock::new(Arc::new(tiles))), at_read)
                }
                Err(message) => {
                    // The project checker parses every expression first.
                    tracing::error!(view = %view.name, "request-time windows: {message}; serving the gold rows' values");
                    (None, vec![None; view.features.len()])
                }
            },
            None => (None, vec![None; view.features.len()]),
        };
        let slot = ViewSlot {
            layout: layout(&view),
            id,
            live,
            at_read,
            events_version_plus_one: AtomicU64::new(0),
            ttl_recorded: AtomicBool::new(false),
            ttl_micros: view.ttl_micros(),
            view,
            delta_version_plus_one: AtomicU64::new(0),
            usage,
            columns,
        };
        views.insert(slot.view.name.clone(), Arc::new(slot));
    }

    /// Registers (or replaces) a feature service: a named feature list that
    /// lookups can ask for by name.
    pub fn register_service(&self, service: FeatureService) {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.name, service.features.into());
    }

    /// Every registered feature service, by name.
    pub fn services(&self) -> Vec<FeatureService> {
        let services = self.services.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<FeatureService> = services
            .iter()
            .map(|(name, features)| FeatureService {
                name: name.clone(),
                features: features.to_vec(),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The features of a registered feature service.
    pub fn service(&self, name: &str) -> Option<Arc<[String]>> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every registered view, by name.
    pub fn views(&self) -> Vec<FeatureView> {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<FeatureView> = views.values().map(|slot| slot.view.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The definition of a registered view.
    pub fn view(&self, name: &str) -> Option<FeatureView> {
        self.slot(name).ok().map(|slot| slot.view.clone())
    }

    /// The Delta version of the view's table last materialized, if any.
    pub fn delta_version(&self, view: &str) -> Option<u64> {
        let slot = self.slot(view).ok()?;
        slot.delta_version_plus_one
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// Writes `row` for `entity` into this process's store unless it holds
    /// a newer one (by event time, then created time); whether it was
    /// written. The tests' synchronous form of [`OnlineStore::write`].
    #[cfg(test)]
    fn upsert(&self, view: &str, entity: &str, row: OnlineRow) -> Result<bool> {
        let slot = self.slot(view)?;
        check_width(&slot, &row)?;
        Ok(self.put_if_newer(&slot, entity, Arc::new(row)))
    }

    /// Loads the latest row per entity of `df` (a frame of the view's gold
    /// table) into this process's store and records `delta_version` as the
    /// version served. With a shared tier, use [`OnlineStore::load`].
    pub fn materialize(
        &self,
        view: &FeatureView,
        df: &DataFrame,
        delta_version: u64,
    ) -> Result<MaterializeStats> {
        let slot = self.slot(&view.name)?;
        let latest = LatestRows::new(view, df)?;
        let mut stats = MaterializeStats {
            written: 0,
            skipped_older: 0,
        };
        for i in 0..latest.len() {
            let (key, row) = latest.row(i)?;
            if self.put_if_newer(&slot, key, Arc::new(row)) {
                stats.written += 1;
            } else {
                stats.skipped_older += 1;
            }
        }
        slot.delta_version_plus_one
            .fetch_max(delta_version.saturating_add(1), Ordering::AcqRel);
        Ok(stats)
    }

    /// [`OnlineStore::materialize`], into the shared tier when the store
    /// caches one (written once for every replica, in pipelined batches,
    /// latest row winning on the server) and the version recorded there.
    pub async fn load(
        &self,
        view: &FeatureView,
        df: &DataFrame,
        delta_version: u64,
    ) -> Result<MaterializeStats> {
        let Some(tier) = self.tier() else {
            return self.materialize(view, df, delta_version);
        };
        let slot = self.slot(&view.name)?;
        self.record_ttl(tier, &slot).await?;
        // Written in bucket order, so each bucket's rows go in one staging
        // hash and, when the tier has none of them yet, into place whole;
        // encoded first in the frame's order (the columns read in memory
        // order), in parallel, then taken in bucket order. CPU work over
        // the whole table: off the async workers where the runtime allows.
        let prepare = || -> Result<_> {
            let (latest, order, buckets) = LatestRows::by_bucket(view, df)?;
            let encoded = EncodedRows::encode(&latest)?;
            Ok((latest, order, buckets, encoded))
        };
        let (latest, order, buckets, encoded) = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(prepare)?
            }
            _ => prepare()?,
        };
        const BATCH: usize = 262_144;
        let mut written = 0;
        let mut start = 0;
        while start < order.len() {
            let mut end = (start + BATCH).min(order.len());
            while end < order.len() && buckets[end] == buckets[end - 1] {
                end += 1;
            }
            let rows: Vec<shared::TierRow> = (start..end)
                .map(|k| {
                    let i = order[k] as usize;
                    (buckets[k], latest.keys[i].as_str(), encoded.row(i))
                })
                .collect();
            written += tier.write(&view.name, &slot.layout, rows, true).await?;
            start = end;
        }
        tier.record_version(&view.name, &slot.layout, delta_version)
            .await?;
        slot.delta_version_plus_one
            .fetch_max(delta_version.saturating_add(1), Ordering::AcqRel);
        Ok(MaterializeStats {
            written,
            skipped_older: latest.len() - written,
        })
    }

    /// Records the view's TTL in the tier for its sweep (rows never expire
    /// by themselves), once per process and view; nothing for a view
    /// without a TTL.
    async fn record_ttl(&self, tier: &SharedTier, slot: &ViewSlot) -> Result<()> {
        let now = super::push::now_micros();
        if shared::sweep_cutoff(slot.ttl_micros, now).is_some()
            && !slot.ttl_recorded.load(Ordering::Acquire)
        {
            tier.record_ttl(&slot.view.name, &slot.layout, slot.ttl_micros)
                .await?;
            slot.ttl_recorded.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The Delta version of the view last materialized: by this process,
    /// or, with a shared tier, by any replica or command.
    pub async fn loaded_version(&self, view: &str) -> Result<Option<u64>> {
        match self.tier() {
            None => Ok(self.delta_version(view)),
            Some(tier) => {
                let slot = self.slot(view)?;
                let version = tier.loaded_version(view, &slot.layout).await?;
                if let Some(version) = version {
                    // Lookups report the version served; another replica
                    // may have loaded it.
                    slot.delta_version_plus_one
                        .fetch_max(version.saturating_add(1), Ordering::AcqRel);
                }
                Ok(version)
            }
        }
    }

    /// Writes rows of one view (each unless the store holds a newer one),
    /// to the shared tier when there is one, and returns how many were
    /// written. Rows are (entity key, row).
    pub async fn write(&self, view: &str, rows: Vec<(String, OnlineRow)>) -> Result<usize> {
        let slot = self.slot(view)?;
        for (_, row) in &rows {
            check_width(&slot, row)?;
        }
        let Some(tier) = self.tier() else {
            return Ok(rows
                .into_iter()
                .map(|(entity, row)| self.put_if_newer(&slot, &entity, Arc::new(row)))
                .filter(|&written| written)
                .count());
        };
        self.record_ttl(tier, &slot).await?;
        // The newest row per entity only (a later one on a tie): the merge
        // script compares each row with the stored one, not with the others
        // of the call.
        let mut newest: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
        for (i, (entity, row)) in rows.iter().enumerate() {
            newest
                .entry(entity.as_str())
                .and_modify(|best| {
                    let held = &rows[*best].1;
                    if (row.event_micros, row.created_micros)
                        >= (held.event_micros, held.created_micros)
                    {
                        *best = i;
                    }
                })
                .or_insert(i);
        }
        let kept: Vec<&(String, OnlineRow)> = if newest.len() == rows.len() {
            rows.iter().collect()
        } else {
            let mut kept: Vec<usize> = newest.into_values().collect();
            kept.sort_unstable();
            kept.into_iter().map(|i| &rows[i]).collect()
        };
        let values: Vec<Vec<u8>> = kept.iter().map(|(_, row)| shared::encode(row)).collect();
        let encoded: Vec<shared::TierRow> = kept
            .iter()
            .zip(&values)
            .map(|((entity, _), value)| (shared::bucket_of(entity), entity.as_str(), &value[..]))
            .collect();
        let stripes: Vec<usize> = rows
            .iter()
            .map(|(entity, _)| tier.stripe(view, &slot.layout, entity))
            .collect();
        let written = tier.write(view, &slot.layout, encoded, false).await;
        // This replica reads its own writes at once (a read in flight does
        // not cache what it fetched before); the others drop them when the
        // tier's notice arrives. Also after a failed write: some rows may
        // have landed.
        for ((entity, _), stripe) in rows.iter().zip(stripes) {
            tier.bump(stripe);
            with_row_key(slot.id, entity, |key| self.rows.invalidate(key));
        }
        written
    }

    /// Resolves `features` (`view:feature` references) once, for lookups
    /// that repeat the same list (a model's inputs, a feature service): a
    /// prepared [`FeatureSet`] skips parsing and name lookups on each call.
    pub fn resolve<S: AsRef<str>>(&self, features: &[S]) -> Result<FeatureSet> {
        let (columns, generation) = self.resolve_columns(features)?;
        Ok(FeatureSet {
            features: features.iter().map(|f| f.as_ref().to_string()).collect(),
            columns,
            generation,
        })
    }

    fn resolve_columns<S: AsRef<str>>(&self, features: &[S]) -> Result<(Columns, u32)> {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        // Read under the lock that register_view holds while it changes
        // both, so the generation matches the slots resolved.
        let generation = self.next_view_id.load(Ordering::Acquire);
        let mut columns: Columns = Vec::with_capacity(features.len());
        for reference in features {
            let reference = reference.as_ref();
            let unknown = || Error::UnknownFeature(reference.to_string());
            let (view, feature) = split_ref(reference).ok_or_else(unknown)?;
            let slot = match columns.last() {
                Some((last, _)) if last.view.name == view => last.clone(),
                _ => views.get(view).cloned().ok_or_else(unknown)?,
            };
            let column = *slot.columns.get(feature).ok_or_else(unknown)?;
            columns.push((slot, column));
        }
        Ok((columns, generation))
    }

    /// Looks up `features` (`view:feature` references) for each entity key
    /// at time `now_micros`, enforcing each view's TTL.
    pub fn get<S: AsRef<str>>(
        &self,
        features: &[S],
        entity_keys: &[String],
        now_micros: i64,
    ) -> Result<FeatureBatch> {
        let (columns, _) = self.resolve_columns(features)?;
        Ok(self.lookup(&columns, entity_keys, now_micros))
    }

    /// [`OnlineStore::get`] with features resolved beforehand. A set
    /// resolved before a view was (re-)registered is resolved again.
    pub fn get_set(
        &self,
        set: &FeatureSet,
        entity_keys: &[String],
        now_micros: i64,
    ) -> Result<FeatureBatch> {
        if set.generation != self.next_view_id.load(Ordering::Acquire) {
            return self.get(&set.features, entity_keys, now_micros);
        }
        Ok(self.lookup(&set.columns, entity_keys, now_micros))
    }

    /// [`OnlineStore::get_set`] through the shared tier when the store
    /// caches one: rows found in L1 are answered from it, the others read
    /// from the tier in one round trip (and cached unless a write raced
    /// with the read). Without a tier it is `get_set`.
    pub async fn fetch(
        &self,
        set: &FeatureSet,
        entity_keys: &[String],
        now_micros: i64,
    ) -> Result<FeatureBatch> {
        let Some(tier) = self.tier() else {
            return self.get_set(set, entity_keys, now_micros);
        };
        let resolved;
        let columns = if set.generation == self.next_view_id.load(Ordering::Acquire) {
            &set.columns
        } else {
            resolved = self.resolve_columns(&set.features)?.0;
            &resolved
        };
        // The views the set reads, each once.
        let mut views: Vec<&Arc<ViewSlot>> = Vec::new();
        for (slot, _) in columns {
            if !views.iter().any(|v| v.id == slot.id) {
                views.push(slot);
            }
        }
        // Each column's index in `views`.
        let view_of: Vec<usize> = columns
            .iter()
            .map(|(slot, _)| views.iter().position(|v| v.id == slot.id).unwrap_or(0))
            .collect();
        let use_l1 = tier.is_ready();
        let generation = tier.generation();
        let mut found: Vec<Option<Arc<OnlineRow>>> = vec![None; entity_keys.len() * views.len()];
        // The Redis keys to read, and for each (index in `found`, stripe,
        // the stripe's epoch before the read).
        let mut cells: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut missing: Vec<(usize, usize, u64)> = Vec::new();
        for (e, entity) in entity_keys.iter().enumerate() {
            for (v, slot) in views.iter().enumerate() {
                let index = e * views.len() + v;
                if use_l1 && let Some(row) = with_row_key(slot.id, entity, |key| self.rows.get(key))
                {
                    found[index] = Some(row);
                    continue;
                }
                let key = tier.key(&slot.view.name, &slot.layout, shared::bucket_of(entity));
                let stripe = tier.stripe(&slot.view.name, &slot.layout, entity);
                missing.push((index, stripe, tier.epoch(stripe)));
                cells.push((key, entity.as_str()));
            }
        }
        let stats = tier.stats();
        stats
            .l1_hits
            .fetch_add((found.len() - missing.len()) as u64, Ordering::Relaxed);
        stats
            .l1_misses
            .fetch_add(missing.len() as u64, Ordering::Relaxed);
        if !missing.is_empty() {
            let values = tier.read(&cells).await?;
            if values.len() != cells.len() {
                return Err(Error::OnlineTier {
                    message: format!(
                        "{} answered {} values for {} keys",
                        tier.shown(),
                        values.len(),
                        cells.len()
                    ),
                });
            }
            for ((index, stripe, epoch), value) in missing.into_iter().zip(values) {
                let Some(bytes) = value else { continue };
                let slot = views[index % views.len()];
                let entity = &entity_keys[index / views.len()];
                let row = shared::decode(&bytes, slot.view.features.len()).map_err(|message| {
                    stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                    Error::OnlineTierValue {
                        view: slot.view.name.clone(),
                        entity: entity.clone(),
                        message,
                    }
                })?;
                let row = Arc::new(row);
                // Cached only when no write to this row (or loss of the
                // invalidation feed) happened since the read was sent.
                let unchanged = || {
                    tier.is_ready()
                        && tier.generation() == generation
                        && tier.epoch(stripe) == epoch
                };
                if use_l1 && unchanged() {
                    self.put_if_newer(slot, entity, row.clone());
                    // An invalidation bumps the epoch before it removes the
                    // row: one that ran between the check and the insert
                    // either shows here or removes what was inserted.
                    if !unchanged() {
                        with_row_key(slot.id, entity, |key| self.rows.invalidate(key));
                    }
                }
                found[index] = Some(row);
            }
        }
        // Counted per row probed, as the memory store counts (not per
        // feature: 50 contended increments a lookup showed in its p99).
        let present = found.iter().filter(|r| r.is_some()).count() as u64;
        self.hits.fetch_add(present, Ordering::Relaxed);
        self.misses
            .fetch_add(found.len() as u64 - present, Ordering::Relaxed);
        let mut rows = Vec::with_capacity(entity_keys.len());
        let mut times = Vec::with_capacity(entity_keys.len());
        for (e, entity) in entity_keys.iter().enumerate() {
            let mut row = Vec::with_capacity(columns.len());
            let mut row_times = Vec::with_capacity(columns.len());
            let at_read: Vec<Option<Vec<Option<f64>>>> = views
                .iter()
                .enumerate()
                .map(|(v, slot)| {
                    slot.live.as_ref().and_then(|_| {
                        slot.values_at(entity, found[e * views.len() + v].as_deref(), now_micros)
                    })
                })
                .collect();
            for ((slot, column), &v) in columns.iter().zip(&view_of) {
                let stored = found[e * views.len() + v].as_deref();
                row_times.push(stored.map(|r| r.event_micros));
                row.push(cell_at(
                    slot,
                    *column,
                    stored,
                    now_micros,
                    at_read[v].as_deref(),
                ));
            }
            rows.push(row);
            times.push(row_times);
        }
        Ok(FeatureBatch {
            rows,
            event_micros: times,
        })
    }

    fn lookup(&self, resolved: &Columns, entity_keys: &[String], now_micros: i64) -> FeatureBatch {
        let mut rows = Vec::with_capacity(entity_keys.len());
        let mut times = Vec::with_capacity(entity_keys.len());
        for entity in entity_keys {
            let mut row = Vec::with_capacity(resolved.len());
            let mut row_times = Vec::with_capacity(resolved.len());
            // Consecutive features of one view share a probe (and the row
            // is borrowed, not re-counted, for each of them).
            let mut probed: Option<u32> = None;
            let mut found: Option<Arc<OnlineRow>> = None;
            let mut at_read: Option<Vec<Option<f64>>> = None;
            for (slot, column) in resolved {
                if probed != Some(slot.id) {
                    found = with_row_key(slot.id, entity, |key| self.rows.get(key));
                    let counter = if found.is_some() {
                        &self.hits
                    } else {
                        &self.misses
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    probed = Some(slot.id);
                    at_read = slot
                        .live
                        .as_ref()
                        .and_then(|_| slot.values_at(entity, found.as_deref(), now_micros));
                }
                let stored = found.as_deref();
                row_times.push(stored.map(|r| r.event_micros));
                row.push(cell_at(
                    slot,
                    *column,
                    stored,
                    now_micros,
                    at_read.as_deref(),
                ));
            }
            rows.push(row);
            times.push(row_times);
        }
        FeatureBatch {
            rows,
            event_micros: times,
        }
    }

    /// Applies events of `view` (join keys, its events' time column and
    /// the aggregated columns: rows of its source's silver table) to its
    /// live window tiles, as of the clock `now_micros`. From
    /// [`EventsFrom::Table`], the tiles are rebuilt from these events alone
    /// and swapped in whole, and the version recorded as what they hold;
    /// otherwise they are added (and from [`EventsFrom::Stream`] each
    /// event's time to visible is observed). Returns the events applied (those no window
    /// read from now can reach are not).
    pub fn apply_events(
        &self,
        view: &str,
        events: &DataFrame,
        now_micros: i64,
        from: EventsFrom,
    ) -> Result<usize> {
        let replace = match from {
            EventsFrom::Table(version) => Some(version),
            EventsFrom::Stream | EventsFrom::Landed => None,
        };
        let slot = self.slot(view)?;
        let (Some(live), Some(windows)) = (slot.live(), slot.view.request_windows.as_ref()) else {
            return Ok(0);
        };
        let schema_err = |message: String| Error::Schema {
            view: view.to_string(),
            message: format!("its events: {message}"),
        };
        let plan = live.plan().clone();
        let keys = event_keys(events, &slot.view.entity.join_keys).map_err(schema_err)?;
        let times = micros(events, &windows.timestamp_column).map_err(schema_err)?;
        let mut values = Vec::with_capacity(plan.columns.len());
        let mut distinct = Vec::with_capacity(plan.columns.len());
        for (column, counted) in plan.columns.iter().zip(&plan.distinct) {
            let (v, k) = column_inputs(events, column, *counted).map_err(schema_err)?;
            values.push(v);
            distinct.push(k);
        }
        let target = match replace {
            Some(_) => Arc::new(LiveTiles::new(plan.clone(), 0, live.stats().clone())),
            None => live,
        };
        let mut applied = 0;
        let mut row_values = vec![None; plan.columns.len()];
        let mut row_keys = vec![None; plan.columns.len()];
        for (i, (key, t)) in keys.iter().zip(&times).enumerate() {
            let (Some(key), Some(t)) = (key, t) else {
                continue;
            };
            for c in 0..plan.columns.len() {
                row_values[c] = values[c][i];
                row_keys[c] = distinct[c].get(i).copied().flatten();
            }
            if target.apply(key, *t, &row_values, &row_keys, now_micros) {
                applied += 1;
            }
        }
        if from == EventsFrom::Stream {
            let visible = chrono::Utc::now().timestamp_micros();
            let histogram = &target.stats().visible_seconds;
            for t in times.iter().flatten() {
                histogram.observe((visible - t).max(0) as f64 / 1e6);
            }
        }
        if let (Some(version), Some(lock)) = (replace, &slot.live) {
            // Loaded in any order: each entity's merge of its window's
            // earlier tiles made now, not by the first reads.
            target.ready(now_micros);
            *lock.write().unwrap_or_else(|e| e.into_inner()) = target;
            slot.events_version_plus_one
                .store(version.saturating_add(1), Ordering::Release);
        }
        Ok(applied)
    }

    /// The events-table version `view`'s live tiles were last loaded
    /// from (`None`: not loaded, or the view has none).
    pub fn events_version(&self, view: &str) -> Option<u64> {
        let slot = self.slot(view).ok()?;
        slot.events_version_plus_one
            .load(Ordering::Acquire)
            .checked_sub(1)
    }

    /// The live tiles of `view`, when its windows are valued at the read.
    pub fn live_tiles(&self, view: &str) -> Option<Arc<LiveTiles>> {
        self.slot(view).ok()?.live()
    }

    /// Hit, miss and size counters.
    pub fn stats(&self) -> OnlineStats {
        self.rows.run_pending_tasks();
        OnlineStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.rows.entry_count(),
            weighted_bytes: self.rows.weighted_size(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Entities and bytes held per view, by view name.
    pub fn view_stats(&self) -> Vec<ViewStats> {
        self.rows.run_pending_tasks();
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<ViewStats> = views
            .values()
            .map(|slot| ViewStats {
                view: slot.view.name.clone(),
                entries: u64::try_from(slot.usage.entries.load(Ordering::Relaxed)).unwrap_or(0),
                bytes: u64::try_from(slot.usage.bytes.load(Ordering::Relaxed)).unwrap_or(0),
            })
            .collect();
        all.sort_by(|a, b| a.view.cmp(&b.view));
        all
    }

    fn slot(&self, view: &str) -> Result<Arc<ViewSlot>> {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(view)
            .cloned()
            .ok_or_else(|| Error::UnknownFeature(format!("{view}:*")))
    }

    fn put_if_newer(&self, slot: &ViewSlot, entity: &str, row: Arc<OnlineRow>) -> bool {
        let key = row_key(slot.id, entity);
        let weight = i64::from(row_weight(&key, &row));
        let result = self
            .rows
            .entry(key)
            .and_compute_with(|existing| match existing {
                Some(old)
                    if (old.value().event_micros, old.value().created_micros)
                        > (row.event_micros, row.created_micros) =>
                {
                    Op::Nop
                }
                _ => Op::Put(row),
            });
        let written = !matches!(result, moka::ops::compute::CompResult::Unchanged(_));
        if written {
            // A replaced row leaves through the removal listener.
            slot.usage.add(1, weight);
        }
        written
    }
}

/// One feature of one entity as a lookup answers it: the TTL enforced on
/// read.
#[inline]
fn cell(
    slot: &ViewSlot,
    column: usize,
    stored: Option<&OnlineRow>,
    now_micros: i64,
) -> (FeatureValue, FeatureStatus) {
    match stored {
        None => (FeatureValue::Null, FeatureStatus::NotFound),
        Some(r) if now_micros.saturating_sub(r.event_micros) > slot.ttl_micros => {
            (FeatureValue::Null, FeatureStatus::OutsideMaxAge)
        }
        Some(r) => match r.values.get(column) {
            None | Some(FeatureValue::Null) => (FeatureValue::Null, FeatureStatus::NullValue),
            Some(v) => (v.clone(), FeatureStatus::Present),
        },
    }
}

/// [`cell`], with the view's request-time values when it has them: a
/// feature valued at the read comes from them, the others from the row.
#[inline]
fn cell_at(
    slot: &ViewSlot,
    column: usize,
    stored: Option<&OnlineRow>,
    now_micros: i64,
    at_read: Option<&[Option<f64>]>,
) -> (FeatureValue, FeatureStatus) {
    if let (Some(values), Some(Some(at))) = (at_read, slot.at_read.get(column)) {
        return match values.get(*at).copied().flatten() {
            Some(v) => (FeatureValue::Float(v), FeatureStatus::Present),
            None => (FeatureValue::Null, FeatureStatus::NullValue),
        };
    }
    cell(slot, column, stored, now_micros)
}

fn check_width(slot: &ViewSlot, row: &OnlineRow) -> Result<()> {
    if row.values.len() != slot.view.features.len() {
        return Err(Error::Schema {
            view: slot.view.name.clone(),
            message: format!(
                "row has {} values, the view has {} features",
                row.values.len(),
                slot.view.features.len()
            ),
        });
    }
    Ok(())
}

/// The layout hash of a view: its join keys and features, in order.
fn layout(view: &FeatureView) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for key in &view.entity.join_keys {
        hasher.update(key.as_bytes());
        hasher.update([0x1f]);
    }
    hasher.update([0x1e]);
    for feature in &view.features {
        hasher.update(feature.as_bytes());
        hasher.update([0x1f]);
    }
    // The shared tier's key scheme: rows written under an earlier one
    // (a key per row) are never read as if loaded.
    hasher.update(b"\x1dbucketed hashes");
    hex::encode(&hasher.finalize()[..6])
}

/// A load's rows encoded as the tier stores them, in chunks of
/// [`EncodedRows::CHUNK`] rows (row `i` is in chunk `i / CHUNK` and ends at
/// its `ends[i % CHUNK]`).
struct EncodedRows {
    chunks: Vec<(Vec<u8>, Vec<usize>)>,
}

impl EncodedRows {
    const CHUNK: usize = 16_384;

    /// Encodes every row, a chunk at a time on rayon's threads, straight
    /// from the columns: no row built.
    fn encode(latest: &LatestRows) -> Result<Self> {
        use rayon::prelude::*;
        let chunks = (0..latest.len().div_ceil(Self::CHUNK))
            .into_par_iter()
            .map(|c| {
                let (start, end) = (c * Self::CHUNK, ((c + 1) * Self::CHUNK).min(latest.len()));
                let mut bytes = Vec::with_capacity((end - start) * (40 + 9 * latest.columns.len()));
                let mut ends = Vec::with_capacity(end - start);
                // Rows ascend in the frame: each column's chunk is found
                // by walking, not searched per value.
                let mut chunks = vec![0; latest.columns.len()];
                for i in start..end {
                    let (_, event_micros, created_micros) = latest.times(i)?;
                    shared::encode_header(event_micros, created_micros, &mut bytes);
                    let row = latest.rows[i] as usize;
                    for (column, chunk) in latest.columns.iter().zip(chunks.iter_mut()) {
                        shared::encode_value(&column.value_from(chunk, row), &mut bytes);
                    }
                    ends.push(bytes.len());
                }
                Ok((bytes, ends))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(EncodedRows { chunks })
    }

    /// Row `i`'s encoded value.
    fn row(&self, i: usize) -> &[u8] {
        let (bytes, ends) = &self.chunks[i / Self::CHUNK];
        let k = i % Self::CHUNK;
        let start = if k == 0 { 0 } else { ends[k - 1] };
        &bytes[start..ends[k]]
    }
}

/// The indices of `buckets` ordered by bucket (a counting sort: stable, so
/// each bucket's rows keep their order).
fn order_by_bucket(buckets: &[u32]) -> Vec<u32> {
    let mut starts = vec![0u32; shared::BUCKETS as usize + 1];
    for &b in buckets {
        starts[b as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut order = vec![0u32; buckets.len()];
    for (i, &b) in buckets.iter().enumerate() {
        order[starts[b as usize] as usize] = i as u32;
        starts[b as usize] += 1;
    }
    order
}

/// The latest row per entity of a gold frame, typed for building rows one
/// at a time.
struct LatestRows {
    view: String,
    timestamp_column: String,
    keys: Vec<String>,
    event: Vec<Option<i64>>,
    created: Vec<Option<i64>>,
    /// The gold frame's feature columns (all of its rows).
    columns: Vec<TypedColumn>,
    /// Per latest row, its row in the gold frame (ascending).
    rows: Vec<u32>,
}

impl LatestRows {
    fn new(view: &FeatureView, df: &DataFrame) -> Result<Self> {
        Ok(Self::build(view, df, false)?.0)
    }

    /// Row `i`'s value of feature column `column`.
    fn value(&self, column: usize, i: usize) -> FeatureValue {
        self.columns[column].value(self.rows[i] as usize)
    }

    /// The latest rows, and their order by shared tier bucket (each
    /// bucket's rows together) with those buckets. The rows stay in the
    /// frame's order, so encoding them reads the columns in memory order;
    /// only the encoded rows are taken in bucket order.
    fn by_bucket(view: &FeatureView, df: &DataFrame) -> Result<(Self, Vec<u32>, Vec<u32>)> {
        Self::build(view, df, true)
    }

    fn build(
        view: &FeatureView,
        df: &DataFrame,
        by_bucket: bool,
    ) -> Result<(Self, Vec<u32>, Vec<u32>)> {
        let schema_err = |message: String| Error::Schema {
            view: view.name.clone(),
            message,
        };
        // The latest row per entity by event then created time (a null
        // time before any other; on a tie the later row).
        if u32::try_from(df.height()).is_err() {
            return Err(schema_err(format!(
                "{} gold rows at once: more than a load indexes (2^32)",
                df.height()
            )));
        }
        use rayon::prelude::*;
        let mut all_keys = entity_keys(df, &view.entity.join_keys).map_err(schema_err)?;
        let all_event = micros(df, &view.timestamp_column).map_err(schema_err)?;
        let all_created = micros(df, &view.created_column).map_err(schema_err)?;
        // Rows grouped by bucket (the tier's, used here in memory too: an
        // entity's rows share one), then each bucket's latest per entity
        // found in a small map that stays in cache, buckets in parallel.
        let row_buckets: Vec<u32> = all_keys.par_iter().map(|k| shared::bucket_of(k)).collect();
        let grouped = order_by_bucket(&row_buckets);
        let groups: Vec<&[u32]> = grouped
            .chunk_by(|a, b| row_buckets[*a as usize] == row_buckets[*b as usize])
            .collect();
        let latest_in_bucket_order: Vec<u32> = groups
            .par_chunks(1_024)
            .map(|groups| {
                let mut latest: HashMap<&str, u32, foldhash::fast::FixedState> = HashMap::default();
                let mut winners = Vec::new();
                for group in groups {
                    latest.clear();
                    for &i in *group {
                        let time = |j: u32| (all_event[j as usize], all_created[j as usize]);
                        latest
                            .entry(all_keys[i as usize].as_str())
                            .and_modify(|best| {
                                if time(i) >= time(*best) {
                                    *best = i;
                                }
                            })
                            .or_insert(i);
                    }
                    let from = winners.len();
                    winners.extend(latest.values());
                    winners[from..].sort_unstable();
                }
                winners
            })
            .flatten_iter()
            .collect();
        // The rows in the frame's order (encoding reads the columns in
        // memory order), and where each stands in bucket order.
        let mut by_row: Vec<(u32, u32)> = latest_in_bucket_order
            .iter()
            .enumerate()
            .map(|(k, &row)| (row, k as u32))
            .collect();
        by_row.par_sort_unstable();
        let rows: Vec<u32> = by_row.iter().map(|&(row, _)| row).collect();
        let (order, buckets) = if by_bucket {
            let mut order = vec![0u32; by_row.len()];
            for (position, &(_, k)) in by_row.iter().enumerate() {
                order[k as usize] = position as u32;
            }
            let buckets = latest_in_bucket_order
                .iter()
                .map(|&row| row_buckets[row as usize])
                .collect();
            (order, buckets)
        } else {
            (Vec::new(), Vec::new())
        };
        let keys: Vec<String> = rows
            .iter()
            .map(|&i| std::mem::take(&mut all_keys[i as usize]))
            .collect();
        let event: Vec<Option<i64>> = rows.iter().map(|&i| all_event[i as usize]).collect();
        let created: Vec<Option<i64>> = rows.iter().map(|&i| all_created[i as usize]).collect();
        let columns: Vec<TypedColumn> = view
            .features
            .iter()
            .map(|f| TypedColumn::new(df, f))
            .collect::<Result<_, _>>()
            .map_err(schema_err)?;
        Ok((
            LatestRows {
                view: view.name.clone(),
                timestamp_column: view.timestamp_column.clone(),
                keys,
                event,
                created,
                columns,
                rows,
            },
            order,
            buckets,
        ))
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Row `i`'s entity key, event time and created time.
    fn times(&self, i: usize) -> Result<(&str, i64, i64)> {
        let key = &self.keys[i];
        let (Some(event_micros), created_micros) =
            (self.event[i], self.created[i].unwrap_or(i64::MIN))
        else {
            return Err(Error::Schema {
                view: self.view.clone(),
                message: format!("row for entity {key:?} has no {}", self.timestamp_column),
            });
        };
        Ok((key, event_micros, created_micros))
    }

    fn row(&self, i: usize) -> Result<(&str, OnlineRow)> {
        let (key, event_micros, created_micros) = self.times(i)?;
        Ok((
            key,
            OnlineRow {
                event_micros,
                created_micros,
                values: (0..self.columns.len()).map(|c| self.value(c, i)).collect(),
            },
        ))
    }
}

/// Runs the cache's bookkeeping off the lookup path.
///
/// moka records every read in a small log that the reading thread itself
/// replays (access order, frequency sketch) once 64 reads have queued: one
/// lookup in 64 pays for 64, which is the whole p99 of a microsecond
/// lookup. This thread replays the log before it fills, at an interval
/// matched to the recent read rate (about 32 reads per run, between 100 µs
/// and 10 ms), so readers almost never do. It ends when the store is
/// dropped.
fn start_housekeeper(
    rows: Rows,
    alive: std::sync::Weak<()>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
) {
    const MIN: std::time::Duration = std::time::Duration::from_micros(20);
    const MAX: std::time::Duration = std::time::Duration::from_millis(10);
    let reads = move || hits.load(Ordering::Relaxed) + misses.load(Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("aurum-online-housekeeper".into())
        .spawn(move || {
            let mut interval = MAX;
            let mut last = reads();
            while alive.strong_count() > 0 {
                std::thread::sleep(interval);
                rows.run_pending_tasks();
                let now = reads();
                let per_interval = now.saturating_sub(last).max(1);
                last = now;
                // Aim for ~16 reads queued per run.
                let scaled = interval.mul_f64(16.0 / per_interval as f64);
                interval = scaled.clamp(MIN, MAX);
            }
        });
    if let Err(e) = spawned {
        // Without it, readers replay the log themselves: slower tails, same
        // results.
        tracing::warn!("could not start the online store's housekeeper: {e}");
    }
}

/// Builds the online key of an entity from its join-key values in order.
pub fn entity_key<S: AsRef<str>>(values: &[S]) -> String {
    let mut key = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            key.push('\u{1f}');
        }
        key.push_str(v.as_ref());
    }
    key
}

fn entity_keys(df: &DataFrame, join_keys: &[String]) -> Result<Vec<String>, String> {
    let mut parts: Vec<Vec<String>> = Vec::with_capacity(join_keys.len());
    for key in join_keys {
        let column = df
            .column(key)
            .map_err(|_| format!("join key column {key:?} is missing"))?;
        let strings = column
            .cast(&DataType::String)
            .map_err(|e| format!("join key {key:?}: {e}"))?;
        let strings = strings
            .str()
            .map_err(|e| format!("join key {key:?}: {e}"))?;
        let mut values = Vec::with_capacity(df.height());
        for (i, v) in strings.iter().enumerate() {
            values.push(
                v.ok_or_else(|| format!("join key {key:?} is null in row {i}"))?
                    .to_string(),
            );
        }
        parts.push(values);
    }
    if parts.len() == 1 {
        // One join key: its text is the entity key (`entity_key` of one part).
        return Ok(parts.pop().unwrap_or_default());
    }
    Ok((0..df.height())
        .map(|i| entity_key(&parts.iter().map(|p| p[i].as_str()).collect::<Vec<_>>()))
        .collect())
}

/// A feature column of a gold frame, typed for reading one row at a time
/// (rows are built straight from it, without an intermediate copy).
struct TypedColumn {
    data: TypedData,
    /// Where each of the column's chunks ends, in rows.
    ends: Vec<usize>,
}

enum TypedData {
    Float(Float64Chunked),
    Int(Int64Chunked),
    Bool(BooleanChunked),
    Str(StringChunked),
}

impl TypedColumn {
    fn new(df: &DataFrame, name: &str) -> Result<Self, String> {
        let column = df
            .column(name)
            .map_err(|_| format!("feature column {name:?} is missing"))?;
        let err = |e: PolarsError| format!("feature {name:?}: {e}");
        let dtype = column.dtype().clone();
        let cast = |to: &DataType| -> Result<Series, String> {
            Ok(column
                .cast(to)
                .map_err(err)?
                .as_materialized_series()
                .clone())
        };
        let data = if dtype.is_float() {
            TypedData::Float(cast(&DataType::Float64)?.f64().map_err(err)?.clone())
        } else if dtype.is_integer() {
            TypedData::Int(cast(&DataType::Int64)?.i64().map_err(err)?.clone())
        } else if dtype == DataType::Boolean {
            TypedData::Bool(cast(&DataType::Boolean)?.bool().map_err(err)?.clone())
        } else {
            TypedData::Str(cast(&DataType::String)?.str().map_err(err)?.clone())
        };
        let lengths: Vec<usize> = match &data {
            TypedData::Float(c) => c.chunk_lengths().collect(),
            TypedData::Int(c) => c.chunk_lengths().collect(),
            TypedData::Bool(c) => c.chunk_lengths().collect(),
            TypedData::Str(c) => c.chunk_lengths().collect(),
        };
        let ends = lengths
            .iter()
            .scan(0, |end, length| {
                *end += length;
                Some(*end)
            })
            .collect();
        Ok(TypedColumn { data, ends })
    }

    fn value(&self, row: usize) -> FeatureValue {
        let value = match &self.data {
            TypedData::Float(c) => c.get(row).map(FeatureValue::Float),
            TypedData::Int(c) => c.get(row).map(FeatureValue::Int),
            TypedData::Bool(c) => c.get(row).map(FeatureValue::Bool),
            TypedData::Str(c) => c.get(row).map(|s| FeatureValue::Str(s.into())),
        };
        value.unwrap_or(FeatureValue::Null)
    }

    /// Row `row`'s value, where `chunk` is the chunk the previous call
    /// found: rows read in ascending order find theirs without the search
    /// `ChunkedArray::get` makes for every value.
    fn value_from(&self, chunk: &mut usize, row: usize) -> FeatureValue {
        if *chunk > 0 && self.ends.get(*chunk - 1).is_none_or(|start| row < *start) {
            *chunk = 0;
        }
        while self.ends.get(*chunk).is_some_and(|end| row >= *end) {
            *chunk += 1;
        }
        let Some(start) = (match *chunk {
            0 => Some(0),
            c => self.ends.get(c - 1).copied(),
        }) else {
            return FeatureValue::Null;
        };
        let at = row - start;
        let value = match &self.data {
            TypedData::Float(c) => c
                .downcast_get(*chunk)
                .and_then(|a| (at < a.len() && !a.is_null(at)).then(|| a.value(at)))
                .map(FeatureValue::Float),
            TypedData::Int(c) => c
                .downcast_get(*chunk)
                .and_then(|a| (at < a.len() && !a.is_null(at)).then(|| a.value(at)))
                .map(FeatureValue::Int),
            TypedData::Bool(c) => c
                .downcast_get(*chunk)
                .and_then(|a| (at < a.len()).then(|| a.get(at)).flatten())
                .map(FeatureValue::Bool),
            TypedData::Str(c) => c
                .downcast_get(*chunk)
                .and_then(|a| (at < a.len()).then(|| a.get(at)).flatten())
                .map(|s| FeatureValue::Str(s.into())),
        };
        value.unwrap_or(FeatureValue::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{DAY_MICROS as DAY, ViewFixture, gold_frame};

    /// Reading a column of several chunks by walking them gives what
    /// `ChunkedArray::get` gives, in order, out of order and for nulls.
    #[test]
    fn a_walked_column_reads_as_one_searched() {
        let mut x = Float64Chunked::new("x".into(), &[Some(1.0), None, Some(3.0)]);
        x.append(&Float64Chunked::new("x".into(), &[Some(4.0)]))
            .unwrap();
        x.append(&Float64Chunked::new("x".into(), &[None, Some(6.0)]))
            .unwrap();
        let mut s = StringChunked::new("s".into(), &[Some("a"), None]);
        s.append(&StringChunked::new(
            "s".into(),
            &[Some("c"), Some("d"), None, Some("f")],
        ))
        .unwrap();
        let df = DataFrame::new_infer_height(vec![x.into_column(), s.into_column()]).unwrap();
        assert!(df.column("x").unwrap().n_chunks() > 1);
        for name in ["x", "s"] {
            let column = TypedColumn::new(&df, name).unwrap();
            let mut chunk = 0;
            for row in [0, 1, 2, 3, 4, 5, 2, 0, 5, 3] {
                assert_eq!(
                    column.value_from(&mut chunk, row),
                    column.value(row),
                    "{name} row {row}"
                );
            }
        }
    }

    fn view() -> FeatureView {
        ViewFixture::customer("v").features(["x", "y"]).build()
    }

    /// Gold rows of [`view`]: customer, event time, created time, x, y.
    fn frame(rows: &[(i64, i64, i64, Option<f64>, i64)]) -> DataFrame {
        gold_frame(
            &view(),
            vec![Column::new(
                "customer_id".into(),
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )],
            rows.iter().map(|r| r.1).collect(),
            rows.iter().map(|r| r.2).collect(),
            vec![
                Column::new("x".into(), rows.iter().map(|r| r.3).collect::<Vec<_>>()),
                Column::new("y".into(), rows.iter().map(|r| r.4).collect::<Vec<_>>()),
            ],
        )
    }

    #[test]
    fn latest_row_wins_and_ttl_is_enforced_on_read() {
        let store = OnlineStore::new(1 << 20);
        store.register_view(view());
        let df = frame(&[
            (1, 10 * DAY, 10 * DAY, Some(1.0), 1),
            (1, 12 * DAY, 12 * DAY, Some(2.0), 2),
            (1, 11 * DAY, 13 * DAY, Some(3.0), 3),
            (2, 5 * DAY, 5 * DAY, None, 4),
        ]);
        let stats = store.materialize(&view(), &df, 3).unwrap();
        assert_eq!(stats.written, 2);
        assert_eq!(store.delta_version("v"), Some(3));
        let refs = vec!["v:x".to_string(), "v:y".to_string()];
        let keys = vec!["1".to_string(), "2".to_string(), "3".to_string()];
        let batch = store.get(&refs, &keys, 12 * DAY + 1).unwrap();
        assert_eq!(
            batch.rows[0][0],
            (FeatureValue::Float(2.0), FeatureStatus::Present)
        );
        assert_eq!(
            batch.rows[0][1],
            (FeatureValue::Int(2), FeatureStatus::Present)
        );
        assert_eq!(
            batch.rows[1][0],
            (FeatureValue::Null, FeatureStatus::OutsideMaxAge)
        );
        assert_eq!(
            batch.rows[2][0],
            (FeatureValue::Null, FeatureStatus::NotFound)
        );
        let batch = store.get(&refs, &keys[1..2], 5 * DAY).unwrap();
        assert_eq!(
            batch.rows[0][0],
            (FeatureValue::Null, FeatureStatus::NullValue)
        );
    }

    #[test]
    fn per_view_usage_follows_writes_replacements_and_reregistration() {
        let store = OnlineStore::new(1 << 20);
        store.register_view(view());
        let row = |x: f64, t: i64| OnlineRow {
            event_micros: t,
            created_micros: t,
            values: vec![FeatureValue::Float(x), FeatureValue::Int(1)].into_boxed_slice(),
        };
        for entity in ["1", "2", "3"] {
            assert!(store.upsert("v", entity, row(1.0, DAY)).unwrap());
        }
        // A newer row replaces; an older one is refused: still 3 entities.
        assert!(store.upsert("v", "1", row(2.0, 2 * DAY)).unwrap());
        assert!(!store.upsert("v", "2", row(2.0, 0)).unwrap());
        let stats = store.view_stats();
        let per_row = u64::from(row_weight(&row_key(0, "1"), &row(1.0, DAY)));
        assert_eq!(
            stats,
            vec![ViewStats {
                view: "v".into(),
                entries: 3,
                bytes: 3 * per_row
            }]
        );
        assert_eq!(store.stats().weighted_bytes, 3 * per_row);
        // Re-registering drops the old rows from the view's usage.
        store.register_view(view());
        let stats = store.view_stats();
        assert_eq!((stats[0].entries, stats[0].bytes), (0, 0));
    }

    #[test]
    fn older_rows_never_overwrite_newer_ones() {
        let store = OnlineStore::new(1 << 20);
        store.register_view(view());
        store
            .materialize(&view(), &frame(&[(1, 12 * DAY, 12 * DAY, Some(2.0), 2)]), 1)
            .unwrap();
        let stats = store
            .materialize(&view(), &frame(&[(1, 11 * DAY, 20 * DAY, Some(9.0), 9)]), 2)
            .unwrap();
        assert_eq!(stats.skipped_older, 1);
        let batch = store
            .get(&["v:x".to_string()], &["1".to_string()], 12 * DAY)
            .unwrap();
        assert_eq!(batch.rows[0][0].0, FeatureValue::Float(2.0));
    }

    #[test]
    fn a_redefined_view_never_reads_rows_of_the_old_layout() {
        let store = OnlineStore::new(1 << 20);
        store.register_view(view());
        store
            .materialize(&view(), &frame(&[(1, 12 * DAY, 12 * DAY, Some(2.0), 2)]), 1)
            .unwrap();
        let mut wider = view();
        wider.features.push("z".into());
        store.register_view(wider);
        let batch = store
            .get(&["v:z".to_string()], &["1".to_string()], 12 * DAY)
            .unwrap();
        assert_eq!(
            batch.rows[0][0],
            (FeatureValue::Null, FeatureStatus::NotFound)
        );
        assert_eq!(store.delta_version("v"), None);
    }

    #[test]
    fn evictions_under_the_memory_budget_are_counted() {
        // Room for a few hundred rows only.
        let store = OnlineStore::new(32 << 10);
        store.register_view(view());
        for entity in 0..5_000 {
            store
                .upsert(
                    "v",
                    &entity.to_string(),
                    OnlineRow {
                        event_micros: 1,
                        created_micros: 1,
                        values: vec![FeatureValue::Float(1.0); view().features.len()].into(),
                    },
                )
                .unwrap();
        }
        let stats = store.stats();
        assert!(stats.weighted_bytes <= 32 << 10, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
        assert_eq!(stats.entries + stats.evictions, 5_000, "{stats:?}");
    }

    #[test]
    fn unknown_references_are_named() {
        let store = OnlineStore::new(1 << 20);
        store.register_view(view());
        let err = store
            .get(&["v:nope".to_string()], &["1".to_string()], 0)
            .unwrap_err();
        assert!(err.to_string().contains("v:nope"), "{err}");
    }
}
