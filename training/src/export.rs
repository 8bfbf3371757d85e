//! The one writer of a trained model's ONNX graph: impute NaN with the
//! training means, standardize, the layers with ReLU between them, then a
//! sigmoid (classification) or the label's scale (regression); written with
//! the `onnx` crate's [`GraphBuilder`].
//!
//! The graph takes one float column per feature, in the order recorded in
//! the registry, so the server can feed a missing feature as NaN.

use onnx::{Dim, GraphBuilder};

use crate::spec::Task;

/// The exported model's input: `[batch, features]` float32, NaN = missing.
pub const INPUT: &str = "features";
/// A classifier's output: `[batch, 1]` probabilities of the positive class.
pub const PROBABILITY: &str = "probability";
/// A regressor's output: `[batch, 1]` predictions in the label's scale.
pub const PREDICTION: &str = "prediction";

/// The names inside an exported graph (its own name, its tensors', its
/// doc string). They are part of the ONNX bytes, so each preset keeps the
/// names it has always written: the same data and seed give the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// `aurum_network`: `h0` for the standardized input, then
    /// `w{k}`, `b{k}`, `mm{k}`, `lin{k}` and `relu{k}` for layer `k`.
    Network,
    /// `aurum_logistic_regression`, the demo's graph: `standardized`, then
    /// `weight`, `bias`, `linear` and `logit` for its single layer (a later
    /// layer would be named as in a network).
    Logistic,
}

/// Everything the graph computes with, as a fit learned it.
#[derive(Debug, Clone, Copy)]
pub struct Graph<'a> {
    /// The feature columns, in input order (recorded as metadata).
    pub features: &'a [String],
    /// What the model predicts: it picks the output and its head.
    pub task: Task,
    /// Training means per feature (also the imputation values).
    pub means: &'a [f32],
    /// Training standard deviations per feature.
    pub stds: &'a [f32],
    /// Layers: row-major `[in, out]` weights and `[out]` biases.
    pub layers: &'a [(Vec<f32>, Vec<f32>)],
    /// Regression only: the label's training mean and standard deviation.
    pub target_scale: (f32, f32),
}

/// The output's name for `task`.
pub fn output(task: Task) -> &'static str {
    match task {
        Task::BinaryClassification => PROBABILITY,
        Task::Regression => PREDICTION,
    }
}

/// The whole inference graph as one ONNX model, named as `names` says.
pub fn onnx(graph: &Graph<'_>, names: Names) -> Vec<u8> {
    let f = graph.features.len() as i64;
    let output = output(graph.task);
    let mut g = GraphBuilder::new(names.graph());
    // Constants and nodes are kept in two lists by the writer, so the
    // order of calls matters only within each list.
    g.input(INPUT, &[Dim::Dynamic("batch"), Dim::Fixed(f)])
        .output(output, &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .constant("mean", &[f], graph.means)
        .constant("std", &[f], graph.stds)
        .node("IsNaN", &[INPUT], &["missing"])
        .node("Where", &["missing", "mean", INPUT], &["imputed"])
        .node("Sub", &["imputed", "mean"], &["centered"])
        .node("Div", &["centered", "std"], &[names.standardized()]);
    let mut current = names.standardized().to_string();
    for (k, (w, b)) in graph.layers.iter().enumerate() {
        // A layer's shape follows from its values: `[in · out]` weights and
        // `[out]` biases.
        let fan_out = b.len();
        let fan_in = w.len().checked_div(fan_out).unwrap_or(0);
        let layer = names.layer(k);
        g.constant(&layer.weight, &[fan_in as i64, fan_out as i64], w)
            .constant(&layer.bias, &[fan_out as i64], b)
            .node(
                "MatMul",
                &[current.as_str(), layer.weight.as_str()],
                &[layer.product.as_str()],
            )
            .node(
                "Add",
                &[layer.product.as_str(), layer.bias.as_str()],
                &[layer.sum.as_str()],
            );
        current = layer.sum;
        if k + 1 < graph.layers.len() {
            let relu = format!("relu{k}");
            g.node("Relu", &[current.as_str()], &[relu.as_str()]);
            current = relu;
        }
    }
    match graph.task {
        Task::BinaryClassification => {
            g.node("Sigmoid", &[current.as_str()], &[output]);
        }
        Task::Regression => {
            g.constant("target_std", &[1], &[graph.target_scale.1])
                .constant("target_mean", &[1], &[graph.target_scale.0])
                .node("Mul", &[current.as_str(), "target_std"], &["scaled"])
                .node("Add", &["scaled", "target_mean"], &[output]);
        }
    }
    g.metadata("aurum.features", &graph.features.join(","));
    g.finish(names.doc())
}

/// The tensor names of one layer.
struct LayerNames {
    weight: String,
    bias: String,
    product: String,
    sum: String,
}

impl Names {
    fn graph(self) -> &'static str {
        match self {
            Names::Network => "aurum_network",
            Names::Logistic => "aurum_logistic_regression",
        }
    }

    fn doc(self) -> &'static str {
        match self {
            Names::Network => "aurum network: impute, standardize, layers, output",
            Names::Logistic => "aurum logistic regression: impute, standardize, linear, sigmoid",
        }
    }

    fn standardized(self) -> &'static str {
        match self {
            Names::Network => "h0",
            Names::Logistic => "standardized",
        }
    }

    fn layer(self, k: usize) -> LayerNames {
        match (self, k) {
            (Names::Logistic, 0) => LayerNames {
                weight: "weight".into(),
                bias: "bias".into(),
                product: "linear".into(),
                sum: "logit".into(),
            },
            _ => LayerNames {
                weight: format!("w{k}"),
                bias: format!("b{k}"),
                product: format!("mm{k}"),
                sum: format!("lin{k}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(names: Names) -> Vec<u8> {
        let features = vec!["a".to_string(), "b".to_string()];
        let layers = vec![(vec![0.5f32, -1.5], vec![0.25f32])];
        onnx(
            &Graph {
                features: &features,
                task: Task::BinaryClassification,
                means: &[1.0, 2.0],
                stds: &[0.5, 4.0],
                layers: &layers,
                target_scale: (0.0, 1.0),
            },
            names,
        )
    }

    /// The demo's graph as its own writer built it before there was one
    /// writer, call for call.
    fn logistic_as_it_was() -> Vec<u8> {
        let mut g = GraphBuilder::new("aurum_logistic_regression");
        g.input(INPUT, &[Dim::Dynamic("batch"), Dim::Fixed(2)])
            .output(PROBABILITY, &[Dim::Dynamic("batch"), Dim::Fixed(1)])
            .constant("mean", &[2], &[1.0, 2.0])
            .constant("std", &[2], &[0.5, 4.0])
            .constant("weight", &[2, 1], &[0.5, -1.5])
            .constant("bias", &[1], &[0.25])
            .node("IsNaN", &[INPUT], &["missing"])
            .node("Where", &["missing", "mean", INPUT], &["imputed"])
            .node("Sub", &["imputed", "mean"], &["centered"])
            .node("Div", &["centered", "std"], &["standardized"])
            .node("MatMul", &["standardized", "weight"], &["linear"])
            .node("Add", &["linear", "bias"], &["logit"])
            .node("Sigmoid", &["logit"], &[PROBABILITY])
            .metadata("aurum.features", "a,b");
        g.finish("aurum logistic regression: impute, standardize, linear, sigmoid")
    }

    #[test]
    fn the_logistic_names_write_the_demos_graph_byte_for_byte() {
        assert_eq!(linear(Names::Logistic), logistic_as_it_was());
        assert_ne!(linear(Names::Network), logistic_as_it_was());
    }

    #[test]
    fn both_namings_compute_the_same_probabilities() {
        let input = [1.0f32, f32::NAN, 3.0, 6.0];
        let run = |bytes: &[u8]| -> Vec<f32> {
            let mut session = onnx::Model::load("test", bytes).unwrap();
            let outputs = session
                .run_matrix(onnx::Matrix::new(input.as_slice(), 2, 2).unwrap())
                .unwrap();
            outputs.f32(0).unwrap().1.to_vec()
        };
        assert_eq!(run(&linear(Names::Logistic)), run(&linear(Names::Network)));
    }
}
