//! The aurum application: glue that composes the library crates into the
//! flows the command line runs (`src/main.rs` holds only the CLI definition)
//! and that benchmarks reuse, and the example project (`aurum init`).

pub mod demo_project;
pub mod drift_data;
pub mod example;
pub mod project_registry;
