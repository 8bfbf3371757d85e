//! The metadata of a model version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// The signature a version records is the one ONNX Runtime reports, defined
// once by the crate that reads it; its JSON is part of the metadata document.
pub use onnx::{Signature, TensorSpec};

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
    /// Whether the version can be served.
    #[serde(default)]
    pub status: VersionStatus,
    /// Why registration failed, for a `FailedRegistration` version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Where the file was imported from (a path or URI), if anywhere.
    #[serde(default)]
    pub source: String,
    /// When the metadata last changed (RFC 3339, UTC); the creation time
    /// until then.
    #[serde(default)]
    pub updated_at: String,
}

impl ModelVersion {
    /// Whether the version holds a validated model.
    pub fn is_ready(&self) -> bool {
        self.status == VersionStatus::Ready
    }
}

/// The state of a version, as MLflow names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionStatus {
    /// Validated and stored: servable.
    #[default]
    Ready,
    /// The file could not be imported or validated; nothing is stored but
    /// the record of the attempt.
    FailedRegistration,
}

impl VersionStatus {
    /// MLflow's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Ready => "READY",
            VersionStatus::FailedRegistration => "FAILED_REGISTRATION",
        }
    }
}

/// A registered model: the name its versions share, and its own metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// The model name.
    pub name: String,
    /// When the model was created (RFC 3339, UTC).
    pub created_at: String,
    /// When the model's metadata last changed (RFC 3339, UTC).
    pub updated_at: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// One move of an alias, as recorded in the model's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasChange {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who moved it.
    pub who: String,
    /// The alias.
    pub alias: String,
    /// The version it pointed at before (none: it did not exist).
    pub from: Option<u64>,
    /// The version it points at after (none: it was deleted).
    pub to: Option<u64>,
    /// Whether this move was a rollback.
    #[serde(default)]
    pub rollback: bool,
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
    /// Where the file comes from (a path or URI), recorded with the version.
    pub source: String,
}
