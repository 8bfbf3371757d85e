//! Window features valued at the time they are read.
//!
//! A view declared with `windows_at = "request"` values each windowed
//! feature at the read time `t` — the request's time online, the spine
//! row's time offline — over the entity's events in the window that ends
//! at `t`, not the window that ended at the entity's last event.
//!
//! Both paths compute it from the same events with the same code, on time
//! tiles: a window of length `w` is cut into `k` tiles of `g = w / k`
//! (`k` = 60, or the largest divisor of `w` in microseconds below it),
//! aligned to the epoch; a tile holds the partial aggregate of the events
//! whose time falls in it ([`Agg`]). The value at `t` merges the `k` tiles
//! ending with the one holding `t`, counting only events at or before `t`:
//!
//! ```text
//! events e with  tile(t) − k + 1 ≤ tile(e.time)  and  e.time ≤ t
//! ```
//!
//! That is the window `(t − w, t]` with its old end moved forward to a tile
//! boundary: it never holds an event older than `w`, and holds every event
//! of `(t − w, t]` except those in the oldest, partial tile (at most `g` =
//! `w / 60` of event time: 1 minute of a 1-hour window). Online and offline
//! compute it with the same arithmetic, tile by tile (to the bit when the
//! events arrived in time order, else to rounding): it is what the
//! training set holds and what the server answers.
//!
//! - [`tiles`]: the partial aggregate and its merge;
//! - [`history`]: an entity's events and tiles for many reads at any
//!   times (the point-in-time join);
//! - [`events`]: reading the events (the source's silver rows, at the
//!   version gold was computed from);
//! - [`live`]: tiles kept up to date as events arrive, read at now (the
//!   online store).
//!
//! Values: `count` is the number of events (null values included);
//! `sum`, `mean`, `min`, `max` and `stddev` (sample, `n − 1`) skip null
//! values; `distinct_count` counts distinct non-null values by a 64-bit
//! hash of their text (exact unless two values collide: about one in
//! 10^19 per pair). With no events in the window `count`, `sum` and
//! `distinct_count` are 0 and the others null; `stddev` needs two values.

pub mod events;
pub mod history;
pub mod live;
pub mod tiles;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::expr::Node;

pub use tiles::Agg;

/// The most tiles a window is cut into.
pub const TILES_PER_WINDOW: i64 = 60;

/// A windowed aggregation valued at read time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Events in the window.
    Count,
    /// Sum of the non-null values.
    Sum,
    /// Mean of the non-null values.
    Mean,
    /// Smallest non-null value.
    Min,
    /// Largest non-null value.
    Max,
    /// Sample standard deviation of the non-null values.
    Stddev,
    /// Distinct non-null values.
    DistinctCount,
}

/// One feature valued at read time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowFeature {
    /// The feature name (a column of the view).
    pub name: String,
    /// The aggregated event column.
    pub column: String,
    /// The aggregation.
    pub function: Function,
    /// The window length, microseconds.
    pub window_micros: i64,
}

/// A derived feature recomputed at read time from the view's features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerivedAtRead {
    /// The feature name.
    pub name: String,
    /// Its expression over the view's features.
    pub expr: String,
}

/// What a view with request-time windows computes when read, and from
/// which events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestWindows {
    /// The silver table holding the view's events.
    pub events_table: String,
    /// Its event-time column.
    pub timestamp_column: String,
    /// The windowed features.
    pub features: Vec<WindowFeature>,
    /// Derived features, in declaration order (each may use earlier ones).
    pub derived: Vec<DerivedAtRead>,
}

/// The tile length for a window: `w / k` for the largest `k ≤ 60` that
/// divides `w` (microseconds), so a window is always whole tiles.
pub fn tile_micros(window_micros: i64) -> i64 {
    let window = window_micros.max(1);
    let k = (1..=TILES_PER_WINDOW)
        .rev()
        .find(|k| window % k == 0)
        .unwrap_or(1);
    window / k
}

/// A tile grid: the tiles of one window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Tile length, microseconds.
    pub tile: i64,
    /// Tiles per window.
    pub tiles: i64,
}

impl Grid {
    /// The tile holding time `t`.
    pub fn tile_of(&self, t: i64) -> i64 {
        t.div_euclid(self.tile)
    }

    /// The first tile of the window read at `t`.
    pub fn first_tile(&self, t: i64) -> i64 {
        self.tile_of(t) - self.tiles + 1
    }
}

/// [`RequestWindows`] compiled for evaluation: the aggregated columns, one
/// tile grid per distinct window, and where each feature's value comes from.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    /// The aggregated columns, in input order.
    pub columns: Vec<String>,
    /// Whether a column's distinct values are kept (some feature counts
    /// them).
    pub distinct: Vec<bool>,
    /// The grids, one per distinct window length.
    pub grids: Vec<Grid>,
    /// Per feature: its grid, its column and its function.
    pub features: Vec<(usize, usize, Function)>,
    /// The feature names, windowed then derived.
    pub names: Vec<String>,
    /// Derived features, parsed.
    derived: Vec<Node>,
}

impl WindowPlan {
    /// Compiles `windows`; fails naming a derived expression that does not
    /// parse over the view's features.
    pub fn new(windows: &RequestWindows, other_features: &[String]) -> Result<Self, String> {
        let mut columns: Vec<String> = Vec::new();
        let mut distinct: Vec<bool> = Vec::new();
        let mut grids: Vec<Grid> = Vec::new();
        let mut features = Vec::new();
        for f in &windows.features {
            let column = match columns.iter().position(|c| *c == f.column) {
                Some(i) => i,
                None => {
                    columns.push(f.column.clone());
                    distinct.push(false);
                    columns.len() - 1
                }
            };
            if f.function == Function::DistinctCount {
                distinct[column] = true;
            }
            let tile = tile_micros(f.window_micros);
            let grid = Grid {
                tile,
                tiles: f.window_micros.max(1) / tile,
            };
            let grid = match grids.iter().position(|g| *g == grid) {
                Some(i) => i,
                None => {
                    grids.push(grid);
                    grids.len() - 1
                }
            };
            features.push((grid, column, f.function));
        }
        let mut names: Vec<String> = windows.features.iter().map(|f| f.name.clone()).collect();
        let mut derived = Vec::new();
        for d in &windows.derived {
            let known: Vec<String> = names.iter().chain(other_features).cloned().collect();
            let node = crate::expr::parse(&d.expr, &known)
                .map_err(|e| format!("derived feature {}: {e}", d.name))?;
            derived.push(node);
            names.push(d.name.clone());
        }
        Ok(WindowPlan {
            columns,
            distinct,
            grids,
            features,
            names,
            derived,
        })
    }

    /// Values every feature from one aggregate per (grid, column) (`aggs`
    /// indexed `grid * columns + column`), then the derived features, which
    /// may also use `other` (the view's other features of the same row).
    /// Writes [`WindowPlan::names`]' values, in order, to `out`.
    pub fn finish(
        &self,
        aggs: &[Agg],
        other: &dyn Fn(&str) -> Option<f64>,
        out: &mut Vec<Option<f64>>,
    ) {
        out.clear();
        let width = self.columns.len();
        for (grid, column, function) in &self.features {
            out.push(aggs[grid * width + column].value(*function));
        }
        for node in &self.derived {
            let value = eval(node, &|name| match self.names[..out.len()]
                .iter()
                .position(|n| n == name)
            {
                Some(i) => out[i],
                None => other(name),
            });
            out.push(value);
        }
    }
}

/// Evaluates a derived expression (division by zero is null, as in gold).
pub fn eval(node: &Node, value: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
    match node {
        Node::Number(n) => Some(*n),
        Node::Column(name) => value(name),
        Node::Neg(inner) => eval(inner, value).map(|v| -v),
        Node::Binary(op, a, b) => {
            let (a, b) = (eval(a, value)?, eval(b, value)?);
            match op {
                '+' => Some(a + b),
                '-' => Some(a - b),
                '*' => Some(a * b),
                _ if b == 0.0 => None,
                _ => Some(a / b),
            }
        }
    }
}

/// The hash a distinct count counts a value's text by.
pub fn distinct_key(text: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6175_7275_6d5f_7769).hash_one(text)
}
