//! The silver step of a run: the bronze rows newer than silver's mark
//! cleaned, resolved against rows committed earlier, and committed with
//! their quarantine and quality rows.

use std::collections::BTreeMap;
use std::time::Instant;

use polars::prelude::*;

use super::bronze::{self, INGESTED_AT};
use super::silver::{self, BatchContext, QUALITY_TABLE, QUARANTINE_TABLE, SilverSummary};
use crate::error::{Error, Result};
use crate::project::{Project, Source};
use delta::{CommitLineage, DeltaStore, WriteMode, WriteOptions};

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn silver_step(
    store: &DeltaStore,
    project: &Project,
    source: &Source,
    options: &PipelineOptions,
    ingest: &mut bronze::IngestReport,
    run_id: &str,
    now: i64,
    report: &mut SourceReport,
    in_memory: &mut BTreeMap<String, (u64, DataFrame)>,
) -> Result<()> {
    let bronze_table = source.bronze_table();
    let Some(bronze_now) = ingest.version else {
        return Ok(()); // No bronze data at all yet.
    };
    let hash = silver_hash(source);
    let clock = Instant::now();
    loop {
        let mark = silver_mark(store, source).await?;
        let changed = mark.definition_hash.as_ref().is_some_and(|h| *h != hash);
        let full = mark.bronze_version.is_none() || changed || options.full_refresh;
        if !full && mark.bronze_version == Some(bronze_now) {
            return Ok(());
        }
        // A batch whose side tables were committed but whose silver commit
        // was lost is redone first, up to exactly the same bronze version.
        // Read once per batch: they decide both the batch and, below,
        // which side tables this batch still has to write.
        let quarantine_marks = side_marks(store, QUARANTINE_TABLE, source).await?;
        let quality_marks = side_marks(store, QUALITY_TABLE, source).await?;
        let pending = quarantine_marks
            .iter()
            .chain(&quality_marks)
            .map(|(v, _)| *v)
            .filter(|v| mark.bronze_version.is_none_or(|m| *v > m) && *v <= bronze_now)
            .min();
        let target = if full {
            bronze_now
        } else {
            pending.unwrap_or(bronze_now)
        };
        let from = if full { None } else { mark.bronze_version };

        // The rows ingested by this run are handed over in memory when they
        // are exactly the batch; otherwise the batch is read back.
        let in_hand = from == ingest.previous_version && target == bronze_now;
        let batch = match ingest.frame.take() {
            Some(frame) if in_hand => frame,
            _ => {
                let (files, version) = store.files_added(&bronze_table, from, Some(target)).await?;
                store
                    .read_files(&bronze_table, version, &files, None)
                    .await?
            }
        };
        let mut dimensions = BTreeMap::new();
        let mut input_tables = BTreeMap::new();
        input_tables.insert(bronze_table.clone(), target);
        for e in &source.enrich {
            let Some(dim) = project.source(&e.source) else {
                continue;
            };
            match store.latest_version(&dim.silver_table).await? {
                Some(_) => {
                    let (df, version) = store.read(&dim.silver_table, None).await?;
                    input_tables.insert(dim.silver_table.clone(), version);
                    dimensions.insert(e.source.clone(), df);
                }
                None => {
                    return Err(Error::Schema {
                        view: source.name.clone(),
                        message: format!(
                            "enrichment needs silver table {} of source {:?}; its bronze path {:?} matched no file",
                            dim.silver_table, dim.name, dim.path
                        ),
                    });
                }
            }
        }
        let ctx = BatchContext {
            run_id: run_id.to_string(),
            bronze_version: target,
            now_micros: now,
        };
        let batch_rows = batch.height();
        // Only compaction happened upstream: nothing to process or commit.
        if !full && batch_rows == 0 && target == bronze_now {
            return Ok(());
        }
        tracing::info!(source = %source.name, rows = batch_rows, elapsed = ?clock.elapsed(), "silver batch read");
        let processed = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || silver::process(batch, &source, &dimensions, &ctx))
                .await
                .map_err(|e| Error::Internal(format!("silver task: {e}")))??
        };
        tracing::info!(source = %source.name, elapsed = ?clock.elapsed(), "silver processed");
        let mut summary: SilverSummary = processed.summary.clone();
        let mut clean = processed.clean;
        let mut remove = Vec::new();
        if !full && !source.dedup_key.is_empty() && clean.height() > 0 {
            let resolved = resolve_existing(store, source, &clean).await?;
            summary.duplicates_resolved += resolved.dropped_new + resolved.replaced_old;
            clean = resolved.clean;
            remove = resolved.remove;
        }

        // Side tables first, each at most once per batch; a bronze row is
        // quarantined at most once per silver table, even when a full
        // recompute meets it again.
        let quarantine = new_quarantine_rows(store, source, &processed.quarantine).await?;
        for (table, frame, done) in [
            (QUARANTINE_TABLE, &quarantine, &quarantine_marks),
            (QUALITY_TABLE, &processed.quality, &quality_marks),
        ] {
            if frame.height() == 0 || done.contains(&(target, hash.clone())) {
                continue;
            }
            store
                .write(
                    table,
                    frame,
                    &WriteOptions::append(),
                    &CommitLineage {
                        operation: format!("{table}:{}", source.silver_table),
                        input_tables: input_tables.clone(),
                        definition_hash: hash.clone(),
                        run_id: run_id.to_string(),
                        ..CommitLineage::default()
                    },
                )
                .await?;
            crash_point(&format!("after-commit:{table}"));
        }

        let write_options = WriteOptions {
            mode: if full {
                WriteMode::Overwrite
            } else {
                WriteMode::Append
            },
            schema_change: schema_change(full, options),
            remove,
            ..WriteOptions::append()
        };
        let version = store
            .write(
                &source.silver_table,
                &clean,
                &write_options,
                &CommitLineage {
                    operation: if full { "silver-full" } else { "silver" }.into(),
                    input_tables,
                    definition_hash: hash.clone(),
                    run_id: run_id.to_string(),
                    ..CommitLineage::default()
                },
            )
            .await?;
        crash_point(&format!("after-commit:{}", source.silver_table));
        tracing::info!(source = %source.name, elapsed = ?clock.elapsed(), "silver committed");
        report.silver_rows_in += batch_rows;
        report.silver_rows_out += clean.height();
        report.quarantined += quarantine.height();
        report.duplicates_resolved += summary.duplicates_resolved;
        report.quality_score = summary.quality_score;
        for (k, v) in summary.failures {
            *report.failures.entry(k).or_default() += v;
        }
        report.silver_version = Some(version);
        report.silver_mode = if full { "full" } else { "incremental" }.into();
        if full {
            in_memory.insert(source.silver_table.clone(), (version, clean));
        } else {
            in_memory.remove(&source.silver_table);
        }
        if target == bronze_now {
            return Ok(());
        }
    }
}

/// The quarantine rows of a batch whose bronze row (file and row) is not in
/// the quarantine table for this silver table yet.
pub(super) async fn new_quarantine_rows(
    store: &DeltaStore,
    source: &Source,
    rows: &DataFrame,
) -> Result<DataFrame> {
    if rows.height() == 0 || !store.exists(QUARANTINE_TABLE) {
        return Ok(rows.clone());
    }
    let key = ["source_file".to_string(), "source_row".to_string()];
    let (files, version) = store.files(QUARANTINE_TABLE, None).await?;
    let mut columns = key.to_vec();
    columns.push("silver_table".into());
    let existing = store
        .read_files(QUARANTINE_TABLE, version, &files, Some(&columns))
        .await?;
    let on: Vec<Expr> = key.iter().map(|k| col(k.as_str())).collect();
    rows.clone()
        .lazy()
        .join(
            existing
                .lazy()
                .filter(col("silver_table").eq(lit(source.silver_table.clone())))
                .select(on.clone()),
            on.clone(),
            on,
            JoinArgs::new(JoinType::Anti),
        )
        .collect()
        .map_err(Error::polars("comparing quarantine rows"))
}

pub(super) struct Resolved {
    clean: DataFrame,
    remove: Vec<String>,
    dropped_new: usize,
    replaced_old: usize,
}

/// Resolves a batch's records against rows committed by earlier runs: for
/// the same key and event time, the later delivery wins; the losing old row
/// is removed by rewriting its file in the same commit.
pub(super) async fn resolve_existing(
    store: &DeltaStore,
    source: &Source,
    clean: &DataFrame,
) -> Result<Resolved> {
    let failed = |what: &str| Error::polars(format!("silver {} duplicates ({what})", source.name));
    let table = &source.silver_table;
    let created = source
        .created
        .clone()
        .unwrap_or_else(|| INGESTED_AT.to_string());
    let ts = source.timestamp.as_str();
    let micros = |df: &DataFrame, f: fn(&Column) -> Option<i64>| -> Option<i64> {
        df.column(ts)
            .ok()
            .and_then(|c| c.cast(&DataType::Int64).ok())
            .and_then(|c| f(&c))
    };
    let low = micros(clean, |c| c.i64().ok()?.min());
    let high = micros(clean, |c| c.i64().ok()?.max());
    let (Some(low), Some(high)) = (low, high) else {
        return Ok(Resolved {
            clean: clean.clone(),
            remove: vec![],
            dropped_new: 0,
            replaced_old: 0,
        });
    };
    let (files, version) = store.files(table, None).await?;
    let mut key: Vec<String> = source.dedup_key.clone();
    key.push(source.timestamp.clone());
    let mut probe_columns = key.clone();
    probe_columns.push(created.clone());
    let new_keys = clean
        .select(probe_columns.iter().map(String::as_str))
        .map_err(failed("keys"))?
        .lazy()
        .rename([created.as_str()], ["__new_created"], true);
    let key_exprs: Vec<Expr> = key.iter().map(|k| col(k.as_str())).collect();
    let mut drop_new: Option<DataFrame> = None;
    let mut rewritten: Vec<DataFrame> = Vec::new();
    let mut remove = Vec::new();
    let mut replaced_old = 0;
    for file in files.iter().filter(|f| {
        // Files whose event-time range cannot hold the batch's are skipped.
        f.min_micros(ts).is_none_or(|m| m <= high) && f.max_micros(ts).is_none_or(|m| m >= low)
    }) {
        let one = std::slice::from_ref(file);
        let probe = store
            .read_files(table, version, one, Some(&probe_columns))
            .await?;
        let matches = probe
            .lazy()
            .join(
                new_keys.clone(),
                key_exprs.clone(),
                key_exprs.clone(),
                JoinArgs::new(JoinType::Inner),
            )
            .collect()
            .map_err(failed("probe"))?;
        if matches.height() == 0 {
            continue;
        }
        // Old rows delivered later than the new ones win.
        let old_wins = matches
            .clone()
            .lazy()
            .filter(col(created.as_str()).gt(col("__new_created")))
            .select(key_exprs.clone())
            .collect()
            .map_err(failed("compare"))?;
        let new_wins = matches
            .lazy()
            .filter(col(created.as_str()).lt_eq(col("__new_created")))
            .select(key_exprs.clone())
            .collect()
            .map_err(failed("compare"))?;
        if old_wins.height() > 0 {
            drop_new = Some(match drop_new {
                None => old_wins,
                Some(mut d) => {
                    d.vstack_mut(&old_wins).map_err(failed("compare"))?;
                    d
                }
            });
        }
        if new_wins.height() > 0 {
            let full = store.read_files(table, version, one, None).await?;
            let kept = full
                .lazy()
                .join(
                    new_wins.clone().lazy(),
                    key_exprs.clone(),
                    key_exprs.clone(),
                    JoinArgs::new(JoinType::Anti),
                )
                .collect()
                .map_err(failed("rewrite"))?;
            replaced_old += new_wins.height();
            rewritten.push(kept);
            remove.push(file.path.clone());
        }
    }
    let mut out = clean.clone();
    let mut dropped_new = 0;
    if let Some(d) = drop_new {
        let before = out.height();
        out = out
            .lazy()
            .join(
                d.lazy(),
                key_exprs.clone(),
                key_exprs.clone(),
                JoinArgs::new(JoinType::Anti),
            )
            .collect()
            .map_err(failed("drop"))?;
        dropped_new = before - out.height();
    }
    for r in rewritten {
        out.vstack_mut(&r).map_err(failed("rewrite"))?;
    }
    let out = out
        .lazy()
        .sort(
            [ts],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()
        .map_err(failed("rewrite"))?;
    Ok(Resolved {
        clean: out,
        remove,
        dropped_new,
        replaced_old,
    })
}
