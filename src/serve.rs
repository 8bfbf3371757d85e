//! `aurum serve`: the HTTP server and the Arrow Flight service over the
//! project's online store and registry.
//!
//! The listener is bound first, so `/health/live` answers at once; every
//! feature view's latest values are then loaded from its gold Delta table
//! (warm start) and the latest version of every registered model is loaded,
//! and only then does `/health/ready` turn ready. A restarted server thus
//! serves what it served before, for values still within their TTL.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use feature_store::{DeltaStore, OnlineStore};
use registry::Registry;
use serving::{AppState, Limits, PredictionLog, ServingConfig};

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
    /// The Arrow Flight address (port 0 picks a free port; printed).
    #[arg(long, default_value = "127.0.0.1:8815")]
    flight_addr: SocketAddr,
    /// Memory budget of the online store, in MiB.
    #[arg(long, default_value_t = 1024)]
    memory_mib: u64,
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
    /// The bearer token admin routes (`/materialize`, `/admin/reload`,
    /// MLflow writes) require; also read from `AURUM_ADMIN_TOKEN`. Without
    /// one, admin routes are open (the default address is loopback only).
    #[arg(long)]
    admin_token: Option<String>,
    /// Do not log predictions to the `predictions` Delta table.
    #[arg(long)]
    no_prediction_log: bool,
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let project = args.project.load()?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let local = listener.local_addr().context("reading the bound address")?;
    println!("listening on http://{local}");
    let flight_listener = tokio::net::TcpListener::bind(args.flight_addr)
        .await
        .with_context(|| format!("binding {} for Arrow Flight", args.flight_addr))?;
    let flight_local = flight_listener
        .local_addr()
        .context("reading the bound Flight address")?;
    println!("flight on grpc://{flight_local}");

    let online = Arc::new(OnlineStore::new(args.memory_mib << 20));
    let registry = Registry::open(project.registry_dir())?;
    let store = DeltaStore::new(project.delta_dir());
    let config = ServingConfig::from_sections(&args.serve_alias, &project.models)?;
    let admin_token = args
        .admin_token
        .clone()
        .or_else(|| std::env::var("AURUM_ADMIN_TOKEN").ok())
        .filter(|t| !t.is_empty());
    if admin_token.is_none() && !args.addr.ip().is_loopback() {
        tracing::warn!(addr = %args.addr, "admin routes are open on a non-loopback address; set --admin-token");
    }
    let limits = Limits {
        max_in_flight: args.max_in_flight.max(1),
        request_timeout: std::time::Duration::from_millis(args.request_timeout_ms.max(1)),
        admin_token,
        ..Limits::default()
    };
    let reload = serving::reload::ReloadOptions {
        interval: std::time::Duration::from_millis(args.reload_interval_ms.max(100)),
        sessions: args.sessions,
    };
    let mut state = AppState::new(online.clone(), registry.clone())
        .with_offline(store.clone())
        .with_config(config)
        .with_limits(limits)
        .with_reload(reload);
    if !args.no_prediction_log {
        let logs = DeltaStore::new(project.data_dir.join("logs"));
        println!(
            "logging predictions to {}",
            logs.table_path(serving::prediction_log::TABLE).display()
        );
        state = state.with_prediction_log(PredictionLog::start(
            logs,
            serving::prediction_log::TABLE,
            serving::prediction_log::LogOptions::default(),
        ));
    }
    let state = Arc::new(state);
    let server = tokio::spawn(serving::serve(listener, state.clone(), shutdown_signal()));
    let flight = feature_store::flight::FlightServer::new(online.clone(), state.pusher.clone())
        .with_store(store.clone());
    let flight = tokio::spawn(flight.serve(flight_listener, shutdown_signal()));

    // Warm start: every view from its gold table, then every model.
    for spec in &project.feature_views {
        let view = spec.feature_view();
        online.register_view(view.clone());
        let report = feature_store::materialize::materialize(&store, &online, &view, false).await?;
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
    let models = registry.models()?;
    if !models.is_empty() {
        // Loading needs the ONNX Runtime library: fail with the command
        // that installs it rather than later on a request.
        registry::runtime::environment()?;
    }
    // The first pass loads every model before the server reports ready;
    // the watcher then keeps the served versions in step with the registry.
    let first = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || serving::reload::sync_once(&state))
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
    serving::reload::spawn(state.clone());
    state.set_ready(true);
    println!("ready");

    // Graceful shutdown: the server stops accepting, answers what is in
    // flight, and then what the prediction log holds is written.
    let served = server.await.context("the server task failed")?;
    state.drain_shadows().await;
    if let Some(log) = &state.prediction_log {
        log.close().await;
    }
    served.context("serving HTTP")?;
    flight
        .await
        .context("the Flight task failed")?
        .context("serving Arrow Flight")?;
    Ok(())
}

async fn shutdown_signal() {
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
