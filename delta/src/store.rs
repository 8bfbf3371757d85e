//! Delta tables under one directory: create, append, overwrite, read, list
//! data files, history and lineage.
//!
//! deltalake owns the transaction log (versions, commits, commit info);
//! polars reads the Parquet data files of a snapshot. Every commit aurum
//! writes records its lineage (see [`crate::CommitLineage`]) in the commit
//! info under the key [`crate::LINEAGE_KEY`], where Spark, Databricks and
//! `deltalake` users can see it.

use std::path::{Path, PathBuf};

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, MetadataExt, Transaction};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::state::DeltaTableState;
use deltalake::{DeltaTable, DeltaTableError};
use futures::StreamExt;
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::files::{TableDir, read_parquet_files, stream_file, write_files};
use crate::interop;
use crate::lineage::{CommitLineage, LINEAGE_KEY};
use crate::location::StorageLocation;
use crate::schema::{SchemaDiff, arrow_schema_of, compare_schemas, empty_frame, kernel_schema};

mod append;

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
    /// The step's place in the table's sequence of commits, for writers
    /// that must not commit the same step twice (see [`Sequence`]).
    pub sequence: Option<Sequence>,
    /// Application transactions moved from a known version to a new one
    /// in the same commit (see [`Advance`]): a stream consumer's offsets.
    pub advances: Vec<Advance>,
}

/// An application transaction (`txn`) of the table moved from `expected`
/// to `to` by a commit, which is refused with [`Error::Conflict`] when the
/// table's version for `app_id` is no longer `expected`. A stream consumer
/// records each partition's next offset this way, in the commit that lands
/// the partition's events: the table then says exactly which events it
/// holds, and a consumer that lost its partition to another one (or
/// restarted after a crash) cannot land the same events twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// The application id, e.g. `aurum:stream:payments:3` (a stream
    /// partition's next offset).
    pub app_id: String,
    /// The version the writer read (`None`: never committed).
    pub expected: Option<i64>,
    /// The version the commit records.
    pub to: i64,
}

impl From<&Sequence> for Advance {
    fn from(sequence: &Sequence) -> Self {
        Advance {
            app_id: sequence.app_id.clone(),
            expected: sequence.planned,
            to: sequence.planned.map_or(1, |v| v + 1),
        }
    }
}

/// Exactly-once commits for a step that plans from a table's committed
/// state (a pipeline stage): the commit carries a Delta application
/// transaction (`txn`) for `app_id` whose version is `planned + 1`, and is
/// refused with [`Error::Conflict`] when the table's `txn` version for
/// `app_id` is no longer `planned` — another writer committed the same
/// step since this one read [`DeltaStore::sequence`]. Two writers racing to
/// the same version conflict in deltalake's commit check (both carry the
/// same `app_id`), so exactly one of them commits. Writers without a
/// sequence (pushes, compaction) are not affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// The step's application id, e.g. `aurum:silver_transactions`.
    pub app_id: String,
    /// The step's transaction version when the writer planned (`None`:
    /// the step never committed).
    pub planned: Option<i64>,
}

impl WriteOptions {
    /// Appends with no schema change, two million rows per file.
    pub fn append() -> Self {
        WriteOptions {
            mode: WriteMode::Append,
            schema_change: SchemaChange::Refuse,
            rows_per_file: DEFAULT_ROWS_PER_FILE,
            remove: Vec::new(),
            sequence: None,
            advances: Vec::new(),
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

/// Delta tables under one root, one sub-directory (or prefix) per table:
/// a local directory, or a prefix in an object store (S3, Azure Blob /
/// ADLS, GCS) reached through object_store.
#[derive(Debug, Clone)]
pub struct DeltaStore {
    root: Root,
    /// Each table's commits read so far, newest first: a commit never
    /// changes once written, so [`DeltaStore::history`] reads only the
    /// versions committed since (on object storage, one GET per commit).
    histories: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<Commit>>>>,
    /// Each table as this store last wrote it: the next write brings it up
    /// to date with the commits made since (by anyone) instead of loading
    /// the whole log again. A writer that commits every few seconds (the
    /// prediction log) otherwise re-read up to a hundred commits each time,
    /// each file on a thread of the blocking pool of its own.
    written: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, DeltaTable>>>,
    /// How [`DeltaStore::append`] commits to each table it appended to:
    /// the version it last committed and the schema it checked.
    appenders:
        std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, append::Appender>>>,
}

#[derive(Debug, Clone)]
enum Root {
    Local(PathBuf),
    Remote(StorageLocation),
}

impl DeltaStore {
    /// A store rooted at the local directory `root` (created on first
    /// write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DeltaStore {
            root: Root::Local(root.into()),
            histories: Default::default(),
            written: Default::default(),
            appenders: Default::default(),
        }
    }

    /// A store rooted at `location`: a local directory or an object-store
    /// prefix. Commits to object storage use deltalake's default log
    /// store: each commit's log entry is written with a conditional put
    /// (`If-None-Match: *`), so of several writers of one version exactly
    /// one succeeds and the others retry or conflict — no lock service.
    pub fn at(location: StorageLocation) -> Self {
        if location.is_local()
            && let Ok(path) = location.url().to_file_path()
        {
            return DeltaStore::new(path);
        }
        crate::location::register_log_stores();
        DeltaStore {
            root: Root::Remote(location),
            histories: Default::default(),
            written: Default::default(),
            appenders: Default::default(),
        }
    }

    /// Where table `name` is, as logs and errors show it (without
    /// credentials).
    pub fn table_location(&self, name: &str) -> String {
        match &self.root {
            Root::Local(root) => root.join(name).display().to_string(),
            Root::Remote(location) => format!("{location}{name}/"),
        }
    }

    /// Where table `name`'s files are.
    pub(crate) fn table_dir(&self, name: &str) -> TableDir {
        match &self.root {
            Root::Local(root) => TableDir::Local(root.join(name)),
            Root::Remote(location) => TableDir::Remote {
                store: location.store(),
                prefix: location.object_path().join(name),
                shown: self.table_location(name),
            },
        }
    }

    /// Whether table `name` exists (has a transaction log).
    pub async fn exists(&self, name: &str) -> Result<bool> {
        match &self.root {
            Root::Local(root) => Ok(root.join(name).join("_delta_log").is_dir()),
            Root::Remote(location) => {
                let log = location.object_path().join(name).join("_delta_log");
                let store = location.store();
                let mut listing = store.list(Some(&log));
                match listing.next().await {
                    None => Ok(false),
                    Some(Ok(_)) => Ok(true),
                    Some(Err(e)) => Err(Error::Storage {
                        location: self.table_location(name),
                        message: e.to_string(),
                    }),
                }
            }
        }
    }

    /// The names of the tables in the store, sorted.
    pub async fn tables(&self) -> Result<Vec<String>> {
        let root = match &self.root {
            Root::Local(root) => root,
            Root::Remote(location) => {
                let listed = location
                    .store()
                    .list_with_delimiter(Some(&location.object_path()))
                    .await
                    .map_err(|e| Error::Storage {
                        location: location.to_string(),
                        message: e.to_string(),
                    })?;
                let mut names = Vec::new();
                for prefix in listed.common_prefixes {
                    if let Some(name) = prefix.filename()
                        && self.exists(name).await?
                    {
                        names.push(name.to_string());
                    }
                }
                names.sort();
                return Ok(names);
            }
        };
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(source) => {
                return Err(Error::Io {
                    path: root.clone(),
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
        let dir = self.table_dir(name);
        if let TableDir::Local(path) = &dir {
            std::fs::create_dir_all(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
        let (schema, _) = interop::frame_to_batches(&df.head(Some(0)))?;
        let url = self.table_url(name)?;
        let mut lineage = lineage.clone();
        if lineage.aurum_version.is_empty() {
            lineage.aurum_version = env!("CARGO_PKG_VERSION").to_string();
        }
        let lineage_json = serde_json::to_value(&lineage).unwrap_or(serde_json::Value::Null);
        let mut properties =
            CommitProperties::default().with_metadata([(LINEAGE_KEY.to_string(), lineage_json)]);
        // Every transaction the commit moves: the step's, then the stream
        // offsets.
        let advances: Vec<Advance> = options
            .sequence
            .iter()
            .map(Advance::from)
            .chain(options.advances.iter().cloned())
            .collect();
        for advance in &advances {
            properties = properties
                .with_application_transaction(Transaction::new(&advance.app_id, advance.to));
        }
        let adds = write_files(name, &dir, df, options.rows_per_file).await?;

        // One look at the log: the table to commit to, or none yet.
        let Some(table) = self.to_write(name).await? else {
            if let Some(advance) = advances.iter().find(|a| a.expected.is_some()) {
                return Err(conflict(name, advance, None));
            }
            // deltalake turns a create that finds version 0 taken into an
            // append on top of it, unchecked; a sequenced step must lose
            // that race instead (it is then refused as a conflict below).
            if !advances.is_empty() {
                properties = properties.with_max_retries(0);
            }
            let kernel_schema = kernel_schema(name, &schema)?;
            let mut create = CreateBuilder::new();
            if let Root::Remote(location) = &self.root {
                create = create.with_log_store(
                    deltalake::logstore::logstore_with(
                        location.store(),
                        &url,
                        deltalake::logstore::StorageConfig::default(),
                    )
                    .map_err(Error::delta(name))?,
                );
            }
            let created = create
                .with_location(url.as_str())
                .with_table_name(name)
                .with_columns(kernel_schema.fields().cloned())
                .with_actions(adds.into_iter().map(Action::Add))
                .with_commit_properties(properties)
                .await;
            let table = match created {
                Ok(table) => {
                    self.written_to(name, table.clone());
                    table
                }
                // Another writer created the table first.
                Err(e) => {
                    return Err(match advances.first() {
                        Some(advance) if self.exists(name).await? => {
                            conflict(name, advance, Some(format!("created the table ({e})")))
                        }
                        _ => Error::delta(name)(e),
                    });
                }
            };
            return table
                .version()
                .ok_or_else(|| Error::TableMissing(name.to_string()));
        };
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        for advance in &advances {
            let now = snapshot
                .transaction_version(table.log_store().as_ref(), &advance.app_id)
                .await
                .map_err(Error::delta(name))?;
            if now != advance.expected {
                return Err(conflict(
                    name,
                    advance,
                    Some(format!("moved it to {now:?}")),
                ));
            }
        }
        let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        actions.extend(schema_evolution(
            name,
            snapshot,
            &schema,
            options.schema_change,
        )?);
        let (removed, save_mode) = removals(snapshot, options);
        actions.extend(removed);
        let operation = DeltaOperation::Write {
            mode: save_mode,
            partition_by: None,
            predicate: None,
        };
        let commit = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .map_err(|e| match (advances.first(), &e) {
                (
                    Some(advance),
                    DeltaTableError::Transaction {
                        source: TransactionError::CommitConflict(_),
                    }
                    | DeltaTableError::VersionAlreadyExists(_),
                ) => conflict(name, advance, Some(e.to_string())),
                _ => Error::delta(name)(e),
            })?;
        // The state before this commit: the next write reads this commit
        // (and any other made since) on top of it. Not after a commit that
        // wrote a checkpoint: a state brought up to date across a
        // checkpoint made every later write replay that checkpoint (the
        // soak's memory climbed by hundreds of MiB), while a state loaded
        // from it does not (BENCHMARKS.md, the soak).
        use deltalake::table::config::TablePropertiesExt as _;
        let interval = snapshot.table_config().checkpoint_interval().get();
        if !(commit.version() + 1).is_multiple_of(interval) {
            self.written_to(name, table);
        }
        Ok(commit.version())
    }

    /// Table `name` to commit to, as it stands now, or `None` when it does
    /// not exist yet: the state this store last wrote brought up to date,
    /// or (the first time, or when that fails) loaded from the log.
    async fn to_write(&self, name: &str) -> Result<Option<DeltaTable>> {
        let written = self
            .written
            .lock()
            .ok()
            .and_then(|mut tables| tables.remove(name));
        if let Some(mut table) = written {
            match table.update_incremental(None).await {
                Ok(()) => return Ok(Some(table)),
                Err(e) => {
                    tracing::debug!(table = name, error = %e, "reloading the table's log");
                }
            }
        }
        self.open_if_exists(name, None).await
    }

    fn written_to(&self, name: &str, table: DeltaTable) {
        if let Ok(mut tables) = self.written.lock() {
            tables.insert(name.to_string(), table);
        }
    }

    /// The version of step `app_id`'s last commit to table `name` (its
    /// Delta application transaction), `None` when it never committed:
    /// read it before planning a step and pass it as
    /// [`Sequence::planned`].
    pub async fn sequence(&self, name: &str, app_id: &str) -> Result<Option<i64>> {
        let Some(table) = self.open_if_exists(name, None).await? else {
            return Ok(None);
        };
        table
            .snapshot()
            .map_err(Error::delta(name))?
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(Error::delta(name))
    }

    /// The versions of several application transactions of table `name`
    /// at its latest version, read from one snapshot (`None` for an id that
    /// never committed, or every id when the table does not exist).
    pub async fn transaction_versions(
        &self,
        name: &str,
        app_ids: &[String],
    ) -> Result<Vec<Option<i64>>> {
        self.transaction_versions_at(name, app_ids, None).await
    }

    /// [`DeltaStore::transaction_versions`] as of table version `version`
    /// (latest when `None`).
    pub async fn transaction_versions_at(
        &self,
        name: &str,
        app_ids: &[String],
        version: Option<u64>,
    ) -> Result<Vec<Option<i64>>> {
        let Some(table) = self.open_if_exists(name, version).await? else {
            return Ok(vec![None; app_ids.len()]);
        };
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        let mut versions = Vec::with_capacity(app_ids.len());
        for app_id in app_ids {
            versions.push(
                snapshot
                    .transaction_version(table.log_store().as_ref(), app_id)
                    .await
                    .map_err(Error::delta(name))?,
            );
        }
        Ok(versions)
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
                return Err(Error::UnknownColumn {
                    table: name.to_string(),
                    column: c.clone(),
                });
            }
        }
        let listed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let sources = self.table_dir(name).sources(&listed).await?;
        let names: Vec<String> = wanted.clone();
        let template_for_read = template.clone();
        let table_name = name.to_string();
        // Parquet decoding is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            read_parquet_files(&table_name, sources, &names, &template_for_read)
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
        let listed: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let dir = self.table_dir(name);
        let handle = tokio::runtime::Handle::current();
        let (sender, receiver) = tokio::sync::mpsc::channel(buffer.max(1));
        let table_schema = schema.clone();
        let table = name.to_string();
        let failures = sender.clone();
        let reading = tokio::task::spawn_blocking(move || {
            for file in listed {
                if sender.is_closed() {
                    return;
                }
                // One file at a time: a remote file is fetched only when
                // the one before it has been sent.
                let source = match handle.block_on(dir.sources(std::slice::from_ref(&file))) {
                    Ok(mut sources) => match sources.pop() {
                        Some(source) => source,
                        None => continue,
                    },
                    Err(e) => {
                        let _ = sender.blocking_send(Err(e));
                        return;
                    }
                };
                if let Err(e) = stream_file(&table, source, &table_schema, &sender) {
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
        let known: Vec<Commit> = self
            .histories
            .lock()
            .map(|cache| cache.get(name).cloned().unwrap_or_default())
            .unwrap_or_default();
        // Only the commits after the newest one read before; all of them
        // when the table went back (re-created) or nothing was read yet.
        let newer = match known.first() {
            Some(newest) if newest.version <= latest => Some((latest - newest.version) as usize),
            _ => None,
        };
        if newer == Some(0) {
            return Ok(known);
        }
        // The log lists commits newest first, one per version.
        let mut history = table.history(newer);
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
        if newer.is_some() {
            commits.extend(known);
        }
        if let Ok(mut cache) = self.histories.lock() {
            cache.insert(name.to_string(), commits.clone());
        }
        Ok(commits)
    }

    /// The latest version of table `name`, or `None` if it does not exist.
    pub async fn latest_version(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .open_if_exists(name, None)
            .await?
            .and_then(|table| table.version()))
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

    pub(crate) async fn open(&self, name: &str, version: Option<u64>) -> Result<DeltaTable> {
        self.open_if_exists(name, version)
            .await?
            .ok_or_else(|| Error::TableMissing(name.to_string()))
    }

    /// Table `name` at `version` (latest when `None`), `None` when it does
    /// not exist. On object storage the load itself tells (one listing of
    /// the log, not two).
    async fn open_if_exists(&self, name: &str, version: Option<u64>) -> Result<Option<DeltaTable>> {
        let url = self.table_url(name)?;
        match &self.root {
            Root::Local(root) => {
                if !root.join(name).join("_delta_log").is_dir() {
                    return Ok(None);
                }
                match version {
                    Some(v) => deltalake::open_table_with_version(url, v).await,
                    None => deltalake::open_table(url).await,
                }
                .map(Some)
                .or_else(|e| match e {
                    // A log directory whose first commit is not written yet
                    // (another writer is creating the table).
                    DeltaTableError::NotATable(_) => Ok(None),
                    e => Err(Error::delta(name)(e)),
                })
            }
            Root::Remote(location) => {
                let mut builder = deltalake::DeltaTableBuilder::from_url(url.clone())
                    .map_err(Error::delta(name))?
                    .with_storage_backend(location.store(), url);
                if let Some(v) = version {
                    builder = builder.with_version(v);
                }
                match builder.load().await {
                    Ok(table) => Ok(Some(table)),
                    Err(DeltaTableError::NotATable(_)) => Ok(None),
                    // Named by its URI: a wrong bucket or endpoint shows.
                    Err(e) => Err(Error::delta(self.table_location(name))(e)),
                }
            }
        }
    }

    /// The URL of table `name` (a directory: ends with `/`).
    fn table_url(&self, name: &str) -> Result<url::Url> {
        match &self.root {
            Root::Local(root) => table_url(name, &root.join(name)),
            Root::Remote(location) => {
                location
                    .url()
                    .join(&format!("{name}/"))
                    .map_err(|e| Error::Storage {
                        location: location.to_string(),
                        message: format!("table name {name:?} does not make a URL: {e}"),
                    })
            }
        }
    }
}

/// The error of a write that lost the race for `sequence`'s step.
fn conflict(name: &str, advance: &Advance, what: Option<String>) -> Error {
    let other = what.map(|w| format!(": {w}")).unwrap_or_default();
    Error::Conflict {
        table: name.to_string(),
        message: format!(
            "another writer committed step {} after this one planned from {:?}{other}",
            advance.app_id, advance.expected
        ),
    }
}

fn table_url(name: &str, path: &Path) -> Result<url::Url> {
    let absolute = std::path::absolute(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    deltalake::ensure_table_uri(absolute.to_string_lossy()).map_err(Error::delta(name))
}

/// The action that evolves table `name`'s schema to the frame's `schema`
/// (a Metadata action), none when they are equal; a difference `change`
/// does not allow is refused.
fn schema_evolution(
    name: &str,
    snapshot: &DeltaTableState,
    schema: &arrow_schema::Schema,
    change: SchemaChange,
) -> Result<Option<Action>> {
    let table_schema = arrow_schema_of(name, &snapshot.schema())?;
    match compare_schemas(&table_schema, schema) {
        SchemaDiff::Equal => Ok(None),
        diff => {
            let allowed = matches!(
                (&diff, change),
                (_, SchemaChange::Any) | (SchemaDiff::Added(_), SchemaChange::AddColumns)
            );
            if !allowed {
                return Err(Error::SchemaChange {
                    table: name.to_string(),
                    message: diff.describe(),
                });
            }
            let kernel_schema = kernel_schema(name, schema)?;
            let metadata = snapshot
                .metadata()
                .clone()
                .with_schema(&kernel_schema)
                .map_err(|source| Error::delta(name)(DeltaTableError::Kernel { source }))?;
            Ok(Some(Action::Metadata(metadata)))
        }
    }
}

/// The files a write removes from `snapshot` and the save mode it records:
/// an overwrite removes every file, an append those `options.remove` names
/// (a copy-on-write rewrite).
fn removals(snapshot: &DeltaTableState, options: &WriteOptions) -> (Vec<Action>, SaveMode) {
    match options.mode {
        WriteMode::Append => {
            let mut removed = Vec::new();
            if !options.remove.is_empty() {
                let remove: std::collections::HashSet<&str> =
                    options.remove.iter().map(String::as_str).collect();
                removed.extend(
                    snapshot
                        .log_data()
                        .iter()
                        .filter(|file| remove.contains(file.path().as_ref()))
                        .map(|file| Action::Remove(file.remove_action(true))),
                );
            }
            (removed, SaveMode::Append)
        }
        WriteMode::Overwrite => (
            snapshot
                .log_data()
                .iter()
                .map(|file| Action::Remove(file.remove_action(true)))
                .collect(),
            SaveMode::Overwrite,
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn frame(ids: &[i64]) -> DataFrame {
        DataFrame::new_infer_height(vec![Column::new("id".into(), ids.to_vec())]).unwrap()
    }

    /// The `id` column's values, ascending.
    pub(super) fn sorted_ids(rows: &DataFrame) -> Vec<i64> {
        let mut ids: Vec<i64> = rows
            .column("id")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        ids.sort_unstable();
        ids
    }

    fn sequenced(planned: Option<i64>) -> WriteOptions {
        WriteOptions {
            sequence: Some(Sequence {
                app_id: "aurum:t".into(),
                planned,
            }),
            ..WriteOptions::append()
        }
    }

    #[tokio::test]
    async fn a_step_commits_once_per_planned_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeltaStore::new(dir.path());
        let lineage = CommitLineage::default();
        // Two writers plan the table's creation; the second loses.
        assert_eq!(store.sequence("t", "aurum:t").await.unwrap(), None);
        store
            .write("t", &frame(&[1]), &sequenced(None), &lineage)
            .await
            .unwrap();
        let lost = store
            .write("t", &frame(&[1]), &sequenced(None), &lineage)
            .await
            .expect_err("the same step planned from the same state commits once");
        assert!(lost.is_conflict(), "{lost}");
        assert!(
            lost.to_string()
                .contains("nothing of this write was committed")
        );
        // The next step plans from what is committed now, and commits.
        let planned = store.sequence("t", "aurum:t").await.unwrap();
        assert_eq!(planned, Some(1));
        store
            .write("t", &frame(&[2]), &sequenced(planned), &lineage)
            .await
            .unwrap();
        let again = store
            .write("t", &frame(&[2]), &sequenced(planned), &lineage)
            .await
            .expect_err("a replay of the same step is refused");
        assert!(again.is_conflict());
        // Writers without a sequence (pushes) are not affected.
        store
            .write("t", &frame(&[3]), &WriteOptions::append(), &lineage)
            .await
            .unwrap();
        let (rows, _) = store.read("t", None).await.unwrap();
        let ids = sorted_ids(&rows);
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(store.sequence("t", "aurum:t").await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn offsets_advance_once_from_the_version_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeltaStore::new(dir.path());
        let lineage = CommitLineage::default();
        let ids = ["p0".to_string(), "p1".to_string()];
        assert_eq!(
            store.transaction_versions("t", &ids).await.unwrap(),
            vec![None, None]
        );
        let advance = |app_id: &str, expected, to| Advance {
            app_id: app_id.into(),
            expected,
            to,
        };
        let first = WriteOptions {
            advances: vec![advance("p0", None, 10), advance("p1", None, 4)],
            ..WriteOptions::append()
        };
        store
            .write("t", &frame(&[1]), &first, &lineage)
            .await
            .unwrap();
        // A consumer that read the same positions lands nothing.
        let lost = store
            .write("t", &frame(&[1]), &first, &lineage)
            .await
            .expect_err("the same offsets land once");
        assert!(lost.is_conflict(), "{lost}");
        // One stale partition refuses the whole commit.
        let stale = WriteOptions {
            advances: vec![advance("p0", Some(10), 12), advance("p1", None, 6)],
            ..WriteOptions::append()
        };
        let lost = store
            .write("t", &frame(&[2]), &stale, &lineage)
            .await
            .expect_err("a partition another consumer moved refuses the commit");
        assert!(lost.to_string().contains("p1"), "{lost}");
        let next = WriteOptions {
            advances: vec![advance("p0", Some(10), 12)],
            ..WriteOptions::append()
        };
        store
            .write("t", &frame(&[2]), &next, &lineage)
            .await
            .unwrap();
        assert_eq!(
            store.transaction_versions("t", &ids).await.unwrap(),
            vec![Some(12), Some(4)]
        );
        let (rows, _) = store.read("t", None).await.unwrap();
        assert_eq!(rows.height(), 2);
    }

    #[tokio::test]
    async fn a_writer_sees_what_others_committed_since_its_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (DeltaStore::new(dir.path()), DeltaStore::new(dir.path()));
        let lineage = CommitLineage::default();
        let append = WriteOptions::append();
        assert_eq!(
            a.write("t", &frame(&[1]), &sequenced(None), &lineage)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            b.write("t", &frame(&[2]), &append, &lineage).await.unwrap(),
            1
        );
        let planned = b.sequence("t", "aurum:t").await.unwrap();
        assert_eq!(planned, Some(1));
        b.write("t", &frame(&[3]), &sequenced(planned), &lineage)
            .await
            .unwrap();
        // `a` last wrote version 0; the step `b` committed since is seen.
        let lost = a
            .write("t", &frame(&[3]), &sequenced(planned), &lineage)
            .await
            .expect_err("the step was committed by the other writer");
        assert!(lost.is_conflict(), "{lost}");
        assert_eq!(
            a.write("t", &frame(&[4]), &append, &lineage).await.unwrap(),
            3
        );
        let (rows, _) = a.read("t", None).await.unwrap();
        let ids = sorted_ids(&rows);
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }
}
