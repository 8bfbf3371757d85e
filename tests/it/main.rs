//! End-to-end tests: the real `aurum` binary, checked from the outside with
//! real clients. One test binary for all of them keeps link time down.

// Helpers: running the binary, the server and HTTP, Python's clients.
mod cli;
mod python;
mod server;

mod delta_sources;
mod demo;
mod feast;
mod incremental;
mod model_registry;
mod model_server;
mod monitoring;
mod object_storage;
mod observability;
mod online_tier;
mod pipeline;
mod security;
mod serve;
mod stream;
mod tables;
mod traces;
mod training;
mod training_set;
mod windows;
