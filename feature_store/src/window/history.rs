//! Every event of a view, ready to be read at any time: the point-in-time
//! join's side of request-time windows.
//!
//! Events are sorted by entity, then time; each entity's whole tiles are
//! aggregated once per grid. A read at `t` merges the whole tiles of the
//! window before `tile(t)` and folds the events of `tile(t)` up to `t` one
//! by one, so it is exact for any `t` and costs at most `k − 1` merges and
//! one tile of events.

use std::collections::HashMap;

use polars::prelude::*;
use rayon::prelude::*;

use super::tiles::merge_tiles;
use super::{Agg, WindowPlan, distinct_key};

/// An entity's non-empty tiles in one grid, ascending: (tile, one
/// aggregate per plan column).
type Tiles = Vec<(i64, Vec<Agg>)>;

thread_local! {
    /// A read's tiles made of events (the current tile's, or a sparse
    /// entity's window), reused across reads on the same thread.
    static PARTIAL: std::cell::RefCell<Vec<Agg>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Events per non-empty tile from which an entity's tiles are built.
const DENSE: usize = 4;

/// One entity's events (a range of the sorted arrays) and tiles.
struct Run {
    start: usize,
    end: usize,
    /// Per grid: the entity's non-empty tiles, ascending, each with one
    /// aggregate per plan column; `None` where its events are sparse.
    tiles: Vec<Option<Tiles>>,
}

/// A view's events, indexed for reads at any time.
pub struct History {
    plan: WindowPlan,
    times: Vec<i64>,
    /// Per plan column, per event.
    values: Vec<Vec<Option<f64>>>,
    /// Per plan column counted distinct, per event; empty otherwise.
    keys: Vec<Vec<Option<u64>>>,
    runs: HashMap<String, Run, foldhash::fast::RandomState>,
}

/// The columns an event frame needs: join keys, time, aggregated columns.
pub fn event_columns(plan: &WindowPlan, join_keys: &[String], timestamp: &str) -> Vec<String> {
    let mut columns: Vec<String> = join_keys.to_vec();
    columns.push(timestamp.to_string());
    for c in &plan.columns {
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    columns
}

/// Each row's entity key (`None` when a key part is null).
pub fn entity_keys(df: &DataFrame, join_keys: &[String]) -> Result<Vec<Option<String>>, String> {
    let mut parts: Vec<StringChunked> = Vec::with_capacity(join_keys.len());
    for key in join_keys {
        let column = df
            .column(key)
            .map_err(|_| format!("join key column {key:?} is missing"))?
            .cast(&DataType::String)
            .map_err(|e| format!("join key {key:?}: {e}"))?;
        parts.push(
            column
                .str()
                .map_err(|e| format!("join key {key:?}: {e}"))?
                .clone(),
        );
    }
    let mut out = Vec::with_capacity(df.height());
    let mut values: Vec<&str> = Vec::with_capacity(parts.len());
    for i in 0..df.height() {
        values.clear();
        for part in &parts {
            match part.get(i) {
                Some(v) => values.push(v),
                None => break,
            }
        }
        out.push((values.len() == parts.len()).then(|| crate::online::entity_key(&values)));
    }
    Ok(out)
}

/// A timestamp column in microseconds since the epoch.
pub fn micros(df: &DataFrame, name: &str) -> Result<Vec<Option<i64>>, String> {
    let column = df
        .column(name)
        .map_err(|_| format!("timestamp column {name:?} is missing"))?;
    let DataType::Datetime(unit, _) = column.dtype() else {
        return Err(format!(
            "column {name:?} is {}, expected a timestamp",
            column.dtype()
        ));
    };
    let unit = *unit;
    let physical = column.as_materialized_series().to_physical_repr();
    let values = physical.i64().map_err(|e| format!("{name}: {e}"))?;
    Ok(values
        .iter()
        .map(|v| {
            v.map(|v| match unit {
                TimeUnit::Nanoseconds => v.div_euclid(1000),
                TimeUnit::Microseconds => v,
                TimeUnit::Milliseconds => v * 1000,
            })
        })
        .collect())
}

/// A column's values as aggregated (float64) and the keys its distinct
/// values are counted by (empty when they are not).
pub type ColumnInputs = (Vec<Option<f64>>, Vec<Option<u64>>);

/// A plan column's values (as float64; text that is not a number is null)
/// and, when its distinct values are counted, their keys.
pub fn column_inputs(df: &DataFrame, name: &str, distinct: bool) -> Result<ColumnInputs, String> {
    let column = df
        .column(name)
        .map_err(|_| format!("column {name:?} is missing"))?;
    let values = match column.dtype() {
        DataType::String => column
            .str()
            .map_err(|e| format!("{name}: {e}"))?
            .iter()
            .map(|v| v.and_then(|v| v.trim().parse::<f64>().ok()))
            .collect(),
        _ => {
            let cast = column
                .cast(&DataType::Float64)
                .map_err(|e| format!("{name}: {e}"))?;
            cast.f64()
                .map_err(|e| format!("{name}: {e}"))?
                .iter()
                .collect()
        }
    };
    let keys = if distinct {
        let text = column
            .cast(&DataType::String)
            .map_err(|e| format!("{name}: {e}"))?;
        text.str()
            .map_err(|e| format!("{name}: {e}"))?
            .iter()
            .map(|v| v.map(distinct_key))
            .collect()
    } else {
        Vec::new()
    };
    Ok((values, keys))
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("features", &self.plan.names)
            .field("events", &self.times.len())
            .field("entities", &self.runs.len())
            .finish()
    }
}

impl History {
    /// Indexes `events` (join keys, `timestamp`, the plan's columns; any
    /// order). Events with a null key or time are not the entity's and are
    /// left out (silver has already quarantined them).
    pub fn build(
        plan: WindowPlan,
        events: &DataFrame,
        join_keys: &[String],
        timestamp: &str,
    ) -> Result<History, String> {
        // Sorted by entity, then time, by polars (in parallel): sorting
        // row numbers by per-row key strings cost seconds per 10M events.
        let mut by: Vec<PlSmallStr> = join_keys.iter().map(|k| k.as_str().into()).collect();
        by.push(timestamp.into());
        let mut known = col(timestamp).is_not_null();
        for key in join_keys {
            known = known.and(col(key.as_str()).is_not_null());
        }
        let sorted = events
            .clone()
            .lazy()
            .filter(known)
            .sort(by, SortMultipleOptions::default().with_multithreaded(true))
            .collect()
            .map_err(|e| format!("sorting the events: {e}"))?;
        let sorted_times: Vec<i64> = micros(&sorted, timestamp)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let mut values = Vec::with_capacity(plan.columns.len());
        let mut distinct_keys = Vec::with_capacity(plan.columns.len());
        for (column, distinct) in plan.columns.iter().zip(&plan.distinct) {
            let (v, k) = column_inputs(&sorted, column, *distinct)?;
            values.push(v);
            distinct_keys.push(k);
        }
        // Entity runs: where any key part changes from the row before.
        let parts: Vec<StringChunked> = join_keys
            .iter()
            .map(|key| {
                let column = sorted
                    .column(key)
                    .map_err(|_| format!("join key column {key:?} is missing"))?
                    .cast(&DataType::String)
                    .map_err(|e| format!("join key {key:?}: {e}"))?;
                Ok(column
                    .str()
                    .map_err(|e| format!("join key {key:?}: {e}"))?
                    .rechunk()
                    .into_owned())
            })
            .collect::<Result<_, String>>()?;
        let key_at = |row: usize| -> String {
            let values: Vec<&str> = parts
                .iter()
                .map(|p| p.get(row).unwrap_or_default())
                .collect();
            crate::online::entity_key(&values)
        };
        let rows = sorted.height();
        let mut bounds: Vec<(String, usize, usize)> = Vec::new();
        let mut start = 0;
        for at in 1..=rows {
            if at == rows || parts.iter().any(|p| p.get(at) != p.get(at - 1)) {
                bounds.push((key_at(start), start, at));
                start = at;
            }
        }
        let mut history = History {
            plan,
            times: sorted_times,
            values,
            keys: distinct_keys,
            runs: HashMap::default(),
        };
        let runs: Vec<(String, Run)> = bounds
            .into_par_iter()
            .map(|(key, start, end)| {
                let tiles = history.tiles(start, end);
                (key, Run { start, end, tiles })
            })
            .collect();
        history.runs = runs.into_iter().collect();
        Ok(history)
    }

    /// The plan the history reads with.
    pub fn plan(&self) -> &WindowPlan {
        &self.plan
    }

    /// Events indexed.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether no event is indexed.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    fn push_event(&self, aggs: &mut [Agg], event: usize) {
        for (c, agg) in aggs.iter_mut().enumerate() {
            let key = self.keys[c].get(event).copied().flatten();
            agg.push(self.values[c][event], key);
        }
    }

    /// Per grid, the entity's whole tiles, or `None` where its events are
    /// sparse (fewer than [`DENSE`] per non-empty tile on average): a read
    /// then folds the window's events themselves, which costs what merging
    /// as many tiles would and builds nothing.
    fn tiles(&self, start: usize, end: usize) -> Vec<Option<Tiles>> {
        let width = self.plan.columns.len();
        self.plan
            .grids
            .iter()
            .map(|grid| {
                let mut distinct = 0;
                let mut last = None;
                for event in start..end {
                    let tile = grid.tile_of(self.times[event]);
                    if last != Some(tile) {
                        distinct += 1;
                        last = Some(tile);
                    }
                }
                if end - start < DENSE * distinct {
                    return None;
                }
                let mut tiles: Vec<(i64, Vec<Agg>)> = Vec::new();
                for event in start..end {
                    let tile = grid.tile_of(self.times[event]);
                    if tiles.last().is_none_or(|(t, _)| *t != tile) {
                        if let Some((_, aggs)) = tiles.last_mut() {
                            aggs.iter_mut().for_each(Agg::compact);
                        }
                        tiles.push((tile, vec![Agg::default(); width]));
                    }
                    if let Some((_, aggs)) = tiles.last_mut() {
                        self.push_event(aggs, event);
                    }
                }
                if let Some((_, aggs)) = tiles.last_mut() {
                    aggs.iter_mut().for_each(Agg::compact);
                }
                Some(tiles)
            })
            .collect()
    }

    /// The window aggregates of entity `key` read at `t`, one per (grid,
    /// column) into `aggs` (cleared first); `false` when the entity has no
    /// event at or before `t`.
    pub fn aggregates(&self, key: &str, t: i64, aggs: &mut Vec<Agg>) -> bool {
        let width = self.plan.columns.len();
        aggs.resize(self.plan.grids.len() * width, Agg::default());
        aggs.iter_mut().for_each(Agg::clear);
        let Some(run) = self.runs.get(key) else {
            return false;
        };
        let times = &self.times[run.start..run.end];
        let upto = run.start + times.partition_point(|e| *e <= t);
        if upto == run.start {
            return false;
        }
        for (g, grid) in self.plan.grids.iter().enumerate() {
            let window = &mut aggs[g * width..(g + 1) * width];
            let (first, current) = (grid.first_tile(t), grid.tile_of(t));
            // Whole tiles before the current one (when built, else tiles
            // made here of the events from the window's first tile) merged
            // in one run, then the current tile made of its events up to
            // `t`: the same two steps, tile by tile, as the online side's
            // read of its tiles, so the two agree to the bit when events
            // arrived in time order.
            let (whole, fold_from): (&[(i64, Vec<Agg>)], i64) = match &run.tiles[g] {
                Some(tiles) => {
                    let from = tiles.partition_point(|(i, _)| *i < first);
                    let to = tiles.partition_point(|(i, _)| *i < current);
                    (&tiles[from..to], current.saturating_mul(grid.tile))
                }
                None => (&[], first.saturating_mul(grid.tile)),
            };
            let first_event = run.start + times.partition_point(|e| *e < fold_from);
            PARTIAL.with_borrow_mut(|partial| {
                partial.clear();
                let mut last_tile = None;
                for event in first_event..upto {
                    let tile = grid.tile_of(self.times[event]);
                    if last_tile != Some(tile) {
                        partial.extend(std::iter::repeat_with(Agg::default).take(width));
                        last_tile = Some(tile);
                    }
                    let at = partial.len() - width;
                    self.push_event(&mut partial[at..], event);
                }
                // The current tile's events, when it has any, are the last
                // tile made.
                let before = if last_tile == Some(current) {
                    partial.len() - width
                } else {
                    partial.len()
                };
                merge_tiles(
                    window,
                    whole
                        .iter()
                        .map(|(_, aggs)| aggs.as_slice())
                        .chain(partial[..before].chunks_exact(width)),
                );
                for (acc, tile) in window.iter_mut().zip(&partial[before..]) {
                    acc.merge(tile);
                }
            });
        }
        true
    }
}
