//! Running models, with no HTTP: the models a server serves ([`ModelSet`])
//! and the watcher that keeps them in step with the registry
//! ([`reload`]), each loaded version's session pool and micro-batcher
//! ([`LoadedModel`]), the serving policies ([`policy`]: A/B split, shadow,
//! missing features, batching), and [`run()`], the one path from a request's
//! rows to predictions — assemble, impute, infer, time, record — that the
//! live `/predict` and the shadow runs share.
//!
//! Failures are [`Error`]s naming what was wrong; the HTTP layer
//! (`crate::error`) alone decides which status and code answer each.

mod assemble;
mod batcher;
mod error;
mod model;
mod model_set;
pub mod policy;
mod pool;
pub mod reload;
mod request;
mod run;

pub use assemble::now_micros;
pub use error::{Error, Result};
pub use model::{LoadedModel, ViewFeed};
pub use model_set::{MAX_ON_DEMAND_VERSIONS, ModelSet, Served};
pub use policy::{
    ARM_HEADER, Arm, BatchOptions, MissingFeatures, PolicyError, ServingConfig, ServingPolicy,
    sticky_hash,
};
pub use pool::Outputs;
pub use reload::{ReloadOptions, ReloadStats, Swapped, Watcher};
pub use request::PredictRequest;
pub use run::{ArmRows, Call, Env, Mode, Ran, Records, ShadowRun, run};
