//! Tiles kept up to date as events arrive, read at the request's time: the
//! online store's side of request-time windows.
//!
//! Each entity keeps, per grid, its non-empty tiles from the oldest any
//! window (or the declared lateness) can still read. An event updates one
//! tile per grid; a read at `t` merges the tiles of the window ending with
//! `tile(t)`. The newest tile holds every event that has arrived in it:
//! events stamped after `t` (a producer clock ahead of the server's) are
//! counted in it online, where the point-in-time join would leave them out
//! — the one place the two can differ, bounded by one tile and counted
//! ([`WindowStats::future_reads`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Agg, WindowPlan};
use crate::metrics::Histogram;

const SHARDS: usize = 64;

/// Bucket bounds of the event-to-visible latency, in seconds (1 ms to a
/// minute).
pub const VISIBLE_BUCKETS: &[f64] = &[
    1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// Counters of a view's live windows, kept across reloads of its tiles.
#[derive(Debug)]
pub struct WindowStats {
    /// Events applied to tiles.
    pub applied: AtomicU64,
    /// Events refused as too late for any window a read can still make.
    pub too_late: AtomicU64,
    /// Reads whose newest tile held an event stamped after the read time.
    pub future_reads: AtomicU64,
    /// Stream events: from their event time to visible in the tiles.
    pub visible_seconds: Histogram,
}

impl Default for WindowStats {
    fn default() -> Self {
        WindowStats {
            applied: AtomicU64::new(0),
            too_late: AtomicU64::new(0),
            future_reads: AtomicU64::new(0),
            visible_seconds: Histogram::new(VISIBLE_BUCKETS),
        }
    }
}

/// One grid's non-empty tiles of one entity, ascending, flat: a read
/// walks one contiguous run of aggregates (`width` per tile) instead of
/// chasing a pointer per tile.
#[derive(Debug, Default, Clone)]
struct GridTiles {
    /// The tile numbers.
    ids: Vec<i64>,
    /// Per tile, the newest event time in it.
    newest: Vec<i64>,
    /// Per tile, one aggregate per plan column.
    aggs: Vec<Agg>,
}

impl GridTiles {
    /// Drops the tiles before `keep_from`.
    fn prune(&mut self, keep_from: i64, width: usize) {
        let drop = self.ids.partition_point(|i| *i < keep_from);
        if drop > 0 {
            self.ids.drain(..drop);
            self.newest.drain(..drop);
            self.aggs.drain(..drop * width);
        }
    }
}

/// One entity's tiles, per grid.
#[derive(Debug, Default)]
struct EntityTiles {
    grids: Vec<GridTiles>,
    /// The newest event time applied.
    newest: i64,
}

type Shard = HashMap<String, EntityTiles, foldhash::fast::RandomState>;

/// The live tiles of one view.
pub struct LiveTiles {
    plan: WindowPlan,
    shards: Vec<Mutex<Shard>>,
    hasher: foldhash::fast::RandomState,
    /// Events older than the newest tile any read can use minus this are
    /// refused as late.
    lateness_micros: i64,
    stats: Arc<WindowStats>,
}

impl std::fmt::Debug for LiveTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTiles")
            .field("features", &self.plan.names)
            .field("entities", &self.entities())
            .finish()
    }
}

impl LiveTiles {
    /// Empty tiles for `plan`; events later than `lateness` behind the
    /// clock are refused (their windows have been read).
    pub fn new(plan: WindowPlan, lateness_micros: i64, stats: Arc<WindowStats>) -> Self {
        LiveTiles {
            plan,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            lateness_micros: lateness_micros.max(0),
            stats,
        }
    }

    /// The counters (shared with the tiles this replaces or is replaced
    /// by).
    pub fn stats(&self) -> &Arc<WindowStats> {
        &self.stats
    }

    /// The plan the tiles aggregate for.
    pub fn plan(&self) -> &WindowPlan {
        &self.plan
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let at = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[at]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies one event of entity `key` at time `t` (microseconds) with
    /// its plan-column values and distinct keys, as of the clock `now`.
    /// Returns `false` (and counts it) when it is older than every window
    /// read from `now` back by the lateness: no tile it would join can be
    /// read again.
    pub fn apply(
        &self,
        key: &str,
        t: i64,
        values: &[Option<f64>],
        keys: &[Option<u64>],
        now: i64,
    ) -> bool {
        let oldest_read = now.saturating_sub(self.lateness_micros);
        let width = self.plan.columns.len();
        let mut shard = self.shard(key);
        if !shard.contains_key(key) {
            if self
                .plan
                .grids
                .iter()
                .all(|g| g.tile_of(t) < g.first_tile(oldest_read))
            {
                self.stats.too_late.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            shard.insert(
                key.to_string(),
                EntityTiles {
                    grids: vec![GridTiles::default(); self.plan.grids.len()],
                    newest: i64::MIN,
                },
            );
        }
        let Some(entity) = shard.get_mut(key) else {
            return false;
        };
        entity.newest = entity.newest.max(t);
        let mut used = false;
        for (grid, tiles) in self.plan.grids.iter().zip(entity.grids.iter_mut()) {
            let tile = grid.tile_of(t);
            if tile < grid.first_tile(oldest_read) {
                continue;
            }
            used = true;
            let at = match tiles.ids.binary_search(&tile) {
                Ok(at) => at,
                Err(at) => {
                    tiles.ids.insert(at, tile);
                    tiles.newest.insert(at, i64::MIN);
                    tiles.aggs.splice(
                        at * width..at * width,
                        std::iter::repeat_with(Agg::default).take(width),
                    );
                    at
                }
            };
            for (c, agg) in tiles.aggs[at * width..(at + 1) * width]
                .iter_mut()
                .enumerate()
            {
                let key = if self.plan.distinct[c] {
                    keys.get(c).copied().flatten()
                } else {
                    None
                };
                agg.push(values.get(c).copied().flatten(), key);
                // Compacted as the keys double: linear, not a sort per push.
                let held = agg.distinct_len();
                if key.is_some() && held >= 64 && held.is_power_of_two() {
                    agg.compact();
                }
            }
            tiles.newest[at] = tiles.newest[at].max(t);
            // Tiles no read can reach any more.
            tiles.prune(grid.first_tile(oldest_read), width);
        }
        if used {
            self.stats.applied.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.too_late.fetch_add(1, Ordering::Relaxed);
        }
        used
    }

    /// The window aggregates of entity `key` read at `t`, one per (grid,
    /// column) into `aggs`; `false` when the entity has no tiles.
    pub fn aggregates(&self, key: &str, t: i64, aggs: &mut Vec<Agg>) -> bool {
        let width = self.plan.columns.len();
        aggs.resize(self.plan.grids.len() * width, Agg::default());
        aggs.iter_mut().for_each(Agg::clear);
        let shard = self.shard(key);
        let Some(entity) = shard.get(key) else {
            return false;
        };
        let mut future = false;
        for (g, (grid, tiles)) in self.plan.grids.iter().zip(&entity.grids).enumerate() {
            let window = &mut aggs[g * width..(g + 1) * width];
            let (first, current) = (grid.first_tile(t), grid.tile_of(t));
            let from = tiles.ids.partition_point(|i| *i < first);
            let to = from + tiles.ids[from..].partition_point(|i| *i <= current);
            future |= tiles.newest[from..to].iter().any(|n| *n > t);
            let run = &tiles.aggs[from * width..to * width];
            for (c, acc) in window.iter_mut().enumerate() {
                acc.merge_run(run.iter().skip(c).step_by(width));
            }
        }
        if future {
            self.stats.future_reads.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The newest event time applied for entity `key`, while it has tiles.
    pub fn newest(&self, key: &str) -> Option<i64> {
        self.shard(key).get(key).map(|e| e.newest)
    }

    /// Drops tiles no read from `now` can reach, and entities left with
    /// none; returns the entities kept.
    pub fn prune(&self, now: i64) -> usize {
        let oldest_read = now.saturating_sub(self.lateness_micros);
        let mut kept = 0;
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let width = self.plan.columns.len();
            shard.retain(|_, entity| {
                for (grid, tiles) in self.plan.grids.iter().zip(entity.grids.iter_mut()) {
                    tiles.prune(grid.first_tile(oldest_read), width);
                }
                entity.grids.iter().any(|t| !t.ids.is_empty())
            });
            kept += shard.len();
        }
        kept
    }

    /// Entities with tiles.
    pub fn entities(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    /// Forgets every tile (before a reload from the events).
    pub fn clear(&self) {
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                shard.clear();
            }
        }
    }
}
