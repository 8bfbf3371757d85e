//! The medallion pipeline: bronze ingest → silver → gold, incremental and
//! restartable.
//!
//! Progress is kept only in the Delta tables themselves: each silver commit
//! records the bronze version it has processed, each gold commit the silver
//! version. A run reads those marks, processes what is newer, and commits.
//! A crash at any point leaves every table at a committed version; the next
//! run starts from the marks. The side tables (quarantine, quality) are
//! written before the silver commit and keyed by the bronze version of the
//! batch, so a batch whose silver commit was lost is redone without writing
//! its quarantine rows twice.

pub mod bronze;
pub mod expr;
pub mod gold;
mod gold_step;
pub mod lineage;
pub mod silver;
mod silver_step;

use std::collections::BTreeMap;
use std::time::Instant;

use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::project::{Project, Source, hash_json};
use delta::{CommitLineage, DeltaStore, SchemaChange, WriteMode, WriteOptions};
use gold_step::gold_step;
use silver_step::silver_step;

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

/// The fault-injection point a test may set with `AURUM_CRASH_AT`: the
/// process aborts there, as if killed, with no cleanup.
pub fn crash_point(point: &str) {
    static CRASH_AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = CRASH_AT.get_or_init(|| std::env::var("AURUM_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        eprintln!("AURUM_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}

/// Runs the pipeline over every source and view of `project`.
pub async fn run(
    project: &Project,
    options: &PipelineOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PipelineReport> {
    let started = Instant::now();
    let now = options
        .now_micros
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    let run_id = format!(
        "run-{}",
        chrono::DateTime::from_timestamp_micros(now)
            .map(|t| t.format("%Y%m%dT%H%M%S%.6fZ").to_string())
            .unwrap_or_default()
    );
    let store = DeltaStore::new(project.delta_dir());
    let mut sources = Vec::new();
    // Silver frames written in full this run, handed to gold.
    let mut in_memory: BTreeMap<String, (u64, DataFrame)> = BTreeMap::new();
    for source in &project.sources {
        progress(&format!("bronze: ingesting {}", source.name));
        let clock = Instant::now();
        let mut ingest = bronze::ingest(&store, &project.root, source, &run_id, now).await?;
        tracing::info!(source = %source.name, rows = ingest.rows, elapsed = ?clock.elapsed(), "bronze committed");
        let mut report = SourceReport {
            source: source.name.clone(),
            files_ingested: ingest.files_ingested.len(),
            files_skipped: ingest.files_skipped,
            bronze_rows: ingest.rows,
            bronze_version_written: (ingest.version != ingest.previous_version)
                .then_some(ingest.version)
                .flatten(),
            quality_score: 1.0,
            silver_mode: "unchanged".into(),
            ..SourceReport::default()
        };
        crash_point(&format!("after-commit:{}", source.bronze_table()));
        progress(&format!("silver: {}", source.silver_table));
        silver_step(
            &store,
            project,
            source,
            options,
            &mut ingest,
            &run_id,
            now,
            &mut report,
            &mut in_memory,
        )
        .await?;
        sources.push(report);
        // Keep in memory only the columns the views over this source read.
        if let Some((version, frame)) = in_memory.remove(&source.silver_table) {
            let mut needed: Vec<String> = Vec::new();
            for view in project
                .feature_views
                .iter()
                .filter(|v| v.source == source.name)
            {
                for c in gold::input_columns(view, source) {
                    if !needed.contains(&c) {
                        needed.push(c);
                    }
                }
            }
            if !needed.is_empty() {
                let pruned = frame
                    .select(needed.iter().map(String::as_str))
                    .map_err(Error::polars("keeping gold inputs"))?;
                in_memory.insert(source.silver_table.clone(), (version, pruned));
            }
        }
    }
    let mut views = Vec::new();
    for view in &project.feature_views {
        progress(&format!("gold: {}", view.name));
        let source = project.source(&view.source).ok_or_else(|| {
            Error::Internal(format!("view {} has no source {}", view.name, view.source))
        })?;
        views.push(gold_step(&store, view, source, options, &run_id, now, &in_memory).await?);
    }
    Ok(PipelineReport {
        run_id,
        sources,
        views,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The silver definition hash of a source.
pub fn silver_hash(source: &Source) -> String {
    hash_json("aurum-silver-v1", source)
}

pub(super) struct SilverMark {
    bronze_version: Option<u64>,
    definition_hash: Option<String>,
}

pub(super) async fn silver_mark(store: &DeltaStore, source: &Source) -> Result<SilverMark> {
    if !store.exists(&source.silver_table) {
        return Ok(SilverMark {
            bronze_version: None,
            definition_hash: None,
        });
    }
    let lineage = latest_lineage(store, &source.silver_table).await?;
    Ok(SilverMark {
        bronze_version: lineage
            .as_ref()
            .and_then(|l| l.input_tables.get(&source.bronze_table()).copied()),
        definition_hash: lineage.map(|l| l.definition_hash),
    })
}

/// The lineage of the newest commit that changed data: compaction commits
/// are skipped, they carry no progress mark.
pub(super) async fn latest_lineage(
    store: &DeltaStore,
    table: &str,
) -> Result<Option<CommitLineage>> {
    if !store.exists(table) {
        return Ok(None);
    }
    Ok(store
        .history(table)
        .await?
        .into_iter()
        .filter_map(|c| c.lineage)
        .find(|l| l.operation != "optimize"))
}

/// The version of each table up to which downstream steps have consumed it:
/// bronze tables up to their silver mark, silver tables up to the oldest
/// mark of the views reading them (`None`: not read at all yet). Tables
/// nobody reads are absent.
pub async fn consumed_versions(project: &Project) -> Result<BTreeMap<String, Option<u64>>> {
    let store = DeltaStore::new(project.delta_dir());
    let mut marks = BTreeMap::new();
    for source in &project.sources {
        let bronze = silver_mark(&store, source).await?.bronze_version;
        marks.insert(source.bronze_table(), bronze);
        let mut oldest: Option<Option<u64>> = None;
        for view in project
            .feature_views
            .iter()
            .filter(|v| v.source == source.name)
        {
            let mark = latest_lineage(&store, &view.name)
                .await?
                .and_then(|l| l.input_tables.get(&source.silver_table).copied());
            oldest = Some(match (oldest, mark) {
                (None, m) => m,
                (Some(Some(o)), Some(m)) => Some(o.min(m)),
                _ => None,
            });
        }
        if let Some(o) = oldest {
            marks.insert(source.silver_table.clone(), o);
        }
    }
    Ok(marks)
}

/// The bronze versions (and silver definition hashes) of the batches whose
/// quarantine or quality rows were committed for `source`'s silver table,
/// newest first.
pub(super) async fn side_marks(
    store: &DeltaStore,
    table: &str,
    source: &Source,
) -> Result<Vec<(u64, String)>> {
    if !store.exists(table) {
        return Ok(Vec::new());
    }
    let operation = format!("{table}:{}", source.silver_table);
    Ok(store
        .history(table)
        .await?
        .into_iter()
        .filter_map(|c| c.lineage)
        .filter(|l| l.operation == operation)
        .filter_map(|l| {
            let v = l.input_tables.get(&source.bronze_table()).copied()?;
            Some((v, l.definition_hash))
        })
        .collect())
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
