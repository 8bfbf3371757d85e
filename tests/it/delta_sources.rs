//! A Delta table written by another writer (Python's deltalake, as a
//! team's job would) as a `format = "delta"` source: ingested
//! incrementally by table version, refreshed in full after a delete, and
//! always equal to one full run over the same table version.

use std::ffi::OsStr;
use std::path::Path;

use aurum::example;
use delta::DeltaStore;
use feature_store::pipeline::{PipelineOptions, PipelineReport, SourceReport, run};
use feature_store::project::{PROJECT_FILE, Project};
use polars::prelude::*;
use serde_json::Value;

use crate::incremental::{END, assert_frames_close, generate, latest_gold, project_in};
use crate::python;

/// The example project in `dir`, its transactions read from the Delta
/// table at `table` instead of CSV files.
fn delta_project(dir: &Path, table: &Path) -> Project {
    let project = project_in(dir);
    generate(&project, 7, END, 10.0, 2_000);
    let file = dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let csv = "format = \"csv\"\npath = \"data/bronze/transactions/*.csv\"";
    assert!(
        text.contains(csv),
        "the example declares its transactions so"
    );
    let delta = format!(
        "format = \"delta\"\npath = {:?}",
        table.display().to_string()
    );
    std::fs::write(&file, text.replace(csv, &delta)).unwrap();
    Project::load(&file).unwrap()
}

/// Runs `delta_source.py` on `table`.
fn source_table(table: &Path, args: &[&str]) -> Value {
    let mut all: Vec<&OsStr> = vec![OsStr::new(args[0]), table.as_os_str()];
    all.extend(args[1..].iter().map(OsStr::new));
    python::reader("delta_source.py", &all)
}

fn transactions(report: &PipelineReport) -> &SourceReport {
    report
        .sources
        .iter()
        .find(|s| s.source == "transactions")
        .expect("the transactions source ran")
}

async fn silver_ids(project: &Project) -> Vec<String> {
    let store = DeltaStore::new(project.delta_dir());
    let (silver, _) = store.read(example::SILVER_TABLE, None).await.unwrap();
    let mut ids: Vec<String> = silver
        .column("transaction_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// Rows in the quarantine table (none when it does not exist).
async fn quarantined(project: &Project) -> usize {
    let store = DeltaStore::new(project.delta_dir());
    match store.read("quarantine", None).await {
        Ok((rows, _)) => rows.height(),
        Err(_) => 0,
    }
}

/// One full run of a fresh project over the table as it is now: silver's
/// ids, gold, and the quarantined rows.
async fn recomputed(table: &Path) -> (Vec<String>, DataFrame, usize) {
    let dir = tempfile::tempdir().unwrap();
    let project = delta_project(dir.path(), table);
    run(&project, &PipelineOptions::default(), &|_| {})
        .await
        .unwrap();
    (
        silver_ids(&project).await,
        latest_gold(&project).await,
        quarantined(&project).await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_source_is_read_by_version_and_refreshed_after_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("lake/transactions");
    let project = delta_project(dir.path(), &table);
    let csv_dir = project.data_dir.join("bronze/transactions");
    let csv_dir = csv_dir.to_str().unwrap();
    let quiet = |_: &str| {};
    let options = PipelineOptions::default();

    // Version 0: half the rows.
    let first_part = source_table(&table, &["write", csv_dir, "0", "2"]);
    let first = run(&project, &options, &quiet).await.unwrap();
    assert_eq!(
        transactions(&first).bronze_rows as u64,
        first_part["rows"].as_u64().unwrap()
    );
    assert_eq!(transactions(&first).silver_mode, "full");

    // Nothing new in the table: nothing read, nothing committed.
    let idle = run(&project, &options, &quiet).await.unwrap();
    assert_eq!(transactions(&idle).bronze_rows, 0);
    assert!(!idle.committed(), "{idle:?}");

    // Version 1 appends: only the appended rows are read.
    let second_part = source_table(&table, &["write", csv_dir, "1", "2"]);
    assert_eq!(second_part["version"], 1);
    let second = run(&project, &options, &quiet).await.unwrap();
    assert_eq!(
        transactions(&second).bronze_rows as u64,
        second_part["rows"].as_u64().unwrap()
    );
    assert_eq!(transactions(&second).silver_mode, "incremental");
    let (ids, gold, bad) = recomputed(&table).await;
    assert_eq!(silver_ids(&project).await, ids);
    assert_frames_close(&latest_gold(&project).await, &gold);
    assert!(bad > 0, "the example's range rule quarantines some rows");
    assert_eq!(quarantined(&project).await, bad);

    // Version 2 deletes a customer's rows (files rewritten): the source is
    // refreshed in full, and the deleted rows are gone from silver and gold.
    let deleted = source_table(&table, &["delete", "customer_id = 17"]);
    let third = run(&project, &options, &quiet).await.unwrap();
    assert_eq!(
        transactions(&third).bronze_rows as u64,
        deleted["rows"].as_u64().unwrap(),
        "bronze holds the whole new version"
    );
    assert_eq!(transactions(&third).silver_mode, "full");
    let (ids, gold, _) = recomputed(&table).await;
    assert_eq!(silver_ids(&project).await, ids);
    let after = latest_gold(&project).await;
    assert_frames_close(&after, &gold);
    let customer_17 = after
        .lazy()
        .filter(col("customer_id").eq(lit(17i64)))
        .collect()
        .unwrap();
    assert_eq!(
        customer_17.height(),
        0,
        "a deleted source row never survives"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_column_missing_from_the_table_is_named_and_nothing_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("lake/transactions");
    let project = delta_project(dir.path(), &table);
    let csv_dir = project.data_dir.join("bronze/transactions");
    source_table(&table, &["write", csv_dir.to_str().unwrap(), "0", "1"]);
    let file = dir.path().join(PROJECT_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let extra = text.replacen(
        "{ name = \"is_fraud\", type = \"int64\" },",
        "{ name = \"is_fraud\", type = \"int64\" },\n  { name = \"channel\", type = \"string\" },",
        1,
    );
    assert_ne!(extra, text);
    std::fs::write(&file, extra).unwrap();
    let project = Project::load(&file).unwrap();
    let error = run(&project, &PipelineOptions::default(), &|_| {})
        .await
        .expect_err("a declared column the table lacks is refused");
    let message = error.to_string();
    assert!(message.contains("\"channel\""), "{message}");
    assert!(message.contains("version 0"), "{message}");
    let store = DeltaStore::new(project.delta_dir());
    assert_eq!(
        store.latest_version("bronze_transactions").await.unwrap(),
        None,
        "nothing was committed"
    );
}
