//! Blind appends: a writer that only adds rows (the prediction log, every
//! few seconds) commits without loading the table's state.
//!
//! A Delta commit that only adds files and read nothing of the table
//! conflicts with another writer's commit only when that commit changed the
//! table's metadata or protocol. So the writer keeps the version it last
//! committed and the schema it checked, writes its commit as the next
//! version with a conditional put, and when that version is taken reads the
//! winner's commit (one small JSON file) and tries the one after. Loading
//! the table's state for every commit — the checkpoint and up to a hundred
//! commits, a file list that grows with every commit — made the prediction
//! log's writer the server's largest and least steady user of memory
//! (BENCHMARKS.md, the soak). The state is loaded once, then once per
//! checkpoint, which this writer writes as deltalake's writers do.

use std::path::PathBuf;

use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitData, PROTOCOL, TransactionError};
use deltalake::logstore::{CommitOrBytes, LogStoreRef};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt as _;
use polars::prelude::DataFrame;

use super::{DEFAULT_ROWS_PER_FILE, DeltaStore, WriteOptions};
use crate::error::{Error, Result};
use crate::files::write_files;
use crate::interop;
use crate::lineage::{CommitLineage, LINEAGE_KEY};
use crate::schema::{SchemaDiff, arrow_schema_of, compare_schemas};

/// Commits of other writers read, one by one, past the version this writer
/// last committed before the table's state is loaded again instead.
const MAX_COMMITS_WALKED: usize = 32;

/// How a store appends to one table.
#[derive(Clone)]
pub(super) enum Appender {
    /// Commits go straight to the next free version.
    Blind(BlindAppender),
    /// The table's protocol or log store needs what only a loaded state
    /// gives (table features, a commit protocol other than conditional
    /// puts): appends take [`DeltaStore::write`]'s path.
    Loaded,
}

/// What a blind append needs to know of its table.
#[derive(Clone)]
pub(super) struct BlindAppender {
    log_store: LogStoreRef,
    /// The version this writer last knows committed (its own or one it
    /// walked past).
    version: u64,
    /// The table's schema at that version.
    schema: arrow_schema::Schema,
    /// Checkpoint after every this many versions (`delta.checkpointInterval`).
    checkpoint_interval: u64,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Appender::Blind(blind) => f
                .debug_struct("Blind")
                .field("version", &blind.version)
                .field("checkpoint_interval", &blind.checkpoint_interval)
                .finish_non_exhaustive(),
            Appender::Loaded => f.write_str("Loaded"),
        }
    }
}

/// What the commit at a version taken by another writer means for this
/// one.
enum Winner {
    /// Only files added or removed, or transactions moved: try the next
    /// version.
    Data,
    /// The metadata or protocol changed: check the schema again.
    Metadata,
}

impl DeltaStore {
    /// Appends `df` to table `name` without loading the table's state (see
    /// the module docs), creating the table on the first write, and returns
    /// the new version. The frame's schema must equal the table's
    /// ([`Error::SchemaChange`] otherwise). Like [`DeltaStore::write`], the
    /// data files are written first and committed in one commit, which
    /// records `lineage`.
    pub async fn append(&self, name: &str, df: &DataFrame, lineage: &CommitLineage) -> Result<u64> {
        let kept = self
            .appenders
            .lock()
            .ok()
            .and_then(|mut appenders| appenders.remove(name));
        let appender = match kept {
            Some(appender) => appender,
            None => match self.open_if_exists(name, None).await? {
                Some(table) => appender_of(name, &table)?,
                // The first write creates the table; the next one loads it.
                None => return self.write(name, df, &WriteOptions::append(), lineage).await,
            },
        };
        let blind = match appender {
            Appender::Blind(blind) => blind,
            Appender::Loaded => {
                self.keep_appender(name, Appender::Loaded);
                return self.write(name, df, &WriteOptions::append(), lineage).await;
            }
        };
        let (schema, _) = interop::frame_to_batches(&df.head(Some(0)))?;
        match self.append_blind(name, blind, df, &schema, lineage).await {
            Ok((version, appender)) => {
                self.keep_appender(name, appender);
                Ok(version)
            }
            // The kept state is dropped: the next append loads the table.
            Err(e) => Err(e),
        }
    }

    async fn append_blind(
        &self,
        name: &str,
        mut blind: BlindAppender,
        df: &DataFrame,
        schema: &arrow_schema::Schema,
        lineage: &CommitLineage,
    ) -> Result<(u64, Appender)> {
        same_schema(name, &blind.schema, schema)?;
        let adds = write_files(name, &self.table_dir(name), df, DEFAULT_ROWS_PER_FILE).await?;
        let bytes = commit_bytes(name, adds, lineage)?;
        let mut walked = 0;
        loop {
            let version = blind.version + 1;
            let written = blind
                .log_store
                .write_commit_entry(
                    version,
                    CommitOrBytes::LogBytes(bytes.clone()),
                    uuid::Uuid::new_v4(),
                )
                .await;
            match written {
                Ok(()) => {
                    blind.version = version;
                    let appender = self.after_commit(name, blind).await;
                    return Ok((version, appender));
                }
                Err(TransactionError::VersionAlreadyExists(_)) => {}
                Err(e) => return Err(Error::delta(name)(e.into())),
            }
            // Another writer took the version.
            let winner = if walked < MAX_COMMITS_WALKED {
                walked += 1;
                winner_of(name, &blind.log_store, version).await?
            } else {
                Winner::Metadata
            };
            match winner {
                Winner::Data => blind.version = version,
                Winner::Metadata => {
                    walked = 0;
                    let table = self.open(name, None).await?;
                    blind = match appender_of(name, &table)? {
                        Appender::Blind(blind) => blind,
                        // The table now needs a loaded state to write: the
                        // files just written are left for vacuum and the
                        // rows go through the loaded path.
                        Appender::Loaded => {
                            let version = self
                                .write(name, df, &WriteOptions::append(), lineage)
                                .await?;
                            return Ok((version, Appender::Loaded));
                        }
                    };
                    same_schema(name, &blind.schema, schema)?;
                }
            }
        }
    }

    /// Writes the checkpoint that is due at `blind.version`, as deltalake's
    /// own commits do, and takes the table's properties and schema from
    /// the state loaded for it. A failed checkpoint is logged, not
    /// returned: the commit landed, and readers only replay more commits.
    async fn after_commit(&self, name: &str, blind: BlindAppender) -> Appender {
        let version = blind.version;
        if !(version + 1).is_multiple_of(blind.checkpoint_interval) {
            return Appender::Blind(blind);
        }
        let written = match &self.root {
            super::Root::Local(root) => self.checkpoint_apart(root.join(name), name, version).await,
            // An object store's client (its connection pool, its
            // credentials) is shared by every clone of the store: its
            // connections must not be opened on a runtime that ends.
            super::Root::Remote(_) => self.checkpoint(name, version).await,
        };
        match written {
            // The table's schema and properties as loaded for the
            // checkpoint; the log store this writer already had (the same
            // table's).
            Ok(Appender::Blind(loaded)) => Appender::Blind(BlindAppender {
                log_store: blind.log_store,
                ..loaded
            }),
            Ok(Appender::Loaded) => Appender::Loaded,
            Err(e) => {
                tracing::warn!(table = name, version, error = %e, "a checkpoint after an append failed");
                Appender::Blind(blind)
            }
        }
    }

    /// Writes the checkpoint of local table `name` (at `dir`) at `version`
    /// on a thread and a runtime of its own, both ended once it is
    /// written. Loading the state for a checkpoint decodes every commit
    /// since the last one at once (120–170 MiB for a second or two, for a
    /// hundred commits of the prediction log); on the writer's long-lived
    /// threads the allocator kept ~45–60 MiB of those pages for good
    /// (BENCHMARKS.md, issue 21's soak). Threads that end hand their pages
    /// back.
    async fn checkpoint_apart(&self, dir: PathBuf, name: &str, version: u64) -> Result<Appender> {
        let store = self.clone();
        let table = name.to_string();
        let shown = dir.clone();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let started = std::thread::Builder::new()
            .name("aurum-checkpoint".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .max_blocking_threads(4)
                    .thread_name("aurum-checkpoint-io")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(source) => {
                        let _ = sender.send(Err(Error::Io { path: dir, source }));
                        return;
                    }
                };
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(store.checkpoint(&table, version))
                }))
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    Err(Error::Internal(format!(
                        "the checkpoint of {table} at version {version} panicked: {message}"
                    )))
                });
                // Answer first: dropping the runtime waits for its blocking
                // threads to end.
                let _ = sender.send(written);
                drop(runtime);
            });
        if let Err(source) = started {
            return Err(Error::Io {
                path: shown,
                source,
            });
        }
        receiver.await.map_err(|_| {
            Error::Internal(format!(
                "the checkpoint of {name} at version {version} ended without an answer"
            ))
        })?
    }

    /// Writes the checkpoint of `name` at `version` (and cleans up expired
    /// log files when the table asks for it); how to append next.
    async fn checkpoint(&self, name: &str, version: u64) -> Result<Appender> {
        let table = self.open(name, Some(version)).await?;
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(Error::delta(name))?;
        let snapshot = table.snapshot().map_err(Error::delta(name))?;
        if snapshot.table_config().enable_expired_log_cleanup() {
            deltalake::checkpoints::cleanup_metadata(&table, None)
                .await
                .map_err(Error::delta(name))?;
        }
        appender_of(name, &table)
    }

    fn keep_appender(&self, name: &str, appender: Appender) {
        if let Ok(mut appenders) = self.appenders.lock() {
            appenders.insert(name.to_string(), appender);
        }
    }
}

/// How to append to `table`, from its loaded state.
fn appender_of(name: &str, table: &DeltaTable) -> Result<Appender> {
    let snapshot = table.snapshot().map_err(Error::delta(name))?;
    let log_store = table.log_store();
    // Only the default log store commits by conditional put of the commit's
    // bytes; table features (writer version 7: in-commit timestamps, row
    // tracking, …) ask more of each commit than adding files.
    let blind = log_store.name() == "DefaultLogStore"
        && snapshot.protocol().min_writer_version() < 7
        && PROTOCOL.can_write_to(snapshot).is_ok();
    if !blind {
        return Ok(Appender::Loaded);
    }
    Ok(Appender::Blind(BlindAppender {
        log_store,
        version: snapshot.version(),
        schema: arrow_schema_of(name, &snapshot.schema())?,
        checkpoint_interval: snapshot.table_config().checkpoint_interval().get(),
    }))
}

fn same_schema(
    name: &str,
    table: &arrow_schema::Schema,
    frame: &arrow_schema::Schema,
) -> Result<()> {
    match compare_schemas(table, frame) {
        SchemaDiff::Equal => Ok(()),
        diff => Err(Error::SchemaChange {
            table: name.to_string(),
            message: diff.describe(),
        }),
    }
}

/// The commit's log entry: its commit info (with the lineage), then the
/// added files.
fn commit_bytes(
    name: &str,
    adds: Vec<deltalake::kernel::Add>,
    lineage: &CommitLineage,
) -> Result<bytes::Bytes> {
    let mut lineage = lineage.clone();
    if lineage.aurum_version.is_empty() {
        lineage.aurum_version = env!("CARGO_PKG_VERSION").to_string();
    }
    let lineage = serde_json::to_value(&lineage).unwrap_or(serde_json::Value::Null);
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: None,
    };
    CommitData::new(
        adds.into_iter().map(Action::Add).collect(),
        operation,
        [(LINEAGE_KEY.to_string(), lineage)].into_iter().collect(),
        Vec::new(),
    )
    .get_bytes()
    .map_err(|e| Error::delta(name)(e.into()))
}

/// Reads the commit another writer made at `version`.
async fn winner_of(name: &str, log_store: &LogStoreRef, version: u64) -> Result<Winner> {
    let Some(bytes) = log_store
        .read_commit_entry(version)
        .await
        .map_err(Error::delta(name))?
    else {
        // Taken, yet not readable: load the state rather than guess.
        return Ok(Winner::Metadata);
    };
    for line in bytes.split(|b| *b == b'\n') {
        let action: serde_json::Value = match serde_json::from_slice(line) {
            Ok(action) => action,
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Err(_) => return Ok(Winner::Metadata),
        };
        if action.get("metaData").is_some() || action.get("protocol").is_some() {
            return Ok(Winner::Metadata);
        }
    }
    Ok(Winner::Data)
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::{DataType, PrimitiveType, StructField};
    use polars::prelude::*;

    use super::*;
    use crate::store::SchemaChange;

    fn frame(ids: &[i64]) -> DataFrame {
        df!("id" => ids).unwrap()
    }

    async fn sorted_ids(store: &DeltaStore) -> Vec<i64> {
        let (df, _) = store.read("t", None).await.unwrap();
        crate::store::tests::sorted_ids(&df)
    }

    /// Table `t` with one `id` column, checkpointed every `interval`
    /// versions.
    async fn table(dir: &std::path::Path, interval: u64) {
        let path = dir.join("t");
        std::fs::create_dir_all(&path).unwrap();
        deltalake::operations::create::CreateBuilder::new()
            .with_location(path.to_str().unwrap())
            .with_columns([StructField::new(
                "id",
                DataType::Primitive(PrimitiveType::Long),
                true,
            )])
            .with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(interval.to_string()),
            )
            .await
            .unwrap();
    }

    fn lineage() -> CommitLineage {
        CommitLineage {
            operation: "test_append".into(),
            ..CommitLineage::default()
        }
    }

    #[tokio::test]
    async fn appends_commit_in_turn_with_lineage_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        table(dir.path(), 3).await;
        let store = DeltaStore::new(dir.path());
        let mut versions = Vec::new();
        for i in 0..7 {
            versions.push(store.append("t", &frame(&[i]), &lineage()).await.unwrap());
        }
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
        assert!(
            matches!(
                store.appenders.lock().unwrap().get("t"),
                Some(Appender::Blind(_))
            ),
            "a table aurum created is appended to blindly"
        );
        assert_eq!(sorted_ids(&store).await, [0, 1, 2, 3, 4, 5, 6]);
        let log = dir.path().join("t/_delta_log");
        for version in [2, 5] {
            assert!(
                log.join(format!("{version:020}.checkpoint.parquet"))
                    .is_file(),
                "checkpoint at version {version}"
            );
        }
        assert!(!log.join(format!("{:020}.checkpoint.parquet", 4)).exists());
        assert_eq!(
            store.lineage("t", 7).await.unwrap().unwrap().operation,
            "test_append"
        );
        let history = store.history("t").await.unwrap();
        assert_eq!(history[0].operation.as_deref(), Some("WRITE"));
        // A fresh store (a restarted server) reads the table, checkpoint
        // and all, and appends after it.
        let again = DeltaStore::new(dir.path());
        assert_eq!(
            again.append("t", &frame(&[7]), &lineage()).await.unwrap(),
            8
        );
        assert_eq!(sorted_ids(&again).await, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn writers_take_the_next_free_version_and_keep_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (DeltaStore::new(dir.path()), DeltaStore::new(dir.path()));
        // The first append creates the table.
        assert_eq!(a.append("t", &frame(&[0]), &lineage()).await.unwrap(), 0);
        assert_eq!(a.append("t", &frame(&[1]), &lineage()).await.unwrap(), 1);
        assert_eq!(b.append("t", &frame(&[2]), &lineage()).await.unwrap(), 2);
        assert_eq!(b.append("t", &frame(&[3]), &lineage()).await.unwrap(), 3);
        // `a` last committed version 1: it walks past `b`'s two commits.
        assert_eq!(a.append("t", &frame(&[4]), &lineage()).await.unwrap(), 4);
        // A write through the loaded path in between.
        b.write("t", &frame(&[5]), &WriteOptions::append(), &lineage())
            .await
            .unwrap();
        assert_eq!(a.append("t", &frame(&[6]), &lineage()).await.unwrap(), 6);
        assert_eq!(sorted_ids(&a).await, [0, 1, 2, 3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn a_schema_changed_by_another_writer_is_seen_before_committing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (DeltaStore::new(dir.path()), DeltaStore::new(dir.path()));
        a.append("t", &frame(&[0]), &lineage()).await.unwrap();
        a.append("t", &frame(&[1]), &lineage()).await.unwrap();
        // `b` adds a column.
        let wider = df!("id" => [2i64], "score" => [0.5f64]).unwrap();
        let options = WriteOptions {
            schema_change: SchemaChange::AddColumns,
            ..WriteOptions::append()
        };
        b.write("t", &wider, &options, &lineage()).await.unwrap();
        // `a` still knows the old schema; its commit would land rows
        // without the new column as though nothing changed.
        let refused = a.append("t", &frame(&[3]), &lineage()).await.unwrap_err();
        assert!(
            matches!(&refused, Error::SchemaChange { message, .. } if message.contains("score")),
            "{refused}"
        );
        assert_eq!(
            a.latest_version("t").await.unwrap(),
            Some(2),
            "nothing committed"
        );
        // With the new schema it appends.
        let wider = df!("id" => [3i64], "score" => [0.75f64]).unwrap();
        assert_eq!(a.append("t", &wider, &lineage()).await.unwrap(), 3);
        assert_eq!(sorted_ids(&a).await, [0, 1, 2, 3]);
    }
}
