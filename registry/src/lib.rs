//! The aurum model registry: versioned ONNX models on the local filesystem
//! or an object store (S3, Azure Blob/ADLS, GCS).
//!
//! Every version is an ONNX file stored content-addressed (sha256) plus a JSON
//! metadata document (signature, feature list, metrics, lineage). A version is
//! validated before it is written: the file must load in ONNX Runtime and its
//! input must be as wide as the declared feature list. Registration is atomic:
//! the metadata document is the commit point, written by an exclusive create,
//! so a crash mid-way leaves at most an unreferenced blob, never half a version.
//!
//! This crate knows nothing of feature stores, training or serving. It loads
//! models through the `onnx` crate (which owns the ONNX Runtime environment)
//! because loading a model is part of validating it.

pub mod error;
pub mod manage;
pub mod mlflow_client;
pub mod model;
mod objects;
pub mod search;
pub mod store;

pub use error::{Error, Result};
pub use manage::CHAMPION;
pub use mlflow_client::{MlflowClient, SyncReport};
pub use model::{
    AliasChange, Lineage, ModelVersion, NewVersion, RegisteredModel, Signature, TensorSpec,
    VersionStatus,
};
pub use search::Page;
pub use store::Registry;
