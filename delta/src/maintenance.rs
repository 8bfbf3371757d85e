//! Table maintenance: compaction of small files and vacuum.

use deltalake::kernel::Action;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::protocol::DeltaOperation;

use crate::error::{Error, Result};
use crate::files::write_files;
use crate::lineage::{CommitLineage, LINEAGE_KEY};
use crate::store::{DataFile, DeltaStore};

impl DeltaStore {
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
        let adds = write_files(name, &self.table_dir(name), &df, rows_per_file).await?;
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
}
