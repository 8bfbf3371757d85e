//! The partial aggregate one tile (or one window) holds.

use super::Function;

/// The aggregate of a set of events of one column: enough to value every
/// [`Function`] and to merge with another set's (Welford's mean and
/// squared deviations, merged by Chan's formula, so variances stay exact
/// where a sum of squares would cancel).
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
    pub distinct: Vec<u64>,
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
            distinct: Vec::new(),
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
            self.distinct.push(key);
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
        self.distinct.extend_from_slice(&other.distinct);
    }

    /// Sorts and de-duplicates the distinct keys (a tile's, once it is
    /// built, so merges carry each key once).
    pub fn compact(&mut self) {
        self.distinct.sort_unstable();
        self.distinct.dedup();
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
            Function::Stddev => {
                (self.n > 1).then(|| (self.m2.max(0.0) / (self.n - 1) as f64).sqrt())
            }
            Function::DistinctCount => {
                let mut keys = self.distinct.clone();
                keys.sort_unstable();
                keys.dedup();
                Some(keys.len() as f64)
            }
        }
    }

    /// Resets to no events, keeping the distinct keys' allocation.
    pub fn clear(&mut self) {
        let mut distinct = std::mem::take(&mut self.distinct);
        distinct.clear();
        *self = Agg {
            distinct,
            ..Agg::default()
        };
    }
}
