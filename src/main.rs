//! The `aurum` command line: definitions and glue over the library crates.

mod demo;
mod drift_commands;
mod feast_repo;
mod project_commands;
mod pushgateway;
mod registry_commands;
mod serve;
mod stream_commands;
mod table_commands;
mod token_commands;
mod train_commands;
mod training_set;

use project_commands as project;

// mimalloc: the server allocates small buffers per request on one thread
// and frees some on another (the prediction log's writer), where glibc's
// malloc costs ~15 % of /predict throughput (BENCHMARKS.md, issue 7). The
// 2.x line of mimalloc (the `v2` feature in Cargo.toml) keeps resident
// memory flat under a steady load where 3.x grows (issue 21's soak).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// aurum: an MLOps feature store and model server.
#[derive(Debug, Parser)]
#[command(name = "aurum", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole path end to end in a fresh project: synthetic bronze
    /// data → silver and gold Delta tables → online store → point-in-time
    /// training set → candle model → ONNX → registry → HTTP /predict.
    Demo(demo::DemoArgs),
    /// Create a working example project (the fraud-style domain) in DIR.
    Init(project::InitArgs),
    /// Write deterministic synthetic bronze files (transactions and
    /// merchants) under the project's data/bronze.
    Generate(project::GenerateArgs),
    /// Run the medallion pipeline: ingest new bronze files, then silver and
    /// gold, incrementally.
    Pipeline(project::PipelineArgs),
    /// Print a table version's lineage back to the bronze files.
    Lineage(project::LineageArgs),
    /// Compact small data files of the project's Delta tables.
    Optimize(project::OptimizeArgs),
    /// Delete data files no retained table version needs.
    Vacuum(project::VacuumArgs),
    /// Serve HTTP (/predict, /get-online-features, health) over the
    /// project's online store, warm-started from the gold tables, and the
    /// latest version of every registered model.
    Serve(Box<serve::ServeArgs>),
    /// Land the project's Kafka sources in their bronze tables, exactly
    /// once, until stopped (or, with --exit-when-idle, until caught up).
    Stream(stream_commands::StreamArgs),
    /// Load the gold tables' rows into a running server's online store
    /// (`--incremental`: only commits newer than the ones it holds).
    Materialize(project::MaterializeArgs),
    /// Join a spine point-in-time with features from the gold tables.
    TrainingSet(training_set::TrainingSetArgs),
    /// The model registry: list, show, register, alias, rollback, history,
    /// delete, and push to / pull from an MLflow server.
    Registry(registry_commands::RegistryArgs),
    /// Train each model of the project's [model.training] specs on its
    /// point-in-time training set, register it as `challenger`.
    Train(train_commands::TrainArgs),
    /// Retrain models whose tables have new versions since their newest
    /// registered version (skipping the others); once, or on an interval.
    Retrain(train_commands::RetrainArgs),
    /// Drift of a dataset against a model version's reference profile (or
    /// of any two datasets): an HTML report with charts, or JSON.
    Drift(drift_commands::DriftArgs),
    /// A/B analysis of the served arms from the outcomes sent to /feedback.
    Ab(drift_commands::AbArgs),
    /// Any Delta table (a local path or an object-store URI) as aurum
    /// reads it: `aurum table show URI`.
    Table(table_commands::TableArgs),
    /// Write a Feast feature repository (feature_store.yaml, features.py)
    /// for the project, whose remote online and offline stores are a
    /// running `aurum serve`.
    FeastRepo(feast_repo::FeastRepoArgs),
    /// Tokens for `aurum serve --tokens FILE`: `aurum token new NAME
    /// --role read|write|admin`.
    Token(token_commands::TokenArgs),
}

fn main() -> std::process::ExitCode {
    // The Delta kernel logs every snapshot it could not build at ERROR,
    // including a table that does not exist yet, which aurum asks about
    // routinely and answers itself (a real failure comes back as an error).
    let filter = tracing_subscriber::EnvFilter::try_from_env("AURUM_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,buoyant_kernel::snapshot::builder=off")
    });
    // `AURUM_LOG_FORMAT=json`: one JSON object per line, for log shippers.
    let json = std::env::var("AURUM_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    let cli = Cli::parse();
    // Traces over OTLP when the standard OTEL_* variables ask for them;
    // held to the end so the last spans are flushed.
    let tracing = match telemetry::init("aurum") {
        Ok(tracing) => tracing,
        Err(e) => {
            eprintln!("error: tracing: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run = run_trace(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let _attached = run.attach();
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Init(args) => project::init(args),
            Command::Generate(args) => project::generate(args),
            Command::Pipeline(args) => project::pipeline(args).await,
            Command::Lineage(args) => project::lineage(args).await,
            Command::Optimize(args) => project::optimize(args).await,
            Command::Vacuum(args) => project::vacuum(args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Materialize(args) => project::materialize(args).await,
            Command::Stream(args) => stream_commands::run(args).await,
            Command::TrainingSet(args) => training_set::run(args).await,
            Command::Registry(args) => registry_commands::run(args).await,
            Command::Train(args) => train_commands::train(args).await,
            Command::Retrain(args) => train_commands::retrain(args).await,
            Command::Drift(args) => drift_commands::drift(args).await,
            Command::Ab(args) => drift_commands::ab(args).await,
            Command::Table(args) => table_commands::run(args).await,
            Command::FeastRepo(args) => feast_repo::run(args).await,
            Command::Token(args) => token_commands::run(args),
        }
    });
    if let Err(e) = &result {
        run.fail(format!("{e:#}"));
    }
    run.end();
    drop(runtime);
    drop(tracing);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The span of a batch command's run (`aurum pipeline`, …), whose steps
/// are its children. The server's requests are traces of their own, so
/// `serve` has none.
fn run_trace(command: &Command) -> telemetry::Trace {
    let name = match command {
        Command::Serve(_) | Command::Init(_) | Command::Token(_) | Command::FeastRepo(_) => {
            return telemetry::Trace::off();
        }
        Command::Demo(_) => "aurum demo",
        Command::Generate(_) => "aurum generate",
        Command::Pipeline(_) => "aurum pipeline",
        Command::Lineage(_) => "aurum lineage",
        Command::Optimize(_) => "aurum optimize",
        Command::Vacuum(_) => "aurum vacuum",
        Command::Materialize(_) => "aurum materialize",
        Command::Stream(_) => "aurum stream",
        Command::TrainingSet(_) => "aurum training-set",
        Command::Registry(_) => "aurum registry",
        Command::Train(_) => "aurum train",
        Command::Retrain(_) => "aurum retrain",
        Command::Drift(_) => "aurum drift",
        Command::Ab(_) => "aurum ab",
        Command::Table(_) => "aurum table",
    };
    telemetry::Trace::root(name)
}
