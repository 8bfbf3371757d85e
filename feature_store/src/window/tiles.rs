//! The partial aggregate one tile (or one window) holds.

use super::Function;

/// The aggregate of a set of events of one column: enough to value every
/// [`Function`] and to merge with another set's (Welford's mean and
/// squared deviations, merged by Chan's formula, so variances stay exact
/// where a sum of squares would cancel). 64 bytes, one cache line: a read
/// merges many, and the distinct keys most columns never count live
/// behind a pointer.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    /// Events, null values included.
    pub events: u64,
    /// Non-null values.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// Their mean.
    pub mean: f64,
    /// Their summed squared deviations from the mean.
    pub m2: f64,
    /// Their minimum (`+inf` when none).
    pub min: f64,
    /// Their maximum (`-inf` when none).
    pub max: f64,
    /// The distinct values' keys ([`super::distinct_key`]), when counted:
    /// unsorted, may repeat until [`Agg::compact`].
    pub distinct: Option<Box<Vec<u64>>>,
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            events: 0,
            n: 0,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            distinct: None,
        }
    }
}

impl Agg {
    /// Adds one event: its value (`None`: null) and, when distinct values
    /// are counted, its key.
    pub fn push(&mut self, value: Option<f64>, key: Option<u64>) {
        self.events += 1;
        if let Some(x) = value.filter(|x| !x.is_nan()) {
            self.n += 1;
            self.sum += x;
            let delta = x - self.mean;
            self.mean += delta / self.n as f64;
            self.m2 += delta * (x - self.mean);
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        if let Some(key) = key {
            self.distinct.get_or_insert_default().push(key);
        }
    }

    /// Adds another set's aggregate.
    pub fn merge(&mut self, other: &Agg) {
        self.events += other.events;
        if other.n > 0 {
            if self.n == 0 {
                self.n = other.n;
                self.mean = other.mean;
                self.m2 = other.m2;
            } else {
                let n = self.n + other.n;
                let delta = other.mean - self.mean;
                self.mean += delta * other.n as f64 / n as f64;
                self.m2 += other.m2 + delta * delta * (self.n as f64 * other.n as f64) / n as f64;
                self.n = n;
            }
            self.sum += other.sum;
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        if let Some(keys) = other.distinct.as_deref().filter(|k| !k.is_empty()) {
            self.distinct
                .get_or_insert_default()
                .extend_from_slice(keys);
        }
    }

    /// Sorts and de-duplicates the distinct keys (a tile's, once it is
    /// built, so merges carry each key once).
    pub fn compact(&mut self) {
        if let Some(keys) = &mut self.distinct {
            keys.sort_unstable();
            keys.dedup();
        }
    }

    /// Distinct keys held (repeats included until compacted).
    pub fn distinct_len(&self) -> usize {
        self.distinct.as_ref().map_or(0, |k| k.len())
    }

    /// The value of `function` over the events aggregated.
    pub fn value(&self, function: Function) -> Option<f64> {
        let some = |v: f64| (self.n > 0).then_some(v);
        match function {
            Function::Count => Some(self.events as f64),
            Function::Sum => Some(if self.n > 0 { self.sum } else { 0.0 }),
            Function::Mean => some(self.mean),
            Function::Min => some(self.min),
            Function::Max => some(self.max),
            // Equal values deviate by nothing, whatever rounding left in m2.
            Function::Stddev if self.n > 1 && self.min == self.max => Some(0.0),
            Function::Stddev => {
                (self.n > 1).then(|| (self.m2.max(0.0) / (self.n - 1) as f64).sqrt())
            }
            Function::DistinctCount => {
                let mut keys: Vec<u64> = self.distinct.as_deref().cloned().unwrap_or_default();
                keys.sort_unstable();
                keys.dedup();
                Some(keys.len() as f64)
            }
        }
    }

    /// Resets to no events, keeping the distinct keys' allocation.
    pub fn clear(&mut self) {
        let mut distinct = self.distinct.take();
        if let Some(keys) = &mut distinct {
            keys.clear();
        }
        *self = Agg {
            distinct,
            ..Agg::default()
        };
    }
}

/// Sets `out` (one aggregate per column, holding no events) to the merge
/// of a run of tiles (each one aggregate per column, as wide as `out`), in
/// two walks over the tiles: counts, sums and extremes first, then the
/// squared deviations about the run's mean, so no tile costs a division
/// (a chain of [`Agg::merge`]s divides twice per tile, one after the
/// other). Each column's arithmetic is the same in whatever order the
/// columns are walked, so the online and offline reads that both use it
/// agree to the bit; the tiles are walked in memory order, all columns at
/// once. `tiles` is iterated twice.
pub fn merge_tiles<'a>(out: &mut [Agg], tiles: impl Iterator<Item = &'a [Agg]> + Clone) {
    debug_assert!(out.iter().all(|a| a.events == 0 && a.distinct_len() == 0));
    for tile in tiles.clone() {
        for (all, a) in out.iter_mut().zip(tile) {
            all.events += a.events;
            all.n += a.n;
            all.sum += a.sum;
            all.min = all.min.min(a.min);
            all.max = all.max.max(a.max);
            if let Some(keys) = a.distinct.as_deref().filter(|k| !k.is_empty()) {
                all.distinct.get_or_insert_default().extend_from_slice(keys);
            }
        }
    }
    if out.iter().all(|a| a.n == 0) {
        return;
    }
    for all in out.iter_mut().filter(|a| a.n > 0) {
        all.mean = all.sum / all.n as f64;
    }
    for tile in tiles {
        for (all, a) in out.iter_mut().zip(tile) {
            let d = a.mean - all.mean;
            all.m2 += a.m2 + a.n as f64 * d * d;
        }
    }
    for all in out.iter_mut().filter(|a| a.n == 0) {
        all.m2 = 0.0;
    }
}
