//! The aurum feature store.
//!
//! - [`schema`]: entities, feature views and feature services, the shapes
//!   every other part shares;
//! - [`expr`]: the derived-feature expressions the project file declares
//!   and gold computes;
//! - [`project`]: the project file (`aurum.toml`) and its checker;
//! - [`pipeline`]: the medallion processors — bronze ingest, silver
//!   cleaning with quality and quarantine, gold windowed features — run
//!   incrementally and with lineage into Delta tables;
//! - [`online`]: the moka online store, materialization from gold and push
//!   ingestion;
//! - [`retrieval`]: point-in-time joins of gold rows onto labelled spines,
//!   and the training sets built from them;
//! - [`window`]: window features valued at the time they are read, on
//!   time tiles, the same way online and in point-in-time joins;
//! - `testing` (this crate's tests, or the `testing` feature): fixtures
//!   the workspace's tests and benches share.
//!
//! Every table is read and written through the Delta layer (crate `delta`).
//! The feature store knows nothing of models, registries, HTTP or Flight:
//! it deals in feature views, Delta tables and feature values.

pub mod error;
pub mod expr;
pub mod health;
pub mod metrics;
pub mod online;
pub mod pipeline;
pub mod project;
pub mod retrieval;
pub mod schema;
pub mod window;
// Only for tests and benches: compiled for this crate's tests and behind
// the `testing` feature other crates' dev-dependencies enable.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
pub use online::{FeatureStatus, FeatureValue, OnlineStore};
pub use project::{OnlineBackendKind, Project};
pub use schema::{Entity, FeatureService, FeatureView};
