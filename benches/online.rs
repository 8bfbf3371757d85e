//! Online-store benchmarks (issue 4): in-process lookups, HTTP
//! `/get-online-features` under load, push ingestion and push-to-visible
//! latency, and materialization of a large gold table.
//!
//! usage: cargo bench --bench online -- [MODE...] [--entities N]
//!        [--features F] [--seconds S] [--connections C] [--gold-rows R]
//!        [--gold-features G]
//!   MODE: lookup | http | push | materialize (default: all four)
//!         | materialize-s3: the same gold table materialized from local
//!           disk and from a real S3 server (moto, from the test
//!           virtualenv), one after the other, with the S3 requests made
//!
//! With `--redis URL [--l1-mib M]`, `http` and `materialize` run over the
//! shared tier on that Redis (issue 20): the rows are materialized into it
//! and the server reads through an L1 of M MiB (0: every read a miss); the
//! L1 hit ratio is printed with the figures
//! (`benches/online_tier/compare_redis.sh` runs both beside Feast's
//! feature server on the same Redis).
//!
//! and, to load any server with the same generator (used for Feast by
//! `benches/feast/compare.sh`):
//!   cargo bench --bench online -- load --url URL --body-file F
//!        [--seconds S] [--connections C]
//!
//! The HTTP load generator is in this file: keep-alive HTTP/1.1 over raw
//! TCP on loopback, C connections on one thread, each sending its next
//! request when the previous answer is read (a closed loop, as wrk does).
//! Latency is measured per request from write to the end of the answer.
//! The server runs in the same process on its own 2-thread runtime, so the
//! load generator's CPU is counted on the same 2 cores.

// The allocator the `aurum` binary runs with (src/main.rs), so the
// figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/cli.rs"]
mod cli;
#[path = "common/load.rs"]
mod load;
#[path = "common/memory.rs"]
mod memory;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/view.rs"]
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{percentiles, post_request, read_response, run_load};
use view::{VIEW, view};

use anyhow::{Context, Result, bail};
use delta::DeltaStore;
use feature_store::online::OnlineStore;
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::AsyncWriteExt;

struct Options {
    modes: Vec<String>,
    entities: usize,
    features: usize,
    seconds: u64,
    connections: usize,
    gold_rows: usize,
    gold_features: usize,
    url: Option<String>,
    body_file: Option<String>,
    parquet: Option<String>,
    /// Run over the shared tier on this Redis.
    redis: Option<String>,
    /// The L1 cache's size with `--redis`, in MiB.
    l1_mib: u64,
    /// Entities of the materialized gold table (default: a tenth of its
    /// rows).
    gold_entities: Option<usize>,
}

fn main() -> Result<()> {
    let mut o = Options {
        modes: Vec::new(),
        entities: 1_000_000,
        features: 50,
        seconds: 10,
        connections: 32,
        gold_rows: 10_000_000,
        gold_features: 18,
        url: None,
        body_file: None,
        parquet: None,
        redis: None,
        l1_mib: 1024,
        gold_entities: None,
    };
    o.modes = cli::flags_and_modes(|flag, value| {
        match flag {
            "--entities" => o.entities = value()?.parse()?,
            "--features" => o.features = value()?.parse()?,
            "--seconds" => o.seconds = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--gold-rows" => o.gold_rows = value()?.parse()?,
            "--gold-features" => o.gold_features = value()?.parse()?,
            "--url" => o.url = Some(value()?),
            "--body-file" => o.body_file = Some(value()?),
            "--parquet" => o.parquet = Some(value()?),
            "--redis" => o.redis = Some(value()?),
            "--l1-mib" => o.l1_mib = value()?.parse()?,
            "--gold-entities" => o.gold_entities = Some(value()?.parse()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if o.modes.is_empty() {
        o.modes = ["lookup", "http", "push", "materialize"]
            .map(String::from)
            .to_vec();
    }
    if o.modes.iter().any(|m| m == "load") {
        return load_external(&o);
    }
    if let Some(url) = o.redis.clone() {
        return over_redis(&mut o, &url);
    }
    if o.modes.iter().any(|m| m == "materialize-s3") {
        // Started before the runtime's threads (it sets the credentials).
        let server = s3::S3Server::start("bench")?;
        return materialize_from_s3(&o, &server);
    }
    let needs_store = o.modes.iter().any(|m| m != "materialize");
    let online = if needs_store {
        Some(loaded_store(&mut o)?)
    } else {
        None
    };
    for mode in &o.modes {
        match (mode.as_str(), &online) {
            ("lookup", Some(online)) => lookup(&o, online),
            ("http", Some(online)) => http(&o, online.clone())?,
            ("push", Some(online)) => push(&o, online.clone())?,
            ("materialize", _) => materialize(&o)?,
            (other, _) => bail!("unknown mode {other}"),
        }
    }
    Ok(())
}

fn now_micros() -> i64 {
    feature_store::online::push::now_micros()
}

/// `rows` gold rows over `entities` entities (row i belongs to entity
/// i % entities), event times spread over the last hour, random features.
fn gold_frame(rows: usize, entities: usize, features: usize, seed: u64) -> Result<DataFrame> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let now = now_micros();
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let keys: Vec<i64> = (0..rows).map(|i| (i % entities) as i64).collect();
    let times: Vec<i64> = (0..rows)
        .map(|_| now - rng.random_range(0..3_600_000_000i64))
        .collect();
    let mut columns: Vec<Column> = vec![
        Column::new("entity_id".into(), keys),
        Series::new("event_timestamp".into(), times.clone())
            .cast(&utc)?
            .into(),
        Series::new("created_timestamp".into(), times)
            .cast(&utc)?
            .into(),
    ];
    for f in 0..features {
        let values: Vec<f64> = (0..rows).map(|_| rng.random::<f64>() * 1000.0).collect();
        columns.push(Column::new(format!("f{f}").into(), values));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}

/// The rows the lookup benches serve: `--parquet`'s (the same rows another
/// store serves, benches/feast/compare.sh; sizes taken from it) or one
/// generated row per entity.
fn served_rows(o: &mut Options) -> Result<DataFrame> {
    Ok(match &o.parquet {
        Some(path) => {
            let df = ParquetReader::new(std::fs::File::open(path)?).finish()?;
            o.entities = df.height();
            o.features = df.width() - 3;
            df
        }
        None => gold_frame(o.entities, o.entities, o.features, 7)?,
    })
}

fn loaded_store(o: &mut Options) -> Result<Arc<OnlineStore>> {
    let df = served_rows(o)?;
    let view = view(o.features);
    let online = Arc::new(OnlineStore::new(16 << 30));
    online.register_view(view.clone());
    let before = memory::resident_bytes();
    let started = Instant::now();
    online.materialize(&view, &df, 0)?;
    let took = started.elapsed();
    drop(df);
    let stats = online.stats();
    let values = stats.entries as f64 * o.features as f64;
    println!(
        "loaded {} entities x {} features in memory in {:.2} s; weigher: {:.1} bytes/value; \
         resident growth: {:.1} bytes/value",
        stats.entries,
        o.features,
        took.as_secs_f64(),
        stats.weighted_bytes as f64 / values,
        memory::resident_bytes().saturating_sub(before) as f64 / values,
    );
    Ok(online)
}

fn lookup(o: &Options, online: &OnlineStore) {
    let refs: Vec<String> = view(o.features).feature_refs();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let now = now_micros();
    let n = 1_000_000;
    let keys: Vec<[String; 1]> = (0..n)
        .map(|_| [rng.random_range(0..o.entities).to_string()])
        .collect();
    // Warm the caches and the branch predictors a little.
    for key in keys.iter().take(10_000) {
        std::hint::black_box(online.get(&refs, key, now).ok());
    }
    let set = match online.resolve(&refs) {
        Ok(set) => set,
        Err(e) => panic!("resolving the bench features: {e}"),
    };
    for prepared in [false, true] {
        let mut nanos = Vec::with_capacity(n);
        let started = Instant::now();
        for key in &keys {
            let t = Instant::now();
            let batch = if prepared {
                online.get_set(&set, key, now)
            } else {
                online.get(&refs, key, now)
            };
            nanos.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(batch.ok());
        }
        let total = started.elapsed();
        println!(
            "in-process lookup, 1 entity x {} features ({}), {n} lookups on one thread: {:.0} lookups/s",
            o.features,
            if prepared {
                "features resolved once: get_set"
            } else {
                "references resolved per call: get"
            },
            n as f64 / total.as_secs_f64()
        );
        percentiles("  latency", nanos);
    }
    let hundred: Vec<String> = (0..100)
        .map(|_| rng.random_range(0..o.entities).to_string())
        .collect();
    let mut nanos = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let t = Instant::now();
        let batch = online.get(&refs, &hundred, now);
        nanos.push(t.elapsed().as_nanos() as u64);
        std::hint::black_box(batch.ok());
    }
    percentiles(
        &format!("in-process lookup, 100 entities x {} features", o.features),
        nanos,
    );
}

/// Starts the aurum HTTP server over `online` on its own 2-thread runtime;
/// returns its address and the runtime (dropping it stops the server).
fn start_server(
    online: Arc<OnlineStore>,
    store: Option<DeltaStore>,
) -> Result<(std::net::SocketAddr, tokio::runtime::Runtime)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    start_server_on(runtime, online, store)
}

/// [`start_server`] on a given runtime.
fn start_server_on(
    runtime: tokio::runtime::Runtime,
    online: Arc<OnlineStore>,
    store: Option<DeltaStore>,
) -> Result<(std::net::SocketAddr, tokio::runtime::Runtime)> {
    let dir = tempfile::tempdir()?;
    let registry = registry::Registry::open(dir.path())?;
    let (addr, _) = runtime.block_on(async move {
        let mut state = serving::AppState::new(online, registry);
        if let Some(store) = store {
            state = state.with_offline(store);
        }
        let state = Arc::new(state);
        state.set_ready(true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serving::serve(
            listener,
            state,
            std::future::pending::<()>(),
        ));
        anyhow::Ok((addr, dir))
    })?;
    Ok((addr, runtime))
}

fn http(o: &Options, online: Arc<OnlineStore>) -> Result<()> {
    let (addr, _server) = start_server(online, None)?;
    let refs = view(o.features).feature_refs();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    if let Some(file) = &o.body_file {
        // One request body per line, cycled (the requests another server
        // answers in benches/feast/compare.sh).
        let requests: Vec<Vec<u8>> = load::body_lines(file)?
            .iter()
            .map(|b| post_request(&addr.to_string(), "/get-online-features", b))
            .collect();
        let report = run_load(addr, requests, o.connections, o.seconds)?;
        report.print(&format!(
            "aurum /get-online-features, requests of {file}, {} connections",
            o.connections
        ));
        return Ok(());
    }
    for (entities, connections) in [(1usize, o.connections), (100, 4)] {
        let bodies: Vec<String> = (0..1000)
            .map(|_| {
                let keys: Vec<usize> = (0..entities)
                    .map(|_| rng.random_range(0..o.entities))
                    .collect();
                serde_json::json!({"entities": {"entity_id": keys}, "features": refs}).to_string()
            })
            .collect();
        let requests: Vec<Vec<u8>> = bodies
            .iter()
            .map(|b| post_request(&addr.to_string(), "/get-online-features", b))
            .collect();
        let report = run_load(addr, requests, connections, o.seconds)?;
        report.print(&format!(
            "HTTP /get-online-features, {entities} entities x {} features, {connections} connections",
            o.features
        ));
    }
    Ok(())
}

fn load_external(o: &Options) -> Result<()> {
    let url = o.url.as_deref().context("load needs --url")?;
    // One request per line of the body file, cycled.
    let bodies = || load::body_lines(o.body_file.as_deref().context("load needs --body-file")?);
    load::load_url(url, bodies, o.connections, o.seconds)
}

fn push(o: &Options, online: Arc<OnlineStore>) -> Result<()> {
    let (addr, server) = start_server(online.clone(), None)?;
    let features = o.features;
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let batch_rows = 1000;
    let stamp = chrono::Utc::now().to_rfc3339();
    let bodies: Vec<Vec<u8>> = (0..50)
        .map(|_| {
            let mut df = serde_json::Map::new();
            let keys: Vec<usize> = (0..batch_rows)
                .map(|_| rng.random_range(0..o.entities))
                .collect();
            df.insert("entity_id".into(), serde_json::json!(keys));
            df.insert(
                "event_timestamp".into(),
                serde_json::json!(vec![&stamp; batch_rows]),
            );
            for f in 0..features {
                let values: Vec<f64> = (0..batch_rows)
                    .map(|_| (rng.random::<f64>() * 1e6).round() / 1e3)
                    .collect();
                df.insert(format!("f{f}"), serde_json::json!(values));
            }
            let body = serde_json::json!({"push_source_name": VIEW, "df": df, "to": "online"});
            post_request(&addr.to_string(), "/push", &body.to_string())
        })
        .collect();
    let report = run_load(addr, bodies, 2, o.seconds)?;
    let rows_per_second = (report.requests * batch_rows) as f64 / report.seconds;
    println!(
        "HTTP /push (JSON), {batch_rows} rows x {features} features per request, 2 connections: \
         {rows_per_second:.0} rows/s"
    );
    report.print("  per request");

    // Flight DoPut: the same rows as Arrow record batches.
    flight_push(o, online.clone(), &server)?;

    // Push-to-visible: one row per push, sequentially; the clock stops when
    // an in-process lookup (what every request path reads) sees the row.
    let refs = vec![format!("{VIEW}:f0")];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let nanos = runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut buffer = Vec::new();
        let mut nanos = Vec::new();
        for i in 0..5_000u32 {
            let entity = rng.random_range(0..o.entities);
            let marker = 1e9 + f64::from(i);
            let mut df = serde_json::Map::new();
            df.insert("entity_id".into(), serde_json::json!([entity]));
            df.insert(
                "event_timestamp".into(),
                serde_json::json!([chrono::Utc::now().to_rfc3339()]),
            );
            for f in 0..features {
                df.insert(format!("f{f}"), serde_json::json!([marker]));
            }
            let body = serde_json::json!({"push_source_name": VIEW, "df": df}).to_string();
            let request = post_request(&addr.to_string(), "/push", &body);
            let started = Instant::now();
            stream.write_all(&request).await?;
            let status = read_response(&mut stream, &mut buffer).await?;
            if status != 200 {
                bail!("push answered {status}");
            }
            loop {
                let batch = online.get(&refs, &[entity.to_string()], now_micros())?;
                if batch.rows[0][0].0 == feature_store::FeatureValue::Float(marker) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            nanos.push(started.elapsed().as_nanos() as u64);
        }
        anyhow::Ok(nanos)
    })?;
    percentiles(
        &format!("push-to-visible, 1 row x {features} features per HTTP push"),
        nanos,
    );
    drop(server);
    Ok(())
}

fn flight_push(
    o: &Options,
    online: Arc<OnlineStore>,
    server: &tokio::runtime::Runtime,
) -> Result<()> {
    use arrow_flight::FlightClient;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures::TryStreamExt;

    let pusher = Arc::new(feature_store::online::push::Pusher::online_only(
        online.clone(),
    ));
    let flight = flight::FlightServer::new(online, pusher);
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    server.spawn(flight.serve(listener, std::future::pending::<()>()));

    let batch_rows = 10_000;
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    let now = now_micros();
    let batches: Vec<arrow_array::RecordBatch> = (0..10)
        .map(|_| {
            let mut columns: Vec<(String, arrow_array::ArrayRef)> = vec![
                (
                    "entity_id".into(),
                    Arc::new(arrow_array::Int64Array::from_iter_values(
                        (0..batch_rows).map(|_| rng.random_range(0..o.entities as i64)),
                    )),
                ),
                (
                    "event_timestamp".into(),
                    Arc::new(
                        arrow_array::TimestampMicrosecondArray::from_iter_values(
                            std::iter::repeat_n(now, batch_rows),
                        )
                        .with_timezone("UTC"),
                    ),
                ),
            ];
            for f in 0..o.features {
                columns.push((
                    format!("f{f}"),
                    Arc::new(arrow_array::Float64Array::from_iter_values(
                        (0..batch_rows).map(|_| rng.random::<f64>()),
                    )),
                ));
            }
            arrow_array::RecordBatch::try_from_iter(columns).map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let seconds = o.seconds;
    let (rows, took) = runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut client = FlightClient::new(channel);
        let command = serde_json::json!({"command": "push", "feature_view": VIEW, "to": "online"});
        let started = Instant::now();
        let mut rows = 0usize;
        while started.elapsed() < Duration::from_secs(seconds) {
            let input = futures::stream::iter(batches.clone().into_iter().map(Ok));
            let data = FlightDataEncoderBuilder::new()
                .with_flight_descriptor(Some(arrow_flight::FlightDescriptor::new_cmd(
                    command.to_string(),
                )))
                .build(input);
            let results: Vec<_> = client.do_put(data).await?.try_collect().await?;
            rows += results.len() * batch_rows;
        }
        anyhow::Ok((rows, started.elapsed()))
    })?;
    println!(
        "Flight DoPut, {batch_rows}-row record batches x {} features, 1 stream: {:.0} rows/s",
        o.features,
        rows as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// Writes the materialize benches' gold table (`--gold-rows` rows over
/// `--gold-entities` entities × `--gold-features`) into a Delta store under
/// `dir`.
fn gold_table(
    o: &Options,
    dir: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
) -> Result<DeltaStore> {
    let store = DeltaStore::new(dir);
    let entities = o.gold_entities.unwrap_or(o.gold_rows / 10).max(1);
    let started = Instant::now();
    let df = gold_frame(o.gold_rows, entities, o.gold_features, 23)?;
    runtime.block_on(store.write(
        VIEW,
        &df,
        &delta::WriteOptions::overwrite(),
        &delta::CommitLineage::default(),
    ))?;
    println!(
        "wrote a gold table of {} rows ({} entities x {} features) in {:.1} s",
        o.gold_rows,
        entities,
        o.gold_features,
        started.elapsed().as_secs_f64()
    );
    Ok(store)
}

fn materialize(o: &Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let view = view(o.gold_features);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = gold_table(o, dir.path(), &runtime)?;
    let online = OnlineStore::new(16 << 30);
    online.register_view(view.clone());
    let before = memory::resident_bytes();
    let started = Instant::now();
    let report = runtime.block_on(feature_store::online::materialize::materialize(
        &store, &online, &view, false,
    ))?;
    let took = started.elapsed();
    let stats = online.stats();
    let values = stats.entries as f64 * o.gold_features as f64;
    println!(
        "materialize (full) from Delta: {} rows read, {} entities written in {:.2} s \
         ({:.0} rows/s); weigher {:.1} bytes/value, resident growth {:.1} bytes/value",
        report.rows_read,
        report.written,
        took.as_secs_f64(),
        report.rows_read as f64 / took.as_secs_f64(),
        stats.weighted_bytes as f64 / values,
        memory::resident_bytes().saturating_sub(before) as f64 / values,
    );
    Ok(())
}

/// Warm start of the online store from a gold table of `gold_rows` rows
/// (one per entity) × `gold_features` features, from local disk and from
/// S3, in one run.
fn materialize_from_s3(o: &Options, server: &s3::S3Server) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let local = DeltaStore::new(dir.path());
    let remote = DeltaStore::at(delta::StorageLocation::parse(
        "s3://bench/gold/",
        &[
            ("endpoint".to_string(), server.endpoint.clone()),
            ("allow_http".to_string(), "true".to_string()),
            ("region".to_string(), "us-east-1".to_string()),
        ]
        .into_iter()
        .collect(),
    )?);
    let view = view(o.gold_features);
    let df = gold_frame(o.gold_rows, o.gold_rows, o.gold_features, 23)?;
    for store in [&local, &remote] {
        runtime.block_on(store.write(
            VIEW,
            &df,
            &delta::WriteOptions::overwrite(),
            &delta::CommitLineage::default(),
        ))?;
    }
    drop(df);
    println!(
        "warm start of the online store: {} entities x {} features",
        o.gold_rows, o.gold_features
    );
    let mut seconds = Vec::new();
    for (name, store) in [("local disk", &local), ("S3 (moto)", &remote)] {
        let online = OnlineStore::new(16 << 30);
        online.register_view(view.clone());
        let before = server.requests();
        let started = Instant::now();
        let report = runtime.block_on(feature_store::online::materialize::materialize(
            store, &online, &view, false,
        ))?;
        let took = started.elapsed().as_secs_f64();
        seconds.push(took);
        let requests = if name == "local disk" {
            String::new()
        } else {
            format!("; requests {}", server.requests() - before)
        };
        println!(
            "  {name:<11} {took:>7.2} s  ({} rows read, {} entities written{requests})",
            report.rows_read, report.written
        );
    }
    println!("  S3 / local  {:.2}", seconds[1] / seconds[0]);
    Ok(())
}

/// A store in front of the shared tier on `url`, with an L1 of
/// `--l1-mib`; its tasks run on `runtime`.
fn tier_store(
    o: &Options,
    url: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<OnlineStore>> {
    let online = Arc::new(OnlineStore::new(o.l1_mib << 20));
    runtime.block_on(async {
        let options = feature_store::online::shared::TierOptions {
            urls: vec![url.to_string()],
            cluster: false,
            namespace: "bench".into(),
            timeout: Duration::from_secs(5),
        };
        let tier = feature_store::online::shared::SharedTier::connect(options).await?;
        online.attach_tier(tier)?;
        // Ready once the invalidation subscription is live.
        while !online.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(())
    })?;
    Ok(online)
}

/// `http` and `materialize` over the shared tier on Redis `url`.
fn over_redis(o: &mut Options, url: &str) -> Result<()> {
    let modes = o.modes.clone();
    for mode in &modes {
        match mode.as_str() {
            "http" => redis_http(o, url)?,
            "materialize" => redis_materialize(o, url)?,
            other => bail!("mode {other} does not run over --redis (http and materialize do)"),
        }
    }
    Ok(())
}

fn redis_http(o: &mut Options, url: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let online = tier_store(o, url, &runtime)?;
    let df = served_rows(o)?;
    let view = view(o.features);
    online.register_view(view.clone());
    let started = Instant::now();
    runtime.block_on(online.load(&view, &df, 0))?;
    println!(
        "loaded {} entities x {} features into Redis in {:.2} s ({:.0} rows/s)",
        df.height(),
        o.features,
        started.elapsed().as_secs_f64(),
        df.height() as f64 / started.elapsed().as_secs_f64()
    );
    drop(df);
    let tier = online.tier().context("the store has its tier")?.clone();
    let (addr, _server) = start_server_on(runtime, online, None)?;
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let refs = view.feature_refs();
    let requests: Vec<Vec<u8>> = match &o.body_file {
        Some(file) => load::body_lines(file)?
            .iter()
            .map(|b| post_request(&addr.to_string(), "/get-online-features", b))
            .collect(),
        None => (0..1000)
            .map(|_| {
                let key = rng.random_range(0..o.entities);
                let body = serde_json::json!({"entities": {"entity_id": [key]}, "features": refs})
                    .to_string();
                post_request(&addr.to_string(), "/get-online-features", &body)
            })
            .collect(),
    };
    let stats = tier.stats();
    let (hits, misses) = (
        stats.l1_hits.load(std::sync::atomic::Ordering::Relaxed),
        stats.l1_misses.load(std::sync::atomic::Ordering::Relaxed),
    );
    let report = run_load(addr, requests, o.connections, o.seconds)?;
    let hits = stats.l1_hits.load(std::sync::atomic::Ordering::Relaxed) - hits;
    let misses = stats.l1_misses.load(std::sync::atomic::Ordering::Relaxed) - misses;
    report.print(&format!(
        "aurum /get-online-features over Redis, 1 entity x {} features, {} connections, \
         L1 {} MiB (hit ratio {:.3})",
        o.features,
        o.connections,
        o.l1_mib,
        hits as f64 / (hits + misses).max(1) as f64
    ));
    Ok(())
}

fn redis_materialize(o: &Options, url: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let view = view(o.gold_features);
    let store = gold_table(o, dir.path(), &runtime)?;
    let online = tier_store(o, url, &runtime)?;
    online.register_view(view.clone());
    let started = Instant::now();
    let report = runtime.block_on(feature_store::online::materialize::materialize(
        &store, &online, &view, false,
    ))?;
    let took = started.elapsed();
    println!(
        "materialize (full) from Delta into Redis: {} rows read, {} entities written in {:.2} s \
         ({:.0} rows/s, {:.0} entities/s)",
        report.rows_read,
        report.written,
        took.as_secs_f64(),
        report.rows_read as f64 / took.as_secs_f64(),
        report.written as f64 / took.as_secs_f64(),
    );
    Ok(())
}
