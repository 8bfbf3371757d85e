//! How a run is asked to behave, and how its steps write accordingly.

use delta::{DeltaStore, SchemaChange, Sequence, WriteMode, WriteOptions};

use crate::error::Result;

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

/// The place of a step's next commit in `table`'s sequence of commits by
/// that step (`app_id`), read before the step plans: its commit is refused
/// if another run commits the same step first (see [`Sequence`]).
pub(super) async fn plan_sequence(
    store: &DeltaStore,
    table: &str,
    app_id: String,
) -> Result<Sequence> {
    Ok(Sequence {
        planned: store.sequence(table, &app_id).await?,
        app_id,
    })
}

/// The step id of the stage that owns `table` (its bronze, silver or gold
/// writer).
pub(super) fn step_id(table: &str) -> String {
    format!("aurum:{table}")
}
