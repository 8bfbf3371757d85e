//! Kafka sources against a real Kafka-protocol broker (tansu, built by
//! `scripts/install-kafka.sh`) and a real Kafka client (confluent-kafka):
//! events land in bronze exactly once through `kill -9`s and rebalances,
//! malformed events are quarantined with their partition and offset, and
//! brokers or topics that are not there are named.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{json, ok};
use crate::server::{eventually, free_port, poll};

/// A tansu broker on a loopback port, its log in memory (storage engine
/// `memory://`); stopped when dropped.
pub(crate) struct Broker {
    child: Child,
    pub(crate) port: u16,
}

impl Broker {
    pub(crate) fn start() -> Broker {
        let tansu = crate::python::workspace().join(".tools/tansu/bin/tansu");
        assert!(
            tansu.exists(),
            "{} is missing: run `make kafka` (scripts/install-kafka.sh)",
            tansu.display()
        );
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "aurum-test"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tansu");
        eventually("the broker to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Broker { child, port }
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates `topic` with `partitions` through confluent-kafka's admin
    /// client.
    pub(crate) fn create_topic(&self, topic: &str, partitions: u32) {
        kafka_events(&["create", &self.bootstrap(), topic, &partitions.to_string()]);
    }

    /// Produces events `first..first + count` (every `bad_every`-th one
    /// malformed) with confluent-kafka, each in a record batch of its own
    /// (tansu 0.6 skips the rest of a batch when a consumer resumes inside
    /// it: see `tests/python/kafka_events.py`); returns the malformed ones.
    pub(crate) fn produce(&self, topic: &str, first: u64, count: u64, bad_every: u64) -> Value {
        let out = kafka_events(&[
            "produce",
            &self.bootstrap(),
            topic,
            &first.to_string(),
            &count.to_string(),
            &bad_every.to_string(),
            "1",
        ]);
        serde_json::from_str::<Value>(&out).expect("the producer prints JSON")["bad"].clone()
    }

    /// Produces events `first..first + count` stamped with the time each
    /// is sent, `rate` per second (-1: as fast as the client goes).
    pub(crate) fn produce_live(&self, topic: &str, first: u64, count: u64, rate: i64) {
        kafka_events(&[
            "produce",
            &self.bootstrap(),
            topic,
            &first.to_string(),
            &count.to_string(),
            "0",
            "0",
            &rate.to_string(),
        ]);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kafka_events(args: &[&str]) -> String {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    crate::python::run("confluent-kafka", "tests/python/kafka_events.py", &args)
}

/// A project whose source `payments` is the topic `topic` on `bootstrap`.
pub(crate) fn stream_project(bootstrap: &str, topic: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("aurum.toml"),
        format!(
            r#"[project]
name = "streams"

[[entity]]
name = "customer"
join_keys = ["customer_id"]

[[source]]
name = "payments"
format = "kafka"
timestamp = "ts"
columns = [
  {{ name = "event_id", type = "int64" }},
  {{ name = "customer_id", type = "string" }},
  {{ name = "amount", type = "float64" }},
  {{ name = "ts", type = "timestamp" }},
]

[source.kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
commit_interval = "200ms"
max_batch_events = 3000
{extra}

[[source.silver.nulls]]
column = "customer_id"
strategy = "drop"

[[feature_view]]
name = "customer_payments"
entity = "customer"
source = "payments"
ttl = "7d"
windows = ["1h"]

[[feature_view.aggregation]]
column = "amount"
functions = ["count", "sum"]
"#
        ),
    )
    .unwrap();
    dir
}

/// Makes the view of [`stream_project`] value its windows at the read.
pub(crate) fn windows_at_request(dir: &Path) {
    let file = dir.join("aurum.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "windows = [\"1h\"]",
            "windows = [\"1h\"]\nwindows_at = \"request\"",
        ),
    )
    .unwrap();
}

fn bronze_dir(project: &Path) -> PathBuf {
    project.join("data/delta/bronze_payments")
}

/// What bronze holds, as Python's deltalake reads it.
fn bronze(project: &Path) -> Value {
    let out = kafka_events(&["bronze", bronze_dir(project).to_str().unwrap()]);
    serde_json::from_str(&out).expect("the reader prints JSON")
}

fn spawn_stream(project: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(["stream"])
        .current_dir(project)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting aurum stream")
}

fn landed_rows(project: &Path) -> u64 {
    if !bronze_dir(project).join("_delta_log").exists() {
        return 0;
    }
    bronze(project)["rows"].as_u64().unwrap_or(0)
}

/// Bronze holds each of `expected` events once: one row per (partition,
/// offset), offsets contiguous from 0 in every partition, every good
/// event's id once.
fn assert_exactly_once(project: &Path, expected: u64, bad: u64) {
    let held = bronze(project);
    assert_eq!(held["rows"], expected, "{held}");
    assert_eq!(held["distinct_offsets"], expected, "{held}");
    assert_eq!(held["errors"], bad / 2, "not-JSON and array events: {held}");
    assert_eq!(
        held["event_ids"], held["distinct_event_ids"],
        "an event landed twice: {held}"
    );
    for (partition, range) in held["partitions"].as_object().unwrap() {
        assert_eq!(range["first"], 0, "{partition}: {held}");
        assert_eq!(
            range["last"].as_u64().unwrap() + 1,
            range["count"].as_u64().unwrap(),
            "{partition} has a gap or a duplicate: {held}"
        );
    }
}

fn kill_9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn events_land_in_bronze_exactly_once_through_kill_9_and_malformed_ones_are_quarantined() {
    let broker = Broker::start();
    broker.create_topic("payments", 3);
    // Every partition read by one consumer: tansu (0.6) evicts a killed
    // group member after the session timeout but then leaves the survivor
    // with an empty assignment, so group mode cannot be put through kill -9
    // on this broker (see ARCHITECTURE.md).
    let project = stream_project(&broker.bootstrap(), "payments", "assignment = \"all\"");
    let dir = project.path();
    let mut bad = broker
        .produce("payments", 0, 20_000, 250)
        .as_array()
        .unwrap()
        .clone();
    // Consumers killed at points spread over the run, while more events
    // arrive: each restart starts where bronze says.
    let mut produced = 20_000;
    for (round, wait_ms) in [700u64, 1_300, 400, 2_100].into_iter().enumerate() {
        let mut consumer = spawn_stream(dir);
        std::thread::sleep(Duration::from_millis(wait_ms));
        kill_9(&mut consumer);
        let more = broker.produce("payments", produced, 5_000, 250);
        bad.extend(more.as_array().unwrap().iter().cloned());
        produced += 5_000;
        eprintln!("round {round}: {} rows landed", landed_rows(dir));
    }
    let report = json(dir, &["stream", "--exit-when-idle", "3s", "--json"]);
    assert_eq!(report[0]["source"], "payments", "{report}");
    assert_eq!(report[0]["skipped_offsets"], 0, "{report}");
    assert_exactly_once(dir, produced, bad.len() as u64);

    // Silver quarantines every malformed event, naming why, where from.
    let run = json(dir, &["pipeline", "--json"]);
    let source = &run["sources"][0];
    assert_eq!(
        source["silver_rows_out"].as_u64().unwrap() + source["quarantined"].as_u64().unwrap(),
        produced,
        "{run}"
    );
    assert_eq!(source["quarantined"], bad.len() as u64, "{run}");
    let out = crate::python::run(
        "deltalake",
        "tests/python/read_any_table.py",
        &[dir.join("data/delta/quarantine").as_os_str()],
    );
    let quarantine: Value = serde_json::from_str(&out).unwrap();
    let rows = quarantine["rows"].as_array().unwrap();
    assert_eq!(rows.len(), bad.len(), "{quarantine}");
    for why in [
        "not JSON",
        "JSON array",
        "is not a valid timestamp",
        "customer_id: null",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["reason"].as_str().unwrap_or("").contains(why)),
            "no quarantine reason says {why:?}: {quarantine}"
        );
    }
    for row in rows {
        let file = row["source_file"].as_str().unwrap();
        assert!(file.starts_with("payments/"), "{row}");
        assert!(row["source_row"].as_i64().is_some(), "{row}");
    }
    // A second run of the stream finds nothing new.
    let again = json(dir, &["stream", "--exit-when-idle", "2s", "--json"]);
    assert_eq!(again[0]["landed"], 0, "{again}");
    assert_exactly_once(dir, produced, bad.len() as u64);
}

#[test]
fn two_consumers_of_one_group_share_the_partitions_and_land_each_event_once() {
    let broker = Broker::start();
    broker.create_topic("payments", 4);
    let project = stream_project(&broker.bootstrap(), "payments", "");
    let dir = project.path();
    let mut first = spawn_stream(dir);
    broker.produce("payments", 0, 10_000, 0);
    // A second consumer joins (a rebalance) while events arrive, then the
    // first leaves (another).
    let mut second = spawn_stream(dir);
    broker.produce("payments", 10_000, 10_000, 0);
    std::thread::sleep(Duration::from_millis(1_500));
    terminate(&mut first);
    broker.produce("payments", 20_000, 10_000, 0);
    poll(
        Duration::from_secs(120),
        Duration::from_millis(500),
        || (landed_rows(dir) >= 30_000).then_some(()),
        || format!("bronze holds {} of 30000 events", landed_rows(dir)),
    );
    terminate(&mut second);
    assert_exactly_once(dir, 30_000, 0);
}

/// Two consumers reading every partition of one topic into one bronze
/// table: their commits refuse each other's, each then reads again from
/// what bronze holds. Each hands an offset on to its `ReceivedHook` (the
/// window tiles' feed) at most once, re-reads included; between them
/// every event is handed on; and bronze holds each event once.
#[test]
fn events_read_again_after_a_refused_commit_are_handed_on_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let broker = Broker::start();
    broker.create_topic("payments", 2);
    let project = stream_project(&broker.bootstrap(), "payments", "assignment = \"all\"");
    let dir = project.path();
    let loaded = feature_store::project::Project::load(&dir.join("aurum.toml")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let handed: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let stats = Arc::new(::stream::StreamStats::default());
        let record = handed.clone();
        let options = ::stream::StreamOptions {
            on_received: Some(::stream::ReceivedHook(Arc::new(move |frame| {
                let files = frame.column("_source_file").unwrap().str().unwrap().clone();
                let offsets = frame.column("_source_row").unwrap().i64().unwrap().clone();
                let mut record = record.lock().unwrap();
                for (file, offset) in files.iter().zip(offsets.iter()) {
                    record.push((file.unwrap().to_string(), offset.unwrap()));
                }
            }))),
            exit_when_idle: None,
            run_id: "test".into(),
            default_group: "aurum.test.payments".into(),
        };
        let (store, source) = (loaded.delta_store().unwrap(), loaded.sources[0].clone());
        let (stop, for_run, handle) = (stop.clone(), stats.clone(), runtime.handle().clone());
        let thread = std::thread::spawn(move || {
            ::stream::run(store, &source, &options, &stop, for_run, handle)
        });
        consumers.push((thread, handed, stats));
    }
    broker.produce("payments", 0, 6_000, 0);
    let handed_between = || {
        let mut all: Vec<(String, i64)> = consumers
            .iter()
            .flat_map(|(_, handed, _)| handed.lock().unwrap().clone())
            .collect();
        all.sort();
        all.dedup();
        all.len()
    };
    poll(
        Duration::from_secs(120),
        Duration::from_millis(200),
        || (handed_between() >= 6_000).then_some(()),
        || format!("handed on {} of 6000 events", handed_between()),
    );
    poll(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || (landed_rows(dir) >= 6_000).then_some(()),
        || format!("bronze holds {} of 6000 events", landed_rows(dir)),
    );
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0;
    let mut read_again = 0;
    let mut between = Vec::new();
    for (thread, handed, stats) in consumers {
        thread.join().unwrap().unwrap();
        let mut handed = handed.lock().unwrap().clone();
        let received = handed.len();
        handed.sort();
        handed.dedup();
        assert_eq!(handed.len(), received, "an event was handed on twice");
        between.extend(handed);
        refused += stats.conflicts.load(Ordering::Relaxed);
        read_again += stats.consumed.load(Ordering::Relaxed) - 6_000;
    }
    between.sort();
    between.dedup();
    assert_eq!(between.len(), 6_000, "every event handed on by one or both");
    assert!(
        refused > 0 && read_again > 0,
        "the consumers never refused each other's commits ({refused} refused, {read_again} read again): the test did not test re-reads"
    );
    assert_exactly_once(dir, 6_000, 0);
}

const PAYMENT_AVSC: &str = r#"{
  "type": "record", "name": "Payment", "namespace": "shop.events",
  "fields": [
    {"name": "event_id", "type": "long"},
    {"name": "customer_id", "type": ["null", "string"]},
    {"name": "amount", "type": "double"},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "note", "type": ["null", "string"]}
  ]
}"#;

/// Avro events written by fastavro and framed as Confluent's Schema
/// Registry frames them land as text columns, become the right typed
/// silver rows, and the ones that do not decode with the declared schema
/// (cut short, another schema id, a union branch it lacks) are
/// quarantined, naming the field or the id.
#[test]
fn avro_events_land_and_those_the_schema_does_not_decode_are_quarantined() {
    let broker = Broker::start();
    broker.create_topic("payments", 2);
    let project = stream_project(
        &broker.bootstrap(),
        "payments",
        "assignment = \"all\"\nvalue_format = \"avro_confluent\"\navro_schema = \"payment.avsc\"\navro_schema_id = 7",
    );
    let dir = project.path();
    let schema = dir.join("payment.avsc");
    std::fs::write(&schema, PAYMENT_AVSC).unwrap();
    let out = kafka_events(&[
        "produce_avro",
        &broker.bootstrap(),
        "payments",
        schema.to_str().unwrap(),
        "500",
        "7",
    ]);
    let produced: Value = serde_json::from_str(&out).unwrap();
    let bad = produced["bad"].as_array().unwrap().len() as u64;
    assert_eq!(bad, 50, "{produced}");
    let report = json(dir, &["stream", "--exit-when-idle", "2s", "--json"]);
    assert_eq!(report[0]["landed"], 500, "{report}");
    assert_eq!(report[0]["undecodable"], bad, "{report}");

    let run = json(dir, &["pipeline", "--json"]);
    let source = &run["sources"][0];
    assert_eq!(source["silver_rows_out"], 450, "{run}");
    assert_eq!(source["quarantined"], bad, "{run}");
    let read = |table: &str| -> Vec<Value> {
        let out = crate::python::run(
            "deltalake",
            "tests/python/read_any_table.py",
            &[dir.join("data/delta").join(table).as_os_str()],
        );
        let table: Value = serde_json::from_str(&out).unwrap();
        table["rows"].as_array().unwrap().clone()
    };
    let quarantine = read("quarantine");
    for why in [
        "shorter than the schema reads",
        "schema id 8; this source reads id 7",
        "\"customer_id\": union branch 5",
    ] {
        assert!(
            quarantine
                .iter()
                .any(|r| r["reason"].as_str().unwrap_or("").contains(why)),
            "no quarantine reason says {why:?}: {quarantine:?}"
        );
    }
    let silver = read("silver_payments");
    assert_eq!(silver.len(), 450);
    let total: f64 = silver.iter().map(|r| r["amount"].as_f64().unwrap()).sum();
    assert!(
        (total - produced["sum"].as_f64().unwrap()).abs() < 1e-6,
        "{total} vs {produced}"
    );
    let first = silver
        .iter()
        .find(|r| r["event_id"] == 0)
        .expect("event 0 in silver");
    assert_eq!(first["customer_id"], "c0");
    assert!(
        first["ts"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01 00:00:00.250"),
        "{first}"
    );
}

/// Runs `aurum stream` until its error output says `expected` (it retries
/// on its own), then stops it; returns that output.
fn stream_says(dir: &Path, expected: &str, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(["stream"])
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("AURUM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match received.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(expected) {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains(expected), "expected {expected:?} in:\n{seen}");
    seen
}

#[test]
fn brokers_topics_and_credentials_that_are_not_there_are_named() {
    // Nothing listens on this port.
    let nobody = format!("127.0.0.1:{}", free_port());
    let project = stream_project(&nobody, "payments", "");
    let said = stream_says(project.path(), "cannot reach the brokers", &[]);
    assert!(
        said.contains(&format!("Kafka {nobody}, topic payments")),
        "{said}"
    );
    assert!(said.contains("retry"), "{said}");

    let broker = Broker::start();
    let project = stream_project(&broker.bootstrap(), "absent", "");
    stream_says(
        project.path(),
        &format!(
            "Kafka {}, topic absent: the topic does not exist",
            broker.bootstrap()
        ),
        &[],
    );

    // A password variable that is not set stops the stream at once, named;
    // a set one never shows.
    let sasl = "security_protocol = \"sasl_plaintext\"\nsasl_username = \"$ConnectionString\"\nsasl_password_env = \"AURUM_TEST_KAFKA_SECRET\"";
    let project = stream_project(&broker.bootstrap(), "payments", sasl);
    let out = crate::cli::run(project.path(), &["stream"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("AURUM_TEST_KAFKA_SECRET (sasl_password_env) is not set"),
        "{err}"
    );
    broker.create_topic("payments", 1);
    let said = stream_says(
        project.path(),
        "Kafka",
        &[(
            "AURUM_TEST_KAFKA_SECRET",
            "Endpoint=sb://x/;SharedAccessKey=s3cr3t-value",
        )],
    );
    assert!(!said.contains("s3cr3t-value"), "{said}");
    let _ = ok;
}

#[test]
fn start_latest_is_chosen_once_so_a_crash_before_the_first_batch_loses_nothing() {
    let broker = Broker::start();
    broker.create_topic("payments", 1);
    let project = stream_project(&broker.bootstrap(), "payments", "start = \"latest\"");
    let dir = project.path();
    // Events from before the source existed: `latest` skips them.
    broker.produce("payments", 0, 100, 0);
    let mut consumer = spawn_stream(dir);
    // The consumer records where it starts before it reads anything.
    let first_commit = bronze_dir(dir).join("_delta_log/00000000000000000000.json");
    poll(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || first_commit.exists().then_some(()),
        || "the consumer never recorded its start in bronze".to_string(),
    );
    kill_9(&mut consumer);
    // Produced while no consumer runs: the next one must land them all,
    // not start again at the (now later) end.
    broker.produce("payments", 100, 100, 0);
    let report = json(dir, &["stream", "--exit-when-idle", "2s", "--json"]);
    assert_eq!(report[0]["landed"], 100, "{report}");
    let held = bronze(dir);
    assert_eq!(held["rows"], 100, "{held}");
    assert_eq!(held["partitions"]["payments/0"]["first"], 100, "{held}");
    assert_eq!(held["partitions"]["payments/0"]["last"], 199, "{held}");
    assert_eq!(held["distinct_event_ids"], 100, "{held}");
}

/// `aurum serve --stream`: events land in bronze and reach the request-time
/// window tiles as their commit lands; what the server answers then is what
/// the training set computes once the pipeline has run.
#[test]
fn serve_stream_shows_events_in_request_time_windows_as_the_training_set_computes_them() {
    use crate::server::{call, start_with};
    let broker = Broker::start();
    broker.create_topic("payments", 2);
    let project = stream_project(&broker.bootstrap(), "payments", "");
    let dir = project.path();
    windows_at_request(dir);
    let server = start_with(dir, &["--stream"]);
    let customers: Vec<String> = (0..97).map(|c| format!("c{c}")).collect();
    let features = [
        "customer_payments:amount_count_1h",
        "customer_payments:amount_sum_1h",
    ];
    let read = || -> Value {
        let reply = call(
            "POST",
            &format!("{}/get-online-features", server.url),
            Some(
                &serde_json::json!({"entities": {"customer_id": customers}, "features": features}),
            ),
            None,
        );
        assert_eq!(reply.status, 200);
        reply.json()
    };
    let counted = |answer: &Value| -> f64 {
        answer["results"][1]["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .sum()
    };
    broker.produce_live("payments", 0, 500, -1);
    poll(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || (counted(&read()) == 500.0).then_some(()),
        || format!("the windows count {} of 500 events", counted(&read())),
    );
    // The windows see the events before their bronze commit lands.
    let expected = [
        "aurum_stream_events_landed_total{source=\"payments\"} 500",
        "aurum_window_events_applied_total{view=\"customer_payments\"} 500",
        "aurum_window_event_visible_seconds_count{view=\"customer_payments\"} 500",
    ];
    let metrics = || call("GET", &format!("{}/metrics", server.url), None, None).text;
    poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let metrics = metrics();
            expected.iter().all(|e| metrics.contains(e)).then_some(())
        },
        || format!("{expected:?} not all in {}", metrics()),
    );
    let ready = call("GET", &format!("{}/health/ready", server.url), None, None).json();
    assert_eq!(ready["streams"][0]["state"], "ok", "{ready}");

    // What the server answers now is what the training set holds at the
    // same time, once the pipeline has taken the landed events to gold.
    let before = chrono::Utc::now().timestamp_micros();
    let online = read();
    let after = chrono::Utc::now().timestamp_micros();
    drop(server);
    ok(dir, &["pipeline"]);
    let n = customers.len();
    let mut spine = feature_store::testing::frame(vec![
        polars::prelude::Column::new(
            "customer_id".into(),
            customers
                .iter()
                .chain(&customers)
                .cloned()
                .collect::<Vec<_>>(),
        ),
        feature_store::testing::utc_micros(
            "event_timestamp",
            [vec![before; n], vec![after; n]].concat(),
        ),
    ]);
    use polars::prelude::{DataType, ParquetReader, ParquetWriter, SerReader};
    ParquetWriter::new(std::fs::File::create(dir.join("spine.parquet")).unwrap())
        .finish(&mut spine)
        .unwrap();
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
    let set = ParquetReader::new(std::fs::File::open(dir.join("set.parquet")).unwrap())
        .finish()
        .unwrap();
    for (i, feature) in ["amount_count_1h", "amount_sum_1h"].iter().enumerate() {
        let column = set
            .column(feature)
            .unwrap()
            .cast(&DataType::Float64)
            .unwrap();
        let values = column.f64().unwrap();
        for (c, customer) in customers.iter().enumerate() {
            let (at_before, at_after) = (values.get(c), values.get(n + c));
            assert_eq!(
                at_before, at_after,
                "{feature} of {customer} moved during the read"
            );
            let served = online["results"][i + 1]["values"][c].as_f64();
            let close = match (served, at_before) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
                (a, b) => a == b,
            };
            assert!(
                close,
                "{feature} of {customer}: served {served:?}, training set {at_before:?}"
            );
        }
    }
}

#[test]
fn a_restarted_server_adds_to_its_tiles_the_events_bronze_holds_beyond_silver() {
    use crate::server::{call, start_with};
    let broker = Broker::start();
    broker.create_topic("payments", 2);
    let project = stream_project(&broker.bootstrap(), "payments", "assignment = \"all\"");
    let dir = project.path();
    windows_at_request(dir);
    // 300 events through silver and gold; 200 more landed in bronze by a
    // later run the pipeline has not seen.
    broker.produce_live("payments", 0, 300, -1);
    let first = json(dir, &["stream", "--exit-when-idle", "2s", "--json"]);
    assert_eq!(first[0]["landed"], 300, "{first}");
    ok(dir, &["pipeline"]);
    broker.produce_live("payments", 300, 200, -1);
    let second = json(dir, &["stream", "--exit-when-idle", "2s", "--json"]);
    assert_eq!(second[0]["landed"], 200, "{second}");

    let server = start_with(dir, &["--stream"]);
    let customers: Vec<String> = (0..97).map(|c| format!("c{c}")).collect();
    let read = || -> Value {
        let reply = call(
            "POST",
            &format!("{}/get-online-features", server.url),
            Some(&serde_json::json!({
                "entities": {"customer_id": customers},
                "features": ["customer_payments:amount_count_1h", "customer_payments:amount_sum_1h"],
            })),
            None,
        );
        assert_eq!(reply.status, 200);
        reply.json()
    };
    let total = |answer: &Value, feature: usize| -> f64 {
        answer["results"][feature]["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .sum()
    };
    // The stream is running once readiness lists it; the tiles were caught
    // up before it started.
    poll(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            let ready = call("GET", &format!("{}/health/ready", server.url), None, None).json();
            (ready["streams"][0]["state"] == "ok").then_some(())
        },
        || "the stream to start".to_string(),
    );
    let answer = read();
    assert_eq!(
        total(&answer, 1),
        500.0,
        "events the windows count after the restart (300 through silver, 200 in bronze only)"
    );
    // amounts are event id / 100: 0.00 + 0.01 + ... + 4.99.
    let sum = total(&answer, 2);
    assert!((sum - 1247.5).abs() < 1e-6, "sum {sum}");
    // Caught-up events are applied, not timed as arrivals; no event came
    // through the consumer.
    let metrics = call("GET", &format!("{}/metrics", server.url), None, None).text;
    assert!(
        metrics.contains("aurum_window_events_applied_total{view=\"customer_payments\"} 500"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("aurum_window_event_visible_seconds_count{view=\"customer_payments\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aurum_stream_events_landed_total{source=\"payments\"} 0"),
        "{metrics}"
    );
}
