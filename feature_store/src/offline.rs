//! The offline store: Delta tables under the project's data directory.
//!
//! deltalake owns the transaction log (versions, commits, commit info);
//! polars reads the Parquet data files of a snapshot. Every commit aurum
//! writes records its lineage — the versions of the tables it read and a
//! hash of the definition that produced it — in the commit info under the
//! key `aurum`, where Spark, Databricks and `deltalake` users can see it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, MetadataExt, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::interop;

/// The key under which aurum's lineage is stored in Delta commit info.
pub const LINEAGE_KEY: &str = "aurum";

/// What a commit was produced from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitLineage {
    /// The operation, e.g. `bronze`, `silver`, `gold`, `quarantine`.
    pub operation: String,
    /// Input Delta tables and the versions read.
    pub input_tables: BTreeMap<String, u64>,
    /// Input files (for bronze data) and their sha256.
    pub input_files: BTreeMap<String, String>,
    /// Input files and their `size:modified` fingerprint, which lets a later
    /// run skip an unchanged file without reading it.
    #[serde(default)]
    pub input_fingerprints: BTreeMap<String, String>,
    /// For compaction commits: the data files written, which hold only rows
    /// the table already had.
    #[serde(default)]
    pub compacted_files: Vec<String>,
    /// A hash of the definition (view, rules) that produced the data.
    pub definition_hash: String,
    /// The aurum version that wrote the commit.
    #[serde(default)]
    pub aurum_version: String,
    /// The pipeline run that wrote the commit.
    #[serde(default)]
    pub run_id: String,
}

/// How a write treats existing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add rows to the table.
    Append,
    /// Replace the table's rows (older versions stay readable).
    Overwrite,
}

/// Which differences between the frame's and the table's schema a write
/// accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChange {
    /// The schemas must be equal.
    Refuse,
    /// New columns may be added; existing ones must keep name and type.
    AddColumns,
    /// Anything, for an overwrite that was explicitly allowed to break
    /// readers.
    Any,
}

/// How to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Append or overwrite.
    pub mode: WriteMode,
    /// Accepted schema differences.
    pub schema_change: SchemaChange,
    /// Rows per data file (files are cut at batch boundaries past this).
    pub rows_per_file: usize,
    /// Data files (paths relative to the table) removed in the same commit,
    /// for copy-on-write rewrites.
    pub remove: Vec<String>,
}

impl WriteOptions {
    /// Appends with no schema change, two million rows per file.
    pub fn append() -> Self {
        WriteOptions {
            mode: WriteMode::Append,
            schema_change: SchemaChange::Refuse,
            rows_per_file: DEFAULT_ROWS_PER_FILE,
            remove: Vec::new(),
        }
    }

    /// Overwrites with no schema change.
    pub fn overwrite() -> Self {
        WriteOptions {
            mode: WriteMode::Overwrite,
            ..WriteOptions::append()
        }
    }
}

/// The default data file size in rows.
pub const DEFAULT_ROWS_PER_FILE: usize = 2_000_000;

/// One data file of a table snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// The path relative to the table root, as in the log.
    pub path: String,
    /// Bytes.
    pub size: i64,
    /// Rows, from the file statistics.
    pub rows: Option<usize>,
    /// Minimum values by column, from the file statistics (JSON).
    pub min_values: serde_json::Map<String, serde_json::Value>,
    /// Maximum values by column, from the file statistics (JSON).
    pub max_values: serde_json::Map<String, serde_json::Value>,
}

impl DataFile {
    /// The maximum of a timestamp column, in microseconds, when the
    /// statistics hold it.
    pub fn max_micros(&self, column: &str) -> Option<i64> {
        stat_micros(self.max_values.get(column)?)
    }

    /// The minimum of a timestamp column, in microseconds.
    pub fn min_micros(&self, column: &str) -> Option<i64> {
        stat_micros(self.min_values.get(column)?)
    }
}

fn stat_micros(value: &serde_json::Value) -> Option<i64> {
    let text = value.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// One commit of a table's history.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The version the commit produced.
    pub version: u64,
    /// The commit time, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The Delta operation name, e.g. `WRITE`.
    pub operation: Option<String>,
    /// aurum's lineage, when aurum wrote the commit.
    pub lineage: Option<CommitLineage>,
}

/// Delta tables stored under one directory, one sub-directory per table.
#[derive(Debug, Clone)]
pub struct DeltaStore {
    root: PathBuf,
}

impl DeltaStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DeltaStore { root: root.into() }
    }

    /// The directory holding the tables.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of table `name`.
    pub fn table_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether table `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.table_path(name).join("_delta_log").is_dir()
    }

    /// The names of the tables in the store, sorted.
    pub fn tables(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(source) => {
                return Err(Error::Io {
                    path: self.root.clone(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            if entry.path().join("_delta_log").is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes `df` to table `name` in one commit carrying `lineage`, creating
    /// the table if needed, and returns the new table version.
    ///
    /// Data files are written first and committed in one Delta transaction,
    /// so readers see all of the write or none of it. An overwrite removes
    /// the previous files in the same commit (they stay readable by time
    /// travel until vacuumed). A write of zero rows still commits, so that
    /// the lineage of an empty batch (e.g. every row quarantined) is kept.
    pub async fn write(
        &self,
        name: &str,
        df: &DataFrame,
        options: &WriteOptions,
        lineage: &CommitLineage,
    ) -> Result<u64> {
        let path = self.table_path(name);
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let (schema, _) = interop::frame_to_batches(&df.head(Some(0)))?;
        let url = table_url(name, &path)?;
        let mut lineage = lineage.clone();
        if lineage.aurum_version.is_empty() {
            lineage.aurum_version = env!("CARGO_PKG_VERSION").to_string();
        }
        let lineage_json = serde_json::to_value(&lineage).unwrap_or(serde_json::Value::Null);
        let properties =
            CommitProperties::default().with_metadata([(LINEAGE_KEY.to_string(), lineage_json)]);
        let adds = write_files(name, &path, df, options.rows_per_file).await?;

        if !path.join("_delta_log").is_dir() {
            let kernel_schema = kernel_schema(name, &schema)?;
            let table = CreateBuilder::new()
                .with_location(url.as_str())
                .with_table_name(name)
                .with_columns(kernel_schema.fields().cloned())
                .with_actions(adds.into_iter().map(Action::Add))
                .with_commit_properties(properties)
                .await
                .map_err(Error::delta(name))?;
            return table
                .version()
                .ok_or_else(|| Error::TableMissing(name.to_string()));
        }

        let table = self.open(name, None).await?;
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        // Schema: equal, evolved (a Metadata action), or refused.
        let table_schema = arrow_schema_of(name, &snapshot.schema())?;
        match compare_schemas(&table_schema, &schema) {
            SchemaDiff::Equal => {}
            diff => {
                let allowed = matches!(
                    (&diff, options.schema_change),
                    (_, SchemaChange::Any) | (SchemaDiff::Added(_), SchemaChange::AddColumns)
                );
                if !allowed {
                    return Err(Error::SchemaChange {
                        table: name.to_string(),
                        message: diff.describe(),
                    });
                }
                let kernel_schema = kernel_schema(name, &schema)?;
                let metadata = snapshot
                    .metadata()
                    .clone()
                    .with_schema(&kernel_schema)
                    .map_err(|source| Error::delta(name)(DeltaTableError::Kernel { source }))?;
                actions.push(Action::Metadata(metadata));
            }
        }
        let save_mode = match options.mode {
            WriteMode::Append => {
                if !options.remove.is_empty() {
                    let remove: std::collections::HashSet<&str> =
                        options.remove.iter().map(String::as_str).collect();
                    actions.extend(
                        snapshot
                            .log_data()
                            .iter()
                            .filter(|file| remove.contains(file.path().as_ref()))
                            .map(|file| Action::Remove(file.remove_action(true))),
                    );
                }
                SaveMode::Append
            }
            WriteMode::Overwrite => {
                actions.extend(
                    snapshot
                        .log_data()
                        .iter()
                        .map(|file| Action::Remove(file.remove_action(true))),
                );
                SaveMode::Overwrite
            }
        };
        let operation = DeltaOperation::Write {
            mode: save_mode,
            partition_by: None,
            predicate: None,
        };
        let commit = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(Error::delta(name))?;
        Ok(commit.version())
    }

    /// The data files of `name` at `version` (latest when `None`), with
    /// their statistics, and the version listed.
    pub async fn files(&self, name: &str, version: Option<u64>) -> Result<(Vec<DataFile>, u64)> {
        let table = self.open(name, version).await?;
        let read_version = table
            .version()
            .ok_or_else(|| Error::TableMissing(name.to_string()))?;
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        let files = snapshot
            .log_data()
            .iter()
            .map(|file| {
                let stats: serde_json::Value = file
                    .stats()
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or(serde_json::Value::Null);
                let object = |key: &str| {
                    stats
                        .get(key)
                        .and_then(|v| v.as_object())
                        .cloned()
                        .unwrap_or_default()
                };
                DataFile {
                    path: file.path().to_string(),
                    size: file.size(),
                    rows: file.num_records(),
                    min_values: object("minValues"),
                    max_values: object("maxValues"),
                }
            })
            .collect();
        Ok((files, read_version))
    }

    /// Reads the given data files of `name` (as listed by [`files`] at
    /// `version`) into one frame with the table's schema at that version;
    /// `columns` projects. Files written before a column was added get
    /// nulls for it.
    ///
    /// [`files`]: DeltaStore::files
    pub async fn read_files(
        &self,
        name: &str,
        version: u64,
        files: &[DataFile],
        columns: Option<&[String]>,
    ) -> Result<DataFrame> {
        let table = self.open(name, Some(version)).await?;
        let schema = table.snapshot().map_err(Error::delta(name))?.schema();
        let template = empty_frame(name, &schema)?;
        let wanted: Vec<String> = match columns {
            Some(c) => c.to_vec(),
            None => template
                .get_column_names()
                .into_iter()
                .map(|c| c.to_string())
                .collect(),
        };
        for c in &wanted {
            if template.column(c).is_err() {
                return Err(Error::Schema {
                    view: name.to_string(),
                    message: format!("the table has no column {c:?}"),
                });
            }
        }
        let root = std::path::absolute(self.table_path(name)).map_err(|source| Error::Io {
            path: self.table_path(name),
            source,
        })?;
        let paths: Vec<PathBuf> = files.iter().map(|f| local_file(&root, &f.path)).collect();
        let names: Vec<String> = wanted.clone();
        let template_for_read = template.clone();
        let table_name = name.to_string();
        // Parquet decoding is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            read_parquet_files(&table_name, &paths, &names, &template_for_read)
        })
        .await
        .map_err(|e| Error::Internal(format!("reading {name}: {e}")))?
    }

    /// Streams table `name` at `version` (latest when `None`) as arrow-rs
    /// record batches in the table's schema, file by file and row group by
    /// row group, without reading the whole table first: the Parquet
    /// decoding runs on a blocking thread while the receiver sends what is
    /// ready. Files written before a column was added give nulls for it.
    /// Returns the schema and the receiving end (at most `buffer` batches
    /// wait in it).
    pub async fn stream_batches(
        &self,
        name: &str,
        version: Option<u64>,
        buffer: usize,
    ) -> Result<(
        arrow_schema::SchemaRef,
        tokio::sync::mpsc::Receiver<Result<arrow_array::RecordBatch>>,
    )> {
        let (files, read_version) = self.files(name, version).await?;
        let (schema, _) = self.arrow_schema(name, Some(read_version)).await?;
        let schema = std::sync::Arc::new(schema);
        let root = std::path::absolute(self.table_path(name)).map_err(|source| Error::Io {
            path: self.table_path(name),
            source,
        })?;
        let paths: Vec<PathBuf> = files.iter().map(|f| local_file(&root, &f.path)).collect();
        let (sender, receiver) = tokio::sync::mpsc::channel(buffer.max(1));
        let table_schema = schema.clone();
        let table = name.to_string();
        let failures = sender.clone();
        let reading = tokio::task::spawn_blocking(move || {
            for path in paths {
                if sender.is_closed() {
                    return;
                }
                if let Err(e) = stream_file(&table, &path, &table_schema, &sender) {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            }
        });
        // A panic while decoding ends the stream with an error, not as if
        // the table had ended.
        let table = name.to_string();
        tokio::spawn(async move {
            if let Err(e) = reading.await {
                let _ = failures
                    .send(Err(Error::Internal(format!(
                        "reading {table} stopped: {e}"
                    ))))
                    .await;
            }
        });
        Ok((schema, receiver))
    }

    /// The Arrow schema of table `name` at `version` (latest when `None`),
    /// and the version it is of.
    pub async fn arrow_schema(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<(arrow_schema::Schema, u64)> {
        let table = self.open(name, version).await?;
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        let read_version = snapshot.version();
        Ok((arrow_schema_of(name, &snapshot.schema())?, read_version))
    }

    /// Reads table `name` at `version` (latest when `None`) into one frame,
    /// and returns the version read.
    pub async fn read(&self, name: &str, version: Option<u64>) -> Result<(DataFrame, u64)> {
        let (files, read_version) = self.files(name, version).await?;
        let df = self.read_files(name, read_version, &files, None).await?;
        Ok((df, read_version))
    }

    /// The files of `name` at `to` that were not in the table at `from`:
    /// for an append-only table, exactly the data added in between. A file
    /// rewritten by a copy-on-write commit shows up as new too, which makes
    /// downstream work redo its rows rather than miss them. Files written by
    /// compaction hold no new rows and are left out.
    pub async fn files_added(
        &self,
        name: &str,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<(Vec<DataFile>, u64)> {
        let (now, to_version) = self.files(name, to).await?;
        let Some(from) = from else {
            return Ok((now, to_version));
        };
        let (before, _) = self.files(name, Some(from)).await?;
        let mut known: std::collections::HashSet<String> =
            before.into_iter().map(|f| f.path).collect();
        for commit in self.history(name).await? {
            if commit.version > from
                && commit.version <= to_version
                && let Some(lineage) = commit.lineage
            {
                known.extend(lineage.compacted_files);
            }
        }
        Ok((
            now.into_iter()
                .filter(|f| !known.contains(&f.path))
                .collect(),
            to_version,
        ))
    }

    /// Every commit of `name`, newest first.
    pub async fn history(&self, name: &str) -> Result<Vec<Commit>> {
        let table = self.open(name, None).await?;
        let latest = table.version().unwrap_or(0);
        // The log lists commits newest first, one per version.
        let mut history = table.history(None);
        let mut commits = Vec::new();
        let mut version = latest;
        while let Some(info) = history.next().await {
            let info = info.map_err(Error::delta(name))?;
            commits.push(Commit {
                version,
                timestamp_ms: info.timestamp,
                operation: info.operation.clone(),
                lineage: info
                    .info
                    .get(LINEAGE_KEY)
                    .and_then(|v| serde_json::from_value(v.clone()).ok()),
            });
            version = version.saturating_sub(1);
        }
        Ok(commits)
    }

    /// Compacts small data files of `name`: files under half of
    /// `rows_per_file` rows are rewritten together, in log order, into files
    /// of about `rows_per_file` rows, in one commit that changes no data
    /// (readers and time travel see the same rows). Returns the number of
    /// files removed and added, and the new version (`None` when there was
    /// nothing to compact).
    pub async fn optimize(
        &self,
        name: &str,
        rows_per_file: usize,
        consumed_up_to: Option<u64>,
    ) -> Result<(usize, usize, Option<u64>)> {
        let (files, version) = self.files(name, None).await?;
        // Only files a downstream step has already read may be merged:
        // rows not yet processed must stay in files of their own, or the
        // next incremental run could not tell them apart.
        let consumed: Option<std::collections::HashSet<String>> = match consumed_up_to {
            Some(v) => Some(
                self.files(name, Some(v))
                    .await?
                    .0
                    .into_iter()
                    .map(|f| f.path)
                    .collect(),
            ),
            None => None,
        };
        let small: Vec<DataFile> = files
            .into_iter()
            .filter(|f| f.rows.is_none_or(|r| r < rows_per_file / 2))
            .filter(|f| consumed.as_ref().is_none_or(|c| c.contains(&f.path)))
            .collect();
        if small.len() < 2 {
            return Ok((0, 0, None));
        }
        let df = self.read_files(name, version, &small, None).await?;
        let adds = write_files(name, &self.table_path(name), &df, rows_per_file).await?;
        let added = adds.len();
        let compacted_files: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
        let table = self.open(name, Some(version)).await?;
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        let remove: std::collections::HashSet<&str> =
            small.iter().map(|f| f.path.as_str()).collect();
        let mut actions: Vec<Action> = snapshot
            .log_data()
            .iter()
            .filter(|file| remove.contains(file.path().as_ref()))
            .map(|file| Action::Remove(file.remove_action(false)))
            .collect();
        actions.extend(adds.into_iter().map(|mut add| {
            add.data_change = false;
            Action::Add(add)
        }));
        let lineage = CommitLineage {
            operation: "optimize".into(),
            input_tables: [(name.to_string(), version)].into_iter().collect(),
            compacted_files,
            aurum_version: env!("CARGO_PKG_VERSION").to_string(),
            ..CommitLineage::default()
        };
        let properties = CommitProperties::default().with_metadata([(
            LINEAGE_KEY.to_string(),
            serde_json::to_value(&lineage).unwrap_or(serde_json::Value::Null),
        )]);
        let commit = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(
                Some(snapshot),
                table.log_store(),
                DeltaOperation::Optimize {
                    predicate: None,
                    target_size: rows_per_file as i64,
                },
            )
            .await
            .map_err(Error::delta(name))?;
        Ok((small.len(), added, Some(commit.version())))
    }

    /// Deletes data files of `name` that no version younger than
    /// `retention` needs. A retention under the table's own (seven days by
    /// default) is refused unless `force`. Returns the files deleted (or
    /// that would be, on a dry run).
    pub async fn vacuum(
        &self,
        name: &str,
        retention: std::time::Duration,
        dry_run: bool,
        force: bool,
    ) -> Result<Vec<String>> {
        let table = self.open(name, None).await?;
        let retention = chrono::Duration::from_std(retention)
            .map_err(|e| Error::Internal(format!("retention out of range: {e}")))?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(!force)
            .with_dry_run(dry_run)
            .await
            .map_err(Error::delta(name))?;
        Ok(metrics.files_deleted)
    }

    /// The latest version of table `name`, or `None` if it does not exist.
    pub async fn latest_version(&self, name: &str) -> Result<Option<u64>> {
        let path = self.table_path(name);
        if !path.join("_delta_log").is_dir() {
            return Ok(None);
        }
        let table = self.open(name, None).await?;
        Ok(table.version())
    }

    /// The lineage recorded by the commit that produced `version` of `name`.
    pub async fn lineage(&self, name: &str, version: u64) -> Result<Option<CommitLineage>> {
        let table = self.open(name, Some(version)).await?;
        let mut history = table.history(Some(1));
        while let Some(info) = history.next().await {
            let info = info.map_err(Error::delta(name))?;
            if let Some(value) = info.info.get(LINEAGE_KEY) {
                return Ok(serde_json::from_value(value.clone()).ok());
            }
        }
        Ok(None)
    }

    async fn open(&self, name: &str, version: Option<u64>) -> Result<DeltaTable> {
        let path = self.table_path(name);
        if !path.join("_delta_log").is_dir() {
            return Err(Error::TableMissing(name.to_string()));
        }
        let url = table_url(name, &path)?;
        match version {
            Some(v) => deltalake::open_table_with_version(url, v).await,
            None => deltalake::open_table(url).await,
        }
        .map_err(Error::delta(name))
    }
}

fn table_url(name: &str, path: &Path) -> Result<url::Url> {
    let absolute = std::path::absolute(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    deltalake::ensure_table_uri(absolute.to_string_lossy()).map_err(Error::delta(name))
}

/// The local path of a data file listed relative to the table root (or as
/// an absolute `file://` URL).
/// Sends the record batches of one data file, in `schema` (columns the file
/// lacks are null; types are cast to the table's). Stops quietly when the
/// receiver is gone.
fn stream_file(
    table: &str,
    path: &Path,
    schema: &arrow_schema::SchemaRef,
    sender: &tokio::sync::mpsc::Sender<Result<arrow_array::RecordBatch>>,
) -> Result<()> {
    let arrow_err = |source| Error::Arrow {
        context: format!("reading {} of {table}", path.display()),
        source,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|builder| builder.with_batch_size(64 * 1024).build())
        .map_err(|e| arrow_err(arrow_schema::ArrowError::ParquetError(e.to_string())))?;
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

fn local_file(root: &Path, listed: &str) -> PathBuf {
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
async fn write_files(
    name: &str,
    dir: &Path,
    df: &DataFrame,
    rows_per_file: usize,
) -> Result<Vec<deltalake::kernel::Add>> {
    if df.height() == 0 {
        return Ok(Vec::new());
    }
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
            adds.push(deltalake::kernel::Add {
                path: file_name,
                partition_values: Default::default(),
                size: i64::try_from(size).unwrap_or(i64::MAX),
                modification_time: chrono::Utc::now().timestamp_millis(),
                data_change: true,
                stats: Some(file_statistics(&part).to_string()),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            });
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

fn read_parquet_files(
    name: &str,
    paths: &[PathBuf],
    columns: &[String],
    template: &DataFrame,
) -> Result<DataFrame> {
    let mut frames: Vec<DataFrame> = Vec::with_capacity(paths.len());
    for file in paths {
        let handle = std::fs::File::open(file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        let mut reader = ParquetReader::new(handle);
        let file_schema = reader
            .schema()
            .map_err(Error::polars(format!("reading {}", file.display())))?;
        let present: Vec<String> = columns
            .iter()
            .filter(|c| file_schema.contains(c.as_str()))
            .cloned()
            .collect();
        let mut frame = reader
            .with_columns(Some(present.clone()))
            .finish()
            .map_err(Error::polars(format!("reading {}", file.display())))?;
        // Columns added to the table after this file was written.
        for c in columns.iter().filter(|c| !present.contains(c)) {
            let dtype = template
                .column(c)
                .map(|col| col.dtype().clone())
                .unwrap_or(DataType::Null);
            frame
                .with_column(Column::full_null(c.as_str().into(), frame.height(), &dtype))
                .map_err(Error::polars(format!("aligning {}", file.display())))?;
        }
        let frame = frame
            .select(columns.iter().map(String::as_str))
            .map_err(Error::polars(format!("aligning {}", file.display())))?;
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

/// How a new schema differs from a table's.
#[derive(Debug, Clone, PartialEq)]
enum SchemaDiff {
    Equal,
    /// Only new columns.
    Added(Vec<String>),
    /// Columns removed (or renamed) or retyped.
    Breaking {
        removed: Vec<String>,
        retyped: Vec<String>,
        added: Vec<String>,
    },
}

impl SchemaDiff {
    fn describe(&self) -> String {
        match self {
            SchemaDiff::Equal => "schemas are equal".into(),
            SchemaDiff::Added(added) => format!(
                "adding column(s) {} needs schema evolution to be allowed",
                added.join(", ")
            ),
            SchemaDiff::Breaking {
                removed,
                retyped,
                added,
            } => {
                let mut parts = Vec::new();
                if !removed.is_empty() {
                    parts.push(format!(
                        "removes or renames column(s) {}",
                        removed.join(", ")
                    ));
                }
                if !retyped.is_empty() {
                    parts.push(format!("changes the type of {}", retyped.join(", ")));
                }
                if !added.is_empty() {
                    parts.push(format!("adds {}", added.join(", ")));
                }
                format!(
                    "the new schema {}; readers of the table would break, so this needs \
                     --allow-breaking-schema-change",
                    parts.join(" and ")
                )
            }
        }
    }
}

fn compare_schemas(table: &arrow_schema::Schema, new: &arrow_schema::Schema) -> SchemaDiff {
    let mut removed = Vec::new();
    let mut retyped = Vec::new();
    for field in table.fields() {
        match new.field_with_name(field.name()) {
            Err(_) => removed.push(field.name().clone()),
            Ok(other) if !same_type(field.data_type(), other.data_type()) => {
                retyped.push(format!(
                    "{} ({} → {})",
                    field.name(),
                    field.data_type(),
                    other.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    let added: Vec<String> = new
        .fields()
        .iter()
        .filter(|f| table.field_with_name(f.name()).is_err())
        .map(|f| f.name().clone())
        .collect();
    match (removed.is_empty() && retyped.is_empty(), added.is_empty()) {
        (true, true) => SchemaDiff::Equal,
        (true, false) => SchemaDiff::Added(added),
        _ => SchemaDiff::Breaking {
            removed,
            retyped,
            added,
        },
    }
}

/// Types equal up to string/large-string, list/large-list and view
/// variants (and list element names), which Delta does not tell apart.
fn same_type(a: &arrow_schema::DataType, b: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType as D;
    let element = |t: &D| match t {
        D::List(f) | D::LargeList(f) | D::ListView(f) | D::LargeListView(f) => {
            Some(f.data_type().clone())
        }
        _ => None,
    };
    if let (Some(x), Some(y)) = (element(a), element(b)) {
        return same_type(&x, &y);
    }
    let norm = |t: &D| match t {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => D::Utf8,
        D::Binary | D::LargeBinary | D::BinaryView => D::Binary,
        D::Timestamp(unit, Some(_)) => D::Timestamp(*unit, Some("UTC".into())),
        other => other.clone(),
    };
    norm(a) == norm(b)
}

fn empty_frame(name: &str, schema: &StructType) -> Result<DataFrame> {
    interop::batches_to_frame(&arrow_schema_of(name, schema)?, &[])
}

/// A Delta (kernel) schema as an Arrow schema.
fn arrow_schema_of(name: &str, schema: &StructType) -> Result<arrow_schema::Schema> {
    schema.try_into_arrow().map_err(|source| Error::Arrow {
        context: format!("schema of {name}"),
        source,
    })
}

/// An Arrow schema as a Delta (kernel) schema.
fn kernel_schema(name: &str, schema: &arrow_schema::Schema) -> Result<StructType> {
    schema.try_into_kernel().map_err(|source| Error::Arrow {
        context: format!("schema of {name}"),
        source,
    })
}
