//! How a run is asked to behave, and how its steps write accordingly.

use delta::{SchemaChange, WriteMode, WriteOptions};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Allow definition changes that remove, rename or retype columns of
    /// silver or gold tables (they are rewritten).
    pub allow_breaking_schema_change: bool,
    /// Recompute silver and gold from all of bronze.
    pub full_refresh: bool,
    /// The run's clock, microseconds since the epoch (`None`: now).
    pub now_micros: Option<i64>,
}

/// How a step writes its output: a full recompute overwrites the table
/// (breaking schema changes only when allowed), an incremental one appends;
/// either may add columns.
pub(super) fn step_write(full: bool, options: &PipelineOptions) -> WriteOptions {
    WriteOptions {
        mode: if full {
            WriteMode::Overwrite
        } else {
            WriteMode::Append
        },
        schema_change: match (full, options.allow_breaking_schema_change) {
            (true, true) => SchemaChange::Any,
            _ => SchemaChange::AddColumns,
        },
        ..WriteOptions::append()
    }
}
