//! End-to-end tests: the real `aurum` binary, checked from the outside with
//! real clients. One test binary for all of them keeps link time down.

mod demo;
mod incremental;
mod model_registry;
mod model_server;
mod monitoring;
mod pipeline;
mod serve;
mod training;
mod training_set;
