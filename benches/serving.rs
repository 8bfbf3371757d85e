//! The model server under load (issue 7): `/predict` of one entity whose 8
//! features come from the online store, through the whole server (request
//! ids, metrics, prediction log, A/B routing), with an optional hot swap of
//! the served version in the middle of the run and optional
//! micro-batching; and the same load generator for any other server (the
//! FastAPI baseline of `benches/serving/compare_fastapi.sh`).
//!
//! usage:
//!   cargo bench --bench serving -- aurum --model M.onnx --parquet F.parquet
//!        --body-file B.jsonl [--seconds S] [--connections C] [--swap]
//!        [--batch ROWS:DELAY_US] [--no-log] [--monitor]
//!   cargo bench --bench serving -- load --url URL --body-file B.jsonl
//!        [--seconds S] [--connections C]
//!
//! The server runs in this process on its own 2-thread runtime, the load
//! generator on one more thread: all on the same 2 cores, as the baseline's
//! uvicorn workers share them with the same generator.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/load.rs"]
mod load;
#[path = "common/view.rs"]
mod view;
use view::view;

// The allocator `aurum serve` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delta::DeltaStore;
use feature_store::FeatureView;
use feature_store::online::OnlineStore;
use load::{post_request_with, run_load};
use polars::prelude::*;
use serving::inference::{BatchOptions, ServingPolicy};
use serving::metrics::{ArmKey, Histogram};

const MODEL: &str = "gbt";

#[derive(Default)]
struct Options {
    mode: String,
    model: Option<String>,
    parquet: Option<String>,
    body_file: Option<String>,
    url: Option<String>,
    seconds: u64,
    connections: usize,
    swap: bool,
    batch: Option<BatchOptions>,
    no_log: bool,
    monitor: bool,
    /// Check tokens: the server holds one read token and every request
    /// carries it (issue 21's cost of authentication).
    token: bool,
    /// Send the token's header without the server checking tokens: what
    /// the header's bytes cost apart from the check.
    send_token: bool,
    /// Trace requests, sampling this share of them (ratio sampler), with
    /// the spans exported over OTLP/HTTP to a collector in the bench's
    /// process (issue 22's cost of tracing).
    trace: Option<f64>,
    /// Load `/get-online-features` (the same entities, every feature of the
    /// view) instead of `/predict`.
    online: bool,
}

/// The token the bench's server accepts with `--token`.
const BENCH_TOKEN: &str = "6f1c0d2a9b8e7f6a5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";

fn main() -> Result<()> {
    let mut o = Options {
        seconds: 10,
        connections: 16,
        ..Options::default()
    };
    let modes = cli::flags_and_modes(|flag, value| {
        match flag {
            "--model" => o.model = Some(value()?),
            "--parquet" => o.parquet = Some(value()?),
            "--body-file" => o.body_file = Some(value()?),
            "--url" => o.url = Some(value()?),
            "--seconds" => o.seconds = value()?.parse()?,
            "--connections" => o.connections = value()?.parse()?,
            "--swap" => o.swap = true,
            "--no-log" => o.no_log = true,
            "--monitor" => o.monitor = true,
            "--token" => o.token = true,
            "--send-token" => o.send_token = true,
            "--trace" => o.trace = Some(value()?.parse()?),
            "--online" => o.online = true,
            "--batch" => {
                let v = value()?;
                let (rows, delay) = v.split_once(':').context("--batch ROWS:DELAY_US")?;
                o.batch = Some(BatchOptions {
                    max_rows: rows.parse()?,
                    max_delay: Duration::from_micros(delay.parse()?),
                });
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // The last mode named is the one run.
    if let Some(mode) = modes.last() {
        o.mode = mode.clone();
    }
    match o.mode.as_str() {
        "aurum" => aurum(&o),
        "load" => load_external(&o),
        other => bail!("unknown mode {other:?}: aurum or load"),
    }
}

fn bodies(o: &Options) -> Result<Vec<String>> {
    load::body_lines(o.body_file.as_deref().context("--body-file is needed")?)
}

fn load_external(o: &Options) -> Result<()> {
    let url = o.url.as_deref().context("load needs --url")?;
    load::load_url(url, || bodies(o), o.connections, o.seconds)
}

fn aurum(o: &Options) -> Result<()> {
    onnx::init()?;
    let (online, view, reference) = loaded_store(o)?;
    let width = view.features.len();
    let dir = tempfile::tempdir()?;
    let (registry, bytes) = registry_with_model(o, dir.path(), &view, &reference)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _tracing = match o.trace {
        Some(ratio) => Some(runtime.block_on(trace_to_sink(ratio))?),
        None => None,
    };
    let (state, addr) = runtime.block_on(start_server(o, online, &registry, dir.path()))?;
    onnx_alone(&state, width)?;

    let mut bodies = bodies(o)?;
    if o.online {
        let features = view.feature_refs();
        bodies = bodies
            .iter()
            .map(|b| {
                let body: serde_json::Value = serde_json::from_str(b)?;
                Ok(
                    serde_json::json!({"entities": body["entities"], "features": features})
                        .to_string(),
                )
            })
            .collect::<Result<_>>()?;
    } else {
        check_answers(&runtime, addr, &bodies)?;
    }
    let path = if o.online {
        "/get-online-features"
    } else {
        "/predict"
    };
    let headers = if o.token || o.send_token {
        format!("Authorization: Bearer {BENCH_TOKEN}\r\n")
    } else {
        String::new()
    };
    let swapper = o
        .swap
        .then(|| swap_later(o, registry.clone(), bytes.clone(), view.feature_refs()));
    let requests: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| post_request_with(&addr.to_string(), path, &headers, b))
        .collect();
    let report = run_load(addr, requests, o.connections, o.seconds)?;
    let label = format!(
        "aurum {path} (1 entity, {width} features from the online store), {} connections{}{}{}",
        o.connections,
        if o.token {
            ", token checked"
        } else if o.send_token {
            ", token sent, not checked"
        } else {
            ""
        },
        if o.batch.is_some() {
            ", micro-batching"
        } else {
            ""
        },
        if o.no_log { ", no prediction log" } else { "" }
    );
    report.print(&label);
    if let Some(swapper) = swapper {
        swapper
            .join()
            .map_err(|_| anyhow::anyhow!("the swap thread panicked"))??;
        println!(
            "hot swap during the run: {} swaps, {} load failures, serving v{} at the end",
            state.reload.swaps.load(Ordering::Relaxed),
            state.reload.failures.load(Ordering::Relaxed),
            state.models.get(MODEL).map_or(0, |m| m.version.version)
        );
    }
    print_stages(&state);
    if o.trace.is_some() {
        let stats = telemetry::stats();
        println!(
            "traces: {} spans exported, {} dropped (queue full), {} dropped (export failed)",
            stats.exported.load(Ordering::Relaxed),
            stats.dropped_queue_full.load(Ordering::Relaxed),
            stats.dropped_export_failed.load(Ordering::Relaxed)
        );
    }
    if let Some(log) = &state.prediction_log {
        runtime.block_on(log.close());
        println!(
            "prediction log: {} rows written, {} dropped",
            log.stats().written.load(Ordering::Relaxed),
            log.stats().dropped.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

/// Tracing on, sampling `ratio` of the requests (parent-based, as
/// `OTEL_TRACES_SAMPLER=parentbased_traceidratio` asks), exporting over
/// OTLP/HTTP to a collector on a loopback port of this process that takes
/// every export (decoding nothing: a collector's own work is not aurum's).
async fn trace_to_sink(ratio: f64) -> Result<telemetry::Tracing> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|body: axum::body::Bytes| async move {
            std::hint::black_box(body.len());
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, sink).await });
    let mut settings = telemetry::Settings::new(telemetry::Protocol::HttpProtobuf);
    settings.endpoint = Some(format!("http://{addr}/v1/traces"));
    settings.sampler = telemetry::Sampling::ratio(ratio);
    Ok(telemetry::init_with("aurum-bench", settings)?)
}

/// The online store loaded from `--parquet` (entity, two timestamps, then
/// the features), its view, and the features' reference profile.
fn loaded_store(o: &Options) -> Result<(Arc<OnlineStore>, FeatureView, Vec<u8>)> {
    let df = ParquetReader::new(std::fs::File::open(
        o.parquet.as_deref().context("aurum needs --parquet")?,
    )?)
    .finish()?;
    let view = view(df.width() - 3);
    let online = Arc::new(OnlineStore::new(4 << 30));
    online.register_view(view.clone());
    online.materialize(&view, &df, 0)?;
    let reference = reference_profile(&df, &view.feature_refs())?;
    Ok((online, view, reference))
}

/// A registry under `dir` with `--model` registered as v1 of [`MODEL`],
/// the champion, with the `reference` profile; and the model's bytes.
fn registry_with_model(
    o: &Options,
    dir: &std::path::Path,
    view: &FeatureView,
    reference: &[u8],
) -> Result<(registry::Registry, Vec<u8>)> {
    let registry = registry::Registry::open(dir.join("registry"))?;
    let bytes = std::fs::read(o.model.as_deref().context("aurum needs --model")?)?;
    let new = registry::NewVersion {
        features: view.feature_refs(),
        ..registry::NewVersion::default()
    };
    registry.register(MODEL, &bytes, new)?;
    registry.set_alias(MODEL, registry::CHAMPION, 1, "bench")?;
    registry.put_attachment(MODEL, 1, drift::profile::REFERENCE_PROFILE, reference)?;
    Ok((registry, bytes))
}

/// The whole server as `aurum serve` runs it (policy, reload watcher,
/// prediction log and drift monitor as the flags say) on a loopback port;
/// its state and address.
async fn start_server(
    o: &Options,
    online: Arc<OnlineStore>,
    registry: &registry::Registry,
    dir: &std::path::Path,
) -> Result<(Arc<serving::AppState>, std::net::SocketAddr)> {
    let mut config = serving::ServingConfig::new(registry::CHAMPION);
    if let Some(batch) = o.batch {
        let mut policy = ServingPolicy::single(registry::CHAMPION);
        policy.batch = Some(batch);
        config.set(MODEL, policy);
    }
    let mut state = serving::AppState::new(online, registry.clone())
        .with_config(config)
        .with_reload(serving::ReloadOptions {
            interval: Duration::from_millis(200),
            sessions: 2,
        });
    // The drift monitor as `aurum serve` runs it, evaluating every
    // second (30 s by default) against a profile of the served features.
    let monitor = o.monitor.then(|| {
        Arc::new(
            monitoring::Monitor::new(monitoring::MonitorOptions {
                interval: Duration::from_secs(1),
                ..monitoring::MonitorOptions::default()
            })
            .expect("default monitor options are valid"),
        )
    });
    if !o.no_log || monitor.is_some() {
        let table = (!o.no_log).then(|| {
            (
                DeltaStore::new(dir.join("logs")),
                monitoring::predictions::TABLE.to_string(),
            )
        });
        state = state.with_prediction_log(monitoring::PredictionLog::start_with(
            table,
            monitor.clone(),
            monitoring::LogOptions::default(),
        ));
    }
    if let Some(monitor) = monitor {
        state = state.with_monitor(monitor);
    }
    if o.token {
        state = state.with_limits(serving::Limits {
            tokens: auth::Tokens::none().with_token(
                BENCH_TOKEN,
                auth::Identity {
                    name: "bench".into(),
                    role: auth::Role::Read,
                },
            ),
            ..serving::Limits::default()
        });
    }
    let state = Arc::new(state);
    state.sync_models();
    serving::tasks::spawn_model_watcher(state.clone());
    serving::tasks::spawn_drift_monitor(state.clone());
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serving::serve(
        listener,
        state.clone(),
        std::future::pending::<()>(),
    ));
    Ok((state, addr))
}

/// The model alone, for the overhead the server adds.
fn onnx_alone(state: &serving::AppState, width: usize) -> Result<()> {
    let model = state.models.get(MODEL).context("the model is served")?;
    let row = vec![0.1f32; width];
    let started = Instant::now();
    let calls = 20_000;
    for _ in 0..calls {
        let answer = model.predict(row.clone(), 1);
        std::hint::black_box(answer.map_err(|e| anyhow::anyhow!(e.to_string()))?);
    }
    println!(
        "ONNX Runtime alone: {:.2} µs per one-row inference",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(calls)
    );
    Ok(())
}

/// Prints the answers to the first bodies, for the script to compare with
/// the baseline's.
fn check_answers(
    runtime: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    bodies: &[String],
) -> Result<()> {
    let check = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut lines = Vec::new();
        for body in bodies.iter().take(3) {
            let answer: serde_json::Value = client
                .post(format!("http://{addr}/predict"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await?
                .json()
                .await?;
            lines.push(format!(
                "check: {} -> {}",
                body, answer["predictions"][0]["prediction"]
            ));
        }
        anyhow::Ok(lines)
    })?;
    for line in check {
        println!("{line}");
    }
    Ok(())
}

/// A thread that registers the model again halfway through the run and
/// moves the champion to it (a hot swap under load); when it did.
fn swap_later(
    o: &Options,
    registry: registry::Registry,
    bytes: Vec<u8>,
    features: Vec<String>,
) -> std::thread::JoinHandle<Result<Instant>> {
    let at = Duration::from_secs(2 + o.seconds / 2);
    std::thread::spawn(move || -> Result<Instant> {
        std::thread::sleep(at);
        let new = registry::NewVersion {
            features,
            ..registry::NewVersion::default()
        };
        let v2 = registry.register(MODEL, &bytes, new)?;
        registry.set_alias(MODEL, registry::CHAMPION, v2.version, "bench")?;
        Ok(Instant::now())
    })
}

/// Where a request's time goes, from the server's own histograms.
fn print_stages(state: &serving::AppState) {
    let mean_us = |h: &Histogram| h.sum() / h.count().max(1) as f64 * 1e6;
    let arm = state.metrics.arm(&ArmKey {
        model: MODEL.into(),
        version: 1,
        arm: registry::CHAMPION.into(),
        shadow: false,
    });
    println!(
        "per-request stages (mean, v1): parse {:.2} µs, feature fetch {:.2} µs, inference {:.2} µs, \
         serialize {:.2} µs; handler total {:.2} µs; whole route (with middleware) {:.2} µs",
        mean_us(&state.metrics.parse_seconds),
        mean_us(&arm.feature_seconds),
        mean_us(&arm.inference_seconds),
        mean_us(&state.metrics.serialize_seconds),
        mean_us(&arm.request_seconds),
        mean_us(&state.metrics.route("/predict")),
    );
}

/// The served features' profile (the monitor's reference), as JSON.
fn reference_profile(df: &DataFrame, refs: &[String]) -> Result<Vec<u8>> {
    let mut columns = Vec::new();
    for reference in refs {
        let name = reference.rsplit(':').next().unwrap_or(reference);
        let values = df.column(name)?.cast(&DataType::Float64)?;
        columns.push(drift::Column {
            name: reference.clone(),
            values: drift::Values::Numeric(
                values
                    .f64()?
                    .iter()
                    .map(|v| v.unwrap_or(f64::NAN))
                    .collect(),
            ),
        });
    }
    Ok(serde_json::to_vec(&drift::Profile::build(&columns, None)?)?)
}
