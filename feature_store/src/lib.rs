//! The aurum feature store.
//!
//! A project file ([`project`]) declares entities, bronze sources with
//! their silver rules, and feature views. The medallion [`pipeline`] ingests
//! bronze files ([`bronze`]), cleans them ([`silver`]) and computes feature
//! views ([`gold`]) into Delta tables ([`offline`]), incrementally and with
//! lineage ([`lineage`]). Gold tables are read back as polars frames,
//! materialized into the in-memory moka online store ([`online`]) or pushed
//! there and to gold directly ([`push`]), and
//! joined point-in-time onto labelled spines to make training sets
//! ([`retrieval`]). [`fraud`] is the example domain.
//!
//! The Arrow Flight service ([`flight`]) is this crate's one wire format.
//! It knows nothing of models, registries or HTTP: it deals in feature
//! views, Delta tables and feature values.

pub mod bronze;
pub mod definitions;
pub mod error;
pub mod expr;
pub mod flight;
pub mod fraud;
pub mod gold;
pub mod interop;
pub mod lineage;
pub mod materialize;
pub mod metrics;
pub mod offline;
pub mod online;
pub mod pipeline;
pub mod project;
pub mod push;
pub mod retrieval;
pub mod silver;
pub mod training_set;

pub use definitions::{Entity, FeatureService, FeatureView};
pub use error::{Error, Result};
pub use offline::{CommitLineage, DeltaStore};
pub use online::{FeatureStatus, FeatureValue, OnlineStore};
pub use project::Project;
