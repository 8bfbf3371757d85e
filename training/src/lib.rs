//! Training: point-in-time training sets → candle models → ONNX → registry.
//!
//! [`logistic`] trains a logistic regression with candle on a time-ordered
//! split (validation strictly later than training), and exports the whole
//! inference graph — imputation of missing values with training means,
//! standardization, the linear layer and the sigmoid — as one ONNX model
//! ([`onnx`]) whose single input takes one column per feature in the order
//! recorded in the registry.
//!
//! This crate uses the feature store's frames and the registry's API; it
//! knows nothing of HTTP or serving.

pub mod error;
pub mod logistic;
pub mod metrics;
pub mod onnx;

pub use error::{Error, Result};
pub use logistic::{TrainOptions, TrainedModel, train_logistic};

use std::collections::BTreeMap;

use polars::prelude::*;
use registry::{Lineage, ModelVersion, NewVersion, Registry};
use sha2::{Digest, Sha256};

/// The sha256 of a training set's contents (Arrow IPC of the frame), used as
/// lineage: the same training set gives the same hash.
pub fn training_set_sha256(df: &DataFrame) -> Result<String> {
    let mut buf = Vec::new();
    let mut df = df.clone();
    IpcWriter::new(&mut buf)
        .finish(&mut df)
        .map_err(|source| Error::Data {
            context: "hashing the training set".into(),
            source,
        })?;
    Ok(hex::encode(Sha256::digest(&buf)))
}

/// Registers a trained model as the next version of `name`, with lineage.
/// `feature_refs` are the `view:feature` references feeding the model input,
/// in column order.
pub fn register(
    registry: &Registry,
    name: &str,
    model: &TrainedModel,
    feature_refs: Vec<String>,
    lineage: Lineage,
) -> Result<ModelVersion> {
    let mut tags = BTreeMap::new();
    tags.insert("family".to_string(), "logistic_regression".to_string());
    tags.insert("framework".to_string(), "candle".to_string());
    let new = NewVersion {
        description: format!(
            "logistic regression on {} features, trained on {} rows",
            feature_refs.len(),
            model.train_rows
        ),
        features: feature_refs,
        imputation: model.means.clone(),
        metrics: model.metrics.clone(),
        lineage,
        tags,
    };
    Ok(registry.register(name, &model.onnx, new)?)
}
