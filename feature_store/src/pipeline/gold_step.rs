//! The gold step of a run: a view recomputed in full, or incrementally for
//! the entities with new silver rows, and committed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use polars::prelude::*;

use super::crash::crash_point;
use super::gold::{self, OUTPUT_FROM};
use super::marks::latest_lineage;
use super::options::{PipelineOptions, plan_sequence, step_id, step_write};
use super::report::ViewReport;
use crate::error::{Error, Result};
use crate::project::{Source, ViewSpec};
use delta::{CommitLineage, DeltaStore};

pub(super) async fn gold_step(
    store: &DeltaStore,
    view: &ViewSpec,
    source: &Source,
    options: &PipelineOptions,
    run_id: &str,
    now: i64,
    in_memory: &BTreeMap<String, (u64, DataFrame)>,
) -> Result<ViewReport> {
    let silver_table = &source.silver_table;
    let mut report = ViewReport {
        view: view.name.clone(),
        mode: "unchanged".into(),
        rows: 0,
        version: None,
        silver_version: None,
    };
    // Read first: a run that commits after this point makes ours conflict.
    let sequence = plan_sequence(store, &view.name, step_id(&view.name)).await?;
    let Some(silver_now) = store.latest_version(silver_table).await? else {
        return Ok(report);
    };
    report.silver_version = Some(silver_now);
    let hash = view.definition_hash();
    let (last_silver, full) = gold_mark(store, view, silver_table, &hash, options).await?;
    if !full && last_silver == Some(silver_now) {
        return Ok(report);
    }
    let columns = gold::input_columns(view, source);
    let created = now;
    let clock = Instant::now();
    let computed = if full {
        let context = full_context(store, silver_table, silver_now, &columns, in_memory).await?;
        let (view_c, source_c) = (view.clone(), source.clone());
        tokio::task::spawn_blocking(move || {
            gold::compute(&view_c, &source_c, &context, None, created)
        })
        .await
        .map_err(|e| Error::Internal(format!("gold task: {e}")))??
    } else {
        let (added, v) = store
            .files_added(silver_table, last_silver, Some(silver_now))
            .await?;
        let new_rows = store
            .read_files(silver_table, v, &added, Some(&columns))
            .await?;
        if new_rows.height() == 0 {
            // Only compaction happened upstream: nothing to commit.
            return Ok(report);
        }
        incremental(store, view, source, &columns, new_rows, silver_now, created).await?
    };
    tracing::info!(view = %view.name, rows = computed.height(), elapsed = ?clock.elapsed(), "gold computed");
    let version = store
        .write(
            &view.name,
            &computed,
            &delta::WriteOptions {
                sequence: Some(sequence),
                ..step_write(full, options)
            },
            &CommitLineage {
                operation: if full { "gold-full" } else { "gold" }.into(),
                input_tables: [(silver_table.clone(), silver_now)].into_iter().collect(),
                definition_hash: hash,
                run_id: run_id.to_string(),
                ..CommitLineage::default()
            },
        )
        .await?;
    crash_point(&format!("after-commit:{}", view.name));
    tracing::info!(view = %view.name, elapsed = ?clock.elapsed(), "gold committed");
    report.mode = if full { "full" } else { "incremental" }.into();
    report.rows = computed.height();
    report.version = Some(version);
    Ok(report)
}

/// Gold's progress mark for `view`: the silver version its last commit read
/// (`None`: never computed), and whether it must be recomputed in full (a
/// changed definition `hash`, a silver table rewritten in full since, or
/// asked for).
async fn gold_mark(
    store: &DeltaStore,
    view: &ViewSpec,
    silver_table: &str,
    hash: &str,
    options: &PipelineOptions,
) -> Result<(Option<u64>, bool)> {
    let last = if store.exists(&view.name).await? {
        latest_lineage(store, &view.name).await?
    } else {
        None
    };
    let last_silver = last
        .as_ref()
        .and_then(|l| l.input_tables.get(silver_table).copied());
    let changed = last.as_ref().is_some_and(|l| l.definition_hash != hash);
    // A silver table rewritten in full since the last gold run means gold
    // is recomputed in full too.
    let silver_rewritten = match last_silver {
        Some(v) => store
            .history(silver_table)
            .await?
            .into_iter()
            .filter(|c| c.version > v)
            .any(|c| c.lineage.is_some_and(|l| l.operation == "silver-full")),
        None => true,
    };
    let full = last_silver.is_none() || changed || silver_rewritten || options.full_refresh;
    Ok((last_silver, full))
}

/// The silver rows a full recompute reads: the frame silver wrote in full
/// this run when it is that version, else read back.
async fn full_context(
    store: &DeltaStore,
    silver_table: &str,
    silver_now: u64,
    columns: &[String],
    in_memory: &BTreeMap<String, (u64, DataFrame)>,
) -> Result<DataFrame> {
    Ok(match in_memory.get(silver_table) {
        Some((v, df)) if *v == silver_now => df
            .select(columns.iter().map(String::as_str))
            .map_err(Error::polars("selecting gold inputs"))?,
        _ => {
            let (files, v) = store.files(silver_table, Some(silver_now)).await?;
            store
                .read_files(silver_table, v, &files, Some(columns))
                .await?
        }
    })
}

/// Recomputes the view for the entities with new silver rows, from each
/// entity's earliest new event on; earlier rows of those entities are read
/// back only as far as the longest window needs.
pub(super) async fn incremental(
    store: &DeltaStore,
    view: &ViewSpec,
    source: &Source,
    columns: &[String],
    new_rows: DataFrame,
    silver_version: u64,
    created: i64,
) -> Result<DataFrame> {
    let failed = |what: &str| Error::polars(format!("gold {} incremental ({what})", view.name));
    let ts = source.timestamp.as_str();
    let keys = gold::key_exprs(view);
    if new_rows.height() == 0 {
        return gold::compute(view, source, &new_rows, None, created);
    }
    let from = new_rows
        .lazy()
        .group_by(keys.clone())
        .agg([col(ts).cast(DataType::Int64).min().alias(OUTPUT_FROM)])
        .collect()
        .map_err(failed("entities"))?;
    let earliest = from
        .column(OUTPUT_FROM)
        .ok()
        .and_then(|c| c.i64().ok()?.min())
        .unwrap_or(i64::MIN);
    let reach = i64::try_from(Duration::as_micros(&view.max_window())).unwrap_or(i64::MAX);
    let (files, v) = store
        .files(&source.silver_table, Some(silver_version))
        .await?;
    let needed: Vec<_> = files
        .into_iter()
        .filter(|f| {
            f.max_micros(ts)
                .is_none_or(|m| m > earliest.saturating_sub(reach))
        })
        .collect();
    let context = store
        .read_files(&source.silver_table, v, &needed, Some(columns))
        .await?;
    let context = context
        .lazy()
        .join(
            from.clone().lazy(),
            keys.clone(),
            keys,
            JoinArgs::new(JoinType::Inner),
        )
        .filter(
            col(ts)
                .cast(DataType::Int64)
                .gt(col(OUTPUT_FROM) - lit(reach)),
        )
        .select(columns.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
        .collect()
        .map_err(failed("context"))?;
    let (view, source) = (view.clone(), source.clone());
    tokio::task::spawn_blocking(move || {
        gold::compute(&view, &source, &context, Some(&from), created)
    })
    .await
    .map_err(|e| Error::Internal(format!("gold task: {e}")))?
}
