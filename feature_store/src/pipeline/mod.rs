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
mod crash;
pub mod delta_source;
pub mod gate;
pub mod gold;
mod gold_step;
pub mod lineage;
mod marks;
mod options;
mod report;
pub mod silver;
pub mod silver_step;

use std::collections::BTreeMap;
use std::time::Instant;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::project::Project;
use gold_step::gold_step;
use silver_step::silver_step;

pub use crash::crash_point;
pub use marks::{bronze_processed_at, consumed_versions, silver_hash};
pub use options::PipelineOptions;
pub use report::{PipelineReport, SourceReport, ViewReport};

/// How many times a run re-plans after losing a commit race to another run
/// (each loss means the other run made progress, and a run has about ten
/// sequenced commits, each of which it may lose once).
const CONFLICT_RETRIES: usize = 32;

/// Runs the pipeline over every source and view of `project`.
///
/// Every stage commit is exactly once (see [`delta::Sequence`]): when
/// another run commits the same step first, this run's commit is refused
/// and the run starts again from the committed marks, so two runs at once
/// end with the tables one run would have written. The report is the last
/// attempt's.
pub async fn run(
    project: &Project,
    options: &PipelineOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PipelineReport> {
    let mut attempt = 1;
    loop {
        match run_once(project, options, progress).await {
            Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => {
                tracing::info!(attempt, error = %e, "another run committed first; re-planning from the committed tables");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The span of one step of a run (a child of the run's, when traced).
fn step_trace(step: &'static str, key: &'static str, name: &str) -> telemetry::Trace {
    let span = telemetry::Trace::step(step);
    span.set(key, name.to_string());
    span
}

/// Ends a step's span with its outcome.
fn ended<T>(span: &telemetry::Trace, outcome: Result<T>) -> Result<T> {
    if let Err(e) = &outcome {
        span.fail(e.to_string());
    }
    span.end();
    outcome
}

async fn run_once(
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
    let store = project.delta_store()?;
    let mut sources = Vec::new();
    // Silver frames written in full this run, handed to gold.
    let mut in_memory: BTreeMap<String, (u64, DataFrame)> = BTreeMap::new();
    for source in &project.sources {
        progress(&format!("bronze: ingesting {}", source.name));
        let clock = Instant::now();
        let span = step_trace("bronze", "aurum.source", &source.name);
        let ingested = bronze::ingest(&store, &project.root, source, &run_id, now).await;
        if let Ok(ingest) = &ingested {
            span.set("aurum.rows_out", ingest.rows as i64);
            span.set("aurum.files", ingest.files_ingested.len() as i64);
        }
        let mut ingest = ended(&span, ingested)?;
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
        let span = step_trace("silver", "aurum.source", &source.name);
        let silvered = silver_step(
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
        .await;
        if span.is_on() {
            span.set("aurum.rows_in", report.silver_rows_in as i64);
            span.set("aurum.rows_out", report.silver_rows_out as i64);
            span.set("aurum.rows_quarantined", report.quarantined as i64);
            span.set("aurum.quality_score", report.quality_score);
        }
        ended(&span, silvered)?;
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
    // A source whose batches this run did not measure (nothing new) keeps
    // the verdict of its last measured batch, judged against the gates as
    // they are now: a held batch stays held on a re-run until a good batch
    // follows it or the gate is lowered.
    for report in &mut sources {
        if let Some(source) = project.source(&report.source)
            && report.gate_checks.is_empty()
            && gate::declared(project, source)
        {
            report.gate_checks = gate::last_verdict(&store, project, source).await?;
        }
    }
    let mut views = Vec::new();
    // Failed quality gates: their views' gold stays as it was.
    let mut held: Vec<String> = Vec::new();
    for view in &project.feature_views {
        progress(&format!("gold: {}", view.name));
        let source = project.source(&view.source).ok_or_else(|| {
            Error::Internal(format!("view {} has no source {}", view.name, view.source))
        })?;
        let span = step_trace("gold", "aurum.view", &view.name);
        let checks = sources
            .iter()
            .find(|s| s.source == source.name)
            .map_or(&[][..], |s| s.gate_checks.as_slice());
        if gate::holds(checks, &view.name) {
            span.set("aurum.held", "quality gate");
            span.end();
            held.extend(
                checks
                    .iter()
                    .filter(|c| !c.passed && c.view.as_deref().is_none_or(|v| v == view.name))
                    .map(|c| c.describe(&source.name)),
            );
            continue;
        }
        let golded = gold_step(&store, view, source, options, &run_id, now, &in_memory).await;
        if let Ok(gold) = &golded {
            span.set("aurum.rows_out", gold.rows as i64);
        }
        let gold = ended(&span, golded)?;
        views.push(gold);
    }
    let report = PipelineReport {
        run_id,
        sources,
        views,
        seconds: started.elapsed().as_secs_f64(),
    };
    if !held.is_empty() {
        held.sort();
        held.dedup();
        return Err(Error::QualityGate {
            message: format!(
                "gold not advanced; silver, quarantine and quality are committed: {}",
                held.join("; ")
            ),
            report: Box::new(report),
        });
    }
    Ok(report)
}
