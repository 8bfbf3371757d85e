//! The metadata of a model version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One registered, immutable version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The model name, e.g. `fraud`.
    pub name: String,
    /// The version number, counted from 1 per model.
    pub version: u64,
    /// When the version was registered (RFC 3339, UTC).
    pub created_at: String,
    /// Free text.
    pub description: String,
    /// The sha256 of the ONNX file, lowercase hex; the file's storage key.
    pub sha256: String,
    /// The input and output tensors as ONNX Runtime reports them.
    pub signature: Signature,
    /// The features that feed the model's first input, in column order, as
    /// `feature_view:feature` references.
    pub features: Vec<String>,
    /// Per feature, the value used when the feature is missing at serving time
    /// (the training mean), in the order of `features`.
    pub imputation: Vec<f32>,
    /// Training and validation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Where the model came from.
    pub lineage: Lineage,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
}

/// The data and code a version was trained from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Delta table versions read, by table name.
    pub table_versions: BTreeMap<String, u64>,
    /// The sha256 of the training set (or its spine).
    pub training_set_sha256: String,
    /// The training run's identifier.
    pub run_id: String,
    /// Hyperparameters and seed, as strings.
    pub parameters: BTreeMap<String, String>,
}

/// What a caller supplies to register a version; the registry fills in the
/// version number, time, digest and signature.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    /// Free text.
    pub description: String,
    /// The feature references feeding the model input, in column order.
    pub features: Vec<String>,
    /// The imputation value per feature, in the order of `features`.
    pub imputation: Vec<f32>,
    /// Training and validation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Where the model came from.
    pub lineage: Lineage,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
}

/// The input and output tensors of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// Inputs in the order the model declares them.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in the order the model declares them.
    pub outputs: Vec<TensorSpec>,
}

/// One tensor of a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The tensor name.
    pub name: String,
    /// The element type as ONNX Runtime names it (e.g. `f32`).
    pub dtype: String,
    /// The shape; `-1` marks a dynamic dimension.
    pub shape: Vec<i64>,
}
