//! The one trainer: a linear model or an MLP with candle on a [`Dataset`],
//! evaluated on the validation split and exported to ONNX.
//!
//! A [`Preset`] holds what differs between the spec's networks and the
//! demo's logistic regression — how rows are read, how the optimizer walks
//! the training split ([`Regime`]), the names in the exported graph — and
//! the [`Hyperparameters`] hold the rest. Both run the same steps: prepare
//! (standardize with training statistics), initialize, AdamW steps, keep
//! the weights, predict the validation rows, evaluate, permutation
//! importance, export.
//!
//! Every random choice (initialization, shuffling, dropout masks,
//! permutations) comes from one seeded ChaCha stream, and candle's CPU
//! kernels are deterministic for a given shape, so the same data,
//! hyperparameters and preset give the same weights and the same ONNX
//! bytes.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use drift::metrics::CalibrationBin;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::{self, Dataset, Rules, Standardized};
use crate::error::{Error, Result};
use crate::evaluation;
use crate::export::{self, Names};
use crate::spec::{ClassWeight, Family, Hyperparameters, Task};

/// Validation rows the permutation importance looks at, at most.
const IMPORTANCE_ROWS: usize = 50_000;

/// How the optimizer walks the training split. The two regimes differ in
/// their arithmetic (batch order, initial weights, the loss's weighting,
/// which weights are kept), so each is kept exactly as it has always run:
/// the same data and seed must keep giving the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// Each epoch, the training rows in a fresh shuffle (drawn from the
    /// seeded stream) cut into batches of `batch_size`; weights start
    /// He-uniform (Glorot-uniform for the output layer) from the stream; a
    /// classifier's loss is weighted row by row (by ones when class weights
    /// are off); after each epoch the validation loss is measured and
    /// reported, training stops after `patience` epochs without
    /// improvement, and the best epoch's weights are kept.
    MiniBatch,
    /// Each of `epochs` steps sees every training row, in time order, as
    /// one batch; weights start at zero (the loss of a linear model is
    /// convex, so no draw from the stream is needed); a classifier's loss
    /// is the plain mean unless class weights are balanced; the last
    /// weights are kept and their validation loss is reported once.
    /// `batch_size` and `patience` are not used.
    FullBatch,
}

/// Everything about a fit that is not a hyperparameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// How [`data::dataset`] reads the training set.
    pub rules: Rules,
    /// How the optimizer walks the training split.
    pub regime: Regime,
    /// The names inside the exported graph.
    pub names: Names,
}

impl Preset {
    /// What `[model.training]` specs train with.
    pub const NETWORK: Preset = Preset {
        rules: Rules::SPEC,
        regime: Regime::MiniBatch,
        names: Names::Network,
    };

    /// The demo's logistic regression (see [`crate::logistic`]).
    pub const LOGISTIC: Preset = Preset {
        rules: Rules::LENIENT,
        regime: Regime::FullBatch,
        names: Names::Logistic,
    };
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
    /// Classification only: the validation calibration table (empty bins
    /// left out).
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

/// Trains on `data` as `hyper` and `preset` say; `progress` hears of each
/// epoch whose validation loss is measured (its number and that loss).
pub fn fit(
    data: &Dataset,
    task: Task,
    hyper: &Hyperparameters,
    preset: &Preset,
    progress: &dyn Fn(usize, f64),
) -> Result<Fitted> {
    let started = Instant::now();
    let (n, split) = (data.rows, data.split);
    let f = data.features.len();
    let mut rng = ChaCha8Rng::seed_from_u64(hyper.seed);
    let device = Device::Cpu;
    let prepared = prepare(data, task, hyper);
    let widths = layer_widths(f, hyper);
    let validation_x = Tensor::from_slice(&prepared.x[split * f..], (n - split, f), &device)?;
    let setup = Setup {
        prepared: &prepared,
        task,
        hyper,
        validation_x: &validation_x,
        device: &device,
    };
    let trained = train(&setup, &widths, preset.regime, &mut rng, progress)?;

    let predictions = predict(&trained.params, &validation_x, task, prepared.target_scale)?;
    let labels = &data.y[split..];
    let (mut metrics, calibration) = evaluation::validation_metrics(task, &predictions, labels);
    metrics.insert("val_loss".into(), trained.validation_loss);
    let importance =
        permutation_importance(&setup, &trained.params, &data.features, labels, &mut rng)?;
    for (name, drop) in &importance {
        metrics.insert(format!("importance.{name}"), *drop);
    }

    let layers = layer_values(&trained.params)?;
    let onnx = export::onnx(
        &export::Graph {
            features: &data.features,
            task,
            means: &prepared.means,
            stds: &prepared.stds,
            layers: &layers,
            target_scale: prepared.target_scale,
        },
        preset.names,
    );
    metrics.insert("train_rows".into(), split as f64);
    metrics.insert("validation_rows".into(), (n - split) as f64);
    metrics.insert("epochs_run".into(), trained.epochs_run as f64);
    metrics.insert("training_seconds".into(), started.elapsed().as_secs_f64());
    let Prepared {
        means,
        stds,
        target_scale,
        ..
    } = prepared;
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
        epochs_run: trained.epochs_run,
        validation_features: data.x[split * f..].to_vec(),
        validation_predictions: predictions,
        validation_labels: labels.to_vec(),
    })
}

/// Per-row binary cross-entropy on logits, in the stable form
/// max(z, 0) − z·y + ln(1 + e^−|z|).
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    logits.relu()? - (logits * targets)? + softplus
}

/// The training set in the form the loop reads.
struct Prepared {
    /// Rows.
    rows: usize,
    /// The first validation row.
    split: usize,
    /// Features per row.
    features: usize,
    /// Every row, row-major, standardized with training statistics.
    x: Vec<f32>,
    /// Training means per feature.
    means: Vec<f32>,
    /// Training standard deviations per feature.
    stds: Vec<f32>,
    /// The label's training mean and standard deviation (regression), or
    /// `(0, 1)`.
    target_scale: (f32, f32),
    /// Every label in the network's scale.
    targets: Vec<f32>,
    /// The loss weight of each training row (its class's weight).
    row_weights: Vec<f32>,
}

/// What one fit's steps share.
struct Setup<'a> {
    prepared: &'a Prepared,
    task: Task,
    hyper: &'a Hyperparameters,
    validation_x: &'a Tensor,
    device: &'a Device,
}

/// What training leaves: the kept weights, their validation loss and the
/// epochs run.
struct Trained {
    params: Vec<Tensor>,
    validation_loss: f64,
    epochs_run: usize,
}

/// One batch of training rows as tensors.
struct Batch {
    x: Tensor,
    y: Tensor,
    /// Per-row loss weights, when the loss is weighted.
    weights: Option<Tensor>,
}

/// Standardizes with training statistics only (a missing value takes the
/// training mean), scales a regressor's label, and weighs the classes.
fn prepare(data: &Dataset, task: Task, hyper: &Hyperparameters) -> Prepared {
    let split = data.split;
    let Standardized { means, stds, x } = data::standardize(data);
    let target_scale = match task {
        Task::BinaryClassification => (0.0, 1.0),
        Task::Regression => data::mean_std(&data.y[..split]),
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
    let row_weights = data.y[..split]
        .iter()
        .map(|&y| if y > 0.5 { w_pos } else { w_neg })
        .collect();
    Prepared {
        rows: data.rows,
        split,
        features: data.features.len(),
        x,
        means,
        stds,
        target_scale,
        targets,
        row_weights,
    }
}

/// Layer widths from input to output: the features, the hidden layers (an
/// MLP's), one output.
fn layer_widths(features: usize, hyper: &Hyperparameters) -> Vec<usize> {
    let mut widths = vec![features];
    if hyper.family == Family::Mlp {
        widths.extend(&hyper.hidden);
    }
    widths.push(1);
    widths
}

/// Initializes the weights as `regime` says and runs its loop.
fn train(
    setup: &Setup<'_>,
    widths: &[usize],
    regime: Regime,
    rng: &mut ChaCha8Rng,
    progress: &dyn Fn(usize, f64),
) -> Result<Trained> {
    let vars = initial_vars(widths, regime, rng, setup.device)?;
    let mut optimizer = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: setup.hyper.learning_rate,
            weight_decay: setup.hyper.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    match regime {
        Regime::MiniBatch => train_mini_batches(setup, &vars, &mut optimizer, rng, progress),
        Regime::FullBatch => train_full_batch(setup, &vars, &mut optimizer, rng, progress),
    }
}

/// Weights and biases, layer by layer: `[in, out]` weights then `[out]`
/// zero biases.
fn initial_vars(
    widths: &[usize],
    regime: Regime,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Vec<Var>> {
    let mut vars = Vec::new();
    for (layer, pair) in widths.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let weight = match regime {
            Regime::FullBatch => Var::zeros((fan_in, fan_out), DType::F32, device)?,
            Regime::MiniBatch => {
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
                Var::from_tensor(&Tensor::from_vec(w, (fan_in, fan_out), device)?)?
            }
        };
        vars.push(weight);
        vars.push(Var::zeros(fan_out, DType::F32, device)?);
    }
    Ok(vars)
}

/// [`Regime::MiniBatch`]: shuffled batches, a validation loss per epoch,
/// early stopping, the best epoch kept.
fn train_mini_batches(
    setup: &Setup<'_>,
    vars: &[Var],
    optimizer: &mut AdamW,
    rng: &mut ChaCha8Rng,
    progress: &dyn Fn(usize, f64),
) -> Result<Trained> {
    let hyper = setup.hyper;
    let mut order: Vec<usize> = (0..setup.prepared.split).collect();
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut stale = 0;
    let mut epochs_run = 0;
    for epoch in 1..=hyper.epochs {
        // The order carries over: each epoch shuffles the last one's.
        order.shuffle(&mut *rng);
        for rows in order.chunks(hyper.batch_size.max(1)) {
            let batch = mini_batch(setup, rows)?;
            step(optimizer, vars, &batch, setup.task, hyper.dropout, rng)?;
        }
        epochs_run = epoch;
        let params = snapshot(vars)?;
        let validation_loss = measure_loss(setup, &params)?;
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
    let (validation_loss, params) =
        best.ok_or_else(|| Error::TrainingSet("no epoch ran".into()))?;
    Ok(Trained {
        params,
        validation_loss,
        epochs_run,
    })
}

/// [`Regime::FullBatch`]: `epochs` steps on the whole training split, the
/// last weights kept.
fn train_full_batch(
    setup: &Setup<'_>,
    vars: &[Var],
    optimizer: &mut AdamW,
    rng: &mut ChaCha8Rng,
    progress: &dyn Fn(usize, f64),
) -> Result<Trained> {
    let hyper = setup.hyper;
    let batch = full_batch(setup)?;
    for _ in 0..hyper.epochs {
        step(optimizer, vars, &batch, setup.task, hyper.dropout, rng)?;
    }
    let params = snapshot(vars)?;
    let validation_loss = measure_loss(setup, &params)?;
    if hyper.epochs > 0 {
        progress(hyper.epochs, validation_loss);
    }
    Ok(Trained {
        params,
        validation_loss,
        epochs_run: hyper.epochs,
    })
}

/// The training rows `rows` (in that order) as a batch; a classifier's
/// batch carries its row weights, ones included.
fn mini_batch(setup: &Setup<'_>, rows: &[usize]) -> Result<Batch> {
    let prepared = setup.prepared;
    let f = prepared.features;
    let mut xb = Vec::with_capacity(rows.len() * f);
    let mut yb = Vec::with_capacity(rows.len());
    let mut wb = Vec::with_capacity(rows.len());
    for &i in rows {
        xb.extend_from_slice(&prepared.x[i * f..(i + 1) * f]);
        yb.push(prepared.targets[i]);
        wb.push(prepared.row_weights[i]);
    }
    let weights = match setup.task {
        Task::BinaryClassification => Some(Tensor::from_vec(wb, (rows.len(), 1), setup.device)?),
        Task::Regression => None,
    };
    Ok(Batch {
        x: Tensor::from_vec(xb, (rows.len(), f), setup.device)?,
        y: Tensor::from_vec(yb, (rows.len(), 1), setup.device)?,
        weights,
    })
}

/// Every training row, in time order, as one batch; weighted only when a
/// classifier's classes are balanced.
fn full_batch(setup: &Setup<'_>) -> Result<Batch> {
    let prepared = setup.prepared;
    let (f, split) = (prepared.features, prepared.split);
    let weights = match (setup.task, setup.hyper.class_weight) {
        (Task::BinaryClassification, ClassWeight::Balanced) => Some(Tensor::from_slice(
            &prepared.row_weights[..split],
            (split, 1),
            setup.device,
        )?),
        _ => None,
    };
    Ok(Batch {
        x: Tensor::from_slice(&prepared.x[..split * f], (split, f), setup.device)?,
        y: Tensor::from_slice(&prepared.targets[..split], (split, 1), setup.device)?,
        weights,
    })
}

/// One AdamW step on `batch`: the network's output (with dropout in
/// training), the task's loss, back-propagation.
fn step(
    optimizer: &mut AdamW,
    vars: &[Var],
    batch: &Batch,
    task: Task,
    dropout: f32,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = forward(&params, &batch.x, dropout, Some(rng))?;
    let loss = match task {
        Task::BinaryClassification => {
            let per_row = bce_with_logits(&out, &batch.y)?;
            match &batch.weights {
                Some(weights) => (per_row * weights)?.mean_all()?,
                None => per_row.mean_all()?,
            }
        }
        Task::Regression => (out - &batch.y)?.sqr()?.mean_all()?,
    };
    optimizer.backward_step(&loss)?;
    Ok(())
}

/// A copy of the current weights, which later steps do not change.
fn snapshot(vars: &[Var]) -> Result<Vec<Tensor>> {
    Ok(vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<_>>()?)
}

/// The unweighted validation loss of `params`.
fn measure_loss(setup: &Setup<'_>, params: &[Tensor]) -> Result<f64> {
    let out = forward(params, setup.validation_x, 0.0, None)?;
    plain_loss(
        setup.task,
        &out,
        &setup.prepared.targets[setup.prepared.split..],
    )
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
    for (k, pair) in params.chunks_exact(2).enumerate() {
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

/// The unweighted loss: log loss on logits, or mean squared error on the
/// standardized target.
fn plain_loss(task: Task, out: &Tensor, targets: &[f32]) -> Result<f64> {
    let y = Tensor::from_slice(targets, (targets.len(), 1), out.device())?;
    let loss = match task {
        Task::BinaryClassification => bce_with_logits(out, &y)?.mean_all()?,
        Task::Regression => (out - y)?.sqr()?.mean_all()?,
    };
    Ok(f64::from(loss.to_scalar::<f32>()?))
}

/// The model's answers on `x`: probabilities for a classifier, values in
/// the label's scale for a regressor.
fn predict(
    params: &[Tensor],
    x: &Tensor,
    task: Task,
    target_scale: (f32, f32),
) -> Result<Vec<f32>> {
    let out = forward(params, x, 0.0, None)?;
    let out = match task {
        Task::BinaryClassification => candle_nn::ops::sigmoid(&out)?,
        Task::Regression => out.affine(f64::from(target_scale.1), f64::from(target_scale.0))?,
    };
    Ok(out.flatten_all()?.to_vec1()?)
}

/// Permutation importance: how much the validation score falls when one
/// feature's values are shuffled among (at most [`IMPORTANCE_ROWS`]
/// evenly spaced) validation rows.
fn permutation_importance(
    setup: &Setup<'_>,
    params: &[Tensor],
    features: &[String],
    labels: &[f32],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<(String, f64)>> {
    let (task, prepared) = (setup.task, setup.prepared);
    let (f, split) = (prepared.features, prepared.split);
    let sample: Vec<usize> = {
        let m = prepared.rows - split;
        let step = m.div_ceil(IMPORTANCE_ROWS).max(1);
        (0..m).step_by(step).collect()
    };
    let sample_x: Vec<f32> = sample
        .iter()
        .flat_map(|&i| {
            prepared.x[(split + i) * f..(split + i + 1) * f]
                .iter()
                .copied()
        })
        .collect();
    let sample_labels: Vec<f32> = sample.iter().map(|&i| labels[i]).collect();
    let score = |x: Tensor| -> Result<f64> {
        let predictions = predict(params, &x, task, prepared.target_scale)?;
        Ok(evaluation::importance_score(
            task,
            &predictions,
            &sample_labels,
        ))
    };
    let base = score(Tensor::from_slice(
        &sample_x,
        (sample.len(), f),
        setup.device,
    )?)?;
    let mut importance = Vec::with_capacity(f);
    for (j, name) in features.iter().enumerate() {
        let mut shuffled = sample_x.clone();
        let mut column: Vec<f32> = (0..sample.len()).map(|i| shuffled[i * f + j]).collect();
        column.shuffle(&mut *rng);
        for (i, v) in column.into_iter().enumerate() {
            shuffled[i * f + j] = v;
        }
        let permuted = score(Tensor::from_vec(shuffled, (sample.len(), f), setup.device)?)?;
        let drop = match task {
            Task::BinaryClassification => base - permuted,
            Task::Regression => permuted - base,
        };
        importance.push((name.clone(), drop));
    }
    Ok(importance)
}

/// The kept weights as plain values, layer by layer.
fn layer_values(params: &[Tensor]) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    params
        .chunks_exact(2)
        .map(|pair| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                pair[0].flatten_all()?.to_vec1::<f32>()?,
                pair[1].to_vec1::<f32>()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use polars::prelude::{DataFrame, df};

    use super::*;
    use crate::data::tests::synthetic;

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

    fn dataset(df: &DataFrame, task: Task, validation_fraction: f64) -> Dataset {
        data::dataset(
            df,
            &names(),
            "y",
            "ts",
            task,
            validation_fraction,
            &Rules::SPEC,
        )
        .unwrap()
    }

    #[test]
    fn an_mlp_learns_onnx_runtime_agrees_and_retraining_is_byte_identical() {
        let df = synthetic(4_000, 3);
        let data = dataset(&df, Task::BinaryClassification, 0.25);
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
        let network = &Preset::NETWORK;
        let model = fit(
            &data,
            Task::BinaryClassification,
            &hyper,
            network,
            &|_, _| {},
        )
        .unwrap();
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
        let again = fit(
            &data,
            Task::BinaryClassification,
            &hyper,
            network,
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(again.onnx, model.onnx, "same data and seed, same bytes");
        let other = Hyperparameters { seed: 7, ..hyper };
        let reseeded = fit(
            &data,
            Task::BinaryClassification,
            &other,
            network,
            &|_, _| {},
        )
        .unwrap();
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
        let data = dataset(&df, Task::Regression, 0.2);
        let hyper = Hyperparameters {
            epochs: 60,
            batch_size: 64,
            learning_rate: 0.05,
            patience: 60,
            ..Hyperparameters::default()
        };
        let model = fit(
            &data,
            Task::Regression,
            &hyper,
            &Preset::NETWORK,
            &|_, _| {},
        )
        .unwrap();
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
    fn the_full_batch_regime_draws_nothing_while_training_and_keeps_the_last_step() {
        let df = synthetic(600, 8);
        let data = dataset(&df, Task::BinaryClassification, 0.2);
        let epochs = std::cell::Cell::new(Vec::new());
        let record = |epoch: usize, _: f64| {
            let mut seen = epochs.take();
            seen.push(epoch);
            epochs.set(seen);
        };
        let full = |seed: u64| Hyperparameters {
            epochs: 40,
            seed,
            ..Hyperparameters::default()
        };
        let preset = Preset {
            regime: Regime::FullBatch,
            ..Preset::NETWORK
        };
        let model = fit(
            &data,
            Task::BinaryClassification,
            &full(1),
            &preset,
            &record,
        )
        .unwrap();
        assert_eq!(epochs.take(), vec![40], "one report, after the last step");
        assert_eq!(model.epochs_run, 40);
        // Zero initial weights and no shuffle: the seed only reaches the
        // importance permutations, never the weights.
        let reseeded = fit(
            &data,
            Task::BinaryClassification,
            &full(2),
            &preset,
            &|_, _| {},
        )
        .unwrap();
        assert_eq!(reseeded.layers, model.layers);
        assert_eq!(reseeded.onnx, model.onnx);
    }
}
