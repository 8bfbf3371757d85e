//! What a run did, per source and per feature view.

use std::collections::BTreeMap;

use serde::Serialize;

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// The run id, recorded in every commit.
    pub run_id: String,
    /// Per source.
    pub sources: Vec<SourceReport>,
    /// Per feature view.
    pub views: Vec<ViewReport>,
    /// Wall time.
    pub seconds: f64,
}

impl PipelineReport {
    /// Whether the run committed anything.
    pub fn committed(&self) -> bool {
        self.sources
            .iter()
            .any(|s| s.bronze_version_written.is_some() || s.silver_version.is_some())
            || self.views.iter().any(|v| v.version.is_some())
    }
}

/// What a run did for one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    /// The source.
    pub source: String,
    /// Files ingested.
    pub files_ingested: usize,
    /// Files skipped as already ingested.
    pub files_skipped: usize,
    /// Bronze rows added.
    pub bronze_rows: usize,
    /// The bronze version written, if any.
    pub bronze_version_written: Option<u64>,
    /// Silver rows in (bronze rows processed).
    pub silver_rows_in: usize,
    /// Silver rows written.
    pub silver_rows_out: usize,
    /// Rows quarantined.
    pub quarantined: usize,
    /// Duplicates resolved (in the batch and against earlier batches).
    pub duplicates_resolved: usize,
    /// The batch quality score (1.0 when nothing was processed).
    pub quality_score: f64,
    /// Failures by `check:column`.
    pub failures: BTreeMap<String, usize>,
    /// The silver version written, if any.
    pub silver_version: Option<u64>,
    /// `full`, `incremental` or `unchanged`.
    pub silver_mode: String,
    /// The quality gates measured on this run's batches (empty when the
    /// source and its views declare none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gate_checks: Vec<super::gate::GateCheck>,
}

/// What a run did for one feature view.
#[derive(Debug, Clone, Serialize)]
pub struct ViewReport {
    /// The view.
    pub view: String,
    /// `full`, `incremental` or `unchanged`.
    pub mode: String,
    /// Rows written.
    pub rows: usize,
    /// The gold version written, if any.
    pub version: Option<u64>,
    /// The silver version read.
    pub silver_version: Option<u64>,
}
