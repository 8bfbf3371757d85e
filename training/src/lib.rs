//! Training: point-in-time training sets → candle models → ONNX → registry.
//!
//! The modules run one way, each using only those before it:
//! [`spec`] (a model's `[model.training]` table) → [`data`] (the training
//! set read, checked, split by time and standardized) → [`export`] (the one
//! ONNX graph writer) and [`evaluation`] (validation metrics, computed with
//! `drift::metrics`) → [`fit`] (the one trainer) → [`logistic`] (the
//! demo's logistic regression, a preset of [`fit`]) and [`job`] (a spec's
//! training job: training set, fit, registration, promotion).
//!
//! Every exported graph imputes missing values with training means,
//! standardizes, applies the layers and a sigmoid (or the label's scale),
//! and takes one column per feature in the order recorded in the registry.
//!
//! This crate uses the feature store's frames and the registry's API; it
//! knows nothing of HTTP or serving.

pub mod data;
pub mod error;
pub mod evaluation;
pub mod export;
pub mod fit;
pub mod job;
pub mod logistic;
pub mod spec;

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
        source: String::new(),
    };
    Ok(registry.register(name, &model.onnx, new)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trained() -> TrainedModel {
        let df = crate::data::tests::synthetic(500, 3);
        let features = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        train_logistic(&df, &features, "y", "ts", &TrainOptions::default()).unwrap()
    }

    fn refs() -> Vec<String> {
        vec!["v:a".into(), "v:b".into(), "v:c".into()]
    }

    #[test]
    fn registered_versions_count_up_and_keep_their_lineage() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let model = trained();
        let mut lineage = Lineage::default();
        lineage.table_versions.insert("v".into(), 4);
        let v1 = register(&registry, "m", &model, refs(), lineage.clone()).unwrap();
        let v2 = register(&registry, "m", &model, refs(), lineage).unwrap();
        assert_eq!((v1.version, v2.version), (1, 2));
        assert_eq!(v1.sha256, v2.sha256, "same bytes, same blob");
        let read = registry.version("m", 1).unwrap();
        assert_eq!(read, v1);
        assert_eq!(read.lineage.table_versions["v"], 4);
        assert_eq!(read.signature.inputs[0].name, logistic::INPUT);
        assert_eq!(read.signature.inputs[0].shape, vec![-1, 3]);
        assert_eq!(registry.model_bytes(&read).unwrap(), model.onnx);
        assert_eq!(registry.latest("m").unwrap().version, 2);
    }

    #[test]
    fn a_feature_list_that_does_not_fit_the_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let err = register(
            &registry,
            "m",
            &trained(),
            vec!["v:a".into(), "v:b".into()],
            Lineage::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("takes 3 columns but 2 features"),
            "{err}"
        );
        assert!(registry.versions("m").unwrap().is_empty());
    }

    #[test]
    fn models_aurum_cannot_feed_are_refused_at_registration() {
        use onnx::{Dim, GraphBuilder};
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let mut g = GraphBuilder::new("two_inputs");
        g.input("a", &[Dim::Dynamic("batch"), Dim::Fixed(2)])
            .input("b", &[Dim::Dynamic("batch"), Dim::Fixed(2)])
            .output("sum", &[Dim::Dynamic("batch"), Dim::Fixed(2)])
            .node("Add", &["a", "b"], &["sum"]);
        let new = NewVersion {
            features: vec!["v:a".into(), "v:b".into()],
            ..NewVersion::default()
        };
        let err = registry
            .register("m", &g.finish("two inputs"), new)
            .unwrap_err();
        assert!(err.to_string().contains("has 2 inputs"), "{err}");
        assert!(registry.versions("m").unwrap().is_empty());
    }

    #[test]
    fn an_interrupted_registration_leaves_no_version() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        // A crash after the blob and a temporary metadata file were written,
        // before the metadata was linked into place.
        let versions = dir.path().join("models/m/versions");
        std::fs::create_dir_all(&versions).unwrap();
        std::fs::write(versions.join(".tmp-1-2"), b"{\"partial\": ").unwrap();
        assert!(registry.versions("m").unwrap().is_empty());
        let v = register(&registry, "m", &trained(), refs(), Lineage::default()).unwrap();
        assert_eq!(v.version, 1);
    }

    #[test]
    fn the_training_set_hash_is_stable() {
        let a = crate::data::tests::synthetic(50, 9);
        let b = crate::data::tests::synthetic(50, 9);
        let c = crate::data::tests::synthetic(50, 10);
        assert_eq!(
            training_set_sha256(&a).unwrap(),
            training_set_sha256(&b).unwrap()
        );
        assert_ne!(
            training_set_sha256(&a).unwrap(),
            training_set_sha256(&c).unwrap()
        );
    }
}
