//! The library's incremental paths on the example project's data, in
//! process: incremental pipeline runs against a full recompute, re-delivered
//! records, schema evolution of gold, and incremental materialization.

use aurum::example::{self, GenerateOptions};
use delta::DeltaStore;
use feature_store::OnlineStore;
use feature_store::online::materialize::materialize;
use feature_store::pipeline::gold::{CREATED_TIMESTAMP, EVENT_TIMESTAMP};
use feature_store::pipeline::{self, PipelineOptions, run};
use feature_store::project::Project;
use polars::prelude::*;

const DAY: i64 = 86_400_000_000;
pub(crate) const END: i64 = 1_795_000_000_000_000;

pub(crate) fn project_in(dir: &std::path::Path) -> Project {
    let path = dir.join(feature_store::project::PROJECT_FILE);
    if !path.exists() {
        example::init(dir).unwrap();
    }
    Project::load(&path).unwrap()
}

/// `rows` example transactions of 60 customers over the `days` before `end`.
pub(crate) fn generate(project: &Project, seed: u64, end: i64, days: f64, rows: usize) {
    generate_for(project, 60, seed, end, days, rows);
}

/// [`generate`] for `customers` customers.
fn generate_for(project: &Project, customers: usize, seed: u64, end: i64, days: f64, rows: usize) {
    example::generate(
        &project.data_dir.join("bronze"),
        &GenerateOptions {
            rows,
            seed,
            end_micros: end,
            days,
            customers: Some(customers),
        },
    )
    .unwrap();
}

/// The example project in `dir` with `rows` transactions over the `days`
/// before [`END`], through the pipeline once.
async fn project_after_one_run(dir: &std::path::Path, days: f64, rows: usize) -> Project {
    let project = project_in(dir);
    generate(&project, 1, END, days, rows);
    run(&project, &PipelineOptions::default(), &|_| {})
        .await
        .unwrap();
    project
}

pub(crate) async fn latest_gold(project: &Project) -> DataFrame {
    let store = DeltaStore::new(project.delta_dir());
    let (gold, _) = store.read(example::CUSTOMER_VIEW, None).await.unwrap();
    gold.lazy()
        .sort([CREATED_TIMESTAMP], SortMultipleOptions::default())
        .unique_stable_generic(
            Some(vec![col("customer_id"), col(EVENT_TIMESTAMP)]),
            UniqueKeepStrategy::Last,
        )
        .drop(by_name([CREATED_TIMESTAMP], true, false))
        .sort(
            ["customer_id", EVENT_TIMESTAMP],
            SortMultipleOptions::default(),
        )
        .collect()
        .unwrap()
}

pub(crate) fn assert_frames_close(a: &DataFrame, b: &DataFrame) {
    assert_eq!(a.shape(), b.shape());
    for column in a.columns() {
        let other = b.column(column.name()).unwrap();
        if column.dtype() == &DataType::Float64 {
            let x = column.f64().unwrap();
            let y = other.f64().unwrap();
            for (i, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                match (p, q) {
                    (Some(p), Some(q)) => assert!(
                        (p - q).abs() <= 1e-9 * p.abs().max(1.0),
                        "{} row {i}: {p} vs {q}",
                        column.name()
                    ),
                    (p, q) => assert_eq!(p, q, "{} row {i}", column.name()),
                }
            }
        } else {
            assert_eq!(column, other, "{}", column.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_runs_with_late_data_equal_a_full_recompute() {
    let dir = tempfile::tempdir().unwrap();
    let project = project_in(dir.path());
    let quiet = |_: &str| {};
    let options = PipelineOptions::default();
    generate(&project, 1, END, 10.0, 3_000);
    let first = run(&project, &options, &quiet).await.unwrap();
    assert_eq!(first.views[0].mode, "full");

    // Nothing new: nothing committed.
    let second = run(&project, &options, &quiet).await.unwrap();
    assert!(!second.committed(), "{second:?}");

    // Late data, interleaved with what is there (events 2 to 5 days
    // before the end), plus a re-delivery of existing transactions.
    generate(&project, 2, END - 2 * DAY, 3.0, 600);
    let third = run(&project, &options, &quiet).await.unwrap();
    assert_eq!(third.views[0].mode, "incremental");
    assert!(third.views[0].rows < 3_000, "{:?}", third.views[0]);
    let incremental = latest_gold(&project).await;

    let full = run(
        &project,
        &PipelineOptions {
            full_refresh: true,
            ..PipelineOptions::default()
        },
        &quiet,
    )
    .await
    .unwrap();
    assert_eq!(full.views[0].mode, "full");
    let recomputed = latest_gold(&project).await;
    assert_frames_close(&incremental, &recomputed);
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivered_records_replace_earlier_batches() {
    let dir = tempfile::tempdir().unwrap();
    let project = project_after_one_run(dir.path(), 5.0, 1_000).await;
    let quiet = |_: &str| {};
    let store = DeltaStore::new(project.delta_dir());
    let (silver, _) = store.read(example::SILVER_TABLE, None).await.unwrap();
    // Deliver ten existing transactions again, later, with new amounts.
    let again = silver
        .head(Some(10))
        .lazy()
        .select([
            col("transaction_id"),
            col("customer_id"),
            col("merchant_id"),
            lit("1.00").alias("amount"),
            col("category"),
            col("event_time").dt().to_string("%Y-%m-%dT%H:%M:%S%.6fZ"),
            col("is_fraud"),
            (col("ingested_at")
                + lit(60_000_000i64).cast(DataType::Duration(TimeUnit::Microseconds)))
            .dt()
            .to_string("%Y-%m-%dT%H:%M:%S%.6fZ")
            .alias("ingested_at"),
        ])
        .collect()
        .unwrap();
    let path = project.data_dir.join("bronze/transactions/redelivery.csv");
    let mut file = std::fs::File::create(&path).unwrap();
    CsvWriter::new(&mut file)
        .finish(&mut again.clone())
        .unwrap();
    let report = run(&project, &PipelineOptions::default(), &quiet)
        .await
        .unwrap();
    assert_eq!(report.sources[1].duplicates_resolved, 10);
    let (after, _) = store.read(example::SILVER_TABLE, None).await.unwrap();
    assert_eq!(after.height(), silver.height(), "replaced, not added");
    let ones = after
        .lazy()
        .filter(col("amount").cast(DataType::Float64).eq(lit(1.0)))
        .collect()
        .unwrap();
    assert_eq!(ones.height(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_a_feature_evolves_gold_and_removing_one_needs_consent() {
    let dir = tempfile::tempdir().unwrap();
    project_after_one_run(dir.path(), 5.0, 800).await;
    let quiet = |_: &str| {};

    let file = dir.path().join(feature_store::project::PROJECT_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    let with_min = text.replace(
        r#"functions = ["count", "sum", "mean", "max", "stddev"]"#,
        r#"functions = ["count", "sum", "mean", "max", "stddev", "min"]"#,
    );
    std::fs::write(&file, &with_min).unwrap();
    let project = Project::load(&file).unwrap();
    let report = run(&project, &PipelineOptions::default(), &quiet)
        .await
        .unwrap();
    assert_eq!(report.views[0].mode, "full");
    let gold = latest_gold(&project).await;
    assert!(gold.column("amount_min_7d").is_ok());

    let without_stddev = with_min.replace(r#""stddev", "#, "");
    std::fs::write(&file, &without_stddev).unwrap();
    let project = Project::load(&file).unwrap();
    let err = run(&project, &PipelineOptions::default(), &quiet)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("amount_stddev_1h") && err.contains("--allow-breaking-schema-change"),
        "{err}"
    );
    let allowed = PipelineOptions {
        allow_breaking_schema_change: true,
        ..PipelineOptions::default()
    };
    run(&project, &allowed, &quiet).await.unwrap();
    let gold = latest_gold(&project).await;
    assert!(gold.column("amount_stddev_7d").is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_materialization_reads_only_new_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = example::init(dir.path()).unwrap();
    let project = Project::load(&path).unwrap();
    let end = 1_795_000_000_000_000i64;
    let generate = |seed: u64, end: i64, days: f64, rows: usize| {
        generate_for(&project, 40, seed, end, days, rows);
    };
    generate(1, end, 3.0, 800);
    pipeline::run(&project, &PipelineOptions::default(), &|_| {})
        .await
        .unwrap();
    let store = DeltaStore::new(project.delta_dir());
    let view = project.view(example::CUSTOMER_VIEW).unwrap().feature_view();
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
    match store
        .read(feature_store::pipeline::silver::QUARANTINE_TABLE, None)
        .await
    {
        Ok((df, _)) => df.height(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_at_once_write_what_one_run_writes() {
    let quiet = |_: &str| {};
    let options = PipelineOptions::default();
    let once = tempfile::tempdir().unwrap();
    let one = project_in(once.path());
    generate(&one, 3, END, 10.0, 3_000);
    run(&one, &options, &quiet).await.unwrap();

    let twice = tempfile::tempdir().unwrap();
    let both = project_in(twice.path());
    generate(&both, 3, END, 10.0, 3_000);
    let (a, b) = tokio::join!(run(&both, &options, &quiet), run(&both, &options, &quiet));
    a.unwrap();
    b.unwrap();

    for table in [
        "bronze_transactions",
        "bronze_merchants",
        example::SILVER_TABLE,
        "quarantine",
    ] {
        let rows = |project: &Project| {
            let store = DeltaStore::new(project.delta_dir());
            let table = table.to_string();
            async move { store.read(&table, None).await.unwrap().0.height() }
        };
        assert_eq!(rows(&both).await, rows(&one).await, "{table}");
    }
    assert_frames_close(&latest_gold(&both).await, &latest_gold(&one).await);
}
