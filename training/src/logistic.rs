//! Logistic regression with candle, exported to ONNX.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use onnx::{Dim, GraphBuilder};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::metrics;

/// The name of the exported model's input: `[batch, features]` float32.
pub const INPUT: &str = "features";
/// The name of the exported model's output: `[batch, 1]` probabilities.
pub const OUTPUT: &str = "probability";

/// Hyperparameters.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Full-batch Adam steps.
    pub epochs: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// The latest share of rows (by time) held out for validation.
    pub validation_fraction: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 300,
            learning_rate: 0.05,
            validation_fraction: 0.2,
        }
    }
}

/// A trained model and everything needed to register and check it.
#[derive(Debug, Clone)]
pub struct TrainedModel {
    /// The training-set columns used as features, in input order.
    pub feature_columns: Vec<String>,
    /// Training means per feature (also the imputation values).
    pub means: Vec<f32>,
    /// Training standard deviations per feature (1 where constant).
    pub stds: Vec<f32>,
    /// Weights of the standardized features.
    pub weights: Vec<f32>,
    /// The intercept.
    pub bias: f32,
    /// The exported ONNX model.
    pub onnx: Vec<u8>,
    /// Validation metrics (`val_roc_auc`, `val_log_loss`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Rows in the training split.
    pub train_rows: usize,
    /// The validation rows' raw features, row-major, NaN where missing.
    pub validation_features: Vec<f32>,
    /// candle's probabilities for the validation rows.
    pub validation_probabilities: Vec<f32>,
}

/// Trains a logistic regression of `label` on `features`, splitting by
/// `timestamp` so that every validation row is later than every training row.
pub fn train_logistic(
    df: &DataFrame,
    features: &[String],
    label: &str,
    timestamp: &str,
    options: &TrainOptions,
) -> Result<TrainedModel> {
    if features.is_empty() {
        return Err(Error::TrainingSet("no feature columns given".into()));
    }
    let df = df
        .sort([timestamp], SortMultipleOptions::default())
        .map_err(|source| Error::Data {
            context: format!("sorting the training set by {timestamp}"),
            source,
        })?;
    let n = df.height();
    let columns: Vec<Vec<f32>> = features
        .iter()
        .map(|f| float_column(&df, f))
        .collect::<Result<_>>()?;
    let labels = float_column(&df, label)?;
    if let Some(i) = labels.iter().position(|y| !(*y == 0.0 || *y == 1.0)) {
        return Err(Error::TrainingSet(format!(
            "label {label:?} must be 0 or 1, row {i} has {}",
            labels[i]
        )));
    }
    let split = time_split(&df, timestamp, options.validation_fraction)?;
    if split < 2 || n - split < 2 {
        return Err(Error::TrainingSet(format!(
            "{n} rows cannot be split into training and validation sets by {timestamp}"
        )));
    }

    let f = features.len();
    let (means, stds): (Vec<f32>, Vec<f32>) = columns.iter().map(|c| mean_std(&c[..split])).unzip();
    let standardized = |range: std::ops::Range<usize>| -> Vec<f32> {
        let mut out = Vec::with_capacity(range.len() * f);
        for i in range {
            for j in 0..f {
                let x = columns[j][i];
                let x = if x.is_nan() { means[j] } else { x };
                out.push((x - means[j]) / stds[j]);
            }
        }
        out
    };

    let device = Device::Cpu;
    let x = Tensor::from_vec(standardized(0..split), (split, f), &device)?;
    let y = Tensor::from_slice(&labels[..split], (split, 1), &device)?;
    let w = Var::zeros((f, 1), DType::F32, &device)?;
    let b = Var::zeros(1, DType::F32, &device)?;
    let mut optimizer = AdamW::new(
        vec![w.clone(), b.clone()],
        ParamsAdamW {
            lr: options.learning_rate,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    for _ in 0..options.epochs {
        let logits = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        optimizer.backward_step(&crate::fit::bce_with_logits(&logits, &y)?.mean_all()?)?;
    }

    let xv = Tensor::from_vec(standardized(split..n), (n - split, f), &device)?;
    let probabilities: Vec<f32> =
        candle_nn::ops::sigmoid(&xv.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?)?
            .flatten_all()?
            .to_vec1()?;
    let weights: Vec<f32> = w.as_tensor().flatten_all()?.to_vec1()?;
    let bias = b.as_tensor().to_vec1::<f32>()?[0];

    let validation_labels = &labels[split..];
    let mut metrics = BTreeMap::new();
    if let Some(auc) = metrics::roc_auc(&probabilities, validation_labels) {
        metrics.insert("val_roc_auc".to_string(), auc);
    }
    metrics.insert(
        "val_log_loss".to_string(),
        metrics::log_loss(&probabilities, validation_labels),
    );
    metrics.insert(
        "val_accuracy".to_string(),
        metrics::accuracy(&probabilities, validation_labels, 0.5),
    );
    metrics.insert(
        "val_positive_rate".to_string(),
        validation_labels.iter().map(|&y| f64::from(y)).sum::<f64>()
            / validation_labels.len() as f64,
    );

    let mut validation_features = Vec::with_capacity((n - split) * f);
    for i in split..n {
        validation_features.extend(columns.iter().map(|c| c[i]));
    }
    let onnx = export_onnx(features, &means, &stds, &weights, bias);
    Ok(TrainedModel {
        feature_columns: features.to_vec(),
        means,
        stds,
        weights,
        bias,
        onnx,
        metrics,
        train_rows: split,
        validation_features,
        validation_probabilities: probabilities,
    })
}

/// The ONNX graph: impute NaN with the means, standardize, linear, sigmoid.
fn export_onnx(
    features: &[String],
    means: &[f32],
    stds: &[f32],
    weights: &[f32],
    bias: f32,
) -> Vec<u8> {
    let f = features.len() as i64;
    let mut g = GraphBuilder::new("aurum_logistic_regression");
    g.input(INPUT, &[Dim::Dynamic("batch"), Dim::Fixed(f)])
        .output(OUTPUT, &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .constant("mean", &[f], means)
        .constant("std", &[f], stds)
        .constant("weight", &[f, 1], weights)
        .constant("bias", &[1], &[bias])
        .node("IsNaN", &[INPUT], &["missing"])
        .node("Where", &["missing", "mean", INPUT], &["imputed"])
        .node("Sub", &["imputed", "mean"], &["centered"])
        .node("Div", &["centered", "std"], &["standardized"])
        .node("MatMul", &["standardized", "weight"], &["linear"])
        .node("Add", &["linear", "bias"], &["logit"])
        .node("Sigmoid", &["logit"], &[OUTPUT])
        .metadata("aurum.features", &features.join(","));
    g.finish("aurum logistic regression: impute, standardize, linear, sigmoid")
}

pub(crate) fn float_column(df: &DataFrame, name: &str) -> Result<Vec<f32>> {
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
    fn learns_a_known_model_and_onnx_runtime_agrees_with_candle() {
        let df = synthetic(3_000, 1);
        let model = train_logistic(&df, &names(), "y", "ts", &TrainOptions::default()).unwrap();
        assert!(model.metrics["val_roc_auc"] > 0.85, "{:?}", model.metrics);
        // The known model: a pushes up, b pushes down, c does nothing.
        assert!(
            model.weights[0] > 0.5 && model.weights[1] < -0.5,
            "{:?}",
            model.weights
        );
        assert!(model.weights[2].abs() < 0.2, "{:?}", model.weights);

        let mut session = onnx::Model::load("test", &model.onnx).unwrap();
        let rows = model.validation_probabilities.len();
        let input = onnx::Matrix::new(model.validation_features.as_slice(), rows, 3).unwrap();
        let outputs = session.run_matrix(input).unwrap();
        let output = outputs.iter().find(|o| o.name() == OUTPUT).unwrap();
        let (shape, onnx) = output.f32().unwrap();
        assert_eq!(shape, &[rows as i64, 1]);
        assert!(model.validation_features.iter().any(|v| v.is_nan()));
        for (i, (o, c)) in onnx.iter().zip(&model.validation_probabilities).enumerate() {
            assert!((o - c).abs() < 1e-5, "row {i}: ONNX {o} vs candle {c}");
        }
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
    fn bad_training_sets_are_refused_with_the_reason() {
        let df = synthetic(100, 2);
        let err =
            train_logistic(&df, &["nope".into()], "y", "ts", &TrainOptions::default()).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
        let df = df!("a" => [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "y" => [0i64, 1, 2, 0, 1, 0], "ts" => [1i64, 2, 3, 4, 5, 6]).unwrap();
        let err =
            train_logistic(&df, &["a".into()], "y", "ts", &TrainOptions::default()).unwrap_err();
        assert!(err.to_string().contains("must be 0 or 1"), "{err}");
    }
}
