//! Bronze ingest from a Delta table source (`format = "delta"`): a table a
//! team already has (written by Spark, Databricks or aurum), on local disk
//! or object storage, read through the one protocol read path
//! ([`delta::read_table`]: deletion vectors, column mapping, partition
//! values, checkpoints; unknown reader features refused by name).
//!
//! Incremental by table version: each bronze commit records the source
//! version it holds (under the table's redacted location in the lineage's
//! `input_tables`). The next run reads only the files added since that
//! version when every commit since only appended. When one removed or
//! rewrote files (a delete, an update, a merge, an overwrite, a compaction)
//! the source is refreshed fully: bronze is overwritten with every row of
//! the new version in one commit marked [`REFRESH_OPERATION`], and silver
//! (then gold) recompute from it rather than appending — so a deleted or
//! updated source row never survives, and no row is counted twice.
//!
//! Bronze holds text, as for files: each declared column is rendered as
//! the text silver parses (ISO 8601 for timestamps, with `Z` for Delta's
//! `timestamp` and without for `timestamp_ntz`, which silver then reads in
//! the column's declared time zone).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use polars::prelude::DataFrame;

use super::bronze::{INGESTED_AT, IngestReport, SOURCE_FILE, SOURCE_ROW};
use super::options::{plan_sequence, step_id};
use crate::error::{Error, Result};
use crate::project::Source;
use delta::{CommitLineage, DeltaStore, ReadOptions, SchemaChange, Scope, StorageLocation};

/// The lineage operation of a bronze commit that replaced the table with a
/// Delta source's whole version (the source removed or rewrote rows).
pub const REFRESH_OPERATION: &str = "bronze-refresh";

/// Ingests what is new in the Delta table of `source` into its bronze
/// table.
pub(super) async fn ingest(
    store: &DeltaStore,
    root: &Path,
    source: &Source,
    run_id: &str,
) -> Result<IngestReport> {
    let table = source.bronze_table();
    // Read first: a run that commits after this point makes ours conflict.
    let sequence = plan_sequence(store, &table, step_id(&table)).await?;
    let location = StorageLocation::parse_in(&source.path, root, &source.options)?;
    let key = location.to_string();
    let previous_version = store.latest_version(&table).await?;
    let last = match previous_version {
        Some(_) => last_source_version(store, &table, &key).await?,
        None => None,
    };
    let mut report = IngestReport {
        files_found: 1,
        version: previous_version,
        previous_version,
        ..IngestReport::default()
    };
    // A pinned version already ingested: nothing to read.
    if source.version.is_some() && source.version == last {
        report.files_skipped = 1;
        return Ok(report);
    }
    let read = delta::read_table(
        &location,
        ReadOptions {
            version: source.version,
            keep_rows: None,
            file_columns: true,
            since: last,
        },
    )
    .await?;
    let refresh = read.scope == Scope::All && previous_version.is_some();
    if !refresh && read.rows == 0 {
        report.files_skipped = 1;
        return Ok(report);
    }
    let shown = format!("{key}@v{}", read.version);
    let raw = as_text(source, &key, &read)?;
    let rows = raw.height();
    let frame = with_provenance(raw, &key).map_err(Error::polars(format!("ingesting {shown}")))?;
    let options = delta::WriteOptions {
        mode: if refresh {
            delta::WriteMode::Overwrite
        } else {
            delta::WriteMode::Append
        },
        // New declared columns evolve the table; old rows read null.
        schema_change: SchemaChange::AddColumns,
        sequence: Some(sequence),
        ..delta::WriteOptions::append()
    };
    let version = store
        .write(
            &table,
            &frame,
            &options,
            &CommitLineage {
                operation: if refresh {
                    REFRESH_OPERATION.to_string()
                } else {
                    "bronze".to_string()
                },
                input_tables: BTreeMap::from([(key, read.version)]),
                definition_hash: crate::project::hash_json("aurum-bronze-v1", &source.columns),
                run_id: run_id.to_string(),
                ..CommitLineage::default()
            },
        )
        .await?;
    tracing::info!(source = %source.name, table = %shown, rows, refresh, "Delta source ingested");
    report.files_ingested.push((shown, rows));
    report.rows = rows;
    report.version = Some(version);
    report.rewritten = refresh;
    // Handed to silver only when it is exactly the increment after the
    // previous bronze version (a refresh is re-read in full by silver).
    report.frame = (!refresh).then_some(frame);
    Ok(report)
}

/// Whether a bronze commit after `after` (all of them when `None`) up to
/// `to` replaced the table ([`REFRESH_OPERATION`]): silver must then
/// recompute from bronze in full.
pub(super) async fn refreshed_since(
    store: &DeltaStore,
    table: &str,
    after: Option<u64>,
    to: u64,
) -> Result<bool> {
    Ok(store.history(table).await?.into_iter().any(|commit| {
        commit.version <= to
            && after.is_none_or(|a| commit.version > a)
            && commit
                .lineage
                .is_some_and(|l| l.operation == REFRESH_OPERATION)
    }))
}

/// The source version the newest bronze commit recorded for `key`.
async fn last_source_version(store: &DeltaStore, table: &str, key: &str) -> Result<Option<u64>> {
    let mut history = store.history(table).await?;
    history.sort_by_key(|c| std::cmp::Reverse(c.version));
    Ok(history
        .into_iter()
        .filter_map(|c| c.lineage)
        .find_map(|l| l.input_tables.get(key).copied()))
}

/// Bronze's provenance columns for rows of the Delta table at `key`: the
/// source data file (`key` + its path in the table) and the row's 1-based
/// index in it, which stay the same when the source is read again (so a
/// refresh does not quarantine the same bad row twice), and, as the
/// ingestion time, the time the source wrote that file, so re-delivered
/// records are ordered by when the source wrote them, whichever way they
/// were read.
fn with_provenance(raw: DataFrame, key: &str) -> polars::prelude::PolarsResult<DataFrame> {
    use polars::prelude::*;
    raw.lazy()
        .with_columns([
            (lit(key.to_string()) + col(delta::FILE_COLUMN)).alias(SOURCE_FILE),
            (col(delta::ROW_COLUMN) + lit(1i64)).alias(SOURCE_ROW),
            (col(delta::FILE_COMMITTED_COLUMN) * lit(1_000i64))
                .cast(DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC),
                ))
                .alias(INGESTED_AT),
        ])
        .drop(by_name(
            [
                delta::FILE_COLUMN,
                delta::ROW_COLUMN,
                delta::FILE_COMMITTED_COLUMN,
            ],
            true,
            false,
        ))
        .collect()
}

/// The declared columns of `read` as text, in declared order, then the
/// reader's provenance columns as they are.
fn as_text(source: &Source, table: &str, read: &delta::TableRead) -> Result<DataFrame> {
    let refuse = |message: String| Error::DeltaSource {
        source_name: source.name.clone(),
        table: table.to_string(),
        version: read.version,
        message,
    };
    let mut positions = Vec::with_capacity(source.columns.len());
    for column in &source.columns {
        let Some((i, field)) = read.schema.column_with_name(&column.name) else {
            let names: Vec<&str> = read
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            return Err(refuse(format!(
                "the table has no column {:?} (its columns: {})",
                column.name,
                names.join(", ")
            )));
        };
        if !renders_as_text(field.data_type()) {
            return Err(refuse(format!(
                "column {:?} is of type {}, which a source column cannot declare",
                column.name,
                field.data_type()
            )));
        }
        positions.push(i);
    }
    let provenance = [
        delta::FILE_COLUMN,
        delta::ROW_COLUMN,
        delta::FILE_COMMITTED_COLUMN,
    ]
    .map(|name| read.schema.column_with_name(name));
    let mut fields: Vec<Field> = source
        .columns
        .iter()
        .map(|c| Field::new(&c.name, DataType::Utf8, true))
        .collect();
    let mut kept = Vec::new();
    for (i, field) in provenance.into_iter().flatten() {
        fields.push(field.clone());
        kept.push(i);
    }
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::with_capacity(read.batches.len());
    for batch in &read.batches {
        let mut columns = positions
            .iter()
            .map(|&i| text(batch.column(i)))
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(|e| refuse(format!("rendering a column as text: {e}")))?;
        columns.extend(kept.iter().map(|&i| batch.column(i).clone()));
        batches.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| refuse(format!("rendering the rows as text: {e}")))?,
        );
    }
    Ok(delta::interop::batches_to_frame(&schema, &batches)?)
}

/// Whether a Delta column of this type can be a declared source column.
fn renders_as_text(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Date32
            | DataType::Timestamp(_, _)
    )
}

/// One column as the text silver parses.
fn text(array: &ArrayRef) -> Result<ArrayRef, arrow_schema::ArrowError> {
    match array.data_type() {
        DataType::Timestamp(_, zone) => {
            let micros = arrow_cast::cast(
                array,
                &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
            )?;
            let micros = micros.as_primitive::<TimestampMicrosecondType>();
            // Delta's `timestamp` is an instant (UTC); `timestamp_ntz` a
            // wall-clock time, read by silver in the declared time zone.
            let format = if zone.is_some() {
                "%Y-%m-%dT%H:%M:%S%.6fZ"
            } else {
                "%Y-%m-%dT%H:%M:%S%.6f"
            };
            let values: StringArray = micros
                .iter()
                .map(|v| {
                    v.and_then(chrono::DateTime::from_timestamp_micros)
                        .map(|t| t.format(format).to_string())
                })
                .collect();
            Ok(Arc::new(values))
        }
        _ => arrow_cast::cast(array, &DataType::Utf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::TimestampMicrosecondArray;

    #[test]
    fn timestamps_render_as_iso_text_with_z_only_for_instants() {
        let instant: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None])
                .with_timezone("UTC"),
        );
        let wall: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![Some(0)]));
        let instant = text(&instant).unwrap();
        let instant = instant.as_string::<i32>();
        assert_eq!(instant.value(0), "2023-11-14T22:13:20.123456Z");
        assert!(instant.is_null(1));
        let wall = text(&wall).unwrap();
        assert_eq!(
            wall.as_string::<i32>().value(0),
            "1970-01-01T00:00:00.000000"
        );
    }
}
