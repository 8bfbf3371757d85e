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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use polars::prelude::*;
use serde::Serialize;

use crate::bronze::{self, INGESTED_AT};
use crate::error::{Error, Result};
use crate::gold::{self, OUTPUT_FROM};
use crate::offline::{CommitLineage, DeltaStore, SchemaChange, WriteMode, WriteOptions};
use crate::project::{Project, Source, ViewSpec, hash_json};
use crate::silver::{self, BatchContext, QUALITY_TABLE, QUARANTINE_TABLE, SilverSummary};

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

struct SilverMark {
    bronze_version: Option<u64>,
    definition_hash: Option<String>,
}

async fn silver_mark(store: &DeltaStore, source: &Source) -> Result<SilverMark> {
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
async fn latest_lineage(store: &DeltaStore, table: &str) -> Result<Option<CommitLineage>> {
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
async fn side_marks(
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

#[allow(clippy::too_many_arguments)]
async fn silver_step(
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
async fn new_quarantine_rows(
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

fn schema_change(full: bool, options: &PipelineOptions) -> SchemaChange {
    match (full, options.allow_breaking_schema_change) {
        (true, true) => SchemaChange::Any,
        _ => SchemaChange::AddColumns,
    }
}

struct Resolved {
    clean: DataFrame,
    remove: Vec<String>,
    dropped_new: usize,
    replaced_old: usize,
}

/// Resolves a batch's records against rows committed by earlier runs: for
/// the same key and event time, the later delivery wins; the losing old row
/// is removed by rewriting its file in the same commit.
async fn resolve_existing(
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

async fn gold_step(
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
    let Some(silver_now) = store.latest_version(silver_table).await? else {
        return Ok(report);
    };
    report.silver_version = Some(silver_now);
    let hash = view.definition_hash();
    let last = if store.exists(&view.name) {
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
    if !full && last_silver == Some(silver_now) {
        return Ok(report);
    }
    let columns = gold::input_columns(view, source);
    let created = now;
    let clock = Instant::now();
    let computed = if full {
        let context = match in_memory.get(silver_table) {
            Some((v, df)) if *v == silver_now => df
                .select(columns.iter().map(String::as_str))
                .map_err(Error::polars("selecting gold inputs"))?,
            _ => {
                let (files, v) = store.files(silver_table, Some(silver_now)).await?;
                store
                    .read_files(silver_table, v, &files, Some(&columns))
                    .await?
            }
        };
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
    let write_options = WriteOptions {
        mode: if full {
            WriteMode::Overwrite
        } else {
            WriteMode::Append
        },
        schema_change: schema_change(full, options),
        ..WriteOptions::append()
    };
    let version = store
        .write(
            &view.name,
            &computed,
            &write_options,
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

/// Recomputes the view for the entities with new silver rows, from each
/// entity's earliest new event on; earlier rows of those entities are read
/// back only as far as the longest window needs.
async fn incremental(
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
    let keys: Vec<Expr> = view
        .entity
        .join_keys
        .iter()
        .map(|k| col(k.as_str()))
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::{self, GenerateOptions};
    use crate::gold::{CREATED_TIMESTAMP, EVENT_TIMESTAMP};

    const DAY: i64 = 86_400_000_000;
    const END: i64 = 1_795_000_000_000_000;

    fn project_in(dir: &std::path::Path) -> Project {
        let path = dir.join(crate::project::PROJECT_FILE);
        if !path.exists() {
            fraud::init(dir).unwrap();
        }
        Project::load(&path).unwrap()
    }

    fn generate(project: &Project, seed: u64, end: i64, days: f64, rows: usize) {
        fraud::generate(
            &project.data_dir.join("bronze"),
            &GenerateOptions {
                rows,
                seed,
                end_micros: end,
                days,
                customers: Some(60),
            },
        )
        .unwrap();
    }

    async fn latest_gold(project: &Project) -> DataFrame {
        let store = DeltaStore::new(project.delta_dir());
        let (gold, _) = store.read(fraud::CUSTOMER_VIEW, None).await.unwrap();
        gold.lazy()
            .sort([CREATED_TIMESTAMP], SortMultipleOptions::default())
            .unique_stable_generic(
                Some(vec![col("customer_id"), col(EVENT_TIMESTAMP)]),
                UniqueKeepStrategy::Last,
            )
            .drop(by_name([CREATED_TIMESTAMP], true, false))
            .sort(
                ["customer_id", EVENT_TIMESTAMP],
                SortMultipleOptions::default(),
            )
            .collect()
            .unwrap()
    }

    fn assert_frames_close(a: &DataFrame, b: &DataFrame) {
        assert_eq!(a.shape(), b.shape());
        for column in a.columns() {
            let other = b.column(column.name()).unwrap();
            if column.dtype() == &DataType::Float64 {
                let x = column.f64().unwrap();
                let y = other.f64().unwrap();
                for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                    match (p, q) {
                        (Some(p), Some(q)) => assert!(
                            (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                            "{} row {i}: {p} vs {q}",
                            column.name()
                        ),
                        (p, q) => assert_eq!(p, q, "{} row {i}", column.name()),
                    }
                }
            } else {
                assert_eq!(column, other, "{}", column.name());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn incremental_runs_with_late_data_equal_a_full_recompute() {
        let dir = tempfile::tempdir().unwrap();
        let project = project_in(dir.path());
        let quiet = |_: &str| {};
        let options = PipelineOptions::default();
        generate(&project, 1, END, 10.0, 3_000);
        let first = run(&project, &options, &quiet).await.unwrap();
        assert_eq!(first.views[0].mode, "full");

        // Nothing new: nothing committed.
        let second = run(&project, &options, &quiet).await.unwrap();
        assert!(!second.committed(), "{second:?}");

        // Late data, interleaved with what is there (events 2 to 5 days
        // before the end), plus a re-delivery of existing transactions.
        generate(&project, 2, END - 2 * DAY, 3.0, 600);
        let third = run(&project, &options, &quiet).await.unwrap();
        assert_eq!(third.views[0].mode, "incremental");
        assert!(third.views[0].rows < 3_000, "{:?}", third.views[0]);
        let incremental = latest_gold(&project).await;

        let full = run(
            &project,
            &PipelineOptions {
                full_refresh: true,
                ..PipelineOptions::default()
            },
            &quiet,
        )
        .await
        .unwrap();
        assert_eq!(full.views[0].mode, "full");
        let recomputed = latest_gold(&project).await;
        assert_frames_close(&incremental, &recomputed);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn redelivered_records_replace_earlier_batches() {
        let dir = tempfile::tempdir().unwrap();
        let project = project_in(dir.path());
        let quiet = |_: &str| {};
        generate(&project, 1, END, 5.0, 1_000);
        run(&project, &PipelineOptions::default(), &quiet)
            .await
            .unwrap();
        let store = DeltaStore::new(project.delta_dir());
        let (silver, _) = store.read(fraud::SILVER_TABLE, None).await.unwrap();
        // Deliver ten existing transactions again, later, with new amounts.
        let again = silver
            .head(Some(10))
            .lazy()
            .select([
                col("transaction_id"),
                col("customer_id"),
                col("merchant_id"),
                lit("1.00").alias("amount"),
                col("category"),
                col("event_time").dt().to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
                col("is_fraud"),
                (col("ingested_at")
                    + lit(60_000_000i64).cast(DataType::Duration(TimeUnit::Microseconds)))
                .dt()
                .to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
                .alias("ingested_at"),
            ])
            .collect()
            .unwrap();
        let path = project.data_dir.join("bronze/transactions/redelivery.csv");
        let mut file = std::fs::File::create(&path).unwrap();
        CsvWriter::new(&mut file)
            .finish(&mut again.clone())
            .unwrap();
        let report = run(&project, &PipelineOptions::default(), &quiet)
            .await
            .unwrap();
        assert_eq!(report.sources[1].duplicates_resolved, 10);
        let (after, _) = store.read(fraud::SILVER_TABLE, None).await.unwrap();
        assert_eq!(after.height(), silver.height(), "replaced, not added");
        let ones = after
            .lazy()
            .filter(col("amount").cast(DataType::Float64).eq(lit(1.0)))
            .collect()
            .unwrap();
        assert_eq!(ones.height(), 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn adding_a_feature_evolves_gold_and_removing_one_needs_consent() {
        let dir = tempfile::tempdir().unwrap();
        let project = project_in(dir.path());
        let quiet = |_: &str| {};
        generate(&project, 1, END, 5.0, 800);
        run(&project, &PipelineOptions::default(), &quiet)
            .await
            .unwrap();

        let file = dir.path().join(crate::project::PROJECT_FILE);
        let text = std::fs::read_to_string(&file).unwrap();
        let with_min = text.replace(
            r#"functions = ["count", "sum", "mean", "max", "stddev"]"#,
            r#"functions = ["count", "sum", "mean", "max", "stddev", "min"]"#,
        );
        std::fs::write(&file, &with_min).unwrap();
        let project = Project::load(&file).unwrap();
        let report = run(&project, &PipelineOptions::default(), &quiet)
            .await
            .unwrap();
        assert_eq!(report.views[0].mode, "full");
        let gold = latest_gold(&project).await;
        assert!(gold.column("amount_min_7d").is_ok());

        let without_stddev = with_min.replace(r#""stddev", "#, "");
        std::fs::write(&file, &without_stddev).unwrap();
        let project = Project::load(&file).unwrap();
        let err = run(&project, &PipelineOptions::default(), &quiet)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("amount_stddev_1h") && err.contains("--allow-breaking-schema-change"),
            "{err}"
        );
        let allowed = PipelineOptions {
            allow_breaking_schema_change: true,
            ..PipelineOptions::default()
        };
        run(&project, &allowed, &quiet).await.unwrap();
        let gold = latest_gold(&project).await;
        assert!(gold.column("amount_stddev_7d").is_err());
    }
}
