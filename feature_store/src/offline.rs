//! The offline store: Delta tables under the project's data directory.
//!
//! deltalake owns the transaction log (versions, commits, commit info);
//! polars reads the Parquet data files of a snapshot. Every commit aurum
//! writes records its lineage — the versions of the tables it read and a
//! hash of the definition that produced it — in the commit info under the
//! key `aurum`, where Spark, Databricks and `deltalake` users can see it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
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
    /// The operation, e.g. `silver` or `gold`.
    pub operation: String,
    /// Input Delta tables and the versions read.
    pub input_tables: BTreeMap<String, u64>,
    /// Input files (for bronze data) and their sha256.
    pub input_files: BTreeMap<String, String>,
    /// A hash of the definition (view, rules) that produced the data.
    pub definition_hash: String,
}

/// How a write treats existing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add rows to the table.
    Append,
    /// Replace the table's rows (older versions stay readable).
    Overwrite,
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

    /// The directory of table `name`.
    pub fn table_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Writes `df` to table `name` in one commit carrying `lineage`, creating
    /// the table if needed, and returns the new table version.
    ///
    /// Data files are written first and committed in one Delta transaction,
    /// so readers see all of the write or none of it. An overwrite removes
    /// the previous files in the same commit (they stay readable by time
    /// travel until vacuumed).
    pub async fn write(
        &self,
        name: &str,
        df: &DataFrame,
        mode: WriteMode,
        lineage: &CommitLineage,
    ) -> Result<u64> {
        let path = self.table_path(name);
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let (schema, batches) = interop::frame_to_batches(df)?;
        let url = table_url(name, &path)?;
        let lineage_json = serde_json::to_value(lineage).unwrap_or(serde_json::Value::Null);
        let properties =
            CommitProperties::default().with_metadata([(LINEAGE_KEY.to_string(), lineage_json)]);

        if !path.join("_delta_log").is_dir() {
            let mut writer = RecordBatchWriter::try_new(url.as_str(), schema.clone(), None, None)
                .map_err(Error::delta(name))?;
            for batch in batches {
                writer.write(batch).await.map_err(Error::delta(name))?;
            }
            let adds = writer.flush().await.map_err(Error::delta(name))?;
            let kernel_schema: StructType =
                schema
                    .as_ref()
                    .try_into_kernel()
                    .map_err(|source| Error::Arrow {
                        context: format!("schema of {name}"),
                        source,
                    })?;
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
        let mut writer = RecordBatchWriter::for_table(&table).map_err(Error::delta(name))?;
        for batch in batches {
            writer.write(batch).await.map_err(Error::delta(name))?;
        }
        let mut actions: Vec<Action> = writer
            .flush()
            .await
            .map_err(Error::delta(name))?
            .into_iter()
            .map(Action::Add)
            .collect();
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        let save_mode = match mode {
            WriteMode::Append => SaveMode::Append,
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

    /// The latest version of table `name`, or `None` if it does not exist.
    pub async fn latest_version(&self, name: &str) -> Result<Option<u64>> {
        let path = self.table_path(name);
        if !path.join("_delta_log").is_dir() {
            return Ok(None);
        }
        let table = self.open(name, None).await?;
        Ok(table.version())
    }

    /// Reads table `name` at `version` (latest when `None`) into one frame,
    /// and returns the version read.
    pub async fn read(&self, name: &str, version: Option<u64>) -> Result<(DataFrame, u64)> {
        let table = self.open(name, version).await?;
        let read_version = table
            .version()
            .ok_or_else(|| Error::TableMissing(name.to_string()))?;
        let files: Vec<PathBuf> = table
            .get_file_uris()
            .map_err(Error::delta(name))?
            .map(|uri| uri_to_path(&uri))
            .collect::<Result<_>>()?;
        let schema = table.snapshot().map_err(Error::delta(name))?.schema();
        let mut frames = Vec::with_capacity(files.len());
        for file in &files {
            let handle = std::fs::File::open(file).map_err(|source| Error::Io {
                path: file.clone(),
                source,
            })?;
            let frame = ParquetReader::new(handle)
                .finish()
                .map_err(Error::polars(format!("reading {}", file.display())))?;
            frames.push(frame);
        }
        let df = match frames.len() {
            0 => empty_frame(name, &schema)?,
            _ => {
                let mut iter = frames.into_iter();
                let mut first = iter.next().unwrap_or_default();
                for frame in iter {
                    first
                        .vstack_mut(&frame)
                        .map_err(Error::polars(format!("stacking files of {name}")))?;
                }
                first.rechunk_mut();
                first
            }
        };
        Ok((df, read_version))
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

fn uri_to_path(uri: &str) -> Result<PathBuf> {
    // deltalake reports local files as plain paths, other stores as URLs.
    if let Ok(url) = url::Url::parse(uri)
        && url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        return Ok(path);
    }
    let path = PathBuf::from(uri);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(Error::Io {
            path,
            source: std::io::Error::other("only local Delta tables are supported so far"),
        })
    }
}

fn empty_frame(name: &str, schema: &deltalake::kernel::StructType) -> Result<DataFrame> {
    let arrow_schema: arrow_schema::Schema =
        schema.try_into_arrow().map_err(|source| Error::Arrow {
            context: format!("schema of {name}"),
            source,
        })?;
    interop::batches_to_frame(&arrow_schema, &[])
}
