//! Training a linear model or an MLP with candle, on a time-ordered split,
//! and exporting the whole inference graph to ONNX.
//!
//! Every random choice (initialization, shuffling, dropout masks,
//! permutations) comes from one seeded ChaCha stream, and candle's CPU
//! kernels are deterministic for a given shape, so the same data and
//! hyperparameters give the same weights and the same ONNX bytes.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use onnx::{Dim, GraphBuilder};
use polars::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::metrics::{self, CalibrationBin};
use crate::spec::{ClassWeight, Family, Hyperparameters, Task};

/// The exported model's input: `[batch, features]` float32, NaN = missing.
pub const INPUT: &str = "features";

/// The fewest rows each split may have.
pub const MIN_TRAIN_ROWS: usize = 20;
/// The fewest validation rows.
pub const MIN_VALIDATION_ROWS: usize = 10;

/// Validation rows the permutation importance looks at, at most.
const IMPORTANCE_ROWS: usize = 50_000;

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
/// `timestamp`, split by time, with every unusable input refused by name.
pub fn dataset(
    df: &DataFrame,
    features: &[String],
    label: &str,
    timestamp: &str,
    task: Task,
    validation_fraction: f64,
) -> Result<Dataset> {
    if features.is_empty() {
        return Err(Error::TrainingSet("no feature columns given".into()));
    }
    let df = df
        .sort(
            [timestamp],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .map_err(|source| Error::Data {
            context: format!("sorting the training set by {timestamp}"),
            source,
        })?;
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
    let y = crate::logistic::float_column(&df, label)?;
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
    let split = crate::logistic::time_split(&df, timestamp, validation_fraction)?;
    if split < MIN_TRAIN_ROWS || rows - split < MIN_VALIDATION_ROWS {
        return Err(Error::TrainingSet(format!(
            "too few rows: {rows} rows split by {timestamp} into {split} training and {} \
             validation rows; at least {MIN_TRAIN_ROWS} and {MIN_VALIDATION_ROWS} are needed",
            rows - split
        )));
    }
    if task == Task::BinaryClassification {
        for (part, range) in [("training", 0..split), ("validation", split..rows)] {
            let positives = y[range.clone()].iter().filter(|&&v| v > 0.5).count();
            if positives == 0 || positives == range.len() {
                return Err(Error::TrainingSet(format!(
                    "label {label:?} has a single class ({}) in the {part} split; a classifier \
                     needs both",
                    if positives == 0 { 0 } else { 1 }
                )));
            }
        }
    }
    let columns: Vec<Vec<f32>> = features
        .iter()
        .map(|f| crate::logistic::float_column(&df, f))
        .collect::<Result<_>>()?;
    for (name, column) in features.iter().zip(&columns) {
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

/// A trained model, its evaluation and its ONNX export.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// What it predicts.
    pub task: Task,
    /// The feature columns, in input order.
    pub features: Vec<String>,
    /// Training means (also the imputation values).
    pub means: Vec<f32>,
    /// Training standard deviations (1 where constant).
    pub stds: Vec<f32>,
    /// Layers: row-major `[in, out]` weights and `[out]` biases.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Regression only: the label's training mean and standard deviation.
    pub target_scale: (f32, f32),
    /// The exported ONNX model.
    pub onnx: Vec<u8>,
    /// Validation metrics, training sizes and timings.
    pub metrics: BTreeMap<String, f64>,
    /// Permutation importance per feature on the validation split.
    pub importance: Vec<(String, f64)>,
    /// Classification only: the validation calibration table.
    pub calibration: Vec<CalibrationBin>,
    /// Epochs run (early stopping may end before the limit).
    pub epochs_run: usize,
    /// The validation rows' raw features, row-major, NaN where missing.
    pub validation_features: Vec<f32>,
    /// candle's predictions for the validation rows (probabilities for
    /// classification).
    pub validation_predictions: Vec<f32>,
    /// The validation labels.
    pub validation_labels: Vec<f32>,
}

/// Trains on `data` as `hyper` says; `progress` hears of each epoch (its
/// number and validation loss).
pub fn fit(
    data: &Dataset,
    task: Task,
    hyper: &Hyperparameters,
    progress: &dyn Fn(usize, f64),
) -> Result<Fitted> {
    let started = Instant::now();
    let f = data.features.len();
    let (n, split) = (data.rows, data.split);
    let mut rng = ChaCha8Rng::seed_from_u64(hyper.seed);

    // Standardize with training statistics only; missing values take the
    // training mean (0 after standardization).
    let (means, stds): (Vec<f32>, Vec<f32>) = (0..f)
        .map(|j| {
            let column: Vec<f32> = (0..split).map(|i| data.x[i * f + j]).collect();
            crate::logistic::mean_std(&column)
        })
        .unzip();
    let standardized: Vec<f32> = data
        .x
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let j = k % f;
            if v.is_nan() {
                0.0
            } else {
                (v - means[j]) / stds[j]
            }
        })
        .collect();
    let target_scale = match task {
        Task::BinaryClassification => (0.0, 1.0),
        Task::Regression => crate::logistic::mean_std(&data.y[..split]),
    };
    let targets: Vec<f32> = data
        .y
        .iter()
        .map(|&y| (y - target_scale.0) / target_scale.1)
        .collect();
    let positives = data.y[..split].iter().filter(|&&v| v > 0.5).count() as f32;
    let (w_neg, w_pos) = match (task, hyper.class_weight) {
        (Task::BinaryClassification, ClassWeight::Balanced) => (
            split as f32 / (2.0 * (split as f32 - positives)),
            split as f32 / (2.0 * positives),
        ),
        _ => (1.0, 1.0),
    };

    let mut widths = vec![f];
    if hyper.family == Family::Mlp {
        widths.extend(&hyper.hidden);
    }
    widths.push(1);
    let device = Device::Cpu;
    let mut vars = Vec::new();
    for (layer, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let last = layer + 2 == widths.len();
        // He-uniform before a ReLU, Glorot-uniform for the output layer.
        let bound = if last {
            (6.0 / (fan_in + fan_out) as f32).sqrt()
        } else {
            (6.0 / fan_in as f32).sqrt()
        };
        let w: Vec<f32> = (0..fan_in * fan_out)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        vars.push(Var::from_tensor(&Tensor::from_vec(
            w,
            (fan_in, fan_out),
            &device,
        )?)?);
        vars.push(Var::zeros(fan_out, DType::F32, &device)?);
    }
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: hyper.learning_rate,
            weight_decay: hyper.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;

    let validation_x = Tensor::from_slice(&standardized[split * f..], (n - split, f), &device)?;
    let validation_targets = &targets[split..];
    let mut order: Vec<usize> = (0..split).collect();
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut stale = 0;
    let mut epochs_run = 0;
    for epoch in 1..=hyper.epochs {
        order.shuffle(&mut rng);
        for batch in order.chunks(hyper.batch_size) {
            let mut xb = Vec::with_capacity(batch.len() * f);
            let mut yb = Vec::with_capacity(batch.len());
            let mut wb = Vec::with_capacity(batch.len());
            for &i in batch {
                xb.extend_from_slice(&standardized[i * f..(i + 1) * f]);
                yb.push(targets[i]);
                wb.push(if data.y[i] > 0.5 { w_pos } else { w_neg });
            }
            let xb = Tensor::from_vec(xb, (batch.len(), f), &device)?;
            let yb = Tensor::from_vec(yb, (batch.len(), 1), &device)?;
            let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let out = forward(&params, &xb, hyper.dropout, Some(&mut rng))?;
            let loss = match task {
                Task::BinaryClassification => {
                    let wb = Tensor::from_vec(wb, (batch.len(), 1), &device)?;
                    (bce_with_logits(&out, &yb)? * wb)?.mean_all()?
                }
                Task::Regression => (out - yb)?.sqr()?.mean_all()?,
            };
            optimizer.backward_step(&loss)?;
        }
        epochs_run = epoch;
        let params: Vec<Tensor> = vars
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<_>>()?;
        let out = forward(&params, &validation_x, 0.0, None)?;
        let validation_loss = plain_loss(task, &out, validation_targets)?;
        progress(epoch, validation_loss);
        match &best {
            Some((loss, _)) if validation_loss >= loss - 1e-7 => {
                stale += 1;
                if stale >= hyper.patience.max(1) {
                    break;
                }
            }
            _ => {
                best = Some((validation_loss, params));
                stale = 0;
            }
        }
    }
    let (best_loss, params) = best.ok_or_else(|| Error::TrainingSet("no epoch ran".into()))?;

    let predict = |x: &Tensor| -> Result<Vec<f32>> {
        let out = forward(&params, x, 0.0, None)?;
        let out = match task {
            Task::BinaryClassification => candle_nn::ops::sigmoid(&out)?,
            Task::Regression => out.affine(f64::from(target_scale.1), f64::from(target_scale.0))?,
        };
        Ok(out.flatten_all()?.to_vec1()?)
    };
    let predictions = predict(&validation_x)?;
    let labels = &data.y[split..];
    let mut metrics = BTreeMap::new();
    let mut calibration = Vec::new();
    let score = |p: &[f32], l: &[f32]| -> f64 {
        match task {
            Task::BinaryClassification => metrics::roc_auc(p, l).unwrap_or(0.5),
            Task::Regression => metrics::regression(p, l).0,
        }
    };
    match task {
        Task::BinaryClassification => {
            if let Some(auc) = metrics::roc_auc(&predictions, labels) {
                metrics.insert("val_roc_auc".into(), auc);
            }
            if let Some(ap) = metrics::pr_auc(&predictions, labels) {
                metrics.insert("val_pr_auc".into(), ap);
            }
            metrics.insert(
                "val_log_loss".into(),
                metrics::log_loss(&predictions, labels),
            );
            metrics.insert(
                "val_accuracy".into(),
                metrics::accuracy(&predictions, labels, 0.5),
            );
            let (precision, recall) = metrics::precision_recall(&predictions, labels, 0.5);
            metrics.insert("val_precision_at_0.5".into(), precision);
            metrics.insert("val_recall_at_0.5".into(), recall);
            metrics.insert(
                "val_positive_rate".into(),
                labels.iter().map(|&y| f64::from(y)).sum::<f64>() / labels.len() as f64,
            );
            calibration = metrics::calibration(&predictions, labels, 10);
            for bin in &calibration {
                let k = (bin.lower * 10.0).round() as usize;
                metrics.insert(format!("val_calibration_{k}_count"), bin.count as f64);
                metrics.insert(format!("val_calibration_{k}_predicted"), bin.predicted);
                metrics.insert(format!("val_calibration_{k}_observed"), bin.observed);
            }
        }
        Task::Regression => {
            let (rmse, mae, r2) = metrics::regression(&predictions, labels);
            metrics.insert("val_rmse".into(), rmse);
            metrics.insert("val_mae".into(), mae);
            metrics.insert("val_r2".into(), r2);
        }
    }
    metrics.insert("val_loss".into(), best_loss);

    // Permutation importance: how much the validation score falls when one
    // feature's values are shuffled among the rows.
    let sample: Vec<usize> = {
        let m = n - split;
        let step = m.div_ceil(IMPORTANCE_ROWS).max(1);
        (0..m).step_by(step).collect()
    };
    let sample_x: Vec<f32> = sample
        .iter()
        .flat_map(|&i| {
            standardized[(split + i) * f..(split + i + 1) * f]
                .iter()
                .copied()
        })
        .collect();
    let sample_labels: Vec<f32> = sample.iter().map(|&i| labels[i]).collect();
    let base = score(
        &predict(&Tensor::from_slice(&sample_x, (sample.len(), f), &device)?)?,
        &sample_labels,
    );
    let mut importance = Vec::with_capacity(f);
    for (j, name) in data.features.iter().enumerate() {
        let mut shuffled = sample_x.clone();
        let mut column: Vec<f32> = (0..sample.len()).map(|i| shuffled[i * f + j]).collect();
        column.shuffle(&mut rng);
        for (i, v) in column.into_iter().enumerate() {
            shuffled[i * f + j] = v;
        }
        let permuted = score(
            &predict(&Tensor::from_vec(shuffled, (sample.len(), f), &device)?)?,
            &sample_labels,
        );
        let drop = match task {
            Task::BinaryClassification => base - permuted,
            Task::Regression => permuted - base,
        };
        metrics.insert(format!("importance.{name}"), drop);
        importance.push((name.clone(), drop));
    }

    let mut layers = Vec::new();
    for pair in params.chunks(2) {
        layers.push((
            pair[0].flatten_all()?.to_vec1::<f32>()?,
            pair[1].to_vec1::<f32>()?,
        ));
    }
    let onnx = export(
        &data.features,
        task,
        &means,
        &stds,
        &widths,
        &layers,
        target_scale,
    );
    metrics.insert("train_rows".into(), split as f64);
    metrics.insert("validation_rows".into(), (n - split) as f64);
    metrics.insert("epochs_run".into(), epochs_run as f64);
    metrics.insert("training_seconds".into(), started.elapsed().as_secs_f64());
    Ok(Fitted {
        task,
        features: data.features.clone(),
        means,
        stds,
        layers,
        target_scale,
        onnx,
        metrics,
        importance,
        calibration,
        epochs_run,
        validation_features: data.x[split * f..].to_vec(),
        validation_predictions: predictions,
        validation_labels: labels.to_vec(),
    })
}

/// The network on `x`: linear layers with ReLU (and, in training, inverted
/// dropout) between them; the last layer's raw output.
fn forward(
    params: &[Tensor],
    x: &Tensor,
    dropout: f32,
    mut rng: Option<&mut ChaCha8Rng>,
) -> Result<Tensor> {
    let mut h = x.clone();
    let layers = params.len() / 2;
    for (k, pair) in params.chunks(2).enumerate() {
        h = h.matmul(&pair[0])?.broadcast_add(&pair[1])?;
        if k + 1 < layers {
            h = h.relu()?;
            if dropout > 0.0
                && let Some(rng) = rng.as_deref_mut()
            {
                let keep = 1.0 - dropout;
                let (rows, cols) = h.dims2()?;
                let mask: Vec<f32> = (0..rows * cols)
                    .map(|_| {
                        if rng.random::<f32>() < keep {
                            1.0 / keep
                        } else {
                            0.0
                        }
                    })
                    .collect();
                h = (h * Tensor::from_vec(mask, (rows, cols), x.device())?)?;
            }
        }
    }
    Ok(h)
}

/// The unweighted validation loss: log loss on logits, or mean squared
/// error on the standardized target.
fn plain_loss(task: Task, out: &Tensor, targets: &[f32]) -> Result<f64> {
    let y = Tensor::from_slice(targets, (targets.len(), 1), out.device())?;
    let loss = match task {
        Task::BinaryClassification => bce_with_logits(out, &y)?.mean_all()?,
        Task::Regression => (out - y)?.sqr()?.mean_all()?,
    };
    Ok(f64::from(loss.to_scalar::<f32>()?))
}

/// Per-row binary cross-entropy on logits, in the stable form
/// max(z, 0) − z·y + ln(1 + e^−|z|).
pub(crate) fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    logits.relu()? - (logits * targets)? + softplus
}

/// The whole inference graph as one ONNX model: impute NaN with the
/// training means, standardize, the layers with ReLU between them, then a
/// sigmoid (classification) or the label's scale (regression).
fn export(
    features: &[String],
    task: Task,
    means: &[f32],
    stds: &[f32],
    widths: &[usize],
    layers: &[(Vec<f32>, Vec<f32>)],
    target_scale: (f32, f32),
) -> Vec<u8> {
    let f = features.len() as i64;
    let output = match task {
        Task::BinaryClassification => "probability",
        Task::Regression => "prediction",
    };
    let mut g = GraphBuilder::new("aurum_network");
    g.input(INPUT, &[Dim::Dynamic("batch"), Dim::Fixed(f)])
        .output(output, &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .constant("mean", &[f], means)
        .constant("std", &[f], stds)
        .node("IsNaN", &[INPUT], &["missing"])
        .node("Where", &["missing", "mean", INPUT], &["imputed"])
        .node("Sub", &["imputed", "mean"], &["centered"])
        .node("Div", &["centered", "std"], &["h0"]);
    let mut current = "h0".to_string();
    for (k, (w, b)) in layers.iter().enumerate() {
        let (fan_in, fan_out) = (widths[k] as i64, widths[k + 1] as i64);
        let (wn, bn) = (format!("w{k}"), format!("b{k}"));
        let (mm, lin) = (format!("mm{k}"), format!("lin{k}"));
        g.constant(&wn, &[fan_in, fan_out], w)
            .constant(&bn, &[fan_out], b)
            .node("MatMul", &[current.as_str(), wn.as_str()], &[mm.as_str()])
            .node("Add", &[mm.as_str(), bn.as_str()], &[lin.as_str()]);
        current = lin;
        if k + 1 < layers.len() {
            let relu = format!("relu{k}");
            g.node("Relu", &[current.as_str()], &[relu.as_str()]);
            current = relu;
        }
    }
    match task {
        Task::BinaryClassification => {
            g.node("Sigmoid", &[current.as_str()], &[output]);
        }
        Task::Regression => {
            g.constant("target_std", &[1], &[target_scale.1])
                .constant("target_mean", &[1], &[target_scale.0])
                .node("Mul", &[current.as_str(), "target_std"], &["scaled"])
                .node("Add", &["scaled", "target_mean"], &[output]);
        }
    }
    g.metadata("aurum.features", &features.join(","));
    g.finish("aurum network: impute, standardize, layers, output")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    fn onnx_outputs(model: &Fitted) -> Vec<f32> {
        let mut session = onnx::Model::load("test", &model.onnx).unwrap();
        let rows = model.validation_predictions.len();
        let input = onnx::Matrix::new(
            model.validation_features.as_slice(),
            rows,
            model.features.len(),
        )
        .unwrap();
        let outputs = session.run_matrix(input).unwrap();
        let (_, values) = outputs.f32(0).unwrap();
        values.to_vec()
    }

    #[test]
    fn an_mlp_learns_onnx_runtime_agrees_and_retraining_is_byte_identical() {
        let df = crate::logistic::tests::synthetic(4_000, 3);
        let data = dataset(&df, &names(), "y", "ts", Task::BinaryClassification, 0.25).unwrap();
        assert_eq!(data.split, 3_000);
        let hyper = Hyperparameters {
            family: Family::Mlp,
            hidden: vec![16, 8],
            dropout: 0.1,
            epochs: 15,
            batch_size: 128,
            class_weight: ClassWeight::Balanced,
            ..Hyperparameters::default()
        };
        let model = fit(&data, Task::BinaryClassification, &hyper, &|_, _| {}).unwrap();
        assert!(model.metrics["val_roc_auc"] > 0.85, "{:?}", model.metrics);
        assert!(model.metrics["val_pr_auc"] > 0.5, "{:?}", model.metrics);
        assert!(!model.calibration.is_empty());
        // The planted model reads a and b, not c.
        let importance: BTreeMap<_, _> = model.importance.iter().cloned().collect();
        assert!(
            importance["a"] > importance["c"] && importance["b"] > importance["c"],
            "{importance:?}"
        );
        assert!(model.validation_features.iter().any(|v| v.is_nan()));
        for (i, (o, c)) in onnx_outputs(&model)
            .iter()
            .zip(&model.validation_predictions)
            .enumerate()
        {
            assert!((o - c).abs() < 1e-5, "row {i}: ONNX {o} vs candle {c}");
        }
        let again = fit(&data, Task::BinaryClassification, &hyper, &|_, _| {}).unwrap();
        assert_eq!(again.onnx, model.onnx, "same data and seed, same bytes");
        let other = Hyperparameters { seed: 7, ..hyper };
        let reseeded = fit(&data, Task::BinaryClassification, &other, &|_, _| {}).unwrap();
        assert_ne!(reseeded.onnx, model.onnx);
    }

    #[test]
    fn linear_regression_recovers_a_planted_line() {
        let n = 2_000;
        let a: Vec<f64> = (0..n).map(|i| f64::from(i % 97) / 10.0).collect();
        let b: Vec<f64> = (0..n).map(|i| f64::from((i * 31) % 53) / 5.0).collect();
        let c: Vec<f64> = (0..n).map(|i| f64::from((i * 7) % 11)).collect();
        let y: Vec<f64> = (0..n)
            .map(|i| 3.0 * a[i as usize] - 2.0 * b[i as usize] + 5.0)
            .collect();
        let ts: Vec<i64> = (0..i64::from(n)).collect();
        let df = df!("a" => a, "b" => b, "c" => c, "y" => y, "ts" => ts).unwrap();
        let data = dataset(&df, &names(), "y", "ts", Task::Regression, 0.2).unwrap();
        let hyper = Hyperparameters {
            epochs: 60,
            batch_size: 64,
            learning_rate: 0.05,
            patience: 60,
            ..Hyperparameters::default()
        };
        let model = fit(&data, Task::Regression, &hyper, &|_, _| {}).unwrap();
        assert!(model.metrics["val_r2"] > 0.99, "{:?}", model.metrics);
        for (o, c) in onnx_outputs(&model)
            .iter()
            .zip(&model.validation_predictions)
        {
            assert!(
                (o - c).abs() < 1e-5 * c.abs().max(1.0),
                "ONNX {o} vs candle {c}"
            );
        }
    }

    #[test]
    fn unusable_training_sets_are_refused_naming_the_problem() {
        let good = crate::logistic::tests::synthetic(200, 4);
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
            let error = dataset(&df, &names(), "y", "ts", Task::BinaryClassification, 0.2)
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{needle}: {error}");
        }
    }
}
