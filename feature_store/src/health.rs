//! How fresh and how big each of a project's tables is, and what the last
//! pipeline run did — read from the Delta logs (versions, commit times, each
//! commit's lineage, the files' row counts and column statistics; only the
//! commits since the last reading) and the small quality table, never from
//! the other tables' data files, so a server can refresh it every few
//! seconds for `/metrics`.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::silver::{QUALITY_TABLE, QUARANTINE_TABLE};
use crate::project::Project;

/// Which layer a table belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// Raw rows as delivered (`bronze_<source>`).
    Bronze,
    /// Checked, typed rows (a source's silver table).
    Silver,
    /// Feature values (a view's gold table).
    Gold,
    /// Rows that failed a hard rule, with the reason.
    Quarantine,
    /// Quality measurements per batch.
    Quality,
}

impl Layer {
    /// The layer's name, as metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
            Layer::Quarantine => "quarantine",
            Layer::Quality => "quality",
        }
    }
}

/// One table's state.
#[derive(Debug, Clone, PartialEq)]
pub struct TableHealth {
    /// The table's name.
    pub table: String,
    /// Its layer.
    pub layer: Layer,
    /// The latest version.
    pub version: u64,
    /// When the latest version was committed (milliseconds since the
    /// epoch), when the log says.
    pub committed_ms: Option<i64>,
    /// Rows in the latest version (from the files' statistics).
    pub rows: u64,
    /// The newest event time in the table (microseconds since the epoch),
    /// from the files' statistics of its event-time column; `None` for
    /// tables without one or files without statistics.
    pub newest_event_micros: Option<i64>,
    /// The pipeline run that made the latest version, when aurum wrote it.
    pub run_id: Option<String>,
}

/// What the last pipeline run did, from the commits it made.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LastRun {
    /// The run's id (`run-<start time>`).
    pub run_id: String,
    /// When it started (microseconds since the epoch, from its id).
    pub started_micros: i64,
    /// Its last commit (milliseconds since the epoch).
    pub last_commit_ms: i64,
    /// Per source, the quality of the run's last silver batch: rows
    /// considered, rows that failed a check, the score.
    pub quality: BTreeMap<String, BatchQuality>,
    /// The quality gates the run's batches were measured against: per
    /// (source, view or `*` for the source's own, check), whether the last
    /// batch failed it.
    pub gates: BTreeMap<(String, String, String), bool>,
}

/// One silver batch's measurements (the quality table's `*`/`*` row).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchQuality {
    /// Rows considered.
    pub rows: u64,
    /// Rows that failed any check.
    pub failed: u64,
    /// The share that passed every check.
    pub score: f64,
}

impl LastRun {
    /// How long the run took: its start to its last commit.
    pub fn seconds(&self) -> f64 {
        ((self.last_commit_ms * 1000 - self.started_micros) as f64 / 1e6).max(0.0)
    }
}

/// Every table of `project` that exists in `store` (the project's, kept
/// by the caller between readings so each reads only the commits since the
/// last), with its state; a table that cannot be read is an error naming
/// it (the others are still answered).
pub async fn tables(
    project: &Project,
    store: &delta::DeltaStore,
) -> Result<Vec<Result<TableHealth>>> {
    let mut wanted: Vec<(String, Layer, Option<String>)> = Vec::new();
    for source in &project.sources {
        wanted.push((source.bronze_table(), Layer::Bronze, None));
        wanted.push((
            source.silver_table.clone(),
            Layer::Silver,
            Some(source.timestamp.clone()),
        ));
    }
    for view in &project.feature_views {
        wanted.push((
            view.name.clone(),
            Layer::Gold,
            Some(view.feature_view().timestamp_column),
        ));
    }
    wanted.push((QUARANTINE_TABLE.to_string(), Layer::Quarantine, None));
    wanted.push((QUALITY_TABLE.to_string(), Layer::Quality, None));
    wanted.sort();
    wanted.dedup_by(|a, b| a.0 == b.0);
    let mut out = Vec::with_capacity(wanted.len());
    for (table, layer, event_column) in wanted {
        match table_health(store, &table, layer, event_column.as_deref()).await {
            Ok(Some(health)) => out.push(Ok(health)),
            Ok(None) => {}
            Err(e) => out.push(Err(e)),
        }
    }
    Ok(out)
}

async fn table_health(
    store: &delta::DeltaStore,
    table: &str,
    layer: Layer,
    event_column: Option<&str>,
) -> Result<Option<TableHealth>> {
    if store.latest_version(table).await?.is_none() {
        return Ok(None);
    }
    let (files, version) = store.files(table, None).await?;
    let rows = files.iter().map(|f| f.rows.unwrap_or(0) as u64).sum();
    let newest_event_micros =
        event_column.and_then(|column| files.iter().filter_map(|f| f.max_micros(column)).max());
    let history = store.history(table).await?;
    let latest = history.iter().find(|c| c.version == version);
    Ok(Some(TableHealth {
        table: table.to_string(),
        layer,
        version,
        committed_ms: latest.and_then(|c| c.timestamp_ms),
        rows,
        newest_event_micros,
        run_id: latest
            .and_then(|c| c.lineage.as_ref())
            .map(|l| l.run_id.clone())
            .filter(|r| !r.is_empty()),
    }))
}

/// The last pipeline run among `tables` (the newest run id any latest
/// version names), with the quality of its silver batches; `None` before
/// any run.
pub async fn last_run(
    store: &delta::DeltaStore,
    tables: &[TableHealth],
) -> Result<Option<LastRun>> {
    let Some(run_id) = tables
        .iter()
        .filter_map(|t| t.run_id.as_deref())
        .filter(|r| r.starts_with("run-"))
        .max()
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let Some(started_micros) = run_start_micros(&run_id) else {
        return Ok(None);
    };
    let last_commit_ms = tables
        .iter()
        .filter(|t| t.run_id.as_deref() == Some(run_id.as_str()))
        .filter_map(|t| t.committed_ms)
        .max()
        .unwrap_or(started_micros / 1000);
    let mut run = LastRun {
        run_id,
        started_micros,
        last_commit_ms,
        quality: BTreeMap::new(),
        gates: BTreeMap::new(),
    };
    if store.latest_version(QUALITY_TABLE).await?.is_some() {
        let (frame, _) = store.read(QUALITY_TABLE, None).await?;
        run.quality = batch_quality(&frame, &run.run_id)?;
        run.gates = gates(&frame, &run.run_id)?;
    }
    Ok(Some(run))
}

/// A run's start, from its id (`run-20261204T101500.123456Z`).
fn run_start_micros(run_id: &str) -> Option<i64> {
    let text = run_id.strip_prefix("run-")?;
    chrono::NaiveDateTime::parse_from_str(text, "%Y%m%dT%H%M%S%.fZ")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

/// Per source, the run's last batch's whole-batch measurements.
fn batch_quality(frame: &DataFrame, run_id: &str) -> Result<BTreeMap<String, BatchQuality>> {
    let rows = frame
        .clone()
        .lazy()
        .filter(
            col("run_id")
                .eq(lit(run_id))
                .and(col("column").eq(lit("*")))
                .and(col("check").eq(lit("*"))),
        )
        .select([
            col("source"),
            col("rows").cast(DataType::Int64),
            col("failed").cast(DataType::Int64),
            col("score").cast(DataType::Float64),
        ])
        .collect()
        .map_err(Error::polars("reading the quality table"))?;
    let column = |name: &str| {
        rows.column(name)
            .map_err(Error::polars("reading the quality table"))
    };
    let (sources, counts, failed, scores) = (
        column("source")?
            .str()
            .map_err(Error::polars("source"))?
            .clone(),
        column("rows")?
            .i64()
            .map_err(Error::polars("rows"))?
            .clone(),
        column("failed")?
            .i64()
            .map_err(Error::polars("failed"))?
            .clone(),
        column("score")?
            .f64()
            .map_err(Error::polars("score"))?
            .clone(),
    );
    let mut out = BTreeMap::new();
    for i in 0..rows.height() {
        let Some(source) = sources.get(i) else {
            continue;
        };
        // Later batches of the run replace earlier ones.
        out.insert(
            source.to_string(),
            BatchQuality {
                rows: counts.get(i).unwrap_or(0).max(0) as u64,
                failed: failed.get(i).unwrap_or(0).max(0) as u64,
                score: scores.get(i).unwrap_or(f64::NAN),
            },
        );
    }
    Ok(out)
}

/// The run's quality gate rows: per source, view (`*`: the source's) and
/// check, whether the last batch failed it.
fn gates(frame: &DataFrame, run_id: &str) -> Result<BTreeMap<(String, String, String), bool>> {
    let rows = frame
        .clone()
        .lazy()
        .filter(
            col("run_id")
                .eq(lit(run_id))
                .and(col("check").str().starts_with(lit("gate:"))),
        )
        .select([
            col("source"),
            col("column"),
            col("check"),
            col("failed").cast(DataType::Int64),
        ])
        .collect()
        .map_err(Error::polars("reading the quality gates"))?;
    let text = |name: &str| -> Result<StringChunked> {
        Ok(rows
            .column(name)
            .map_err(Error::polars("reading the quality gates"))?
            .str()
            .map_err(Error::polars("reading the quality gates"))?
            .clone())
    };
    let (sources, views, checks) = (text("source")?, text("column")?, text("check")?);
    let failed = rows
        .column("failed")
        .map_err(Error::polars("reading the quality gates"))?
        .i64()
        .map_err(Error::polars("reading the quality gates"))?
        .clone();
    let mut out = BTreeMap::new();
    for i in 0..rows.height() {
        if let (Some(source), Some(view), Some(check)) =
            (sources.get(i), views.get(i), checks.get(i))
        {
            let check = check.strip_prefix("gate:").unwrap_or(check);
            out.insert(
                (source.to_string(), view.to_string(), check.to_string()),
                failed.get(i).unwrap_or(0) > 0,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_starts_when_its_id_says() {
        assert_eq!(
            run_start_micros("run-20261204T101500.123456Z"),
            Some(1_796_379_300_123_456)
        );
        assert_eq!(run_start_micros("manual"), None);
        let run = LastRun {
            started_micros: 1_000_000,
            last_commit_ms: 3_500,
            ..LastRun::default()
        };
        assert_eq!(run.seconds(), 2.5);
    }
}
