//! Tiles kept up to date as events arrive, read at the request's time: the
//! online store's side of request-time windows.
//!
//! Each entity keeps, per grid, its non-empty tiles from the oldest any
//! window (or the declared lateness) can still read. An event updates one
//! tile per grid; a read at `t` merges the tiles of the window ending with
//! `tile(t)`: the merge of those before `tile(t)` is kept per entity until
//! the read moves to the next tile or a late event changes one of them,
//! so most reads merge two aggregates per column. The newest tile holds every event that has arrived in it:
//! events stamped after `t` (a producer clock ahead of the server's) are
//! counted in it online, where the point-in-time join would leave them out
//! — the one place the two can differ, bounded by one tile and counted
//! ([`WindowStats::future_reads`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Agg, Grid, WindowPlan};
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
///
/// The window's whole tiles before the current one change only when an
/// event arrives late into one of them, so their merge is kept
/// (`prefix`, valid for reads in tile `prefix_tile`): a read in the same
/// tile merges that and the current tile only, the same two steps the
/// point-in-time join takes ([`super::history`]), so both stay equal to
/// the bit.
#[derive(Debug, Clone)]
struct GridTiles {
    /// The tile numbers.
    ids: Vec<i64>,
    /// Per tile, the newest event time in it.
    newest: Vec<i64>,
    /// Per tile, one aggregate per plan column.
    aggs: Vec<Agg>,
    /// The current tile `prefix` was merged for (`i64::MIN`: none).
    prefix_tile: i64,
    /// Per plan column, the merge of the tiles of the window read in
    /// `prefix_tile`, that tile left out.
    prefix: Vec<Agg>,
}

impl Default for GridTiles {
    fn default() -> Self {
        GridTiles {
            ids: Vec::new(),
            newest: Vec::new(),
            aggs: Vec::new(),
            prefix_tile: i64::MIN,
            prefix: Vec::new(),
        }
    }
}

impl GridTiles {
    /// Drops the tiles before `keep_from`.
    fn prune(&mut self, keep_from: i64, width: usize, grid: &Grid) {
        let drop = self.ids.partition_point(|i| *i < keep_from);
        if drop > 0 {
            self.ids.drain(..drop);
            self.newest.drain(..drop);
            self.aggs.drain(..drop * width);
            if keep_from > self.prefix_tile.saturating_sub(grid.tiles - 1) {
                self.prefix_tile = i64::MIN;
            }
        }
    }

    /// The merged window at `t` for every column into `window`: the kept
    /// prefix (merged first when the read is in another tile than the
    /// last), then the current tile. Returns whether the current tile
    /// holds an event stamped after `t`.
    fn read(&mut self, grid: &Grid, t: i64, width: usize, window: &mut [Agg]) -> bool {
        let current = grid.tile_of(t);
        if self.prefix_tile != current {
            let from = self.ids.partition_point(|i| *i < grid.first_tile(t));
            let to = from + self.ids[from..].partition_point(|i| *i < current);
            let run = &self.aggs[from * width..to * width];
            self.prefix.resize(width, Agg::default());
            for (c, prefix) in self.prefix.iter_mut().enumerate() {
                prefix.clear();
                prefix.merge_run(run.iter().skip(c).step_by(width));
                prefix.compact();
            }
            self.prefix_tile = current;
        }
        for (acc, prefix) in window.iter_mut().zip(&self.prefix) {
            acc.merge(prefix);
        }
        match self.ids.binary_search(&current) {
            Ok(at) => {
                for (acc, tile) in window.iter_mut().zip(&self.aggs[at * width..]) {
                    acc.merge(tile);
                }
                self.newest[at] > t
            }
            Err(_) => false,
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
            // A late event changes the kept merge of the tiles before the
            // current one.
            if tile < tiles.prefix_tile {
                tiles.prefix_tile = i64::MIN;
            }
            // Tiles no read can reach any more.
            tiles.prune(grid.first_tile(oldest_read), width, grid);
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
        let mut shard = self.shard(key);
        let Some(entity) = shard.get_mut(key) else {
            return false;
        };
        let mut future = false;
        for (g, (grid, tiles)) in self.plan.grids.iter().zip(&mut entity.grids).enumerate() {
            future |= tiles.read(grid, t, width, &mut aggs[g * width..(g + 1) * width]);
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
                    tiles.prune(grid.first_tile(oldest_read), width, grid);
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
