//! Stream ingest (issue 19): events from a Kafka topic landed in a bronze
//! Delta table by `aurum stream`'s consumer, against a real broker (tansu,
//! `make kafka`) on loopback, beside a plain confluent-kafka consumer
//! reading the same events (the brokers' and librdkafka's own pace).
//!
//! usage: cargo bench --bench stream -- [--events N] [--partitions P]
//!        [--max-batch-events B] [--commit-interval-ms MS]
//!
//! The events (JSON, four declared columns, as in the stream tests) are
//! produced before the clock starts; the time is from the consumer's start
//! to the commit that makes bronze hold all N events.

#[path = "common/cli.rs"]
mod cli;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stream::{StreamOptions, StreamStats};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kafka_events(args: &[&str]) -> Result<serde_json::Value> {
    let python = workspace().join(".tools/venv/bin/python");
    let output = Command::new(&python)
        .arg(workspace().join("tests/python/kafka_events.py"))
        .args(args)
        .output()
        .with_context(|| format!("running {} (make python)", python.display()))?;
    if !output.status.success() {
        bail!(
            "kafka_events.py {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn main() -> Result<()> {
    cli::init_logging();
    let (mut events, mut partitions, mut max_batch, mut interval_ms) =
        (1_000_000u64, 3u32, 200_000usize, 1_000u64);
    cli::flags(|name, value| {
        match name {
            "--events" => events = value()?.parse()?,
            "--partitions" => partitions = value()?.parse()?,
            "--max-batch-events" => max_batch = value()?.parse()?,
            "--commit-interval-ms" => interval_ms = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let tansu = workspace().join(".tools/tansu/bin/tansu");
    if !tansu.exists() {
        bail!("{} is missing: run `make kafka`", tansu.display());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let _broker = Broker(
        Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let bootstrap = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("tansu did not listen on {bootstrap}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    kafka_events(&["create", &bootstrap, "payments", &partitions.to_string()])?;
    let clock = Instant::now();
    kafka_events(&[
        "produce",
        &bootstrap,
        "payments",
        "0",
        &events.to_string(),
        "0",
    ])?;
    let produce_seconds = clock.elapsed().as_secs_f64();
    eprintln!("produced {events} events in {produce_seconds:.2} s");

    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("aurum.toml"),
        format!(
            r#"[project]
name = "bench"

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
topic = "payments"
assignment = "all"
commit_interval = "{interval_ms}ms"
max_batch_events = {max_batch}
"#
        ),
    )?;
    let project = feature_store::project::Project::load(&dir.path().join("aurum.toml"))?;
    let source = project.sources[0].clone();
    let store = project.delta_store()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(StreamStats::default());
    let started = Instant::now();
    let consumer = {
        let (stop, stats, handle) = (stop.clone(), stats.clone(), runtime.handle().clone());
        std::thread::spawn(move || {
            let options = StreamOptions {
                on_landed: None,
                exit_when_idle: None,
                run_id: "bench".into(),
                default_group: "aurum.bench.payments".into(),
            };
            stream::run(store, &source, &options, &stop, stats, handle)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    while stats.landed.load(Ordering::Relaxed) < events {
        if consumer.is_finished() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    let report = stats.report("payments", "payments");
    if report.landed != events {
        bail!(
            "bronze holds {} of {events} events: {report:?}",
            report.landed
        );
    }
    let aurum_rate = events as f64 / seconds;
    let reference = kafka_events(&["consume", &bootstrap, "payments", &events.to_string()])?;
    let reference_seconds = reference["seconds"].as_f64().unwrap_or(f64::NAN);
    let reference_rate = reference["events"].as_f64().unwrap_or(0.0) / reference_seconds;
    println!(
        "stream ingest: {events} events, {partitions} partitions, batches of up to {max_batch} / {interval_ms} ms"
    );
    println!(
        "  aurum stream -> bronze (committed): {seconds:.2} s, {aurum_rate:.0} events/s, {} commits",
        report.commits
    );
    println!(
        "  confluent-kafka consumer, read only: {reference_seconds:.2} s, {reference_rate:.0} events/s"
    );
    println!(
        "  ratio aurum / read-only reference: {:.2}",
        aurum_rate / reference_rate
    );
    println!(
        "  producer (confluent-kafka, before the clock): {:.0} events/s",
        events as f64 / produce_seconds
    );
    Ok(())
}
