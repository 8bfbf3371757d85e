//! `aurum serve`: the HTTP server and the Arrow Flight service over the
//! project's online store and registry.
//!
//! The listener is bound first, so `/health/live` answers at once; every
//! feature view's latest values are then loaded from its gold Delta table
//! (warm start) and the latest version of every registered model is loaded,
//! and only then does `/health/ready` turn ready. A restarted server thus
//! serves what it served before, for values still within their TTL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use delta::DeltaStore;
use feature_store::{OnlineBackendKind, OnlineStore};
use monitoring::{Alert, AlertHook, LogOptions, Monitor, MonitorOptions, PredictionLog};
use registry::Registry;
use serving::{AppState, Limits, ServingConfig};

use crate::project::ProjectArg;

/// Options of `aurum serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// The address to listen on (port 0 picks a free port; the chosen
    /// address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Also consume the project's Kafka sources: land them in bronze (as
    /// `aurum stream` does) and add the events received to the window tiles
    /// of the request-time views over them.
    #[arg(long)]
    stream: bool,
    /// The Arrow Flight address (port 0 picks a free port; printed).
    #[arg(long, default_value = "127.0.0.1:8815")]
    flight_addr: SocketAddr,
    /// The Open Inference Protocol's gRPC address (tritonclient and KServe
    /// gRPC clients; Triton's default port; port 0 picks a free one;
    /// printed).
    #[arg(long, default_value = "127.0.0.1:8001")]
    grpc_addr: SocketAddr,
    /// Memory budget of the online store, in MiB (with `--online-store
    /// redis`, of its L1 cache).
    #[arg(long, default_value_t = 1024)]
    memory_mib: u64,
    /// Where online rows live: `memory` (in this process; zero services)
    /// or `redis` (shared by every replica: pushes and materializations
    /// are written once and seen by all; the URL is read from
    /// `AURUM_REDIS_URL`; this process keeps an L1 cache of `--memory-mib`
    /// that writes anywhere invalidate). Default: `[online_store] backend`
    /// in aurum.toml, else `memory`.
    #[arg(long, value_name = "memory|redis")]
    online_store: Option<OnlineBackendKind>,
    /// `AURUM_REDIS_URL` names nodes of a Redis Cluster (comma-separated);
    /// also `[online_store] cluster = true`.
    #[arg(long)]
    redis_cluster: bool,
    /// The longest a connection to Redis or one command may take, in
    /// milliseconds (then the request answers 503 `online_tier_unavailable`).
    #[arg(long, default_value_t = 1000)]
    redis_timeout_ms: u64,
    /// ONNX Runtime sessions per model (concurrent inferences).
    #[arg(long, default_value_t = 2)]
    sessions: usize,
    /// The alias each model is served at (a model without it serves its
    /// newest version).
    #[arg(long, default_value = registry::CHAMPION)]
    serve_alias: String,
    /// How often, in milliseconds, the registry is checked for a new
    /// version to serve (moved alias, new registration).
    #[arg(long, default_value_t = 2000)]
    reload_interval_ms: u64,
    /// Requests answered at once; more are refused with 503 and
    /// `Retry-After` (load shedding instead of an unbounded queue).
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// The longest a request may take, in milliseconds (then 503).
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// A TOML file of tokens (hashed, with roles: `aurum token new` writes
    /// it); also `AURUM_TOKENS_FILE`. With tokens, every route but the
    /// probes and `/metrics` needs one of the right role, on HTTP, Flight
    /// and gRPC alike. Without any, every route is open (the default
    /// addresses are loopback only).
    #[arg(long)]
    tokens: Option<std::path::PathBuf>,
    /// One more token, with the admin role, named `admin`: prefer
    /// `AURUM_ADMIN_TOKEN` (the command line is visible to other users of
    /// the machine).
    #[arg(long)]
    admin_token: Option<String>,
    /// Serve a non-loopback address without any token (every route open to
    /// the network).
    #[arg(long)]
    insecure: bool,
    /// A `Host` name the server answers to (repeatable). On a loopback
    /// address it answers to `localhost`, `127.0.0.1` and `::1` (and these),
    /// refusing other names so a web page cannot rebind its own name to
    /// the server; elsewhere to any name unless some are given.
    #[arg(long = "allowed-host")]
    allowed_hosts: Vec<String>,
    /// How far ahead of this server's clock a pushed event time may be, in
    /// seconds (an event time far in the future would pin an entity's
    /// online row until then).
    #[arg(long, default_value_t = 300)]
    max_future_skew_secs: u64,
    /// A PEM certificate chain (leaf first): HTTP, Arrow Flight and gRPC
    /// then speak TLS (rustls) only. Needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Connections open at once on each of the HTTP, Flight and gRPC
    /// ports; more wait until one closes.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// The longest, in seconds, an HTTP client may take to send a request's
    /// headers (and a keep-alive connection may stay idle), and a TLS
    /// handshake may take; then the connection is closed.
    #[arg(long, default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// The longest, in seconds, a connection (HTTP, Flight, gRPC) may stay
    /// without a byte read or written before it is closed; a new connection
    /// must send its first bytes within `--header-read-timeout-secs`.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// The longest, in seconds, an Arrow Flight call may take, streamed
    /// answer included (`CANCELLED` before it answers, `DEADLINE_EXCEEDED`
    /// in its stream after).
    #[arg(long, default_value_t = 300)]
    flight_call_timeout_secs: u64,
    /// The most MiB (in memory) of a table a client uploads on Arrow Flight
    /// `DoExchange` (a training-set spine, Feast's entity dataframe).
    #[arg(long, default_value_t = 1024)]
    flight_max_upload_mib: usize,
    /// The directory MLflow's `model-versions/create` may import model
    /// files from (default: the project directory); sources outside it are
    /// refused without touching them.
    #[arg(long)]
    import_root: Option<PathBuf>,
    /// Do not log predictions to the `predictions` Delta table.
    #[arg(long)]
    no_prediction_log: bool,
    /// The longest a logged prediction waits for its commit (and for the
    /// drift monitor to see it), in milliseconds.
    #[arg(long, default_value_t = 5000)]
    prediction_log_flush_ms: u64,
    /// Turn off live drift monitoring and `/feedback`.
    #[arg(long)]
    no_monitor: bool,
    /// Seconds between drift evaluations.
    #[arg(long, default_value_t = 30)]
    drift_interval_s: u64,
    /// Seconds between readings of the project's tables (versions, commit
    /// times, newest event times, rows, the last pipeline run) for
    /// `/metrics`.
    #[arg(long, default_value_t = 30)]
    table_metrics_interval_s: u64,
    /// Predictions per model version in the drift window.
    #[arg(long, default_value_t = 10_000)]
    drift_window_rows: usize,
    /// Live predictions (rows) remembered for matching `/feedback`
    /// outcomes, by request id and row and by entity (its last 8); older
    /// ones cannot take one. A bound on memory: about 130 bytes each
    /// (one-row requests, 36-character request ids), plus entity labels.
    #[arg(long, default_value_t = 200_000)]
    feedback_memory: usize,
    /// Only predictions younger than this many seconds are evaluated.
    #[arg(long, default_value_t = 3600)]
    drift_window_s: u64,
    /// Windows with fewer predictions are not judged.
    #[arg(long, default_value_t = 100)]
    drift_min_rows: usize,
    /// The dataset drifts when at least this share of features drift.
    #[arg(long, default_value_t = 0.5)]
    drift_share: f64,
    /// Consecutive drifted evaluations before an alert (and clean ones
    /// before it clears).
    #[arg(long, default_value_t = 2)]
    drift_alert_after: u32,
    /// POST each drift alert (and its resolution) as JSON to this URL.
    #[arg(long)]
    drift_webhook: Option<String>,
    /// When a model starts alerting, run its retraining job (as `aurum
    /// retrain` would: only if its tables have new versions; the new
    /// version becomes `challenger`).
    #[arg(long)]
    retrain_on_drift: bool,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let project = args.project.load()?;
    // Checked before anything is bound: no port opens without tokens
    // beyond loopback.
    let mut limits = limits(&args)?;
    limits.import_root = Some(
        args.import_root
            .clone()
            .unwrap_or_else(|| project.root.clone()),
    );
    let tokens = limits.tokens.clone();
    let tls = tls(&args)?;
    let (listener, flight_listener, grpc_listener) = bind(&args, tls.is_some()).await?;
    let accept = |listener, alpn: &[&[u8]]| {
        listen::incoming(
            listener,
            listen::Options {
                max_connections: args.max_connections.max(1),
                handshake_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
                idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
                tls: tls.as_ref().map(|tls| tls.with_alpn(alpn)),
            },
        )
    };
    let (http_in, flight_in, grpc_in) = (
        accept(listener, &[b"h2", b"http/1.1"]),
        accept(flight_listener, &[b"h2"]),
        accept(grpc_listener, &[b"h2"]),
    );

    let online = Arc::new(OnlineStore::new(args.memory_mib << 20));
    let backend = args.online_store.unwrap_or(project.online_store.backend);
    if backend == OnlineBackendKind::Redis {
        let options = feature_store::online::shared::TierOptions::from_env(
            args.redis_cluster || project.online_store.cluster,
            &project.name,
            Duration::from_millis(args.redis_timeout_ms.max(10)),
        )?;
        let tier = feature_store::online::shared::SharedTier::connect(options).await?;
        println!(
            "online store: redis at {} (L1 of {} MiB in this process)",
            tier.shown(),
            args.memory_mib
        );
        online.attach_tier(tier)?;
        // Ready means L1 is in use: wait (briefly) for the invalidation
        // subscription; without it the server still starts, not ready.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !online.is_ready() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let registry = aurum::project_registry::open(&project)?;
    let store = project.delta_store()?;
    let config = ServingConfig::from_sections(&args.serve_alias, &project.models)?;
    let reload = serving::ReloadOptions {
        interval: std::time::Duration::from_millis(args.reload_interval_ms.max(100)),
        sessions: args.sessions,
    };
    let mut state = AppState::new(online.clone(), registry.clone())
        .with_offline(store.clone())
        .with_config(config)
        .with_limits(limits)
        .with_reload(reload);
    let logs = project.store_under(monitoring::LOG_DIR)?;
    let monitor = monitor(&args, &logs)?;
    if !args.no_prediction_log || monitor.is_some() {
        state = state.with_prediction_log(prediction_log(&args, &logs, monitor.clone()));
    }
    if let Some(monitor) = &monitor {
        if args.retrain_on_drift {
            monitor.set_alert_hook(retrain_hook(&project)?);
        }
        state = state.with_monitor(monitor.clone());
    }
    state
        .pusher
        .set_max_future_skew(std::time::Duration::from_secs(args.max_future_skew_secs));
    let state = Arc::new(state);
    let server = tokio::spawn(serving::serve_on(http_in, state.clone(), shutdown_signal()));
    let flight = flight::FlightServer::new(online.clone(), state.pusher.clone())
        .with_store(store.clone())
        .with_tokens(tokens);
    let call_limits = flight::CallLimits {
        timeout: Duration::from_secs(args.flight_call_timeout_secs.max(1)),
        max_upload_bytes: args.flight_max_upload_mib.saturating_mul(1 << 20),
        ..flight::CallLimits::default()
    };
    let flight = tokio::spawn(flight.serve_on(flight_in, call_limits, shutdown_signal()));
    let grpc = serving::protocols::oip_grpc::OipGrpc::new(state.clone());
    let grpc = tokio::spawn(grpc.serve_on(grpc_in, shutdown_signal()));

    warm_start(&project, &online, &store).await?;
    spawn_window_pruner(online.clone());
    load_models(&state, &registry).await?;
    serving::tasks::spawn_model_watcher(state.clone());
    serving::tasks::spawn_drift_monitor(state.clone());
    serving::tasks::spawn_table_health(
        state.clone(),
        Arc::new(project.clone()),
        Duration::from_secs(args.table_metrics_interval_s.max(1)),
    );
    // Kafka sources into bronze, and their events into the window tiles,
    // once the tiles hold what gold was computed from.
    // Over a shared tier, the window tiles follow its events feed (what
    // any replica's stream received), from where bronze ends.
    let followers = crate::stream_commands::follow_in_server(&project, online.clone()).await?;
    let streams = if args.stream {
        let streams =
            crate::stream_commands::start_in_server(&project, online.clone(), followers.as_ref())
                .await?;
        if let Ok(mut statuses) = state.streams.write() {
            *statuses = streams.statuses.clone();
        }
        println!(
            "streaming {}",
            streams
                .statuses
                .iter()
                .map(|s| format!("{} ({})", s.source, s.topic))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Some(streams)
    } else {
        None
    };
    state.set_ready(true);
    println!("ready");

    // Graceful shutdown: the server stops accepting, answers what is in
    // flight, and then what the prediction log holds is written.
    let served = server.await.context("the server task failed")?;
    // A stream's consumer that failed was logged as it failed (and shown
    // by /health/ready); the rest land what they hold.
    if let Some(streams) = streams
        && let Err(e) = streams.stop().await
    {
        tracing::error!("{e:#}");
    }
    state.drain_writes().await;
    state.drain_shadows().await;
    if let Some(log) = &state.prediction_log {
        log.close().await;
    }
    served.context("serving HTTP")?;
    flight
        .await
        .context("the Flight task failed")?
        .context("serving Arrow Flight")?;
    grpc.await
        .context("the gRPC task failed")?
        .context("serving the Open Inference Protocol over gRPC")?;
    Ok(())
}

/// The TLS configuration `--tls-cert` and `--tls-key` name, checked before
/// anything is bound.
fn tls(args: &ServeArgs) -> Result<Option<listen::Tls>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(listen::Tls::from_pem_files(cert, key)?)),
        _ => Ok(None),
    }
}

/// Binds the HTTP, Flight and gRPC listeners first, so `/health/live`
/// answers at once, and prints the addresses bound (with TLS, as `https`
/// and `grpc+tls`).
async fn bind(
    args: &ServeArgs,
    tls: bool,
) -> Result<(
    tokio::net::TcpListener,
    tokio::net::TcpListener,
    tokio::net::TcpListener,
)> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let (http, grpc) = if tls {
        ("https", "grpc+tls")
    } else {
        ("http", "grpc")
    };
    println!("listening on {http}://{local}");
    let flight_listener = tokio::net::TcpListener::bind(args.flight_addr)
        .await
        .with_context(|| format!("binding {} for Arrow Flight", args.flight_addr))?;
    let flight_local = flight_listener
        .local_addr()
        .context("reading the bound Flight address")?;
    println!("flight on {grpc}://{flight_local}");
    let grpc_listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {} for the Open Inference Protocol", args.grpc_addr))?;
    let grpc_local = grpc_listener
        .local_addr()
        .context("reading the bound gRPC address")?;
    println!("grpc on {grpc_local}");
    Ok((listener, flight_listener, grpc_listener))
}

/// The server's protections: in-flight limit, request timeout, and the
/// tokens (a file, and an admin token from the flag or
/// `AURUM_ADMIN_TOKEN`). A non-loopback address without any token is
/// refused unless `--insecure`.
fn limits(args: &ServeArgs) -> Result<Limits> {
    let file = args
        .tokens
        .clone()
        .or_else(|| std::env::var_os("AURUM_TOKENS_FILE").map(Into::into));
    let mut tokens = match &file {
        Some(file) => auth::Tokens::from_file(file)?,
        None => auth::Tokens::none(),
    };
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("AURUM_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if let Some(token) = admin_token {
        tokens = tokens.with_token(
            &token,
            auth::Identity {
                name: "admin".to_string(),
                role: auth::Role::Admin,
            },
        );
    }
    let exposed: Vec<SocketAddr> = [args.addr, args.flight_addr, args.grpc_addr]
        .into_iter()
        .filter(|a| !a.ip().is_loopback())
        .collect();
    if tokens.is_empty() && !exposed.is_empty() {
        if !args.insecure {
            anyhow::bail!(
                "refusing to serve {} without tokens: every route would be open to the network; \
                 give --tokens FILE (see `aurum token new`), or --insecure to do it anyway",
                exposed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        tracing::warn!(addresses = ?exposed, "serving without tokens beyond loopback (--insecure)");
    }
    let mut allowed_hosts: Vec<String> = args
        .allowed_hosts
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if args.addr.ip().is_loopback() {
        allowed_hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    }
    Ok(Limits {
        max_in_flight: args.max_in_flight.max(1),
        request_timeout: std::time::Duration::from_millis(args.request_timeout_ms.max(1)),
        tokens,
        allowed_hosts: (!allowed_hosts.is_empty()).then_some(allowed_hosts),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs.max(1)),
        ..Limits::default()
    })
}

/// The drift monitor the flags ask for (none with `--no-monitor`),
/// matching feedback against the table in `logs`.
fn monitor(args: &ServeArgs, logs: &DeltaStore) -> Result<Option<Arc<Monitor>>> {
    if args.no_monitor {
        return Ok(None);
    }
    let options = MonitorOptions {
        window_rows: args.drift_window_rows.max(1),
        window_age: Duration::from_secs(args.drift_window_s.max(1)),
        interval: Duration::from_secs(args.drift_interval_s.max(1)),
        min_rows: args.drift_min_rows,
        drift: drift::DriftOptions {
            drift_share: args.drift_share,
            ..drift::DriftOptions::default()
        },
        alert_after: args.drift_alert_after.max(1),
        clear_after: args.drift_alert_after.max(1),
        webhook: args.drift_webhook.clone(),
        recent_predictions: args.feedback_memory.max(1),
        ..MonitorOptions::default()
    };
    let monitor = Monitor::new(options)?.with_feedback_table(logs.clone());
    Ok(Some(Arc::new(monitor)))
}

/// The prediction log: to the `predictions` table in `logs` unless
/// `--no-prediction-log`, and to the `monitor` when there is one.
fn prediction_log(
    args: &ServeArgs,
    logs: &DeltaStore,
    monitor: Option<Arc<Monitor>>,
) -> PredictionLog {
    let table = (!args.no_prediction_log).then(|| {
        println!(
            "logging predictions to {}",
            logs.table_location(monitoring::predictions::TABLE)
        );
        (logs.clone(), monitoring::predictions::TABLE.to_string())
    });
    PredictionLog::start_with(
        table,
        monitor,
        LogOptions {
            flush_interval: Duration::from_millis(args.prediction_log_flush_ms.max(1)),
            ..LogOptions::default()
        },
    )
}

/// Warm start: every feature view loaded from its gold table into the
/// online store, and the feature services registered.
async fn warm_start(
    project: &feature_store::Project,
    online: &OnlineStore,
    store: &DeltaStore,
) -> Result<()> {
    for spec in &project.feature_views {
        let view = spec.feature_view();
        online.register_view(view.clone());
        // A shared tier may hold the view already (another replica loaded
        // it): only what gold committed since is read.
        let incremental = online.tier().is_some();
        let report =
            feature_store::online::materialize::materialize(store, online, &view, incremental)
                .await?;
        match report.to_version {
            Some(version) => println!(
                "loaded {} entities of {} (Delta v{version})",
                report.written, view.name
            ),
            None => println!(
                "{} has no gold table yet (run `aurum pipeline`); serving it empty",
                view.name
            ),
        }
    }
    for service in &project.feature_services {
        online.register_service(service.clone());
    }
    Ok(())
}

/// Loads every registered model before the server reports ready; the
/// watcher then keeps the served versions in step with the registry.
async fn load_models(state: &Arc<AppState>, registry: &Registry) -> Result<()> {
    let models = registry.models()?;
    if !models.is_empty() {
        // Loading needs the ONNX Runtime library: fail with the command
        // that installs it rather than later on a request.
        onnx::init()?;
    }
    let first = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.sync_models())
            .await
            .context("loading the models")?
    };
    for (name, alias, version) in first {
        println!("serving model {name} v{version} as {alias}");
    }
    for name in &models {
        if state.models.get(name).is_none() {
            println!("model {name} has no version to serve yet");
        }
    }
    Ok(())
}

/// The alert hook of `--retrain-on-drift`: a drift alert on a model with a
/// `[model.training]` spec runs its retraining job in the background (one
/// job at a time; alerts during a job are logged and skipped).
fn retrain_hook(project: &feature_store::Project) -> Result<AlertHook> {
    let specs: Vec<training::spec::ModelSpec> = training::spec::specs(&project.models)?;
    let project = Arc::new(project.clone());
    let running = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Handle::current();
    Ok(Box::new(move |alert: &Alert| {
        if alert.state != "drift" {
            return;
        }
        let Some(spec) = specs.iter().find(|s| s.name == alert.model).cloned() else {
            tracing::info!(model = %alert.model, "drift alert: the model has no [model.training] spec to retrain");
            return;
        };
        if running.swap(true, Ordering::AcqRel) {
            tracing::info!(model = %alert.model, "drift alert: a retraining job is already running");
            return;
        }
        let (project, running) = (project.clone(), running.clone());
        runtime.spawn(async move {
            tracing::info!(model = %spec.name, "drift alert: running the retraining job");
            let options = training::job::JobOptions {
                force: false,
                promote_if_better: false,
                run_id: format!("drift-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")),
                who: "aurum serve (drift alert)".into(),
            };
            let outcome = match aurum::project_registry::open(&project) {
                Ok(registry) => training::job::run(&project, &spec, &registry, &options, &|_| {})
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(outcome) => tracing::info!(model = %spec.name, outcome = ?outcome, "drift retraining finished"),
                Err(e) => tracing::error!(model = %spec.name, error = %e, "drift retraining failed"),
            }
            running.store(false, Ordering::Release);
        });
    }))
}

/// Resolves on SIGINT or SIGTERM.
/// Drops, every minute, the window tiles no read can reach any more: an
/// entity that went quiet would otherwise keep its tiles.
fn spawn_window_pruner(online: Arc<OnlineStore>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let online = online.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let now = chrono::Utc::now().timestamp_micros();
                for view in online.views() {
                    if let Some(tiles) = online.live_tiles(&view.name) {
                        tiles.prune(now);
                    }
                }
            })
            .await;
        }
    });
}

pub(crate) async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
