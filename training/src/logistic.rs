//! The demo's logistic regression: a preset of the one trainer in
//! [`crate::fit`] ([`Preset::LOGISTIC`]: full-batch AdamW from zero weights
//! for a fixed number of steps over the training rows in time order,
//! without weight decay, exported under the graph names the demo has always
//! written) and the summary of it the demo registers.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::data;
use crate::error::{Error, Result};
use crate::export;
use crate::fit::{self, Fitted, Preset};
use crate::spec::{ClassWeight, Family, Hyperparameters, Task};

pub use crate::export::INPUT;

/// The name of the exported model's output: `[batch, 1]` probabilities.
pub const OUTPUT: &str = export::PROBABILITY;

/// The metrics the demo records (the registry keeps them in the version's
/// metadata), out of all a fit measures.
const METRICS: [&str; 4] = [
    "val_roc_auc",
    "val_log_loss",
    "val_accuracy",
    "val_positive_rate",
];

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

impl TrainOptions {
    /// The trainer's hyperparameters for these options: a linear model, no
    /// weight decay, no class weights, no dropout. The seed reaches only
    /// the permutation importance: the full-batch regime draws nothing.
    pub fn hyperparameters(&self) -> Hyperparameters {
        Hyperparameters {
            family: Family::Linear,
            dropout: 0.0,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            weight_decay: 0.0,
            class_weight: ClassWeight::None,
            validation_fraction: self.validation_fraction,
            ..Hyperparameters::default()
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
    let preset = Preset::LOGISTIC;
    let task = Task::BinaryClassification;
    let data = data::dataset(
        df,
        features,
        label,
        timestamp,
        task,
        options.validation_fraction,
        &preset.rules,
    )?;
    let fitted = fit::fit(&data, task, &options.hyperparameters(), &preset, &|_, _| {})?;
    summarize(fitted, data.split)
}

/// The demo's view of a fit: its single layer as weights and a bias, and
/// the metrics it has always recorded.
fn summarize(fitted: Fitted, train_rows: usize) -> Result<TrainedModel> {
    let Fitted {
        features,
        means,
        stds,
        layers,
        onnx,
        metrics,
        validation_features,
        validation_predictions,
        ..
    } = fitted;
    let [(weights, bias)]: [(Vec<f32>, Vec<f32>); 1] =
        layers.try_into().map_err(|layers: Vec<_>| {
            Error::Internal(format!(
                "a logistic regression has one layer, this fit has {}",
                layers.len()
            ))
        })?;
    let [bias]: [f32; 1] = bias.try_into().map_err(|bias: Vec<f32>| {
        Error::Internal(format!(
            "a logistic regression has one output, this fit has {}",
            bias.len()
        ))
    })?;
    Ok(TrainedModel {
        feature_columns: features,
        means,
        stds,
        weights,
        bias,
        onnx,
        metrics: metrics
            .into_iter()
            .filter(|(name, _)| METRICS.contains(&name.as_str()))
            .collect(),
        train_rows,
        validation_features,
        validation_probabilities: validation_predictions,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};
    use onnx::{Dim, GraphBuilder};

    use super::*;
    use crate::data::tests::synthetic;

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

    /// What the former trainer gave: the weights, the bias, the validation
    /// probabilities and the ONNX bytes.
    type FormerModel = (Vec<f32>, f32, Vec<f32>, Vec<u8>);

    /// The demo's trainer as it was before it became a preset of the one
    /// trainer, step for step: the oracle the preset must match bit for
    /// bit.
    fn trained_as_before(
        df: &DataFrame,
        features: &[String],
        options: &TrainOptions,
    ) -> candle_core::Result<FormerModel> {
        let df = df.sort(["ts"], SortMultipleOptions::default()).unwrap();
        let n = df.height();
        let read = |name: &str| -> Vec<f32> {
            let cast = df.column(name).unwrap().cast(&DataType::Float32).unwrap();
            cast.f32()
                .unwrap()
                .iter()
                .map(|v| v.unwrap_or(f32::NAN))
                .collect()
        };
        let columns: Vec<Vec<f32>> = features.iter().map(|f| read(f.as_str())).collect();
        let labels = read("y");
        let split = data::time_split(&df, "ts", options.validation_fraction).unwrap();
        let f = features.len();
        let (means, stds): (Vec<f32>, Vec<f32>) =
            columns.iter().map(|c| data::mean_std(&c[..split])).unzip();
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
        let bce = |logits: &Tensor, targets: &Tensor| -> candle_core::Result<Tensor> {
            let softplus = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            logits.relu()? - (logits * targets)? + softplus
        };
        for _ in 0..options.epochs {
            let logits = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            optimizer.backward_step(&bce(&logits, &y)?.mean_all()?)?;
        }
        let xv = Tensor::from_vec(standardized(split..n), (n - split, f), &device)?;
        let probabilities: Vec<f32> =
            candle_nn::ops::sigmoid(&xv.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?)?
                .flatten_all()?
                .to_vec1()?;
        let weights: Vec<f32> = w.as_tensor().flatten_all()?.to_vec1()?;
        let bias = b.as_tensor().to_vec1::<f32>()?[0];

        let width = f as i64;
        let mut g = GraphBuilder::new("aurum_logistic_regression");
        g.input(INPUT, &[Dim::Dynamic("batch"), Dim::Fixed(width)])
            .output(OUTPUT, &[Dim::Dynamic("batch"), Dim::Fixed(1)])
            .constant("mean", &[width], &means)
            .constant("std", &[width], &stds)
            .constant("weight", &[width, 1], &weights)
            .constant("bias", &[1], &[bias])
            .node("IsNaN", &[INPUT], &["missing"])
            .node("Where", &["missing", "mean", INPUT], &["imputed"])
            .node("Sub", &["imputed", "mean"], &["centered"])
            .node("Div", &["centered", "std"], &["standardized"])
            .node("MatMul", &["standardized", "weight"], &["linear"])
            .node("Add", &["linear", "bias"], &["logit"])
            .node("Sigmoid", &["logit"], &[OUTPUT])
            .metadata("aurum.features", &features.join(","));
        let onnx = g.finish("aurum logistic regression: impute, standardize, linear, sigmoid");
        Ok((weights, bias, probabilities, onnx))
    }

    #[test]
    fn the_preset_reproduces_the_former_trainer_bit_for_bit() {
        // Timestamps shared by four rows each, so the sort's order of ties
        // and the split's move past them are part of what is compared.
        let mut df = synthetic(1_500, 6);
        let ts: Vec<i64> = (0..1_500i64).map(|i| i / 4).collect();
        df.with_column(Column::new("ts".into(), ts)).unwrap();
        let options = TrainOptions::default();
        let model = train_logistic(&df, &names(), "y", "ts", &options).unwrap();
        let (weights, bias, probabilities, onnx) =
            trained_as_before(&df, &names(), &options).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&model.weights), bits(&weights));
        assert_eq!(model.bias.to_bits(), bias.to_bits());
        assert_eq!(bits(&model.validation_probabilities), bits(&probabilities));
        assert_eq!(model.onnx, onnx, "the same ONNX bytes");
        assert_eq!(
            model.metrics.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![
                "val_accuracy",
                "val_log_loss",
                "val_positive_rate",
                "val_roc_auc"
            ],
            "the metrics the demo has always recorded, and no others"
        );
    }
}
