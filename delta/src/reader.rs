//! The one read path for Delta tables aurum did not write: through the Delta
//! kernel, so that a table written by Spark or Databricks reads as the
//! protocol says.
//!
//! The kernel applies deletion vectors (deleted rows never come back), maps
//! physical column names to logical ones (column mapping, name and id
//! modes), adds partition values as columns, reads v1 and v2 checkpoints
//! (with sidecars) and `timestamp_ntz`. A table that needs a reader feature
//! the kernel cannot honour is refused when the scan is built, with an error
//! that names the feature: never read wrong.
//!
//! The kernel's API is synchronous (its engine runs the object-store I/O on
//! the tokio runtime), so reads run on a blocking thread.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::compute::filter_record_batch;
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::{Schema, SchemaRef};
use delta_kernel::engine::arrow_conversion::TryFromKernel;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::scan::state::{ScanFile, transform_to_logical};
use delta_kernel::{Engine, FileMeta, Snapshot};
use delta_kernel_default_engine::DefaultEngineBuilder;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;

use crate::error::{Error, Result};
use crate::location::StorageLocation;

/// What a read of a table returned.
#[derive(Debug, Clone)]
pub struct TableRead {
    /// The table version read.
    pub version: u64,
    /// The table's logical schema at that version (column-mapped names,
    /// partition columns included).
    pub schema: SchemaRef,
    /// Which rows of the version the read holds.
    pub scope: Scope,
    /// Rows in the scope (after deletion vectors), all of them counted
    /// even when fewer were kept.
    pub rows: usize,
    /// The rows kept, in the scan's order, in `schema`.
    pub batches: Vec<RecordBatch>,
}

/// Which rows of a version a read holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every row of the version.
    All,
    /// Only the rows of the files added after this version: every commit
    /// since it only appended.
    AddedSince(u64),
}

/// With [`ReadOptions::file_columns`]: the data file a row comes from.
pub const FILE_COLUMN: &str = "_delta_file";
/// With [`ReadOptions::file_columns`]: the row's index in its data file.
pub const ROW_COLUMN: &str = "_delta_row_in_file";
/// With [`ReadOptions::file_columns`]: when the row's data file was
/// written (milliseconds since the epoch).
pub const FILE_COMMITTED_COLUMN: &str = "_delta_file_committed_ms";

/// How much of a table to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// The version to read; the latest when `None`.
    pub version: Option<u64>,
    /// Keep at most this many rows (every row is still counted); all when
    /// `None`.
    pub keep_rows: Option<usize>,
    /// Add where each row comes from: [`FILE_COLUMN`] (the data file's
    /// path in the table), [`ROW_COLUMN`] (the row's index in that file,
    /// deleted rows counted) and [`FILE_COMMITTED_COLUMN`] (the file's
    /// modification time, milliseconds since the epoch) — an identity that
    /// stays the same across reads while the file does.
    pub file_columns: bool,
    /// Read only what was appended after this version, when every commit
    /// since only added files. When one removed or rewrote files (a delete,
    /// an update, an overwrite, a compaction) or the log no longer holds
    /// those commits, every row of the version is read instead and the
    /// read's [`Scope`] says so.
    pub since: Option<u64>,
}

/// Reads the Delta table at `location` per the protocol.
///
/// # Errors
///
/// [`Error::Protocol`] when the location holds no readable table, the
/// version does not exist, the table needs a reader feature the kernel
/// cannot honour (the message names it), or `since` is newer than the
/// version read; [`Error::Arrow`] when a schema or batch cannot be
/// converted.
pub async fn read_table(location: &StorageLocation, options: ReadOptions) -> Result<TableRead> {
    let location = location.clone();
    let handle = tokio::runtime::Handle::try_current().ok();
    tokio::task::spawn_blocking(move || read_blocking(&location, options, handle))
        .await
        .map_err(|e| Error::Internal(format!("reading a Delta table: {e}")))?
}

fn read_blocking(
    location: &StorageLocation,
    options: ReadOptions,
    handle: Option<tokio::runtime::Handle>,
) -> Result<TableRead> {
    let shown = location.to_string();
    let protocol = |e: delta_kernel::Error| Error::Protocol {
        table: shown.clone(),
        message: e.to_string(),
    };
    let engine = engine(location, handle);
    let mut builder = Snapshot::builder_for(location.url().as_str());
    if let Some(version) = options.version {
        builder = builder.at_version(version);
    }
    let snapshot = builder.build(engine.as_ref()).map_err(|e| {
        if options.version.is_some() {
            protocol(e)
        } else {
            Error::Protocol {
                table: shown.clone(),
                message: format!("not a readable Delta table ({e})"),
            }
        }
    })?;
    let version = snapshot.version();
    // Building the scan checks the table's reader features.
    let scan = snapshot.clone().scan_builder().build().map_err(protocol)?;
    let mut schema =
        Schema::try_from_kernel(scan.logical_schema().as_ref()).map_err(|source| Error::Arrow {
            context: format!("the schema of {shown}"),
            source,
        })?;
    if options.file_columns {
        let mut fields: Vec<arrow_schema::FieldRef> = schema.fields().iter().cloned().collect();
        for (name, ty) in [
            (FILE_COLUMN, arrow_schema::DataType::Utf8),
            (ROW_COLUMN, arrow_schema::DataType::Int64),
            (FILE_COMMITTED_COLUMN, arrow_schema::DataType::Int64),
        ] {
            fields.push(Arc::new(arrow_schema::Field::new(name, ty, false)));
        }
        schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    }
    let schema: SchemaRef = Arc::new(schema);
    let (scope, only): (Scope, Option<HashSet<FileKey>>) = match options.since {
        None => (Scope::All, None),
        Some(since) if since > version => {
            return Err(Error::Protocol {
                table: shown,
                message: format!(
                    "the table is at version {version}, older than version {since} read \
                     before: was it re-created?"
                ),
            });
        }
        // Nothing after the version itself (the files are dropped below).
        Some(since) if since == version => (Scope::AddedSince(since), None),
        Some(since) => match files_at(location, since, engine.as_ref()).map_err(protocol)? {
            Some(before) => (Scope::AddedSince(since), Some(before)),
            // The log no longer reaches back to `since`: read everything.
            None => (Scope::All, None),
        },
    };
    let mut files = scan_files(&scan, engine.as_ref()).map_err(protocol)?;
    let (scope, only) = match (scope, only) {
        (Scope::AddedSince(since), Some(before)) if since < version => {
            let now: HashSet<FileKey> = files.iter().map(file_key).collect();
            if before.iter().any(|key| !now.contains(key)) {
                // A file was removed or its deletion vector changed: rows
                // went away or changed, which no append can express.
                (Scope::All, None)
            } else {
                (Scope::AddedSince(since), Some(before))
            }
        }
        other => other,
    };
    if scope == Scope::AddedSince(version) {
        files.clear();
    }
    if let (Scope::AddedSince(_), Some(before)) = (scope, &only) {
        // Only files (or file versions) that were not there before: a file
        // re-added without a change of rows (statistics, row tracking,
        // clustering tags) is not read twice.
        files.retain(|f| !before.contains(&file_key(f)));
    }
    let table_root = scan.table_root().clone();
    let physical = scan.physical_schema().clone();
    let logical = scan.logical_schema().clone();
    let keep = options.keep_rows.unwrap_or(usize::MAX);
    let mut rows = 0usize;
    let mut kept = 0usize;
    let mut batches = Vec::new();
    for file in files {
        let location = table_root.join(&file.path).map_err(|e| Error::Protocol {
            table: shown.clone(),
            message: format!(
                "the log names a data file {:?} that is not a path: {e}",
                file.path
            ),
        })?;
        // The rows a deletion vector removed are false here; rows past the
        // vector's end are kept.
        let deleted = file
            .dv_info
            .get_selection_vector(engine.as_ref(), &table_root)
            .map_err(protocol)?;
        let meta = FileMeta {
            location,
            last_modified: file.modification_time,
            size: u64::try_from(file.size).unwrap_or_default(),
        };
        let mut offset = 0usize;
        for data in engine
            .parquet_handler()
            .read_parquet_files(&[meta], physical.clone(), None)
            .map_err(protocol)?
        {
            let data = transform_to_logical(
                engine.as_ref(),
                data.map_err(protocol)?,
                &physical,
                &logical,
                file.transform.clone(),
            )
            .map_err(protocol)?;
            let batch =
                RecordBatch::from(*ArrowEngineData::try_from_engine_data(data).map_err(protocol)?);
            let height = batch.num_rows();
            let batch = if options.file_columns {
                let mut columns = batch.columns().to_vec();
                columns.push(Arc::new(arrow_array::StringArray::from(vec![
                    file.path
                        .as_str();
                    height
                ])));
                columns.push(Arc::new(arrow_array::Int64Array::from_iter_values(
                    (offset..offset + height).map(|i| i as i64),
                )));
                columns.push(Arc::new(arrow_array::Int64Array::from(vec![
                    file.modification_time;
                    height
                ])));
                RecordBatch::try_new(schema.clone(), columns).map_err(|source| Error::Arrow {
                    context: format!("the rows of {} in {shown}", file.path),
                    source,
                })?
            } else {
                batch
            };
            let batch = match &deleted {
                Some(selection) => {
                    let end = (offset + height).min(selection.len());
                    let mut keep = selection.get(offset..end).unwrap_or_default().to_vec();
                    keep.resize(height, true);
                    let mask = BooleanArray::from(keep);
                    filter_record_batch(&batch, &mask).map_err(|source| Error::Arrow {
                        context: format!("applying the deletion vector of {}", file.path),
                        source,
                    })?
                }
                None => batch,
            };
            offset += height;
            if kept < keep && batch.num_rows() > 0 {
                let take = (keep - kept).min(batch.num_rows());
                batches.push(in_schema(&shown, &schema, batch.slice(0, take))?);
                kept += take;
            }
            rows += batch.num_rows();
        }
    }
    Ok(TableRead {
        version,
        schema,
        scope,
        rows,
        batches,
    })
}

/// A data file's identity across versions: its path and its deletion
/// vector (a new deletion vector on the same file is a different file
/// version: some of its rows went away).
type FileKey = (String, String);

fn file_key(file: &ScanFile) -> FileKey {
    (file.path.clone(), format!("{:?}", file.dv_info))
}

/// The files of the scan, with their deletion vectors and transforms.
fn scan_files(
    scan: &delta_kernel::scan::Scan,
    engine: &dyn Engine,
) -> delta_kernel::DeltaResult<Vec<ScanFile>> {
    let mut files: Vec<ScanFile> = Vec::new();
    for metadata in scan.scan_metadata(engine)? {
        files = metadata?.visit_scan_files(files, |files, file| files.push(file))?;
    }
    Ok(files)
}

/// The file keys of the table at `version`, `None` when that version can
/// no longer be built (its commits cleaned up) — then everything is read.
/// Any other failure (the store, a reader feature) is an error.
fn files_at(
    location: &StorageLocation,
    version: u64,
    engine: &dyn Engine,
) -> delta_kernel::DeltaResult<Option<HashSet<FileKey>>> {
    let Ok(snapshot) = Snapshot::builder_for(location.url().as_str())
        .at_version(version)
        .build(engine)
    else {
        return Ok(None);
    };
    let scan = snapshot.scan_builder().build()?;
    Ok(Some(
        scan_files(&scan, engine)?.iter().map(file_key).collect(),
    ))
}

/// The kernel's engine over the location's object store, running its I/O on
/// the caller's multi-threaded runtime when there is one (a background
/// runtime otherwise).
fn engine(location: &StorageLocation, handle: Option<tokio::runtime::Handle>) -> Arc<dyn Engine> {
    let builder = DefaultEngineBuilder::new(location.store());
    match handle {
        Some(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Arc::new(
                builder
                    .with_task_executor(Arc::new(TokioMultiThreadExecutor::new(handle)))
                    .build(),
            )
        }
        _ => Arc::new(builder.build()),
    }
}

/// `batch` with the scan's logical schema (the kernel's batches carry the
/// same columns; this drops field metadata differences so that every batch
/// of a read has one schema).
fn in_schema(table: &str, schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    RecordBatch::try_new(schema.clone(), batch.columns().to_vec()).map_err(|source| Error::Arrow {
        context: format!("a batch of {table}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};

    use super::*;

    /// Delta tables written by Spark and Databricks (tests/fixtures/delta).
    fn fixture(name: &str) -> StorageLocation {
        let path = format!(
            "{}/../tests/fixtures/delta/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        StorageLocation::parse(&path, &BTreeMap::new()).expect("a fixture path parses")
    }

    async fn read_at(name: &str, version: Option<u64>) -> TableRead {
        read_table(
            &fixture(name),
            ReadOptions {
                version,
                ..ReadOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{name} reads: {e}"))
    }

    fn column<'a>(read: &'a TableRead, name: &str) -> Vec<&'a arrow_array::ArrayRef> {
        read.batches
            .iter()
            .map(|b| b.column_by_name(name).expect("the column is there"))
            .collect()
    }

    fn ints32(read: &TableRead, name: &str) -> Vec<i32> {
        let mut values: Vec<i32> = column(read, name)
            .into_iter()
            .flat_map(|a| {
                a.as_primitive::<Int32Type>()
                    .iter()
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .collect();
        values.sort_unstable();
        values
    }

    fn strings(read: &TableRead, name: &str) -> Vec<String> {
        column(read, name)
            .into_iter()
            .flat_map(|a| {
                let a = arrow_cast::cast(a, &arrow_schema::DataType::Utf8).expect("casts to text");
                a.as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn deletion_vectors_remove_the_deleted_rows() {
        let read = read_at("table-with-dv-small", None).await;
        assert_eq!(read.version, 1);
        assert_eq!(read.rows, 8);
        assert_eq!(ints32(&read, "value"), (1..=8).collect::<Vec<_>>());
        // Before the delete, all ten rows.
        let before = read_at("table-with-dv-small", Some(0)).await;
        assert_eq!(ints32(&before, "value"), (0..=9).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn column_mapping_gives_logical_names_and_partition_values() {
        let read = read_at("table_with_column_mapping", None).await;
        let names: Vec<&str> = read
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert!(names.contains(&"Company Very Short"), "{names:?}");
        assert!(names.contains(&"Super Name"), "{names:?}");
        assert_eq!(read.rows, 5);
        let mut pairs: Vec<(String, String)> = strings(&read, "Company Very Short")
            .into_iter()
            .zip(strings(&read, "Super Name"))
            .collect();
        pairs.sort();
        let expected = [
            ("BME", "Timothy Lamb"),
            ("BMS", "Anthony Johnson"),
            ("BMS", "Mr. Daniel Ferguson MD"),
            ("BMS", "Nathan Bennett"),
            ("BMS", "Stephanie Mcgrath"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(pairs, expected);
    }

    #[tokio::test]
    async fn partition_values_become_columns() {
        let read = read_at("delta-2.2.0-partitioned-types", None).await;
        assert_eq!(read.rows, 3);
        let mut rows: Vec<(i32, String, i32)> = ints_unsorted(&read, "c1")
            .into_iter()
            .zip(strings(&read, "c2"))
            .zip(ints_unsorted(&read, "c3"))
            .map(|((a, b), c)| (a, b, c))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (4, "c".to_string(), 5),
                (5, "b".to_string(), 6),
                (6, "a".to_string(), 4)
            ]
        );
    }

    fn ints_unsorted(read: &TableRead, name: &str) -> Vec<i32> {
        column(read, name)
            .into_iter()
            .flat_map(|a| {
                a.as_primitive::<Int32Type>()
                    .iter()
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[tokio::test]
    async fn v2_checkpoints_with_sidecars_are_read() {
        let read = read_at("checkpoint-v2-table", None).await;
        assert_eq!(read.version, 9);
        let mut ids: Vec<i64> = column(&read, "id")
            .into_iter()
            .flat_map(|a| {
                a.as_primitive::<Int64Type>()
                    .iter()
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=44).collect::<Vec<_>>());
        // At the checkpoint's own version.
        let at_six = read_at("checkpoint-v2-table", Some(6)).await;
        assert_eq!(at_six.rows, 32);
    }

    #[tokio::test]
    async fn keep_rows_limits_the_rows_kept_not_counted() {
        let read = read_table(
            &fixture("checkpoint-v2-table"),
            ReadOptions {
                keep_rows: Some(3),
                ..ReadOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(read.rows, 44);
        assert_eq!(
            read.batches
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>(),
            3
        );
    }

    #[tokio::test]
    async fn an_unknown_reader_feature_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let schema = r#"{\"type\":\"struct\",\"fields\":[{\"name\":\"x\",\"type\":\"long\",\"nullable\":true,\"metadata\":{}}]}"#;
        let commit = format!(
            "{{\"protocol\":{{\"minReaderVersion\":3,\"minWriterVersion\":7,\"readerFeatures\":[\"futureReaderFeatureX\"],\"writerFeatures\":[\"futureReaderFeatureX\"]}}}}\n\
             {{\"metaData\":{{\"id\":\"00000000-0000-0000-0000-000000000001\",\"format\":{{\"provider\":\"parquet\",\"options\":{{}}}},\"schemaString\":\"{schema}\",\"partitionColumns\":[],\"configuration\":{{}},\"createdTime\":0}}}}\n"
        );
        std::fs::write(log.join("00000000000000000000.json"), commit).unwrap();
        let location =
            StorageLocation::parse(&dir.path().display().to_string(), &BTreeMap::new()).unwrap();
        let error = read_table(&location, ReadOptions::default())
            .await
            .expect_err("an unknown reader feature is refused");
        assert!(
            error.to_string().contains("futureReaderFeatureX"),
            "the error names the feature: {error}"
        );
    }

    #[tokio::test]
    async fn a_directory_without_a_log_is_not_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let location =
            StorageLocation::parse(&dir.path().display().to_string(), &BTreeMap::new()).unwrap();
        let error = read_table(&location, ReadOptions::default())
            .await
            .expect_err("no table there");
        assert!(
            error.to_string().contains("not a readable Delta table"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn since_a_version_reads_only_appended_files_or_everything_after_a_rewrite() {
        // The deletion-vector table's second commit rewrote a file (a DV
        // delete): read since version 0, every row comes back, scope All.
        let after_delete = read_table(
            &fixture("table-with-dv-small"),
            ReadOptions {
                since: Some(0),
                ..ReadOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(after_delete.scope, Scope::All);
        assert_eq!(ints32(&after_delete, "value"), (1..=8).collect::<Vec<_>>());
        // Nothing new since the version itself.
        let same = read_table(
            &fixture("table-with-dv-small"),
            ReadOptions {
                since: Some(1),
                ..ReadOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(same.scope, Scope::AddedSince(1));
        assert_eq!(same.rows, 0);
        // A version newer than the table's is refused.
        let error = read_table(
            &fixture("table-with-dv-small"),
            ReadOptions {
                since: Some(5),
                ..ReadOptions::default()
            },
        )
        .await
        .expect_err("the table is older than what was read before");
        assert!(error.to_string().contains("re-created"), "{error}");
    }

    /// A table at `dir/t` written by aurum's Delta layer, one append of
    /// `id` values per commit.
    async fn appended_table(dir: &std::path::Path, commits: &[&[i64]]) -> StorageLocation {
        let store = crate::DeltaStore::new(dir.to_path_buf());
        for ids in commits {
            let frame =
                polars::prelude::DataFrame::new_infer_height(vec![polars::prelude::Column::new(
                    "id".into(),
                    ids.to_vec(),
                )])
                .unwrap();
            store
                .write(
                    "t",
                    &frame,
                    &crate::WriteOptions::append(),
                    &crate::CommitLineage::default(),
                )
                .await
                .unwrap();
        }
        StorageLocation::parse(&dir.join("t").display().to_string(), &BTreeMap::new()).unwrap()
    }

    async fn read_since(location: &StorageLocation, since: u64) -> TableRead {
        read_table(
            location,
            ReadOptions {
                since: Some(since),
                ..ReadOptions::default()
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn appends_since_a_version_are_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let location = appended_table(dir.path(), &[&[1, 2, 3], &[4, 5], &[6]]).await;
        let read = read_since(&location, 0).await;
        assert_eq!(read.version, 2);
        assert_eq!(read.scope, Scope::AddedSince(0));
        let mut ids: Vec<i64> = column(&read, "id")
            .into_iter()
            .flat_map(|a| {
                a.as_primitive::<Int64Type>()
                    .iter()
                    .flatten()
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![4, 5, 6]);
    }

    #[tokio::test]
    async fn a_file_re_added_without_new_rows_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let location = appended_table(dir.path(), &[&[1, 2], &[3]]).await;
        // Version 2 re-adds version 0's file unchanged (as a statistics or
        // row-tracking backfill does), without removing it.
        let log = dir.path().join("t/_delta_log");
        let first = std::fs::read_to_string(log.join("00000000000000000000.json")).unwrap();
        let mut add = first
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|a| a.get("add").cloned())
            .unwrap();
        add["dataChange"] = serde_json::json!(false);
        std::fs::write(
            log.join("00000000000000000002.json"),
            format!("{}\n", serde_json::json!({ "add": add })),
        )
        .unwrap();
        let after_one = read_since(&location, 1).await;
        assert_eq!(after_one.scope, Scope::AddedSince(1));
        assert_eq!(
            after_one.rows, 0,
            "the re-added file's rows were read before"
        );
        let after_zero = read_since(&location, 0).await;
        assert_eq!(
            after_zero.rows, 1,
            "only version 1's row is new since version 0"
        );
    }
}
