//! Parquet data files: writing a frame as files with Delta statistics,
//! reading a snapshot's files into a frame or a stream of batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use delta_kernel::object_store::path::Path as ObjectPath;
use delta_kernel::object_store::{DynObjectStore, ObjectStoreExt, PutPayload};
use polars::prelude::*;

use crate::error::{Error, Result};

/// How many data files are fetched from an object store at once.
const CONCURRENT_FETCHES: usize = 8;

/// Where a table's data files are: a local directory, or a prefix in an
/// object store (the table's URL names it in messages).
#[derive(Clone)]
pub(crate) enum TableDir {
    Local(PathBuf),
    Remote {
        store: Arc<DynObjectStore>,
        prefix: ObjectPath,
        shown: String,
    },
}

/// A data file to decode: a local path, or its bytes fetched from the
/// object store.
pub(crate) enum DataSource {
    Path(PathBuf),
    Fetched { shown: String, bytes: bytes::Bytes },
}

impl DataSource {
    fn shown(&self) -> String {
        match self {
            DataSource::Path(path) => path.display().to_string(),
            DataSource::Fetched { shown, .. } => shown.clone(),
        }
    }
}

impl TableDir {
    /// The data files listed (relative to the table, or as absolute URLs)
    /// ready to decode: local paths as they are, remote files fetched,
    /// several at a time, in the listed order.
    pub(crate) async fn sources(&self, listed: &[String]) -> Result<Vec<DataSource>> {
        match self {
            TableDir::Local(root) => {
                let root = std::path::absolute(root).map_err(|source| Error::Io {
                    path: root.clone(),
                    source,
                })?;
                Ok(listed
                    .iter()
                    .map(|f| DataSource::Path(local_file(&root, f)))
                    .collect())
            }
            TableDir::Remote {
                store,
                prefix,
                shown,
            } => {
                let mut fetched = Vec::with_capacity(listed.len());
                for chunk in listed.chunks(CONCURRENT_FETCHES) {
                    let fetches: Vec<_> = chunk
                        .iter()
                        .map(|file| {
                            fetch(
                                store.clone(),
                                remote_file(prefix, file),
                                format!("{shown}{file}"),
                            )
                        })
                        .collect();
                    fetched.extend(futures::future::try_join_all(fetches).await?);
                }
                Ok(fetched)
            }
        }
    }
}

/// One remote data file's bytes.
async fn fetch(store: Arc<DynObjectStore>, path: ObjectPath, shown: String) -> Result<DataSource> {
    let storage = |e: delta_kernel::object_store::Error| Error::Storage {
        location: shown.clone(),
        message: e.to_string(),
    };
    let bytes = store
        .get(&path)
        .await
        .map_err(storage)?
        .bytes()
        .await
        .map_err(storage)?;
    Ok(DataSource::Fetched { shown, bytes })
}

/// The object path of a data file listed relative to the table at
/// `prefix`, or as an absolute URL.
fn remote_file(prefix: &ObjectPath, listed: &str) -> ObjectPath {
    if let Ok(url) = url::Url::parse(listed)
        && url.scheme().len() > 1
        && let Ok(path) = ObjectPath::from_url_path(url.path())
    {
        return path;
    }
    listed
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(prefix.clone(), |path, part| path.join(part))
}

/// The local path of a data file listed relative to the table root (or as
/// an absolute `file://` URL).
/// Sends the record batches of one data file, in `schema` (columns the file
/// lacks are null; types are cast to the table's). Stops quietly when the
/// receiver is gone.
pub(crate) fn stream_file(
    table: &str,
    source: DataSource,
    schema: &arrow_schema::SchemaRef,
    sender: &tokio::sync::mpsc::Sender<Result<arrow_array::RecordBatch>>,
) -> Result<()> {
    use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
    let shown = source.shown();
    let arrow_err = |source| Error::Arrow {
        context: format!("reading {shown} of {table}"),
        source,
    };
    let parquet_err = |e: parquet::errors::ParquetError| {
        arrow_err(arrow_schema::ArrowError::ParquetError(e.to_string()))
    };
    let reader: ParquetRecordBatchReader = match source {
        DataSource::Path(path) => {
            let file = std::fs::File::open(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|builder| builder.with_batch_size(64 * 1024).build())
                .map_err(parquet_err)?
        }
        DataSource::Fetched { bytes, .. } => ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|builder| builder.with_batch_size(64 * 1024).build())
            .map_err(parquet_err)?,
    };
    for batch in reader {
        let batch = batch.map_err(arrow_err)?;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column = match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => column.clone(),
                Some(column) => arrow_cast::cast(column, field.data_type()).map_err(arrow_err)?,
                None => arrow_array::new_null_array(field.data_type(), batch.num_rows()),
            };
            columns.push(column);
        }
        let batch =
            arrow_array::RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)?;
        if sender.blocking_send(Ok(batch)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

pub(crate) fn local_file(root: &Path, listed: &str) -> PathBuf {
    if let Ok(url) = url::Url::parse(listed)
        && url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        return path;
    }
    root.join(listed)
}

/// Writes `df` as Parquet data files of up to `rows_per_file` rows into the
/// table directory, with polars' (parallel) Parquet writer, and returns
/// their Add actions with Delta statistics. Nothing is visible until the
/// actions are committed; a crash leaves only unreferenced files, which
/// vacuum removes.
pub(crate) async fn write_files(
    name: &str,
    dir: &TableDir,
    df: &DataFrame,
    rows_per_file: usize,
) -> Result<Vec<deltalake::kernel::Add>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    match dir {
        TableDir::Local(dir) => write_local_files(name, dir, df, rows_per_file).await,
        TableDir::Remote {
            store,
            prefix,
            shown,
        } => {
            // Encoded in memory on a blocking thread, then uploaded: an
            // object store has no file to stream into.
            let (df, table) = (df.clone(), name.to_string());
            let encoded =
                tokio::task::spawn_blocking(move || encode_files(&table, &df, rows_per_file))
                    .await
                    .map_err(|e| Error::Internal(format!("encoding data files: {e}")))??;
            let mut adds = Vec::with_capacity(encoded.len());
            for (add, bytes) in encoded {
                let path = prefix.clone().join(add.path.as_str());
                store
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(|e| Error::Storage {
                        location: format!("{shown}{}", add.path),
                        message: e.to_string(),
                    })?;
                adds.push(add);
            }
            tracing::debug!(table = %name, files = adds.len(), "data files uploaded");
            Ok(adds)
        }
    }
}

/// `df` encoded as Parquet data files in memory, with their Add actions.
fn encode_files(
    name: &str,
    df: &DataFrame,
    rows_per_file: usize,
) -> Result<Vec<(deltalake::kernel::Add, Vec<u8>)>> {
    let rows = rows_per_file.max(1);
    let mut files = Vec::new();
    let mut offset = 0usize;
    while offset < df.height() {
        let mut part = df.slice(offset as i64, rows);
        offset += part.height();
        let file_name = format!(
            "part-{:05}-{}-c000.snappy.parquet",
            files.len(),
            random_id()
        );
        let mut bytes = Vec::new();
        let size = ParquetWriter::new(&mut bytes)
            .with_compression(ParquetCompression::Snappy)
            .with_statistics(StatisticsOptions::default())
            .finish(&mut part)
            .map_err(Error::polars(format!("encoding {file_name} of {name}")))?;
        files.push((add_action(file_name, size, &part), bytes));
    }
    Ok(files)
}

/// The Add action of a new data file holding `part`.
fn add_action(path: String, size: u64, part: &DataFrame) -> deltalake::kernel::Add {
    deltalake::kernel::Add {
        path,
        partition_values: Default::default(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(file_statistics(part).to_string()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

async fn write_local_files(
    name: &str,
    dir: &Path,
    df: &DataFrame,
    rows_per_file: usize,
) -> Result<Vec<deltalake::kernel::Add>> {
    let dir = dir.to_path_buf();
    let df = df.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let rows = rows_per_file.max(1);
        let mut adds = Vec::new();
        let mut offset = 0usize;
        while offset < df.height() {
            let mut part = df.slice(offset as i64, rows);
            offset += part.height();
            let file_name = format!("part-{:05}-{}-c000.snappy.parquet", adds.len(), random_id());
            let path = dir.join(&file_name);
            let file = std::fs::File::create(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let size = ParquetWriter::new(file)
                .with_compression(ParquetCompression::Snappy)
                .with_statistics(StatisticsOptions::default())
                .finish(&mut part)
                .map_err(Error::polars(format!("writing {}", path.display())))?;
            adds.push(add_action(file_name, size, &part));
        }
        tracing::debug!(table = %name, files = adds.len(), "data files written");
        Ok(adds)
    })
    .await
    .map_err(|e| Error::Internal(format!("writing data files: {e}")))?
}

/// A random hex id for data file names.
fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// Delta file statistics: row count, null counts, and min/max of numeric
/// and temporal columns (timestamps in UTC with milliseconds, the maximum
/// rounded up so that a reader's pruning never skips a matching row).
fn file_statistics(df: &DataFrame) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    for column in df.columns() {
        let name = column.name().to_string();
        nulls.insert(name.clone(), json!(column.null_count()));
        let series = column.as_materialized_series();
        match column.dtype() {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => {
                if let (Ok(Some(lo)), Ok(Some(hi))) = (series.min::<i64>(), series.max::<i64>()) {
                    min.insert(name.clone(), json!(lo));
                    max.insert(name, json!(hi));
                }
            }
            DataType::Float32 | DataType::Float64 => {
                if let (Ok(Some(lo)), Ok(Some(hi))) = (series.min::<f64>(), series.max::<f64>())
                    && lo.is_finite()
                    && hi.is_finite()
                {
                    min.insert(name.clone(), json!(lo));
                    max.insert(name, json!(hi));
                }
            }
            DataType::Datetime(unit, _) => {
                let to_micros = |v: i64| match unit {
                    TimeUnit::Nanoseconds => v / 1_000,
                    TimeUnit::Microseconds => v,
                    TimeUnit::Milliseconds => v.saturating_mul(1_000),
                };
                let physical = series.to_physical_repr();
                if let (Ok(Some(lo)), Ok(Some(hi))) = (physical.min::<i64>(), physical.max::<i64>())
                {
                    let lo = to_micros(lo).div_euclid(1_000) * 1_000;
                    let hi = (to_micros(hi) + 999).div_euclid(1_000) * 1_000;
                    let text = |micros: i64| {
                        chrono::DateTime::from_timestamp_micros(micros)
                            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                    };
                    if let (Some(lo), Some(hi)) = (text(lo), text(hi)) {
                        min.insert(name.clone(), Value::String(lo));
                        max.insert(name, Value::String(hi));
                    }
                }
            }
            _ => {}
        }
    }
    json!({
        "numRecords": df.height(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
}

pub(crate) fn read_parquet_files(
    name: &str,
    sources: Vec<DataSource>,
    columns: &[String],
    template: &DataFrame,
) -> Result<DataFrame> {
    let mut frames: Vec<DataFrame> = Vec::with_capacity(sources.len());
    for source in sources {
        let shown = source.shown();
        let (mut frame, present) = match source {
            DataSource::Path(file) => {
                let handle = std::fs::File::open(&file).map_err(|source| Error::Io {
                    path: file.clone(),
                    source,
                })?;
                read_columns(ParquetReader::new(handle), &shown, columns)?
            }
            DataSource::Fetched { bytes, .. } => read_columns(
                ParquetReader::new(std::io::Cursor::new(bytes)),
                &shown,
                columns,
            )?,
        };
        // Columns added to the table after this file was written.
        for c in columns.iter().filter(|c| !present.contains(c)) {
            let dtype = template
                .column(c)
                .map(|col| col.dtype().clone())
                .unwrap_or(DataType::Null);
            frame
                .with_column(Column::full_null(c.as_str().into(), frame.height(), &dtype))
                .map_err(Error::polars(format!("aligning {shown}")))?;
        }
        let frame = frame
            .select(columns.iter().map(String::as_str))
            .map_err(Error::polars(format!("aligning {shown}")))?;
        frames.push(frame);
    }
    if frames.is_empty() {
        return template
            .select(columns.iter().map(String::as_str))
            .map_err(Error::polars(format!("schema of {name}")));
    }
    let mut iter = frames.into_iter();
    let mut first = iter.next().unwrap_or_default();
    for frame in iter {
        first
            .vstack_mut(&frame)
            .map_err(Error::polars(format!("stacking files of {name}")))?;
    }
    // Left in chunks (a file's row groups, then files): copying a wide
    // table into one chunk per column costs more than the read itself, and
    // readers that want contiguous columns rechunk just those.
    Ok(first)
}

/// The `columns` a Parquet file has, read, and which of them it had.
fn read_columns<R: polars::io::mmap::MmapBytesReader>(
    reader: ParquetReader<R>,
    shown: &str,
    columns: &[String],
) -> Result<(DataFrame, Vec<String>)> {
    let mut reader = reader;
    let file_schema = reader
        .schema()
        .map_err(Error::polars(format!("reading {shown}")))?;
    let present: Vec<String> = columns
        .iter()
        .filter(|c| file_schema.contains(c.as_str()))
        .cloned()
        .collect();
    let frame = reader
        .with_columns(Some(present.clone()))
        .finish()
        .map_err(Error::polars(format!("reading {shown}")))?;
    Ok((frame, present))
}
