//! Stream ingest (issue 19): events from a Kafka topic landed in a bronze
//! Delta table by `aurum stream`'s consumer, against a real broker (tansu,
//! `make kafka`) on loopback, beside a plain confluent-kafka consumer
//! reading the same events (the brokers' and librdkafka's own pace).
//!
//! usage: cargo bench --bench stream -- [MODE...] [--events N]
//!        [--partitions P] [--max-batch-events B] [--commit-interval-ms MS]
//!        [--rate R] [--seconds S]
//!   ingest (default): N events produced before the clock starts; the time
//!     is from the consumer's start to the commit that makes bronze hold
//!     all N, beside a read-only confluent-kafka consumer;
//!   tiles: the same, the events received also cleaned by silver's rules and
//!     added to a request-time view's window tiles (what `aurum serve
//!     --stream` does); the events are stamped when sent, so every one is
//!     in a window;
//!   latency: events produced at R per second for S seconds, each stamped
//!     when sent, while the consumer (with the tiles) runs; per event, the
//!     time from its stamp to visible in the tiles;
//!   crash: the exactly-once check at full size: N events (each in a
//!     record batch of its own, see `tests/python/kafka_events.py`), the
//!     `aurum stream` process killed with SIGKILL at random points (seeded;
//!     one in four while it starts, the others within 600 ms after its
//!     first landed batch) until bronze holds them all, then bronze read by
//!     Python's deltalake:
//!     every (partition, offset) and event id once, offsets contiguous.
//!
//! The events are JSON with four declared columns, as in the stream tests.

#[path = "common/cli.rs"]
mod cli;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use feature_store::OnlineStore;
use polars::prelude::{DataFrame, DataType};
use stream::tiles::TilesFeed;
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
    let mut o = Options {
        events: 1_000_000,
        partitions: 3,
        max_batch: 200_000,
        interval_ms: 1_000,
        rate: 20_000,
        seconds: 20,
    };
    let mut modes = cli::flags_and_modes(|name, value| {
        match name {
            "--events" => o.events = value()?.parse()?,
            "--partitions" => o.partitions = value()?.parse()?,
            "--max-batch-events" => o.max_batch = value()?.parse()?,
            "--commit-interval-ms" => o.interval_ms = value()?.parse()?,
            "--rate" => o.rate = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if modes.is_empty() {
        modes.push("ingest".into());
    }
    let tansu = workspace().join(".tools/tansu/bin/tansu");
    if !tansu.exists() {
        bail!("{} is missing: run `make kafka`", tansu.display());
    }
    // `make kafka` builds the broker for the tests at opt-level 1; the
    // figures of BENCHMARKS.md were measured against a level-3 build.
    let built =
        std::fs::read_to_string(workspace().join(".tools/tansu/.version")).unwrap_or_default();
    if let Some(level) = built.split("opt-level ").nth(1)
        && level.trim() != "3"
    {
        eprintln!(
            "note: tansu is built at opt-level {}; BENCHMARKS.md's figures used 3 \
             (`TANSU_OPT_LEVEL=3 make kafka`, or `make bench`)",
            level.trim()
        );
    }
    for mode in &modes {
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
        kafka_events(&["create", &bootstrap, "payments", &o.partitions.to_string()])?;
        match mode.as_str() {
            "ingest" => ingest(&o, &bootstrap, false)?,
            "tiles" => ingest(&o, &bootstrap, true)?,
            "latency" => latency(&o, &bootstrap)?,
            "crash" => crash(&o, &bootstrap)?,
            other => bail!("unknown mode {other} (ingest, tiles, latency, crash)"),
        }
    }
    Ok(())
}

struct Options {
    events: u64,
    partitions: u32,
    max_batch: usize,
    interval_ms: u64,
    rate: u64,
    seconds: u64,
}

/// A project whose Kafka source `payments` feeds a request-time view.
fn project(o: &Options, bootstrap: &str) -> Result<(tempfile::TempDir, feature_store::Project)> {
    let dir = tempfile::tempdir()?;
    let (interval_ms, max_batch) = (o.interval_ms, o.max_batch);
    std::fs::write(
        dir.path().join("aurum.toml"),
        format!(
            r#"[project]
name = "bench"

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
topic = "payments"
assignment = "all"
commit_interval = "{interval_ms}ms"
max_batch_events = {max_batch}

[[feature_view]]
name = "customer_payments"
entity = "customer"
source = "payments"
ttl = "7d"
windows = ["1h", "1d"]
windows_at = "request"

[[feature_view.aggregation]]
column = "amount"
functions = ["count", "sum", "mean", "max", "stddev"]
"#
        ),
    )?;
    let project = feature_store::project::Project::load(&dir.path().join("aurum.toml"))?;
    Ok((dir, project))
}

/// A consumer landing `project`'s source, with the tiles feed when
/// `online` is given; `on_clean` sees each batch's clean rows.
fn consumer(
    project: &feature_store::Project,
    online: Option<Arc<OnlineStore>>,
    on_clean: Arc<dyn Fn(&DataFrame) + Send + Sync>,
    runtime: &tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    stats: Arc<StreamStats>,
) -> Result<std::thread::JoinHandle<stream::Result<()>>> {
    let source = project.sources[0].clone();
    let store = project.delta_store()?;
    let on_received = match online {
        Some(online) => {
            for view in &project.feature_views {
                online.register_view(view.feature_view());
            }
            let feed = Arc::new(TilesFeed::new(
                project,
                &source,
                Default::default(),
                online,
                "bench",
                stats.clone(),
            ));
            Some(feed.hook(Some(on_clean))?)
        }
        None => None,
    };
    let handle = runtime.handle().clone();
    Ok(std::thread::spawn(move || {
        let options = StreamOptions {
            on_received,
            exit_when_idle: None,
            run_id: "bench".into(),
            default_group: "aurum.bench.payments".into(),
        };
        stream::run(store, &source, &options, &stop, stats, handle)
    }))
}

fn ingest(o: &Options, bootstrap: &str, tiles: bool) -> Result<()> {
    let events = o.events;
    let clock = Instant::now();
    // Stamped when sent with the tiles, so that every event is in a window
    // (events older than every window are refused cheaply).
    let rate = if tiles { "-1" } else { "0" };
    kafka_events(&[
        "produce",
        bootstrap,
        "payments",
        "0",
        &events.to_string(),
        "0",
        "0",
        rate,
    ])?;
    let produce_seconds = clock.elapsed().as_secs_f64();
    eprintln!("produced {events} events in {produce_seconds:.2} s");
    let (_dir, project) = project(o, bootstrap)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(StreamStats::default());
    let online = tiles.then(|| Arc::new(OnlineStore::new(1 << 30)));
    let started = Instant::now();
    let consumer = consumer(
        &project,
        online.clone(),
        Arc::new(|_: &DataFrame| {}),
        &runtime,
        stop.clone(),
        stats.clone(),
    )?;
    // Done when bronze holds every event and, with the tiles, when the
    // tiles do too.
    let applied = || {
        online
            .as_ref()
            .and_then(|o| o.live_tiles("customer_payments"))
            .map_or(events, |t| t.stats().applied.load(Ordering::Relaxed))
    };
    let deadline = Instant::now() + Duration::from_secs(900);
    while stats.landed.load(Ordering::Relaxed) < events || applied() < events {
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
    if applied() != events {
        bail!("the tiles hold {} of {events} events", applied());
    }
    let aurum_rate = events as f64 / seconds;
    let reference = kafka_events(&["consume", bootstrap, "payments", &events.to_string()])?;
    let reference_seconds = reference["seconds"].as_f64().unwrap_or(f64::NAN);
    let reference_rate = reference["events"].as_f64().unwrap_or(0.0) / reference_seconds;
    println!(
        "stream ingest{}: {events} events, {} partitions, batches of up to {} / {} ms",
        if tiles { " + window tiles" } else { "" },
        o.partitions,
        o.max_batch,
        o.interval_ms
    );
    println!(
        "  aurum stream -> bronze (committed){}: {seconds:.2} s, {aurum_rate:.0} events/s, {} commits",
        if tiles {
            " -> silver rules -> tiles of 10 window features"
        } else {
            ""
        },
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

/// Produces `events` live-stamped events at `rate` per second.
fn produce_paced(bootstrap: &str, events: u64, rate: u64) -> Result<()> {
    kafka_events(&[
        "produce",
        bootstrap,
        "payments",
        "0",
        &events.to_string(),
        "0",
        "0",
        &rate.to_string(),
    ])?;
    Ok(())
}

fn latency(o: &Options, bootstrap: &str) -> Result<()> {
    let events = o.rate * o.seconds;
    let (_dir, project) = project(o, bootstrap)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(StreamStats::default());
    let online = Arc::new(OnlineStore::new(1 << 30));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    // Where the time goes: sent -> received by the consumer.
    // and received -> visible in the tiles (aurum's own part).
    let received: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let record = {
        let (latencies, received) = (latencies.clone(), received.clone());
        Arc::new(move |clean: &DataFrame| {
            let visible = chrono::Utc::now().timestamp_micros();
            let column = |name: &str| -> Option<Vec<Option<i64>>> {
                let c = clean.column(name).ok()?.cast(&DataType::Int64).ok()?;
                Some(c.i64().ok()?.iter().collect())
            };
            let Some(times) = column("ts") else { return };
            if let Ok(mut all) = latencies.lock() {
                all.extend(times.iter().flatten().map(|t| (visible - t) as f64 / 1e3));
            }
            if let (Some(ingested), Ok(mut all)) = (column("_ingested_at"), received.lock()) {
                all.extend(times.iter().zip(&ingested).filter_map(|(t, i)| {
                    let (t, i) = (t.as_ref()?, i.as_ref()?);
                    Some(((i - t) as f64 / 1e3, (visible - i) as f64 / 1e3))
                }));
            }
        })
    };
    let consumer = consumer(
        &project,
        Some(online.clone()),
        record,
        &runtime,
        stop.clone(),
        stats.clone(),
    )?;
    // The consumer is assigned and reading before the first event leaves.
    std::thread::sleep(Duration::from_secs(3));
    produce_paced(bootstrap, events, o.rate)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let reached = || latencies.lock().map(|l| l.len() as u64).unwrap_or(0);
    while reached() < events && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    consumer
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    let mut all = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    if all.len() as u64 != events {
        bail!("{} of {events} events reached the tiles", all.len());
    }
    all.sort_by(f64::total_cmp);
    let at = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "stream latency: {events} events at {} events/s, {} partitions, commits every {} ms",
        o.rate, o.partitions, o.interval_ms
    );
    println!(
        "  event sent -> visible in the window tiles: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 100 ms)",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    let received = received.lock().map(|l| l.clone()).unwrap_or_default();
    for (what, mut part) in [
        (
            "sent -> received by the consumer",
            received.iter().map(|r| r.0).collect::<Vec<f64>>(),
        ),
        (
            "received -> visible in the tiles",
            received.iter().map(|r| r.1).collect(),
        ),
    ] {
        if part.is_empty() {
            continue;
        }
        part.sort_by(f64::total_cmp);
        let at = |p: f64| part[((part.len() as f64 * p) as usize).min(part.len() - 1)];
        println!(
            "    {what}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    println!("  {} bronze commits", stats.commits.load(Ordering::Relaxed));

    // The reference: a plain confluent-kafka consumer (aurum's fetch
    // settings) receiving the same number of events at the same rate from
    // the same broker: the latency the broker and librdkafka allow.
    let python = workspace().join(".tools/venv/bin/python");
    let mut reference = Command::new(&python)
        .arg(workspace().join("tests/python/kafka_events.py"))
        .args(["latency", bootstrap, "payments", &events.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the reference consumer")?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        reference.stdout.take().context("the reference's output")?,
    ));
    lines
        .next()
        .context("the reference consumer said nothing")??;
    std::thread::sleep(Duration::from_secs(3));
    produce_paced(bootstrap, events, o.rate)?;
    let answer: serde_json::Value =
        serde_json::from_str(&lines.next().context("the reference's figures")??)?;
    reference.wait()?;
    println!(
        "  reference, confluent-kafka consumer: event sent -> received: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms ({} events)",
        answer["p50_ms"].as_f64().unwrap_or(f64::NAN),
        answer["p90_ms"].as_f64().unwrap_or(f64::NAN),
        answer["p99_ms"].as_f64().unwrap_or(f64::NAN),
        answer["events"]
    );
    Ok(())
}

fn crash(o: &Options, bootstrap: &str) -> Result<()> {
    use rand::{Rng, SeedableRng};

    let events = o.events;
    let clock = Instant::now();
    kafka_events(&[
        "produce",
        bootstrap,
        "payments",
        "0",
        &events.to_string(),
        "0",
        "1",
    ])?;
    println!(
        "crash: {events} events produced (one per record batch) in {:.1} s",
        clock.elapsed().as_secs_f64()
    );
    let (dir, _project) = project(o, bootstrap)?;
    let bronze = dir.path().join("data/delta/bronze_payments");
    let held = || -> Result<serde_json::Value> {
        if !bronze.join("_delta_log").exists() {
            return Ok(serde_json::json!({"rows": 0}));
        }
        kafka_events(&["bronze", bronze.to_str().context("a UTF-8 path")?])
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(19);
    let (mut kills, mut mid_stream) = (0, 0);
    let started = Instant::now();
    let log_path = dir.path().join("stream.log");
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aurum"))
            .arg("stream")
            .current_dir(dir.path())
            .env("AURUM_LOG", "warn,stream=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting aurum stream")?;
        // The consumer's log goes to `stream.log`; the first landed batch
        // of this run is signalled, so kill points fall while events
        // stream, not only while the consumer starts (a consumer resuming
        // deep in a log of one-record batches waits seconds for tansu's
        // first fetch).
        let (landed_tx, landed) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().context("the consumer's stderr")?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let copier = std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = writeln!(log, "{line}");
                if line.contains("bronze batch landed") {
                    let _ = landed_tx.send(());
                }
            }
        });
        // One kill in four while the consumer starts; the others at a
        // random point after its first landed batch.
        let (point, wait) = if rng.random_range(0..4) == 0 {
            let wait = Duration::from_millis(rng.random_range(0..1_500));
            std::thread::sleep(wait);
            ("after start", wait)
        } else {
            let wait = Duration::from_millis(rng.random_range(0..600));
            let clock = Instant::now();
            if landed.recv_timeout(Duration::from_secs(60)).is_ok() {
                mid_stream += 1;
                std::thread::sleep(wait);
                ("after its first landed batch", wait)
            } else {
                ("after waiting 60 s for a landed batch", clock.elapsed())
            }
        };
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let _ = copier.join();
        kills += 1;
        let rows = held()?["rows"].as_u64().unwrap_or(0);
        println!(
            "crash: kill -9 #{kills} {} ms {point}: bronze holds {rows} rows",
            wait.as_millis()
        );
        if rows >= events {
            break;
        }
        if started.elapsed() > Duration::from_secs(1_800) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "bronze holds {rows} of {events} events after {kills} kills; the consumer said:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    let status = Command::new(env!("CARGO_BIN_EXE_aurum"))
        .args(["stream", "--exit-when-idle", "3s"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("the last aurum stream run failed: {status}");
    }
    let held = held()?;
    let rows = held["rows"].as_u64().unwrap_or(0);
    let offsets = held["distinct_offsets"].as_u64().unwrap_or(0);
    let contiguous = held["partitions"].as_object().is_some_and(|p| {
        p.values()
            .all(|r| r["first"] == 0 && r["last"].as_u64().map(|l| l + 1) == r["count"].as_u64())
    });
    let ids_once = held["event_ids"] == held["distinct_event_ids"];
    println!(
        "crash: {kills} kill -9s ({mid_stream} while events streamed), then a clean run: bronze holds {rows} rows, {offsets} distinct (partition, offset) pairs, {} event ids ({} distinct), offsets contiguous from 0 in every partition: {contiguous}",
        held["event_ids"], held["distinct_event_ids"]
    );
    if rows != events || offsets != events || !contiguous || !ids_once {
        bail!("bronze does not hold each event exactly once: {held}");
    }
    println!("crash: exactly once: yes");
    Ok(())
}
