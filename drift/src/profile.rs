//! Reference profiles: what a dataset looked like, kept small enough to
//! store beside a model version and to compare live windows against.
//!
//! A numeric column keeps its count, null count, mean, standard deviation,
//! range, a quantile sketch (every sorted value up to [`SKETCH_POINTS`],
//! else that many evenly spaced quantiles — so a CDF read from it is within
//! 1/(2·[`SKETCH_POINTS`]) of the data's), [`PSI_BINS`] quantile bins with
//! their exact counts, and, when it holds at most [`DISCRETE_LIMIT`]
//! distinct values, the count of each (such a column is tested as a
//! categorical one, as Evidently does). A categorical column keeps the count
//! of each of its [`MAX_CATEGORIES`] most frequent categories and of the
//! rest.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sort::sorted_finite;

/// The name a model version's reference profile is stored under (as JSON,
/// beside the version in the registry).
pub const REFERENCE_PROFILE: &str = "reference_profile.json";

/// Points a numeric column's quantile sketch keeps.
pub const SKETCH_POINTS: usize = 2048;
/// Quantile bins a numeric column keeps for PSI and Jensen–Shannon.
pub const PSI_BINS: usize = 10;
/// A numeric column with at most this many distinct values is tested as a
/// categorical one.
pub const DISCRETE_LIMIT: usize = 5;
/// Categories a categorical column keeps by name; the rest are counted
/// together.
pub const MAX_CATEGORIES: usize = 1000;

/// One column of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its values.
    pub values: Values,
}

/// A column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Numbers; NaN and ±∞ are missing values.
    Numeric(Vec<f64>),
    /// Labels; `None` is a missing value.
    Categorical(Vec<Option<String>>),
}

impl Values {
    /// The number of rows.
    pub fn len(&self) -> usize {
        match self {
            Values::Numeric(v) => v.len(),
            Values::Categorical(v) => v.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a dataset looked like: the reference drift is measured against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Rows in the dataset.
    pub rows: u64,
    /// One profile per column, in the dataset's column order.
    pub columns: Vec<ColumnProfile>,
    /// The model's predictions on the dataset, when profiled for a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<ColumnProfile>,
}

/// One column's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// The column's name.
    pub name: String,
    /// Rows, missing values included.
    pub rows: u64,
    /// Missing values.
    pub nulls: u64,
    /// The distribution of the values that are there.
    pub summary: Summary,
}

/// A column's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Summary {
    /// A numeric column.
    Numeric(NumericSummary),
    /// A categorical column.
    Categorical(CategoricalSummary),
}

/// A numeric column's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// Finite values.
    pub count: u64,
    /// Their mean (0 when there are none).
    pub mean: f64,
    /// Their population standard deviation.
    pub std: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// Sorted: every value (`exact`), or evenly spaced quantiles.
    pub sketch: Vec<f64>,
    /// Whether `sketch` holds every value.
    pub exact: bool,
    /// Inner edges of the quantile bins (a value `x` falls in the first bin
    /// whose edge is > `x`, or the last).
    pub bin_edges: Vec<f64>,
    /// Values per bin (`bin_edges.len() + 1` bins).
    pub bin_counts: Vec<u64>,
    /// Each distinct value and its count, when there are at most
    /// [`DISCRETE_LIMIT`] of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discrete: Option<Vec<(f64, u64)>>,
}

/// A categorical column's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary {
    /// The most frequent categories and their counts, most frequent first.
    pub categories: Vec<(String, u64)>,
    /// Values of all other categories.
    pub other: u64,
}

impl Profile {
    /// Profiles `columns` (all of one length) and, optionally, a model's
    /// predictions on the same rows. Columns are profiled in parallel.
    pub fn build(columns: &[Column], prediction: Option<&Column>) -> Result<Profile> {
        let rows = check_shape(columns, prediction)?;
        let profiled: Vec<ColumnProfile> = columns.par_iter().map(ColumnProfile::build).collect();
        Ok(Profile {
            rows: rows as u64,
            columns: profiled,
            prediction: prediction.map(ColumnProfile::build),
        })
    }

    /// The profile of column `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Checks that names are unique and lengths agree; returns the row count.
pub(crate) fn check_shape(columns: &[Column], prediction: Option<&Column>) -> Result<usize> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if !seen.insert(c.name.as_str()) {
            return Err(Error::DuplicateColumn(c.name.clone()));
        }
    }
    let rows = columns
        .first()
        .or(prediction)
        .map(|c| c.values.len())
        .unwrap_or(0);
    for c in columns.iter().chain(prediction) {
        if c.values.len() != rows {
            return Err(Error::Ragged {
                column: c.name.clone(),
                rows: c.values.len(),
                expected: rows,
            });
        }
    }
    Ok(rows)
}

impl ColumnProfile {
    /// Profiles one column.
    pub fn build(column: &Column) -> ColumnProfile {
        match &column.values {
            Values::Numeric(values) => {
                let sorted = sorted_finite(values);
                ColumnProfile {
                    name: column.name.clone(),
                    rows: values.len() as u64,
                    nulls: (values.len() - sorted.len()) as u64,
                    summary: Summary::Numeric(NumericSummary::from_sorted(&sorted)),
                }
            }
            Values::Categorical(values) => {
                let (counts, nulls) = count_categories(values);
                let mut categories: Vec<(String, u64)> = counts
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let other = categories.iter().skip(MAX_CATEGORIES).map(|(_, c)| c).sum();
                categories.truncate(MAX_CATEGORIES);
                ColumnProfile {
                    name: column.name.clone(),
                    rows: values.len() as u64,
                    nulls,
                    summary: Summary::Categorical(CategoricalSummary { categories, other }),
                }
            }
        }
    }

    /// The share of missing values (0 for an empty column).
    pub fn null_share(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.nulls as f64 / self.rows as f64
        }
    }
}

pub(crate) fn count_categories(values: &[Option<String>]) -> (HashMap<&str, u64>, u64) {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut nulls = 0;
    for v in values {
        match v {
            Some(v) => *counts.entry(v.as_str()).or_default() += 1,
            None => nulls += 1,
        }
    }
    (counts, nulls)
}

impl NumericSummary {
    /// Summarizes sorted finite values.
    pub fn from_sorted(sorted: &[f64]) -> NumericSummary {
        let n = sorted.len();
        if n == 0 {
            return NumericSummary {
                count: 0,
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                max: 0.0,
                sketch: Vec::new(),
                exact: true,
                bin_edges: Vec::new(),
                bin_counts: vec![0],
                discrete: None,
            };
        }
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let var = sorted.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let exact = n <= SKETCH_POINTS;
        let sketch = if exact {
            sorted.to_vec()
        } else {
            (0..SKETCH_POINTS)
                .map(|k| sorted[((2 * k + 1) * n) / (2 * SKETCH_POINTS)])
                .collect()
        };
        let mut bin_edges: Vec<f64> = (1..PSI_BINS).map(|k| sorted[(k * n) / PSI_BINS]).collect();
        bin_edges.dedup();
        let bin_counts = bin_counts_sorted(&bin_edges, sorted);
        NumericSummary {
            count: n as u64,
            mean,
            std: var.sqrt(),
            min: sorted[0],
            max: sorted[n - 1],
            sketch,
            exact,
            bin_edges,
            bin_counts,
            discrete: distinct_values(sorted),
        }
    }
}

/// Counts of sorted values in the bins of `edges` (x goes to the first bin
/// whose edge is > x: bins are closed below, open above).
pub(crate) fn bin_counts_sorted(edges: &[f64], sorted: &[f64]) -> Vec<u64> {
    let mut counts = Vec::with_capacity(edges.len() + 1);
    let mut start = 0;
    for &e in edges {
        let end = start + sorted[start..].partition_point(|&x| x < e);
        counts.push((end - start) as u64);
        start = end;
    }
    counts.push((sorted.len() - start) as u64);
    counts
}

/// The distinct values of sorted values with their counts, if at most
/// [`DISCRETE_LIMIT`].
fn distinct_values(sorted: &[f64]) -> Option<Vec<(f64, u64)>> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        if out.len() == DISCRETE_LIMIT {
            return None;
        }
        let v = sorted[i];
        let end = i + sorted[i..].partition_point(|&x| x <= v);
        out.push((v, (end - i) as u64));
        i = end;
    }
    Some(out)
}

/// Categories in a stable order for reports: the reference's, then those
/// only the current data has (sorted).
pub(crate) fn category_table(
    reference: &CategoricalSummary,
    current: &HashMap<&str, u64>,
) -> (Vec<String>, Vec<u64>, Vec<u64>) {
    let mut labels = Vec::new();
    let (mut r, mut c) = (Vec::new(), Vec::new());
    let mut known = HashSet::new();
    for (name, count) in &reference.categories {
        known.insert(name.as_str());
        labels.push(name.clone());
        r.push(*count);
        c.push(current.get(name.as_str()).copied().unwrap_or(0));
    }
    let mut unseen: Vec<(&str, u64)> = current
        .iter()
        .filter(|(k, _)| !known.contains(*k))
        .map(|(k, v)| (*k, *v))
        .collect();
    unseen.sort();
    if reference.other > 0 {
        // The reference's tail was counted together: current categories
        // outside its named ones join that bucket.
        labels.push("(other)".into());
        r.push(reference.other);
        c.push(unseen.iter().map(|(_, v)| v).sum());
    } else {
        for (k, v) in unseen {
            labels.push(k.to_string());
            r.push(0);
            c.push(v);
        }
    }
    (labels, r, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_quantiles_stay_close_to_the_data() {
        let values: Vec<f64> = (0..100_000).map(|i| f64::from(i) / 100.0).collect();
        let p = ColumnProfile::build(&Column {
            name: "x".into(),
            values: Values::Numeric(values),
        });
        let Summary::Numeric(s) = &p.summary else {
            panic!("numeric expected")
        };
        assert_eq!(s.sketch.len(), SKETCH_POINTS);
        assert!(!s.exact);
        assert_eq!(s.bin_counts.iter().sum::<u64>(), 100_000);
        assert!(
            s.bin_counts.iter().all(|&c| c == 10_000),
            "{:?}",
            s.bin_counts
        );
        assert!((s.mean - 499.995).abs() < 1e-9);
        assert!(s.discrete.is_none());
    }

    #[test]
    fn few_distinct_values_are_counted() {
        let p = ColumnProfile::build(&Column {
            name: "x".into(),
            values: Values::Numeric(vec![1.0, 0.0, 1.0, f64::NAN, 1.0]),
        });
        assert_eq!(p.nulls, 1);
        let Summary::Numeric(s) = &p.summary else {
            panic!("numeric expected")
        };
        assert_eq!(s.discrete, Some(vec![(0.0, 1), (1.0, 3)]));
    }

    #[test]
    fn ragged_and_duplicate_columns_are_refused() {
        let col = |name: &str, n: usize| Column {
            name: name.into(),
            values: Values::Numeric(vec![0.0; n]),
        };
        assert!(matches!(
            Profile::build(&[col("a", 3), col("b", 2)], None),
            Err(Error::Ragged { .. })
        ));
        assert!(matches!(
            Profile::build(&[col("a", 3), col("a", 3)], None),
            Err(Error::DuplicateColumn(_))
        ));
    }
}
