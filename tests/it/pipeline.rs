//! The medallion pipeline through the real binary: `init`, `generate`,
//! `pipeline`, `lineage`, `optimize`, `vacuum`; Python's `deltalake` and
//! `polars` read every table it writes; a crash between commits loses
//! nothing and duplicates nothing.

use std::path::Path;

use serde_json::Value;

use crate::cli::{crashes_at, fails, ok, run};

fn pipeline_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(dir, &["pipeline", "--json"])).expect("pipeline prints JSON")
}

fn python_tables(dir: &Path) -> Value {
    crate::python::reader("read_pipeline_tables.py", &[dir.as_os_str()])
}

fn new_project(rows: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    ok(
        dir.path(),
        &[
            "generate",
            "--rows",
            rows,
            "--seed",
            "5",
            "--end",
            "2026-11-20T00:00:00Z",
        ],
    );
    dir
}

fn source<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == name)
        .unwrap()
}

#[test]
fn every_table_is_readable_by_python_and_a_rerun_commits_nothing() {
    let project = new_project("3000");
    let dir = project.path();
    let report = pipeline_json(dir);
    let tables = python_tables(dir);
    for name in [
        "bronze_merchants",
        "bronze_transactions",
        "silver_merchants",
        "silver_transactions",
        "quality",
        "customer_features",
    ] {
        assert!(tables.get(name).is_some(), "{name} missing: {tables}");
        assert_eq!(
            tables[name]["rows"], tables[name]["arrow_rows"],
            "{name}: polars and pyarrow agree"
        );
    }
    let transactions = source(&report, "transactions");
    assert_eq!(tables["bronze_transactions"]["rows"], 3030);
    assert_eq!(
        tables["silver_transactions"]["rows"],
        transactions["silver_rows_out"]
    );
    let quarantined = transactions["quarantined"].as_u64().unwrap();
    let quarantine_rows = tables
        .get("quarantine")
        .map(|t| t["rows"].as_u64().unwrap())
        .unwrap_or(0);
    assert_eq!(quarantine_rows, quarantined);
    // Nothing lost: every distinct transaction is in silver or quarantine.
    assert_eq!(
        transactions["silver_rows_out"].as_u64().unwrap()
            + quarantined
            + transactions["duplicates_resolved"].as_u64().unwrap(),
        3030
    );
    assert_eq!(
        tables["customer_features"]["rows"],
        transactions["silver_rows_out"]
    );
    let schema = &tables["silver_transactions"]["schema"];
    assert_eq!(schema["amount"], "Decimal(precision=12, scale=2)");
    assert_eq!(
        schema["event_time"],
        "Datetime(time_unit='us', time_zone='UTC')"
    );
    assert_eq!(schema["merchant_country"], "String");
    let gold = &tables["customer_features"];
    assert_eq!(gold["schema"]["amount_stddev_7d"], "Float64");
    assert_eq!(gold["lineage"]["operation"], "gold-full");
    assert_eq!(
        gold["lineage"]["input_tables"]["silver_transactions"],
        tables["silver_transactions"]["version"]
    );

    // A second run finds nothing new and commits nothing.
    let again = pipeline_json(dir);
    let after = python_tables(dir);
    for (name, table) in after.as_object().unwrap() {
        assert_eq!(table["version"], tables[name]["version"], "{name} changed");
    }
    assert_eq!(source(&again, "transactions")["files_skipped"], 1);

    // Lineage goes back to the bronze files.
    let lineage = ok(dir, &["lineage", "customer_features"]);
    for needle in [
        "customer_features v",
        "silver_transactions v",
        "bronze_transactions v",
        "silver_merchants v",
        "transactions/part-20261120T000000-s5.csv",
        "merchants/merchants.csv",
    ] {
        assert!(lineage.contains(needle), "{needle} not in\n{lineage}");
    }

    // New data: only it is processed, gold incrementally.
    ok(
        dir,
        &[
            "generate",
            "--rows",
            "300",
            "--seed",
            "6",
            "--days",
            "1",
            "--end",
            "2026-11-21T00:00:00Z",
        ],
    );
    let third = pipeline_json(dir);
    let t = source(&third, "transactions");
    assert_eq!(t["silver_mode"], "incremental");
    assert_eq!(t["silver_rows_in"], 303);
    assert_eq!(third["views"][0]["mode"], "incremental");

    // Maintenance: compaction changes no rows; vacuum honours retention.
    let before = python_tables(dir);
    let optimized = ok(dir, &["optimize", "--rows-per-file", "100000"]);
    assert!(
        optimized.contains("bronze_transactions: 2 files compacted into 1"),
        "{optimized}"
    );
    let compacted = python_tables(dir);
    for (name, table) in compacted.as_object().unwrap() {
        assert_eq!(table["rows"], before[name]["rows"], "{name} rows changed");
    }
    // Compaction is not new data: the pipeline still has nothing to do.
    let after_optimize = pipeline_json(dir);
    assert_eq!(python_tables(dir), compacted, "{after_optimize}");
    let refused = run(dir, &["vacuum", "--retention-hours", "0"]);
    assert!(!refused.status.success(), "a zero retention needs --force");
    let vacuumed = ok(dir, &["vacuum", "--retention-hours", "0", "--force"]);
    assert!(
        vacuumed.contains("bronze_transactions: deleted 2 files"),
        "{vacuumed}"
    );
    let after_vacuum = python_tables(dir);
    for (name, table) in after_vacuum.as_object().unwrap() {
        assert_eq!(table["rows"], before[name]["rows"], "{name} rows changed");
    }
}

#[test]
fn a_crash_between_commits_loses_and_duplicates_nothing() {
    // Enough rows that the generator plants broken ones for quarantine.
    let clean = new_project("8000");
    let expected = pipeline_json(clean.path());
    let expected_tables = python_tables(clean.path());
    assert!(
        source(&expected, "transactions")["quarantined"]
            .as_u64()
            .unwrap()
            > 0
    );

    for point in [
        "after-commit:bronze_transactions",
        "after-commit:quarantine",
        "after-commit:quality",
        "after-commit:silver_transactions",
    ] {
        let crashed = new_project("8000");
        let dir = crashed.path();
        crashes_at(dir, point, &["pipeline", "--json"]);
        // Every table that exists is readable at a consistent version.
        python_tables(dir);
        pipeline_json(dir);
        let tables = python_tables(dir);
        for name in [
            "silver_transactions",
            "quarantine",
            "quality",
            "customer_features",
        ] {
            assert_eq!(
                tables[name]["rows"], expected_tables[name]["rows"],
                "{point}: {name} differs from an uninterrupted run"
            );
        }
    }
    assert!(
        source(&expected, "transactions")["quarantined"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn an_unparseable_file_is_named_and_nothing_is_committed() {
    let project = new_project("500");
    let dir = project.path();
    pipeline_json(dir);
    let before = python_tables(dir);
    std::fs::write(
        dir.join("data/bronze/transactions/broken.csv"),
        "transaction_id,customer_id,merchant_id,amount,category,event_time,is_fraud,ingested_at\n\
         t1-1,1,1,5.00,fuel,2026-11-19T00:00:00Z,0,2026-11-19T00:01:00Z\n\
         t1-2,1,1,5.00,fuel,2026-11-19T00:00:00Z,0,2026-11-19T00:01:00Z,extra,fields\n",
    )
    .unwrap();
    let stderr = fails(dir, &["pipeline"]);
    assert!(
        stderr.contains("broken.csv at row 2")
            && stderr.contains("no bronze rows of this source were committed"),
        "{stderr}"
    );
    let after = python_tables(dir);
    for (name, table) in after.as_object().unwrap() {
        assert_eq!(table["version"], before[name]["version"], "{name} changed");
    }
}

#[test]
fn an_invalid_project_file_names_the_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    let file = dir.path().join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("entity = \"customer\"", "entity = \"custmer\""),
    )
    .unwrap();
    let stderr = fails(dir.path(), &["pipeline"]);
    let line = text
        .lines()
        .position(|l| l == "entity = \"customer\"")
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "aurum.toml:{line}: feature_view[0].entity: no entity named \"custmer\""
        )),
        "{stderr}"
    );
}

/// The example project with `gate` (a `[source.quality_gate]` body) on its
/// transactions source.
fn gate_transactions(dir: &Path, gate: &str) {
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replacen(
        "[[feature_view]]",
        &format!("[source.quality_gate]\n{gate}\n\n[[feature_view]]"),
        1,
    );
    std::fs::write(&file, text).unwrap();
}

#[test]
fn a_batch_under_its_quality_gate_is_committed_but_gold_is_held() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    ok(dir, &["init", "."]);
    ok(dir, &["generate", "--rows", "2000", "--seed", "3"]);
    // This batch scores 0.999 (2 of 2,000 rows quarantined).
    gate_transactions(dir, "min_score = 0.9995");
    let error = fails(dir, &["pipeline"]);
    assert!(
        error.contains("the quality gate of source transactions")
            && error.contains("quality score 0.9990 is under the minimum 0.9995")
            && error.contains("gate:min_score"),
        "{error}"
    );
    // Silver and the side tables are committed; gold is not.
    let delta = dir.join("data/delta");
    assert!(delta.join("silver_transactions/_delta_log").is_dir());
    assert!(delta.join("quality/_delta_log").is_dir());
    assert!(!delta.join("customer_features").exists());
    // A re-run with nothing new keeps the held batch held.
    let again = fails(dir, &["pipeline"]);
    assert!(again.contains("gate:min_score"), "{again}");
    assert!(!delta.join("customer_features").exists());
    // The gate's outcome is in the quality table, and a server shows it.
    let server = crate::server::start_with(dir, &["--table-metrics-interval-s", "1"]);
    let series =
        "aurum_quality_gate_failed{source=\"transactions\",view=\"*\",check=\"min_score\"} 1";
    crate::server::eventually("the failed gate on /metrics", || {
        let metrics =
            crate::server::call("GET", &format!("{}/metrics", server.url), None, None).text;
        metrics.contains(series).then_some(())
    });
    drop(server);

    // A share out of range is refused by name.
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("min_score = 0.9995", "min_score = 1.5")).unwrap();
    let error = fails(dir, &["pipeline"]);
    assert!(
        error.contains("source[1].quality_gate.min_score")
            && error.contains("1.5 is not a share between 0 and 1"),
        "{error}"
    );
    // Lowered to what the held batch meets, the next run advances gold.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "min_score = 1.5",
            "min_score = 0.99\nmax_quarantine_share = 0.01",
        ),
    )
    .unwrap();
    let report = pipeline_json(dir);
    assert_eq!(report["views"][0]["view"], "customer_features", "{report}");
    assert!(delta.join("customer_features/_delta_log").is_dir());
}
