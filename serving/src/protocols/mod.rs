//! Other systems' wire protocols, spoken so their clients work against
//! aurum unchanged: the Open Inference Protocol (KServe V2) REST endpoints
//! ([`oip`]) and the MLflow Model Registry REST API ([`mlflow`]). Each
//! answers errors in its protocol's own shape, with its own exhaustive
//! mapping of the domain errors.

pub mod mlflow;
pub mod oip;
pub mod oip_grpc;
