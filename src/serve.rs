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
use serving::AppState;

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
    let state =
        Arc::new(AppState::new(online.clone(), registry.clone()).with_offline(store.clone()));
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
    let reload = serving::reload::ReloadOptions {
        alias: args.serve_alias.clone(),
        interval: std::time::Duration::from_millis(args.reload_interval_ms.max(100)),
        sessions: args.sessions,
    };
    let first = {
        let (state, reload) = (state.clone(), reload.clone());
        tokio::task::spawn_blocking(move || serving::reload::sync_once(&state, &reload))
            .await
            .context("loading the models")?
    };
    for (name, version) in first {
        println!("serving model {name} v{version}");
    }
    for name in &models {
        if state.models.get(name).is_none() {
            println!("model {name} has no version to serve yet");
        }
    }
    serving::reload::spawn(state.clone(), reload);
    state.set_ready(true);
    println!("ready");

    server
        .await
        .context("the server task failed")?
        .context("serving HTTP")?;
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
