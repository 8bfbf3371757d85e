//! Tiles kept up to date as events arrive, read at the request's time: the
//! online store's side of request-time windows.
//!
//! Each entity keeps, per grid, its non-empty tiles from the oldest any
//! window (or the declared lateness) can still read. An event updates one
//! tile per grid; a read at `t` merges the tiles of the window ending with
//! `tile(t)`: the merge of those before `tile(t)` is kept per entity while
//! the window has the same non-empty tiles there and none of them changes
//! (made when an event lands in order, or at the read), so most reads
//! merge two aggregates per column. The newest tile holds every event that has arrived in it:
//! events stamped after `t` (a producer clock ahead of the server's) are
//! counted in it online, where the point-in-time join would leave them out
//! — the one place the two can differ, bounded by one tile and counted
//! ([`WindowStats::future_reads`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::tiles::merge_tiles;
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
    /// Reads that merged a window's earlier tiles themselves: the kept
    /// merge was not made for the tiles they needed.
    pub read_merges: AtomicU64,
    /// Stream events: from their event time to visible in the tiles.
    pub visible_seconds: Histogram,
}

impl Default for WindowStats {
    fn default() -> Self {
        WindowStats {
            applied: AtomicU64::new(0),
            too_late: AtomicU64::new(0),
            future_reads: AtomicU64::new(0),
            read_merges: AtomicU64::new(0),
            visible_seconds: Histogram::new(VISIBLE_BUCKETS),
        }
    }
}

/// One grid's non-empty tiles of one entity, ascending, flat: a read
/// walks one contiguous run of aggregates (`width` per tile) instead of
/// chasing a pointer per tile.
///
/// The window's whole tiles before the current one change only when an
/// event arrives late into one of them, so their merge is kept (`prefix`,
/// made of the tiles `prefix_run` names) for as long as a read's window
/// has the same non-empty tiles before its current one: across tile
/// boundaries too, until a non-empty tile enters or leaves that part of
/// the window. A read merges that and the current tile only, the same two
/// steps the point-in-time join takes ([`super::history`]), and the kept
/// merge is a function of the run's tiles alone, so both stay equal to
/// the bit. Events arriving in order make the merge for the clock's tile
/// when they land, off the read path.
#[derive(Debug, Clone)]
struct GridTiles {
    /// The tile numbers.
    ids: Vec<i64>,
    /// Per tile, the newest event time in it.
    newest: Vec<i64>,
    /// Per tile, one aggregate per plan column.
    aggs: Vec<Agg>,
    /// The tiles `prefix` was merged from (`None`: not merged, or a tile
    /// of it changed since).
    prefix_run: Option<RunOf>,
    /// Per plan column, the merge of the tiles `prefix_run` names.
    prefix: Vec<Agg>,
}

/// A contiguous run of an entity's non-empty tiles, named by its first
/// and last tile and its length. Tiles are inserted in order and dropped
/// only from the front, and a change to a tile of a kept run forgets the
/// merge, so equal names mean equal contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunOf {
    first: i64,
    last: i64,
    len: usize,
}

impl GridTiles {
    /// No tiles; the kept merge's room (one aggregate per column) taken
    /// now, with the tiles, rather than at the first read.
    fn new(width: usize) -> Self {
        GridTiles {
            ids: Vec::new(),
            newest: Vec::new(),
            aggs: Vec::new(),
            prefix_run: None,
            prefix: vec![Agg::default(); width],
        }
    }

    /// Drops the tiles before `keep_from`.
    fn prune(&mut self, keep_from: i64, width: usize) {
        let drop = self.ids.partition_point(|i| *i < keep_from);
        if drop > 0 {
            self.ids.drain(..drop);
            self.newest.drain(..drop);
            self.aggs.drain(..drop * width);
        }
    }

    /// Forgets the kept merge when tile `tile` changed inside its run.
    fn changed(&mut self, tile: i64) {
        if self
            .prefix_run
            .is_some_and(|run| run.len > 0 && tile <= run.last)
        {
            self.prefix_run = None;
        }
    }

    /// Makes the kept merge that of the window read at `t`'s tiles before
    /// its current one (merging them only when they are not the run
    /// already merged); returns whether it merged.
    fn ready(&mut self, grid: &Grid, t: i64, width: usize) -> bool {
        let from = self.ids.partition_point(|i| *i < grid.first_tile(t));
        let to = from + self.ids[from..].partition_point(|i| *i < grid.tile_of(t));
        let run = match to > from {
            true => RunOf {
                first: self.ids[from],
                last: self.ids[to - 1],
                len: to - from,
            },
            false => RunOf {
                first: 0,
                last: 0,
                len: 0,
            },
        };
        if self.prefix_run != Some(run) {
            self.prefix.iter_mut().for_each(Agg::clear);
            merge_tiles(
                &mut self.prefix,
                self.aggs[from * width..to * width].chunks_exact(width),
            );
            self.prefix.iter_mut().for_each(Agg::compact);
            self.prefix_run = Some(run);
            return true;
        }
        false
    }

    /// The merged window at `t` for every column into `window`: the kept
    /// merge of the tiles before the current one (made again only when
    /// those tiles are not the ones it was made of), then the current
    /// tile. Returns whether it merged the earlier tiles, and whether the
    /// current tile holds an event stamped after `t`.
    fn read(&mut self, grid: &Grid, t: i64, width: usize, window: &mut [Agg]) -> (bool, bool) {
        let merged = self.ready(grid, t, width);
        for (acc, prefix) in window.iter_mut().zip(&self.prefix) {
            acc.merge(prefix);
        }
        match self.ids.binary_search(&grid.tile_of(t)) {
            Ok(at) => {
                for (acc, tile) in window.iter_mut().zip(&self.aggs[at * width..]) {
                    acc.merge(tile);
                }
                (merged, self.newest[at] > t)
            }
            Err(_) => (merged, false),
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
                    grids: vec![GridTiles::new(width); self.plan.grids.len()],
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
            tiles.changed(tile);
            // Tiles no read can reach any more.
            tiles.prune(grid.first_tile(oldest_read), width);
            // An event in order: the merge a read now needs, made while
            // the entity's tiles are at hand.
            if tile >= grid.tile_of(now) {
                let _ = tiles.ready(grid, now, width);
            }
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
        let (mut merged, mut future) = (false, false);
        for (g, (grid, tiles)) in self.plan.grids.iter().zip(&mut entity.grids).enumerate() {
            let (m, f) = tiles.read(grid, t, width, &mut aggs[g * width..(g + 1) * width]);
            merged |= m;
            future |= f;
        }
        if merged {
            self.stats.read_merges.fetch_add(1, Ordering::Relaxed);
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

    /// Makes every entity's kept merges those a read at `now` needs (after
    /// loading events in any order, so the first reads find them made).
    pub fn ready(&self, now: i64) {
        let width = self.plan.columns.len();
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for entity in shard.values_mut() {
                for (grid, tiles) in self.plan.grids.iter().zip(entity.grids.iter_mut()) {
                    let _ = tiles.ready(grid, now, width);
                }
            }
        }
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
