//! `aurum training-set` through the real binary: a spine file joined
//! point-in-time with gold features, pinned versions reproduce the same
//! bytes after new data has arrived, and a bad spine is refused naming the
//! column.

use std::path::Path;
use std::process::Output;

use feature_store::testing::{frame, utc_micros};
use polars::prelude::*;

use crate::cli::{example_project, ok, run};

/// `aurum training-set` with the example's feature service, spine `spine`
/// and output `out`, plus `extra` arguments.
fn training_set(dir: &Path, spine: &str, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "training-set",
        "--spine",
        spine,
        "--features",
        "fraud_detection",
        "--out",
        out,
    ];
    args.extend(extra);
    run(dir, &args)
}

fn succeeded(output: Output) -> String {
    assert!(
        output.status.success(),
        "aurum training-set: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write_spine(path: &Path, timestamp_column: &str) {
    let now = chrono::Utc::now().timestamp_micros() + 3_600_000_000;
    // Fifty customers, so the later batch surely touches some of them, and
    // one unknown.
    let mut customers: Vec<i64> = (1..=50).collect();
    customers.push(999_999);
    let labels: Vec<i64> = customers.iter().map(|c| c % 2).collect();
    let mut spine = frame(vec![
        utc_micros(timestamp_column, vec![now; customers.len()]),
        Column::new("customer_id".into(), customers),
        Column::new("label".into(), labels),
    ]);
    ParquetWriter::new(std::fs::File::create(path).unwrap())
        .finish(&mut spine)
        .unwrap();
}

#[test]
fn pinned_versions_reproduce_the_same_bytes() {
    let project = example_project("3000", "5");
    let dir = project.path();
    write_spine(&dir.join("spine.parquet"), "event_timestamp");

    let first = succeeded(training_set(dir, "spine.parquet", "a.parquet", &[]));
    let pin = first
        .split("reproduce with ")
        .nth(1)
        .expect("the versions are reported")
        .trim()
        .to_string();
    assert!(
        pin.starts_with("--as-of-version customer_features="),
        "{first}"
    );
    let a = std::fs::read(dir.join("a.parquet")).unwrap();
    let trained = ParquetReader::new(std::fs::File::open(dir.join("a.parquet")).unwrap())
        .finish()
        .unwrap();
    assert_eq!(trained.height(), 51);
    assert_eq!(
        trained
            .get_column_names()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        [
            "event_timestamp",
            "customer_id",
            "label",
            "amount_count_1h",
            "amount_sum_1d",
            "amount_mean_7d",
            "amount_ratio_1d_7d",
            "merchant_id_distinct_count_7d"
        ]
    );

    // New data arrives: unpinned, the answer changes; pinned, it is the
    // same bytes.
    ok(
        dir,
        &["generate", "--rows", "500", "--seed", "6", "--days", "0.04"],
    );
    ok(dir, &["pipeline"]);
    succeeded(training_set(dir, "spine.parquet", "b.parquet", &[]));
    let pins: Vec<&str> = pin.split_whitespace().collect();
    succeeded(training_set(dir, "spine.parquet", "c.parquet", &pins));
    assert_ne!(std::fs::read(dir.join("b.parquet")).unwrap(), a);
    assert_eq!(std::fs::read(dir.join("c.parquet")).unwrap(), a);

    // Streamed seven spine rows at a time, the same rows come out.
    let mut args = pins.clone();
    args.extend(["--batch-rows", "7"]);
    succeeded(training_set(dir, "spine.parquet", "e.parquet", &args));
    let streamed = ParquetReader::new(std::fs::File::open(dir.join("e.parquet")).unwrap())
        .finish()
        .unwrap();
    assert!(streamed.equals_missing(&trained), "{streamed} != {trained}");

    // A file that is not Parquet is refused as such, and nothing is written.
    std::fs::write(
        dir.join("text.parquet"),
        "customer_id,event_timestamp\n1,2\n",
    )
    .unwrap();
    let output = training_set(dir, "text.parquet", "f.parquet", &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a readable Parquet file"),
        "{stderr}"
    );
    assert!(!dir.join("f.parquet").exists());

    // A spine without the timestamp column is refused, naming it.
    write_spine(&dir.join("bad.parquet"), "at");
    let output = training_set(dir, "bad.parquet", "d.parquet", &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no column \"event_timestamp\""), "{stderr}");
    assert!(!dir.join("d.parquet").exists());
}
