//! The silver step of a run: the bronze rows newer than silver's mark
//! cleaned, resolved against rows committed earlier, and committed with
//! their quarantine and quality rows.

use std::collections::BTreeMap;
use std::time::Instant;

use polars::prelude::*;

use super::bronze::{self, INGESTED_AT};
use super::crash::crash_point;
use super::marks::{side_marks, silver_hash, silver_mark};
use super::options::{PipelineOptions, plan_sequence, step_id, step_write};
use super::report::SourceReport;
use super::silver::{self, BatchContext, QUALITY_TABLE, QUARANTINE_TABLE, SilverSummary};
use crate::error::{Error, Result};
use crate::project::{Project, Source};
use delta::{CommitLineage, DataFile, DeltaStore, Sequence, WriteOptions};

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
    let Some(bronze_now) = ingest.version else {
        return Ok(()); // No bronze data at all yet.
    };
    let hash = silver_hash(source);
    let clock = Instant::now();
    loop {
        let Some(plan) =
            plan_batch(store, source, options, ingest.rewritten, bronze_now, &hash).await?
        else {
            return Ok(());
        };
        let batch = read_batch(store, source, ingest, &plan, bronze_now).await?;
        let (dimensions, input_tables) =
            read_dimensions(store, project, source, plan.target).await?;
        let ctx = BatchContext {
            run_id: run_id.to_string(),
            bronze_version: plan.target,
            now_micros: now,
        };
        let batch_rows = batch.height();
        // Only compaction happened upstream: nothing to process or commit.
        if !plan.full && batch_rows == 0 && plan.target == bronze_now {
            return Ok(());
        }
        tracing::info!(source = %source.name, rows = batch_rows, elapsed = ?clock.elapsed(), "silver batch read");
        let gate_ctx = ctx.clone();
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
        if !plan.full && !source.dedup_key.is_empty() && clean.height() > 0 {
            let resolved = resolve_existing(store, source, &clean).await?;
            summary.duplicates_resolved += resolved.dropped_new + resolved.replaced_old;
            clean = resolved.clean;
            remove = resolved.remove;
        }

        // The gates are measured on the batch and committed with its quality
        // rows; the run decides on gold once every source is through.
        let views: Vec<&crate::project::ViewSpec> = project
            .feature_views
            .iter()
            .filter(|v| v.source == source.name)
            .collect();
        let checks = super::gate::evaluate(
            source,
            &views,
            summary.quality_score,
            processed.quarantine.height(),
            batch_rows,
        );
        let quality = if checks.is_empty() {
            processed.quality
        } else {
            let gates = silver::gate_frame(source, &gate_ctx, &checks, batch_rows)?;
            processed
                .quality
                .vstack(&gates)
                .map_err(Error::polars("adding the quality gate rows"))?
        };
        let commit = BatchCommit {
            source,
            input_tables,
            hash: &hash,
            run_id,
        };
        let quarantine =
            write_side_tables(store, &commit, &plan, &processed.quarantine, &quality).await?;
        let version = write_silver(store, commit, options, &plan, &clean, remove).await?;
        tracing::info!(source = %source.name, elapsed = ?clock.elapsed(), "silver committed");
        report.silver_rows_in += batch_rows;
        report.silver_rows_out += clean.height();
        report.quarantined += quarantine.height();
        report.duplicates_resolved += summary.duplicates_resolved;
        report.quality_score = summary.quality_score;
        super::gate::merge(&mut report.gate_checks, checks);
        for (k, v) in summary.failures {
            *report.failures.entry(k).or_default() += v;
        }
        report.silver_version = Some(version);
        report.silver_mode = if plan.full { "full" } else { "incremental" }.into();
        if plan.full {
            in_memory.insert(source.silver_table.clone(), (version, clean));
        } else {
            in_memory.remove(&source.silver_table);
        }
        if plan.target == bronze_now {
            return Ok(());
        }
    }
}

/// Which bronze rows the next silver batch covers.
struct BatchPlan {
    /// Silver is recomputed from all of bronze (first run, changed
    /// definition, or asked for).
    full: bool,
    /// The bronze version the batch starts after (`None`: from the start).
    from: Option<u64>,
    /// The bronze version the batch goes up to.
    target: u64,
    /// The batches whose quarantine rows were committed (bronze version,
    /// definition hash).
    quarantine_marks: Vec<(u64, String)>,
    /// The batches whose quality rows were committed.
    quality_marks: Vec<(u64, String)>,
    /// The batch's places in the silver, quarantine and quality tables'
    /// step sequences, read before anything else was planned.
    silver_sequence: Sequence,
    quarantine_sequence: Sequence,
    quality_sequence: Sequence,
}

/// Plans the next batch from silver's mark; `None` when silver is up to
/// date with bronze version `bronze_now`.
async fn plan_batch(
    store: &DeltaStore,
    source: &Source,
    options: &PipelineOptions,
    rewritten: bool,
    bronze_now: u64,
    hash: &str,
) -> Result<Option<BatchPlan>> {
    // Read first: a run that commits after this point makes ours conflict.
    let silver = &source.silver_table;
    let silver_sequence = plan_sequence(store, silver, step_id(silver)).await?;
    let quarantine_sequence = plan_sequence(
        store,
        QUARANTINE_TABLE,
        format!("aurum:quarantine:{silver}"),
    )
    .await?;
    let quality_sequence =
        plan_sequence(store, QUALITY_TABLE, format!("aurum:quality:{silver}")).await?;
    let mark = silver_mark(store, source).await?;
    // Another run may have committed bronze (and silver) since this run's
    // ingest: plan against the newest bronze, never an older one, so the
    // batch cannot reach back behind silver's mark.
    let bronze_now = store
        .latest_version(&source.bronze_table())
        .await?
        .map_or(bronze_now, |latest| latest.max(bronze_now));
    let changed = mark
        .definition_hash
        .as_ref()
        .is_some_and(|h| h.as_str() != hash);
    // A Delta source's bronze is replaced when the source removed or
    // rewrote rows; that replacement may be from an earlier run that
    // stopped before silver, so the log is asked, not only this run.
    let replaced = rewritten
        || (source.format == crate::project::Format::Delta
            && mark.bronze_version.is_some_and(|m| m < bronze_now)
            && super::delta_source::refreshed_since(
                store,
                &source.bronze_table(),
                mark.bronze_version,
                bronze_now,
            )
            .await?);
    let full = mark.bronze_version.is_none() || changed || options.full_refresh || replaced;
    if !full && mark.bronze_version.is_some_and(|m| m >= bronze_now) {
        return Ok(None);
    }
    // A batch whose side tables were committed but whose silver commit
    // was lost is redone first, up to exactly the same bronze version.
    // Read once per batch: they decide both the batch and, later, which
    // side tables this batch still has to write.
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
    Ok(Some(BatchPlan {
        full,
        from,
        target,
        quarantine_marks,
        quality_marks,
        silver_sequence,
        quarantine_sequence,
        quality_sequence,
    }))
}

/// The bronze rows of the batch. The rows ingested by this run are handed
/// over in memory when they are exactly the batch; otherwise the batch is
/// read back.
async fn read_batch(
    store: &DeltaStore,
    source: &Source,
    ingest: &mut bronze::IngestReport,
    plan: &BatchPlan,
    bronze_now: u64,
) -> Result<DataFrame> {
    let in_hand = plan.from == ingest.previous_version && plan.target == bronze_now;
    Ok(match ingest.frame.take() {
        Some(frame) if in_hand => frame,
        _ => {
            let bronze_table = source.bronze_table();
            let (files, version) = store
                .files_added(&bronze_table, plan.from, Some(plan.target))
                .await?;
            store
                .read_files(&bronze_table, version, &files, None)
                .await?
        }
    })
}

/// The silver frames (latest) of the sources `source` is enriched from,
/// by source name: what [`super::silver::process`] joins a batch with.
pub async fn dimensions(
    store: &DeltaStore,
    project: &Project,
    source: &Source,
) -> Result<BTreeMap<String, DataFrame>> {
    Ok(read_dimensions(store, project, source, 0).await?.0)
}

/// The silver frames of the sources `source` is enriched from, and the
/// version of every table the batch reads (bronze up to `target`).
async fn read_dimensions(
    store: &DeltaStore,
    project: &Project,
    source: &Source,
    target: u64,
) -> Result<(BTreeMap<String, DataFrame>, BTreeMap<String, u64>)> {
    let mut dimensions = BTreeMap::new();
    let mut input_tables = BTreeMap::new();
    input_tables.insert(source.bronze_table(), target);
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
    Ok((dimensions, input_tables))
}

/// What every commit of one silver batch records.
struct BatchCommit<'a> {
    source: &'a Source,
    /// The version of each table the batch read.
    input_tables: BTreeMap<String, u64>,
    /// The silver definition hash.
    hash: &'a str,
    run_id: &'a str,
}

/// Commits the batch's side tables first, each at most once per batch; a
/// bronze row is quarantined at most once per silver table, even when a
/// full recompute meets it again. Returns the quarantine rows that are new.
async fn write_side_tables(
    store: &DeltaStore,
    commit: &BatchCommit<'_>,
    plan: &BatchPlan,
    quarantine: &DataFrame,
    quality: &DataFrame,
) -> Result<DataFrame> {
    let source = commit.source;
    let quarantine = new_quarantine_rows(store, source, quarantine).await?;
    let written = (plan.target, commit.hash.to_string());
    for (table, frame, done, sequence) in [
        (
            QUARANTINE_TABLE,
            &quarantine,
            &plan.quarantine_marks,
            &plan.quarantine_sequence,
        ),
        (
            QUALITY_TABLE,
            quality,
            &plan.quality_marks,
            &plan.quality_sequence,
        ),
    ] {
        if frame.height() == 0 || done.contains(&written) {
            continue;
        }
        store
            .write(
                table,
                frame,
                &WriteOptions {
                    sequence: Some(sequence.clone()),
                    ..WriteOptions::append()
                },
                &CommitLineage {
                    operation: format!("{table}:{}", source.silver_table),
                    input_tables: commit.input_tables.clone(),
                    definition_hash: commit.hash.to_string(),
                    run_id: commit.run_id.to_string(),
                    ..CommitLineage::default()
                },
            )
            .await?;
        crash_point(&format!("after-commit:{table}"));
    }
    Ok(quarantine)
}

/// Commits the batch's clean rows to the silver table (an overwrite for a
/// full recompute), removing the files of rewritten earlier rows in the
/// same commit; returns the version written.
async fn write_silver(
    store: &DeltaStore,
    commit: BatchCommit<'_>,
    options: &PipelineOptions,
    plan: &BatchPlan,
    clean: &DataFrame,
    remove: Vec<String>,
) -> Result<u64> {
    let silver_table = &commit.source.silver_table;
    let write_options = WriteOptions {
        remove,
        sequence: Some(plan.silver_sequence.clone()),
        ..step_write(plan.full, options)
    };
    let version = store
        .write(
            silver_table,
            clean,
            &write_options,
            &CommitLineage {
                operation: if plan.full { "silver-full" } else { "silver" }.into(),
                input_tables: commit.input_tables,
                definition_hash: commit.hash.to_string(),
                run_id: commit.run_id.to_string(),
                ..CommitLineage::default()
            },
        )
        .await?;
    crash_point(&format!("after-commit:{silver_table}"));
    Ok(version)
}

/// The quarantine rows of a batch whose bronze row (file and row) is not in
/// the quarantine table for this silver table yet.
pub(super) async fn new_quarantine_rows(
    store: &DeltaStore,
    source: &Source,
    rows: &DataFrame,
) -> Result<DataFrame> {
    if rows.height() == 0 || !store.exists(QUARANTINE_TABLE).await? {
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
    let table = &source.silver_table;
    let ts = source.timestamp.as_str();
    let Some((low, high)) = event_time_range(clean, ts) else {
        return Ok(Resolved {
            clean: clean.clone(),
            remove: vec![],
            dropped_new: 0,
            replaced_old: 0,
        });
    };
    let (files, version) = store.files(table, None).await?;
    let keys = BatchKeys::of(source, clean)?;
    let mut drop_new: Option<DataFrame> = None;
    let mut rewritten: Vec<DataFrame> = Vec::new();
    let mut remove = Vec::new();
    let mut replaced_old = 0;
    for file in files.iter().filter(|f| {
        // Files whose event-time range cannot hold the batch's are skipped.
        f.min_micros(ts).is_none_or(|m| m <= high) && f.max_micros(ts).is_none_or(|m| m >= low)
    }) {
        let one = std::slice::from_ref(file);
        let Some((old_wins, new_wins)) = keys.compare(store, source, version, one).await? else {
            continue;
        };
        if old_wins.height() > 0 {
            drop_new = Some(match drop_new {
                None => old_wins,
                Some(mut d) => {
                    d.vstack_mut(&old_wins)
                        .map_err(duplicates_failed(source, "compare"))?;
                    d
                }
            });
        }
        if new_wins.height() > 0 {
            rewritten.push(keys.rewrite(store, source, version, one, &new_wins).await?);
            replaced_old += new_wins.height();
            remove.push(file.path.clone());
        }
    }
    let (clean, dropped_new) = keys.merge(source, clean, drop_new, rewritten)?;
    Ok(Resolved {
        clean,
        remove,
        dropped_new,
        replaced_old,
    })
}

/// The error of step `what` of resolving `source`'s duplicates.
fn duplicates_failed(source: &Source, what: &str) -> impl FnOnce(PolarsError) -> Error + use<> {
    Error::polars(format!("silver {} duplicates ({what})", source.name))
}

/// The earliest and latest event time of `frame`'s `ts` column, in
/// microseconds; `None` when it has none.
fn event_time_range(frame: &DataFrame, ts: &str) -> Option<(i64, i64)> {
    let micros = |f: fn(&Column) -> Option<i64>| -> Option<i64> {
        frame
            .column(ts)
            .ok()
            .and_then(|c| c.cast(&DataType::Int64).ok())
            .and_then(|c| f(&c))
    };
    let low = micros(|c| c.i64().ok()?.min());
    let high = micros(|c| c.i64().ok()?.max());
    low.zip(high)
}

/// A batch's record keys (dedup key and event time) with their delivery
/// times, matched against one committed file at a time.
struct BatchKeys {
    /// The key columns.
    exprs: Vec<Expr>,
    /// The key columns and the delivery-time column, read from each file.
    probe_columns: Vec<String>,
    /// The delivery-time column (created, or ingest time).
    created: String,
    /// The batch's keys, its delivery time renamed `__new_created`.
    new_keys: LazyFrame,
}

impl BatchKeys {
    fn of(source: &Source, clean: &DataFrame) -> Result<Self> {
        let created = source
            .created
            .clone()
            .unwrap_or_else(|| INGESTED_AT.to_string());
        let mut key: Vec<String> = source.dedup_key.clone();
        key.push(source.timestamp.clone());
        let mut probe_columns = key.clone();
        probe_columns.push(created.clone());
        let new_keys = clean
            .select(probe_columns.iter().map(String::as_str))
            .map_err(duplicates_failed(source, "keys"))?
            .lazy()
            .rename([created.as_str()], ["__new_created"], true);
        Ok(BatchKeys {
            exprs: key.iter().map(|k| col(k.as_str())).collect(),
            probe_columns,
            created,
            new_keys,
        })
    }

    /// The keys of `file` that the batch has too, split by which delivery
    /// wins: (old rows delivered later than the new ones, old rows the new
    /// ones replace); `None` when the file has none of the batch's keys.
    async fn compare(
        &self,
        store: &DeltaStore,
        source: &Source,
        version: u64,
        file: &[DataFile],
    ) -> Result<Option<(DataFrame, DataFrame)>> {
        let failed = |what: &str| duplicates_failed(source, what);
        let probe = store
            .read_files(
                &source.silver_table,
                version,
                file,
                Some(&self.probe_columns),
            )
            .await?;
        let matches = probe
            .lazy()
            .join(
                self.new_keys.clone(),
                self.exprs.clone(),
                self.exprs.clone(),
                JoinArgs::new(JoinType::Inner),
            )
            .collect()
            .map_err(failed("probe"))?;
        if matches.height() == 0 {
            return Ok(None);
        }
        // Old rows delivered later than the new ones win.
        let old_wins = matches
            .clone()
            .lazy()
            .filter(col(self.created.as_str()).gt(col("__new_created")))
            .select(self.exprs.clone())
            .collect()
            .map_err(failed("compare"))?;
        let new_wins = matches
            .lazy()
            .filter(col(self.created.as_str()).lt_eq(col("__new_created")))
            .select(self.exprs.clone())
            .collect()
            .map_err(failed("compare"))?;
        Ok(Some((old_wins, new_wins)))
    }

    /// `file`'s rows without those the batch replaces (`new_wins`).
    async fn rewrite(
        &self,
        store: &DeltaStore,
        source: &Source,
        version: u64,
        file: &[DataFile],
        new_wins: &DataFrame,
    ) -> Result<DataFrame> {
        let full = store
            .read_files(&source.silver_table, version, file, None)
            .await?;
        full.lazy()
            .join(
                new_wins.clone().lazy(),
                self.exprs.clone(),
                self.exprs.clone(),
                JoinArgs::new(JoinType::Anti),
            )
            .collect()
            .map_err(duplicates_failed(source, "rewrite"))
    }

    /// The rows to write: the batch without the records an earlier delivery
    /// wins (`drop_new`), plus the rewritten files' rows, in event-time
    /// order; and how many of the batch's records were dropped.
    fn merge(
        &self,
        source: &Source,
        clean: &DataFrame,
        drop_new: Option<DataFrame>,
        rewritten: Vec<DataFrame>,
    ) -> Result<(DataFrame, usize)> {
        let failed = |what: &str| duplicates_failed(source, what);
        let mut out = clean.clone();
        let mut dropped_new = 0;
        if let Some(d) = drop_new {
            let before = out.height();
            out = out
                .lazy()
                .join(
                    d.lazy(),
                    self.exprs.clone(),
                    self.exprs.clone(),
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
                [source.timestamp.as_str()],
                SortMultipleOptions::default().with_maintain_order(true),
            )
            .collect()
            .map_err(failed("rewrite"))?;
        Ok((out, dropped_new))
    }
}
