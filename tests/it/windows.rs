//! Request-time windows through the real binary: what `aurum serve`
//! answers at a request's time is what `aurum training-set` computes for a
//! spine row at that time, feature by feature.

use polars::prelude::*;
use serde_json::{Value, json};

use crate::cli::{example_project, ok};
use crate::server::{call, start};
use feature_store::testing::{frame, utc_micros};

const FEATURES: [&str; 6] = [
    "amount_count_1h",
    "amount_sum_1d",
    "amount_mean_7d",
    "amount_max_1h",
    "amount_ratio_1d_7d",
    "merchant_id_distinct_count_7d",
];

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => false,
    }
}

/// The training set of `customers`, each at `before` and at `after`.
fn offline(dir: &std::path::Path, customers: &[i64], before: i64, after: i64) -> DataFrame {
    let n = customers.len();
    let mut spine = frame(vec![
        Column::new(
            "customer_id".into(),
            customers
                .iter()
                .chain(customers)
                .copied()
                .collect::<Vec<i64>>(),
        ),
        utc_micros(
            "event_timestamp",
            [vec![before; n], vec![after; n]].concat(),
        ),
    ]);
    ParquetWriter::new(std::fs::File::create(dir.join("spine.parquet")).unwrap())
        .finish(&mut spine)
        .unwrap();
    let features: Vec<String> = FEATURES
        .iter()
        .map(|f| format!("customer_features:{f}"))
        .collect();
    ok(
        dir,
        &[
            "training-set",
            "--spine",
            "spine.parquet",
            "--features",
            &features.join(","),
            "--out",
            "set.parquet",
        ],
    );
    ParquetReader::new(std::fs::File::open(dir.join("set.parquet")).unwrap())
        .finish()
        .unwrap()
}

fn value(set: &DataFrame, feature: &str, row: usize) -> Option<f64> {
    set.column(feature)
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .get(row)
}

#[test]
fn the_server_answers_what_the_training_set_holds_at_the_same_time() {
    let project = example_project("4000", "11");
    let dir = project.path();
    let server = start(dir);
    let customers: Vec<i64> = (1..=60).collect();
    let features: Vec<String> = FEATURES
        .iter()
        .map(|f| format!("customer_features:{f}"))
        .collect();
    // The server reads at its own clock, somewhere between these two.
    let before = chrono::Utc::now().timestamp_micros();
    let reply = call(
        "POST",
        &format!("{}/get-online-features", server.url),
        Some(&json!({"entities": {"customer_id": customers}, "features": features})),
        None,
    );
    let after = chrono::Utc::now().timestamp_micros();
    assert_eq!(reply.status, 200);
    let online: Value = reply.json();
    let set = offline(dir, &customers, before, after);
    let n = customers.len();
    let mut compared = 0;
    let mut empty_hours = 0;
    for (c, customer) in customers.iter().enumerate() {
        // A window whose value moved between `before` and `after` (a tile
        // boundary crossed) cannot say which the server saw.
        if FEATURES
            .iter()
            .any(|f| !close(value(&set, f, c), value(&set, f, n + c)))
        {
            continue;
        }
        for (i, feature) in FEATURES.iter().enumerate() {
            let column = &online["results"][i + 1];
            let served = column["values"][c].as_f64();
            let trained = value(&set, feature, c);
            assert!(
                close(served, trained),
                "customer {customer} {feature}: served {served:?} ({}), training set {trained:?}",
                column["statuses"][c]
            );
        }
        if value(&set, "amount_count_1h", c) == Some(0.0) {
            empty_hours += 1;
        }
        compared += 1;
    }
    eprintln!(
        "{compared} of {n} customers compared, {empty_hours} with no transaction in the last hour"
    );
    assert!(
        compared >= n / 2,
        "only {compared} of {n} customers compared"
    );
    // Valued at the read, an hour without transactions counts 0: a gold
    // row's own window always holds its own transaction.
    assert!(
        empty_hours > 0,
        "every customer has a transaction in the last hour: {online}"
    );
}
