//! The aurum feature store.
//!
//! Bronze files become silver and gold Delta tables ([`fraud`] holds the
//! example domain's processors), gold tables are read back as polars frames
//! ([`offline`]), materialized into the in-memory moka online store
//! ([`online`]), and joined point-in-time onto labelled spines to make
//! training sets ([`retrieval`]).
//!
//! This crate knows nothing of models, registries or HTTP: it deals in
//! feature views, Delta tables and feature values.

pub mod definitions;
pub mod error;
pub mod fraud;
pub mod interop;
pub mod offline;
pub mod online;
pub mod retrieval;

pub use definitions::{Entity, FeatureView};
pub use error::{Error, Result};
pub use offline::{CommitLineage, DeltaStore};
pub use online::{FeatureStatus, FeatureValue, OnlineStore};
