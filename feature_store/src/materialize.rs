//! Materialization: gold Delta tables → the online store, in full or
//! incrementally by Delta version.
//!
//! An incremental run reads only the data files added since the version the
//! online store last loaded for the view; the store's own rule (latest event
//! time, then created time, wins) keeps a late or re-computed row from
//! replacing a newer one.

use serde::{Deserialize, Serialize};

use crate::definitions::FeatureView;
use crate::error::Result;
use crate::offline::DeltaStore;
use crate::online::OnlineStore;

/// What materializing one view did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterializeReport {
    /// The view.
    pub view: String,
    /// The version loaded before (`None`: nothing was loaded).
    pub from_version: Option<u64>,
    /// The version loaded now (`None`: the view has no gold table yet).
    pub to_version: Option<u64>,
    /// Gold rows read.
    pub rows_read: usize,
    /// Entities whose online row was replaced.
    pub written: usize,
    /// Entities whose online row was newer than what was read.
    pub skipped_older: usize,
}

/// Loads `view`'s gold rows into `online`: all of them, or with
/// `incremental` only those committed since the version loaded last.
pub async fn materialize(
    store: &DeltaStore,
    online: &OnlineStore,
    view: &FeatureView,
    incremental: bool,
) -> Result<MaterializeReport> {
    let from_version = online.delta_version(&view.name);
    let mut report = MaterializeReport {
        view: view.name.clone(),
        from_version,
        to_version: from_version,
        rows_read: 0,
        written: 0,
        skipped_older: 0,
    };
    if store.latest_version(&view.name).await?.is_none() {
        return Ok(report);
    }
    let from = if incremental { from_version } else { None };
    let (files, version) = store.files_added(&view.name, from, None).await?;
    let columns: Vec<String> = view
        .entity
        .join_keys
        .iter()
        .chain([&view.timestamp_column, &view.created_column])
        .chain(&view.features)
        .cloned()
        .collect();
    let gold = store
        .read_files(&view.name, version, &files, Some(&columns))
        .await?;
    let stats = online.materialize(view, &gold, version)?;
    report.to_version = Some(version);
    report.rows_read = gold.height();
    report.written = stats.written;
    report.skipped_older = stats.skipped_older;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fraud::{self, GenerateOptions};
    use crate::pipeline::{self, PipelineOptions};
    use crate::project::Project;

    #[tokio::test(flavor = "multi_thread")]
    async fn incremental_materialization_reads_only_new_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = fraud::init(dir.path()).unwrap();
        let project = Project::load(&path).unwrap();
        let end = 1_795_000_000_000_000i64;
        let generate = |seed: u64, end: i64, days: f64, rows: usize| {
            fraud::generate(
                &project.data_dir.join("bronze"),
                &GenerateOptions {
                    rows,
                    seed,
                    end_micros: end,
                    days,
                    customers: Some(40),
                },
            )
            .unwrap()
        };
        generate(1, end, 3.0, 800);
        pipeline::run(&project, &PipelineOptions::default(), &|_| {})
            .await
            .unwrap();
        let store = DeltaStore::new(project.delta_dir());
        let view = project.view(fraud::CUSTOMER_VIEW).unwrap().feature_view();
        let online = OnlineStore::new(64 << 20);
        online.register_view(view.clone());
        let full = materialize(&store, &online, &view, true).await.unwrap();
        assert_eq!(full.from_version, None);
        assert_eq!(full.rows_read, 800 - full_quarantined(&store).await);
        assert_eq!(full.written, 40);

        // Nothing new: nothing read.
        let none = materialize(&store, &online, &view, true).await.unwrap();
        assert_eq!(none.rows_read, 0);
        assert_eq!(none.to_version, full.to_version);

        // A later hour of data: only its gold rows are read, and every
        // customer in it moves to a newer row.
        generate(2, end + 3_600_000_000, 1.0 / 24.0, 100);
        pipeline::run(&project, &PipelineOptions::default(), &|_| {})
            .await
            .unwrap();
        let next = materialize(&store, &online, &view, true).await.unwrap();
        assert_eq!(next.from_version, full.to_version);
        assert!(next.rows_read > 0 && next.rows_read <= 101, "{next:?}");
        assert_eq!(next.skipped_older, 0);
        assert!(next.written > 0);

        // Reading everything again changes nothing: older rows never win.
        let keys: Vec<String> = (1..=40).map(|c: i64| c.to_string()).collect();
        let refs = view.feature_refs();
        let before = online.get(&refs, &keys, end).unwrap();
        let again = materialize(&store, &online, &view, false).await.unwrap();
        assert!(again.rows_read > next.rows_read, "{again:?}");
        let after = online.get(&refs, &keys, end).unwrap();
        assert_eq!(before.rows, after.rows);
        assert_eq!(before.event_micros, after.event_micros);
    }

    async fn full_quarantined(store: &DeltaStore) -> usize {
        match store.read(crate::silver::QUARANTINE_TABLE, None).await {
            Ok((df, _)) => df.height(),
            Err(_) => 0,
        }
    }
}
