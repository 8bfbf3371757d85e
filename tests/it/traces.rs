//! Traces, received for real: an OTLP collector written with the official
//! OpenTelemetry protobuf definitions (`tests/python/otlp_collector.py`)
//! takes what `aurum pipeline` (OTLP/gRPC) and `aurum serve` (OTLP/HTTP)
//! export, and the tests check the span trees — a pipeline run's stages, a
//! `/predict`'s parse, fetch, inference and log, a Flight call — and that a
//! caller's `traceparent` is continued and a malformed one ignored. A
//! collector that is down costs requests nothing: drops are counted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use registry::{NewVersion, Registry};
use serde_json::{Value, json};

use crate::cli::{ok, ok_in_env};
use crate::model_registry::model;
use crate::python::{run, venv_python, workspace};
use crate::server::{block_on, call, eventually, start_in_env};

/// The collector process, killed when dropped.
struct Collector {
    child: Child,
    out: PathBuf,
    http: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    fn start() -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.jsonl");
        let mut child = Command::new(venv_python())
            .arg(workspace().join("tests/python/otlp_collector.py"))
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the OTLP collector");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Value = serde_json::from_str(&line).expect("the collector prints its ports");
        Collector {
            child,
            out,
            http: ports["http"].as_u64().unwrap() as u16,
            grpc: ports["grpc"].as_u64().unwrap() as u16,
            _dir: dir,
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The spans of trace `trace_id`, once `done` says they are all in.
    fn trace(&self, trace_id: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        eventually(&format!("the spans of trace {trace_id}"), || {
            let spans: Vec<Value> = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id)
                .collect();
            done(&spans).then_some(spans)
        })
    }
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one span {name:?} in {spans:#?}");
    found[0]
}

/// POSTs `body` to `url` with `headers`; the status.
fn post_with(url: &str, body: &Value, headers: &[(&str, &str)]) -> u16 {
    let mut request = reqwest::Client::new().post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    block_on(async {
        request
            .send()
            .await
            .expect("calling the server")
            .status()
            .as_u16()
    })
}

#[test]
fn a_pipeline_run_and_a_predict_arrive_as_span_trees_at_a_real_collector() {
    let collector = Collector::start();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    ok(dir, &["init", "."]);
    ok(dir, &["generate", "--rows", "2000", "--seed", "5"]);

    // The pipeline over OTLP/gRPC: one trace, the run at its root and a
    // span per stage, flushed before the command exits.
    let grpc = format!("http://127.0.0.1:{}", collector.grpc);
    ok_in_env(
        dir,
        &["pipeline"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", grpc.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "aurum-batch"),
        ],
    );
    let spans = collector.spans();
    let run_span = one(&spans, "aurum pipeline");
    assert_eq!(run_span["transport"], "grpc");
    assert_eq!(run_span["service"], "aurum-batch");
    assert_eq!(run_span["parent_span_id"], "", "the run is a root");
    let trace_id = run_span["trace_id"].as_str().unwrap();
    let run_trace: Vec<Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == trace_id)
        .cloned()
        .collect();
    for stage in ["bronze", "silver", "gold"] {
        let stage_spans = named(&run_trace, stage);
        assert!(!stage_spans.is_empty(), "no {stage} span in {run_trace:#?}");
        for span in stage_spans {
            assert_eq!(span["parent_span_id"], run_span["span_id"], "{span}");
            assert_eq!(span["status"], "STATUS_CODE_UNSET", "{span}");
        }
    }
    let mut sources: Vec<&str> = named(&run_trace, "silver")
        .iter()
        .map(|s| s["attributes"]["aurum.source"].as_str().unwrap())
        .collect();
    sources.sort();
    assert_eq!(sources, ["merchants", "transactions"]);
    for silver in named(&run_trace, "silver") {
        assert!(
            silver["attributes"]["aurum.rows_in"].as_i64().unwrap() > 0,
            "{silver}"
        );
    }
    let gold = named(&run_trace, "gold")[0];
    assert!(gold["attributes"]["aurum.view"].is_string(), "{gold}");

    // A champion to serve.
    let registry = Registry::open(dir.join("data/registry")).unwrap();
    let new = NewVersion {
        features: [
            "customer_features:amount_sum_7d",
            "customer_features:amount_count_1d",
            "customer_features:amount_mean_7d",
        ]
        .iter()
        .map(|f| f.to_string())
        .collect(),
        ..NewVersion::default()
    };
    let version = registry.register("fraud", &model(3, 0.001), new).unwrap();
    registry
        .set_alias("fraud", "champion", version.version, "test")
        .unwrap();

    // The server over OTLP/HTTP.
    let http = format!("http://127.0.0.1:{}", collector.http);
    let server = start_in_env(
        dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", http.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let predict = format!("{}/predict", server.url);
    let body = json!({"model": "fraud", "entities": {"customer_id": [17]}});
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let status = post_with(
        &predict,
        &body,
        &[
            (
                "traceparent",
                &format!("00-{caller_trace}-{caller_span}-01"),
            ),
            ("tracestate", "vendor=opaque"),
        ],
    );
    assert_eq!(status, 200);
    let spans = collector.trace(caller_trace, |spans| {
        [
            "POST /predict",
            "parse",
            "online fetch",
            "inference",
            "log enqueue",
        ]
        .iter()
        .all(|name| !named(spans, name).is_empty())
    });
    let root = one(&spans, "POST /predict");
    assert_eq!(root["transport"], "http");
    assert_eq!(root["service"], "aurum");
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        root["parent_span_id"], caller_span,
        "the caller's span is the parent"
    );
    assert_eq!(root["trace_state"], "vendor=opaque");
    assert_eq!(root["attributes"]["http.route"], "/predict");
    assert_eq!(root["attributes"]["http.response.status_code"], 200);
    assert_eq!(root["attributes"]["aurum.model"], "fraud");
    assert_eq!(root["attributes"]["aurum.rows"], 1);
    for name in ["parse", "online fetch", "inference", "log enqueue"] {
        let span = one(&spans, name);
        assert_eq!(span["parent_span_id"], root["span_id"], "{span}");
        assert!(span["start"].as_u64() >= root["start"].as_u64(), "{span}");
        assert!(span["end"].as_u64() <= root["end"].as_u64(), "{span}");
    }
    let fetch = one(&spans, "online fetch");
    assert_eq!(fetch["attributes"]["aurum.view"], "customer_features");
    let inference = one(&spans, "inference");
    assert_eq!(inference["attributes"]["aurum.arm"], "champion");
    assert_eq!(inference["attributes"]["aurum.model.version"], 1);
    // No feature values in any attribute: only names, counts and ids.
    for span in &spans {
        for (key, _) in span["attributes"].as_object().unwrap() {
            assert!(!key.contains("amount_"), "{key} in {span}");
        }
    }

    // A malformed traceparent is ignored: the request starts a new trace.
    let before: Vec<String> = collector
        .spans()
        .iter()
        .map(|s| s["span_id"].as_str().unwrap().to_string())
        .collect();
    let status = post_with(
        &predict,
        &body,
        &[("traceparent", "00-nothex-00f067aa0ba902b7-01")],
    );
    assert_eq!(status, 200);
    let fresh = eventually(
        "the span of the request with a malformed traceparent",
        || {
            collector.spans().into_iter().find(|s| {
                s["name"] == "POST /predict"
                    && !before.contains(&s["span_id"].as_str().unwrap().to_string())
            })
        },
    );
    assert_eq!(fresh["parent_span_id"], "");
    assert_ne!(fresh["trace_id"], caller_trace);

    // A Flight call continues its caller's trace too.
    let flight_trace = "0af7651916cd43dd8448eb211c80319c";
    run(
        "pyarrow.flight ListFlights with a traceparent",
        "tests/python/flight_traced.py",
        &[
            server.flight.as_ref(),
            format!("00-{flight_trace}-b7ad6b7169203331-01").as_ref(),
        ],
    );
    let spans = collector.trace(flight_trace, |spans| !spans.is_empty());
    let call_span = one(&spans, "arrow.flight.protocol.FlightService/ListFlights");
    assert_eq!(call_span["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(call_span["attributes"]["rpc.system"], "grpc");
    assert_eq!(call_span["attributes"]["rpc.grpc.status_code"], 0);

    let metrics = call("GET", &format!("{}/metrics", server.url), None, None).text;
    let exported = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aurum_trace_spans_exported_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("the exported spans counter");
    assert!(exported >= 6, "{exported} spans exported");
}

#[test]
fn a_collector_that_is_down_costs_requests_nothing_and_drops_are_counted() {
    let project = crate::cli::example_project("500", "3");
    let dir = project.path();
    // A port nothing listens on: taken, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = start_in_env(
        dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let url = format!("{}/get-online-features", server.url);
    let body = json!({
        "features": ["customer_features:amount_sum_7d"],
        "entities": {"customer_id": [1, 2]},
    });
    for _ in 0..20 {
        assert_eq!(post_with(&url, &body, &[]), 200);
    }
    let dropped = eventually("spans counted as dropped", || {
        let metrics = call("GET", &format!("{}/metrics", server.url), None, None).text;
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("aurum_trace_spans_dropped_total{reason=\"export_failed\"} ")
            })
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n >= 20)
    });
    assert!(dropped >= 20);
}

/// The sample `name{labels}` of an OpenMetrics text, as a number.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_tables_and_the_last_pipeline_run_are_on_metrics() {
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    ok(dir, &["init", "."]);
    ok(dir, &["generate", "--rows", "1000", "--seed", "7"]);
    let report = crate::cli::json(dir, &["pipeline", "--json"]);
    let server = crate::server::start_with(dir, &["--table-metrics-interval-s", "1"]);
    let metrics = eventually("the tables on /metrics", || {
        let text = call("GET", &format!("{}/metrics", server.url), None, None).text;
        text.contains("aurum_pipeline_quality_score")
            .then_some(text)
    });
    let transactions = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "transactions")
        .unwrap();
    let rows = |table: &str, layer: &str| {
        sample(
            &metrics,
            &format!("aurum_table_rows{{table=\"{table}\",layer=\"{layer}\"}}"),
        )
        .unwrap_or_else(|| panic!("no rows of {table} in {metrics}"))
    };
    // The first run: each table holds exactly what the run wrote.
    assert_eq!(
        rows("bronze_transactions", "bronze"),
        transactions["bronze_rows"].as_f64().unwrap()
    );
    let silver_table = "silver_transactions";
    assert_eq!(
        rows(silver_table, "silver"),
        transactions["silver_rows_out"].as_f64().unwrap()
    );
    let view = &report["views"][0];
    let view_name = view["view"].as_str().unwrap();
    assert_eq!(rows(view_name, "gold"), view["rows"].as_f64().unwrap());
    for (table, layer) in [("bronze_transactions", "bronze"), (view_name, "gold")] {
        let version = sample(
            &metrics,
            &format!("aurum_table_version{{table=\"{table}\",layer=\"{layer}\"}}"),
        );
        assert!(version.is_some(), "{table} has a version: {metrics}");
    }
    // The example's events end at the current hour: gold is fresh.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let newest = sample(
        &metrics,
        &format!(
            "aurum_table_newest_event_timestamp_seconds{{table=\"{view_name}\",layer=\"gold\"}}"
        ),
    )
    .expect("the gold table's newest event time");
    assert!(
        now - newest < 2.0 * 86_400.0 && newest <= now + 3_600.0,
        "{newest} vs {now}"
    );
    let score = sample(
        &metrics,
        "aurum_pipeline_quality_score{source=\"transactions\"}",
    )
    .unwrap();
    assert!((score - transactions["quality_score"].as_f64().unwrap()).abs() < 1e-9);
    let seconds = sample(&metrics, "aurum_pipeline_last_run_duration_seconds")
        .unwrap_or_else(|| panic!("the last run's duration: {metrics}"));
    let took = report["seconds"].as_f64().unwrap();
    assert!(
        seconds > 0.0 && seconds <= took + 2.0,
        "{seconds} s vs the run's {took} s"
    );
}
