//! The progress marks a run resumes from, kept only in the Delta tables'
//! own commits: each silver commit records the bronze version it has
//! processed, each gold commit the silver version, and each quarantine or
//! quality commit the bronze version of its batch.

use std::collections::BTreeMap;

use delta::{CommitLineage, DeltaStore};

use crate::error::Result;
use crate::project::{Project, Source, hash_json};

/// The silver definition hash of a source.
pub fn silver_hash(source: &Source) -> String {
    hash_json("aurum-silver-v1", source)
}

/// Silver's progress mark for a source.
pub(super) struct SilverMark {
    /// The bronze version silver has processed (`None`: none yet).
    pub(super) bronze_version: Option<u64>,
    /// The silver definition hash it was processed with.
    pub(super) definition_hash: Option<String>,
}

pub(super) async fn silver_mark(store: &DeltaStore, source: &Source) -> Result<SilverMark> {
    if !store.exists(&source.silver_table).await? {
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

/// The bronze version of `source` that silver version `silver_version`
/// was computed from: the mark of silver's newest data commit at or before
/// it (`None`: bronze was not processed by then). What the window tiles
/// loaded from that silver version hold of bronze.
pub async fn bronze_processed_at(
    store: &DeltaStore,
    source: &Source,
    silver_version: u64,
) -> Result<Option<u64>> {
    if !store.exists(&source.silver_table).await? {
        return Ok(None);
    }
    // Newest first.
    Ok(store
        .history(&source.silver_table)
        .await?
        .into_iter()
        .filter(|c| c.version <= silver_version)
        .filter_map(|c| c.lineage)
        .find(|l| l.operation != "optimize")
        .and_then(|l| l.input_tables.get(&source.bronze_table()).copied()))
}

/// The lineage of the newest commit that changed data: compaction commits
/// are skipped, they carry no progress mark.
pub(super) async fn latest_lineage(
    store: &DeltaStore,
    table: &str,
) -> Result<Option<CommitLineage>> {
    if !store.exists(table).await? {
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
    let store = project.delta_store()?;
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
pub(super) async fn side_marks(
    store: &DeltaStore,
    table: &str,
    source: &Source,
) -> Result<Vec<(u64, String)>> {
    if !store.exists(table).await? {
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
