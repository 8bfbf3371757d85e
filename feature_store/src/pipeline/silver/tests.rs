use super::*;
use crate::project::Project;

#[test]
fn iso_timestamps_parse_like_chrono() {
    for text in [
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:00:00.5Z",
        "2026-03-01T10:00:00.123456Z",
        "2026-03-01T10:00:00.123456789+02:00",
        "1969-12-31T23:59:59.999999Z",
        "2024-02-29 23:59:59-0130",
    ] {
        let expected = chrono::DateTime::parse_from_rfc3339(
            &text.replace(' ', "T").replace("-0130", "-01:30"),
        )
        .unwrap()
        .timestamp_micros();
        assert_eq!(parse_iso_micros(text), Some(expected), "{text}");
    }
    for bad in [
        "2026-13-45T25:61:00Z",
        "2026-02-30T00:00:00Z",
        "2026-03-01",
        "2026-03-01T10:00:00.Z",
        "2026-03-01T10:00:00Zx",
        "N/A",
    ] {
        assert_eq!(parse_iso_micros(bad), None, "{bad}");
    }
}
use std::path::Path;

const PROJECT: &str = r#"[project]
name = "t"

[[entity]]
name = "user"
join_keys = ["user_id"]

[[source]]
name = "events"
format = "jsonl"
path = "events/*.jsonl"
timestamp = "ts"
columns = [
  { name = "id", type = "string" },
  { name = "user_id", type = "int64" },
  { name = "value", type = "decimal(6,2)" },
  { name = "score", type = "float64" },
  { name = "kind", type = "categorical", lowercase = true },
  { name = "local", type = "timestamp", format = "%Y-%m-%d %H:%M:%S", timezone = "Europe/Berlin" },
  { name = "ts", type = "timestamp", format = "%Y-%m-%dT%H:%M:%S%z" },
]

[source.silver]
dedup_key = ["id"]
nulls = [
  { column = "user_id", strategy = "drop" },
  { column = "kind", strategy = "constant", value = "other" },
  { column = "score", strategy = "forward_fill", by = ["user_id"] },
  { column = "value", strategy = "median" },
]

[[source.silver.rules]]
column = "value"
check = "range"
min = 0

[[source.silver.rules]]
column = "id"
check = "regex"
pattern = "^e[0-9]+$"

[[source.silver.rules]]
column = "kind"
check = "allowed"
values = ["a", "b", "other"]
severity = "soft"

[[source.silver.rules]]
column = "ts"
check = "freshness"
max_delay = "1d"
"#;

fn batch(rows: &[[Option<&str>; 7]]) -> DataFrame {
    let names = ["id", "user_id", "value", "score", "kind", "local", "ts"];
    let mut columns: Vec<Column> = names
        .iter()
        .enumerate()
        .map(|(j, n)| {
            Column::new(
                (*n).into(),
                rows.iter().map(|r| r[j]).collect::<Vec<Option<&str>>>(),
            )
        })
        .collect();
    let n = rows.len();
    columns.push(Column::new(SOURCE_FILE.into(), vec!["events/a.jsonl"; n]));
    columns.push(Column::new(
        SOURCE_ROW.into(),
        (1..=n as i64).collect::<Vec<_>>(),
    ));
    let ingested = 1_772_366_400_000_000i64; // 2026-03-01T12:00:00Z
    DataFrame::new_infer_height(columns)
        .unwrap()
        .lazy()
        .with_column(
            lit(ingested)
                .cast(DataType::Datetime(TimeUnit::Microseconds, Some(UTC)))
                .alias(INGESTED_AT),
        )
        .collect()
        .unwrap()
}

/// The batch of [`every_step_and_every_rejection_is_accounted_for`]: a row
/// per case, in the columns of `PROJECT` (id, user, value, score, kind,
/// local time, event time).
fn one_row_per_case() -> [[Option<&'static str>; 7]; 8] {
    let t = Some("2026-03-01T10:00:00+0200");
    // A soft failure: an unknown kind stays in silver.
    let e6 = [
        Some("e6"),
        Some("3"),
        Some("3.00"),
        None,
        Some("zzz"),
        None,
        t,
    ];
    [
        // Clean, with a Berlin wall-clock time (UTC+1 in March).
        [
            Some("e1"),
            Some("1"),
            Some("10.50"),
            Some("1.5"),
            Some(" A "),
            Some("2026-03-01 12:00:00"),
            t,
        ],
        // Score forward-filled from e1, kind defaulted, value = median.
        [
            Some("e2"),
            Some("1"),
            None,
            None,
            None,
            None,
            Some("2026-03-01T10:30:00+0200"),
        ],
        // Type failure: the amount is not a decimal.
        [Some("e3"), Some("2"), Some("ten"), None, Some("b"), None, t],
        // Null user: dropped to quarantine by its null strategy.
        [Some("e4"), None, Some("1.00"), None, Some("b"), None, t],
        // Range and regex failures (both hard), one quarantine row.
        [
            Some("x5"),
            Some("3"),
            Some("-2.00"),
            None,
            Some("b"),
            None,
            t,
        ],
        e6,
        // Arrived three days after the event: late beyond the lateness.
        [
            Some("e7"),
            Some("3"),
            Some("3.00"),
            None,
            Some("b"),
            None,
            Some("2026-02-26T10:00:00+0200"),
        ],
        // A re-delivery of e6 with the same event time: resolved.
        e6,
    ]
}

#[test]
fn every_step_and_every_rejection_is_accounted_for() {
    let project = Project::parse(PROJECT, Path::new("aurum.toml"), Path::new(".")).unwrap();
    let source = &project.sources[0];
    let rows = one_row_per_case();
    let ctx = BatchContext {
        run_id: "r".into(),
        bronze_version: 4,
        now_micros: 0,
    };
    let out = process(batch(&rows), source, &BTreeMap::new(), &ctx).unwrap();
    let s = &out.summary;
    assert_eq!(s.rows_in, 8);
    assert_eq!(s.duplicates_resolved, 1);
    assert_eq!(s.quarantined, 4, "{:?}", out.quarantine);
    assert_eq!(s.rows_out, 3);
    assert_eq!(
        s.rows_out + s.quarantined + s.duplicates_resolved,
        s.rows_in
    );
    assert_eq!(s.failures["type:value"], 1);
    assert_eq!(s.failures["null:user_id"], 1);
    assert_eq!(s.failures["range:value"], 1);
    assert_eq!(s.failures["regex:id"], 1);
    assert_eq!(s.failures["allowed:kind"], 1);
    assert_eq!(s.failures["freshness:ts"], 1);

    let reasons: Vec<String> = out
        .quarantine
        .column("reason")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|r| r.unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons.contains(&"value: \"ten\" is not a valid decimal(6,2)".to_string()),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"user_id: null, and the null strategy is drop".to_string()));
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("value: -2.00 is outside [0, inf]")
                && r.contains("does not match /^e[0-9]+$/")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"ts: arrived more than 1d after the event".to_string()),
        "{reasons:?}"
    );
    let record = out
        .quarantine
        .column("record")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_string();
    assert!(record.contains("\"value\":\"ten\""), "{record}");

    let clean = out
        .clean
        .sort(["id"], SortMultipleOptions::default())
        .unwrap();
    let text = |c: &str| -> Vec<String> {
        clean
            .column(c)
            .unwrap()
            .as_materialized_series()
            .iter()
            .map(|v| v.to_string())
            .collect()
    };
    assert_eq!(text("id"), ["\"e1\"", "\"e2\"", "\"e6\""]);
    assert_eq!(text("kind"), ["\"a\"", "\"other\"", "\"zzz\""]);
    assert_eq!(text("score")[1], "1.5", "forward-filled from the same user");
    // The median of 10.50, 3.00, 3.00 among rows that reached step 2.
    assert_eq!(text("value")[1], "3.00");
    assert_eq!(text("local")[0], "2026-03-01 11:00:00 UTC");
    assert_eq!(text("ts")[0], "2026-03-01 08:00:00 UTC");
    let score = out.quality.column("score").unwrap().f64().unwrap();
    let last = score.get(score.len() - 1).unwrap();
    assert!((last - 2.0 / 7.0).abs() < 1e-9, "batch score {last}");
}
