//! A point-in-time training set read for training: rows sorted by time,
//! split so that every validation row is strictly later than every training
//! row, labels and features checked (unusable ones refused by name), and
//! the features standardized with training statistics only.

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::spec::Task;

/// The fewest training rows a spec's job accepts.
pub const MIN_TRAIN_ROWS: usize = 20;
/// The fewest validation rows a spec's job accepts.
pub const MIN_VALIDATION_ROWS: usize = 10;

/// How [`dataset`] reads a training set: the order of rows that share a
/// timestamp, and what it refuses beyond an unreadable or out-of-range
/// label, a missing column or a split that leaves a side too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The fewest training rows.
    pub min_train_rows: usize,
    /// The fewest validation rows.
    pub min_validation_rows: usize,
    /// Refuse a classifier whose training or validation split holds a
    /// single class.
    pub both_classes: bool,
    /// Refuse infinite feature values, and features null in every
    /// training row.
    pub usable_features: bool,
    /// Keep the input order of rows that share a timestamp (a stable sort).
    /// The row order is the order of the sums in every gradient, so it is
    /// part of what makes the weights reproducible.
    pub stable_sort: bool,
}

impl Rules {
    /// What a `[model.training]` job demands.
    pub const SPEC: Rules = Rules {
        min_train_rows: MIN_TRAIN_ROWS,
        min_validation_rows: MIN_VALIDATION_ROWS,
        both_classes: true,
        usable_features: true,
        stable_sort: true,
    };

    /// What the demo's logistic regression has always accepted: two rows
    /// on each side, no further checks, and polars' default (unstable)
    /// sort, so that its training sets keep the row order, and therefore
    /// the weights, they always had.
    pub const LENIENT: Rules = Rules {
        min_train_rows: 2,
        min_validation_rows: 2,
        both_classes: false,
        usable_features: false,
        stable_sort: false,
    };
}

/// A training set as the trainer reads it: rows in time order, features
/// row-major with NaN where missing, and the first validation row.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The feature columns, in input order.
    pub features: Vec<String>,
    /// Rows.
    pub rows: usize,
    /// Row-major values, NaN where missing.
    pub x: Vec<f32>,
    /// The label of each row.
    pub y: Vec<f32>,
    /// The first validation row: every row from here on is strictly later
    /// than every row before.
    pub split: usize,
}

/// Reads `df` (a point-in-time training set) for training: sorted by
/// `timestamp`, split by time, with every input `rules` find unusable
/// refused by name.
pub fn dataset(
    df: &DataFrame,
    features: &[String],
    label: &str,
    timestamp: &str,
    task: Task,
    validation_fraction: f64,
    rules: &Rules,
) -> Result<Dataset> {
    if features.is_empty() {
        return Err(Error::TrainingSet("no feature columns given".into()));
    }
    let df = sort_by_time(df, timestamp, rules.stable_sort)?;
    let rows = df.height();
    let y = read_labels(&df, label, task)?;
    let split = time_split(&df, timestamp, validation_fraction)?;
    if split < rules.min_train_rows || rows - split < rules.min_validation_rows {
        return Err(Error::TrainingSet(format!(
            "too few rows: {rows} rows split by {timestamp} into {split} training and {} \
             validation rows; at least {} and {} are needed",
            rows - split,
            rules.min_train_rows,
            rules.min_validation_rows
        )));
    }
    if rules.both_classes && task == Task::BinaryClassification {
        check_both_classes(&y, split, label)?;
    }
    let columns: Vec<Vec<f32>> = features
        .iter()
        .map(|f| float_column(&df, f))
        .collect::<Result<_>>()?;
    if rules.usable_features {
        check_features(features, &columns, split)?;
    }
    let mut x = Vec::with_capacity(rows * features.len());
    for i in 0..rows {
        x.extend(columns.iter().map(|c| c[i]));
    }
    Ok(Dataset {
        features: features.to_vec(),
        rows,
        x,
        y,
        split,
    })
}

/// The features' training statistics and every row standardized with them.
#[derive(Debug, Clone)]
pub struct Standardized {
    /// Training means per feature (also the imputation values).
    pub means: Vec<f32>,
    /// Training standard deviations per feature (1 where constant).
    pub stds: Vec<f32>,
    /// Every row, row-major, standardized.
    pub x: Vec<f32>,
}

/// Standardizes every row of `data` with the training rows' mean and
/// standard deviation per feature. A missing value takes the training mean
/// before standardizing, exactly as the exported graph imputes it (so it
/// becomes 0 wherever the mean is finite).
pub fn standardize(data: &Dataset) -> Standardized {
    let f = data.features.len();
    let (means, stds): (Vec<f32>, Vec<f32>) = (0..f)
        .map(|j| {
            let column: Vec<f32> = (0..data.split).map(|i| data.x[i * f + j]).collect();
            mean_std(&column)
        })
        .unzip();
    let x = data
        .x
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let j = k % f;
            let v = if v.is_nan() { means[j] } else { v };
            (v - means[j]) / stds[j]
        })
        .collect();
    Standardized { means, stds, x }
}

/// The mean and (population) standard deviation of the present values,
/// computed in f64; `(0, 1)` when none is present, and a standard
/// deviation of 1 for a constant column.
pub(crate) fn mean_std(values: &[f32]) -> (f32, f32) {
    let present: Vec<f64> = values
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| f64::from(v))
        .collect();
    if present.is_empty() {
        return (0.0, 1.0);
    }
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / present.len() as f64;
    let std = var.sqrt();
    (mean as f32, if std > 1e-12 { std as f32 } else { 1.0 })
}

/// The first validation row: the latest `fraction` of rows, moved forward
/// past ties so that validation is strictly later than training.
pub(crate) fn time_split(df: &DataFrame, timestamp: &str, fraction: f64) -> Result<usize> {
    let n = df.height();
    let column = df
        .column(timestamp)
        .map_err(|_| Error::TrainingSet(format!("timestamp column {timestamp:?} is missing")))?;
    let physical = column.as_materialized_series().to_physical_repr();
    let ts = physical.i64().map_err(|source| Error::Data {
        context: format!("timestamp column {timestamp:?}"),
        source,
    })?;
    if ts.null_count() > 0 {
        return Err(Error::TrainingSet(format!(
            "timestamp column {timestamp:?} has {} nulls",
            ts.null_count()
        )));
    }
    let mut split = n - ((n as f64 * fraction.clamp(0.0, 1.0)).ceil() as usize).min(n);
    while split > 0 && split < n && ts.get(split) == ts.get(split - 1) {
        split += 1;
    }
    Ok(split)
}

/// A column as f32, NaN where null.
fn float_column(df: &DataFrame, name: &str) -> Result<Vec<f32>> {
    let column = df
        .column(name)
        .map_err(|_| Error::TrainingSet(format!("column {name:?} is missing")))?;
    let cast = column
        .cast(&DataType::Float32)
        .map_err(|source| Error::Data {
            context: format!("column {name:?} as float"),
            source,
        })?;
    let values = cast.f32().map_err(|source| Error::Data {
        context: format!("column {name:?} as float"),
        source,
    })?;
    Ok(values.iter().map(|v| v.unwrap_or(f32::NAN)).collect())
}

/// `df` sorted by `timestamp`; `stable` keeps tied rows in input order.
fn sort_by_time(df: &DataFrame, timestamp: &str, stable: bool) -> Result<DataFrame> {
    df.sort(
        [timestamp],
        SortMultipleOptions::default().with_maintain_order(stable),
    )
    .map_err(|source| Error::Data {
        context: format!("sorting the training set by {timestamp}"),
        source,
    })
}

/// The label column as f32, refused when missing, null anywhere, or out
/// of the task's range (0 or 1 for a classifier, finite for a regressor).
fn read_labels(df: &DataFrame, label: &str, task: Task) -> Result<Vec<f32>> {
    let rows = df.height();
    let label_column = df
        .column(label)
        .map_err(|_| Error::TrainingSet(format!("label column {label:?} is missing")))?;
    if label_column.null_count() > 0 {
        return Err(Error::TrainingSet(format!(
            "label {label:?} is null in {} of {rows} rows",
            label_column.null_count()
        )));
    }
    let y = float_column(df, label)?;
    match task {
        Task::BinaryClassification => {
            if let Some(i) = y.iter().position(|v| !(*v == 0.0 || *v == 1.0)) {
                return Err(Error::TrainingSet(format!(
                    "label {label:?} must be 0 or 1 for binary classification; row {i} has {}",
                    y[i]
                )));
            }
        }
        Task::Regression => {
            if let Some(i) = y.iter().position(|v| !v.is_finite()) {
                return Err(Error::TrainingSet(format!(
                    "label {label:?} has a non-finite value {} (row {i})",
                    y[i]
                )));
            }
        }
    }
    Ok(y)
}

/// Refuses a split (training or validation) that holds a single class.
fn check_both_classes(y: &[f32], split: usize, label: &str) -> Result<()> {
    for (part, range) in [("training", 0..split), ("validation", split..y.len())] {
        let positives = y[range.clone()].iter().filter(|&&v| v > 0.5).count();
        if positives == 0 || positives == range.len() {
            return Err(Error::TrainingSet(format!(
                "label {label:?} has a single class ({}) in the {part} split; a classifier \
                 needs both",
                if positives == 0 { 0 } else { 1 }
            )));
        }
    }
    Ok(())
}

/// Refuses infinite feature values (missing values are imputed, infinite
/// ones would poison the standardization) and features with no value in
/// any training row.
fn check_features(features: &[String], columns: &[Vec<f32>], split: usize) -> Result<()> {
    for (name, column) in features.iter().zip(columns) {
        let infinite = column.iter().filter(|v| v.is_infinite()).count();
        if infinite > 0 {
            return Err(Error::TrainingSet(format!(
                "feature {name:?} has {infinite} infinite values; fix them upstream (missing \
                 values are imputed, infinite ones are not)"
            )));
        }
        if column[..split].iter().all(|v| v.is_nan()) {
            return Err(Error::TrainingSet(format!(
                "feature {name:?} is null in every training row"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// A frame whose label follows a known logistic model of two of three
    /// features, with some values missing.
    pub(crate) fn synthetic(rows: usize, seed: u64) -> DataFrame {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut c = Vec::new();
        let mut y = Vec::new();
        for i in 0..rows {
            let (x1, x2, x3) = (
                rng.random::<f64>() * 10.0,
                rng.random::<f64>() * 4.0 - 2.0,
                rng.random::<f64>(),
            );
            let logit = 0.6 * x1 - 1.5 * x2 - 3.0;
            let label = rng.random::<f64>() < 1.0 / (1.0 + (-logit).exp());
            a.push(if i % 17 == 0 { None } else { Some(x1) });
            b.push(Some(x2));
            c.push(Some(x3));
            y.push(i64::from(u8::from(label)));
        }
        let ts: Vec<i64> = (0..rows as i64).map(|i| i * 1_000_000).collect();
        df!("a" => a, "b" => b, "c" => c, "y" => y, "ts" => ts).unwrap()
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn validation_is_strictly_later_than_training() {
        // Many rows share each timestamp; the split must not cut a tie.
        let ts: Vec<i64> = (0..100).map(|i| i / 10).collect();
        let df = df!("ts" => ts).unwrap();
        let split = time_split(&df, "ts", 0.25).unwrap();
        assert_eq!(split, 80);
        let ts: Vec<i64> = (0..100).map(|i| (i + 5) / 10).collect();
        let df = df!("ts" => ts).unwrap();
        assert_eq!(time_split(&df, "ts", 0.25).unwrap(), 75);
    }

    #[test]
    fn unusable_training_sets_are_refused_naming_the_problem() {
        let good = synthetic(200, 4);
        let with = |name: &str, column: Column| {
            let mut df = good.clone();
            df.with_column(column.with_name(name.into())).unwrap();
            df
        };
        let n = good.height();
        let cases = [
            (
                with(
                    "y",
                    Column::new(
                        "y".into(),
                        (0..n).map(|i| (i > 0).then_some(1i64)).collect::<Vec<_>>(),
                    ),
                ),
                "is null in 1 of 200 rows",
            ),
            (
                with("y", Column::new("y".into(), vec![0i64; n])),
                "single class (0) in the training split",
            ),
            (good.head(Some(25)), "too few rows"),
            (
                with("c", Column::new("c".into(), vec![None::<f64>; n])),
                "feature \"c\" is null in every training row",
            ),
            (
                with(
                    "b",
                    Column::new(
                        "b".into(),
                        (0..n)
                            .map(|i| if i == 3 { f64::INFINITY } else { 1.0 })
                            .collect::<Vec<_>>(),
                    ),
                ),
                "feature \"b\" has 1 infinite values",
            ),
        ];
        for (df, needle) in cases {
            let error = dataset(
                &df,
                &names(),
                "y",
                "ts",
                Task::BinaryClassification,
                0.2,
                &Rules::SPEC,
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }

    #[test]
    fn a_missing_value_standardizes_to_zero_as_the_graph_imputes_it() {
        let df = synthetic(100, 5);
        let data = dataset(
            &df,
            &names(),
            "y",
            "ts",
            Task::BinaryClassification,
            0.2,
            &Rules::LENIENT,
        )
        .unwrap();
        let standardized = standardize(&data);
        // Row 0 has no `a` (every 17th row is missing it).
        assert!(data.x[0].is_nan());
        assert_eq!(standardized.x[0].to_bits(), 0.0f32.to_bits());
    }
}
