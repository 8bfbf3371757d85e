//! `aurum demo`: every stage of the product, real but thin, in one run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use feature_store::fraud::{self, GenerateOptions};
use feature_store::offline::WriteMode;
use feature_store::retrieval::{RetrievalOptions, Spine, point_in_time_join};
use feature_store::{CommitLineage, DeltaStore, OnlineStore};
use indicatif::{ProgressBar, ProgressStyle};
use registry::{Lineage, Registry};
use serde::Serialize;
use serving::AppState;
use serving::predict::PredictResponse;

/// Options of `aurum demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo project in this directory (created if missing) instead
    /// of a temporary one that is removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of synthetic transactions to generate.
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Random seed of the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Customer ids to ask /predict about.
    #[arg(long, value_delimiter = ',', default_values_t = [17i64, 42])]
    customers: Vec<i64>,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// What the demo did, for people (text) and tests (`--json`).
#[derive(Debug, Serialize)]
struct Summary {
    project_dir: PathBuf,
    bronze_rows: usize,
    silver_rows: usize,
    silver_version: u64,
    gold_rows: usize,
    gold_version: u64,
    online_entities: usize,
    training_rows: usize,
    metrics: std::collections::BTreeMap<String, f64>,
    model: String,
    model_version: u64,
    server: String,
    customers: Vec<i64>,
    response: PredictResponse,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.rows < 200 {
        bail!("--rows must be at least 200 so that training and validation sets are not empty");
    }
    // Fail before any work if ONNX Runtime cannot be loaded; the error names
    // the command that installs it.
    registry::runtime::environment()?;
    let (dir, _temp) = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("aurum-demo-")
                .tempdir()
                .context("creating a temporary project directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let steps = ProgressBar::new(8).with_style(
        ProgressStyle::with_template("{bar:24} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.json {
        steps.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let delta = DeltaStore::new(dir.join("data").join("delta"));
    let view = fraud::customer_view();

    steps.set_message("generating bronze transactions");
    let end_micros = chrono::Utc::now().timestamp() * 1_000_000;
    let bronze = fraud::generate(
        &dir.join("data").join("bronze"),
        &GenerateOptions {
            rows: args.rows,
            seed: args.seed,
            end_micros,
            days: 30,
        },
    )?;
    steps.inc(1);

    steps.set_message("silver: types and duplicates → Delta");
    let silver = fraud::silver_transactions(&bronze.transactions)?;
    let mut input_files = std::collections::BTreeMap::new();
    input_files.insert(
        bronze.transactions.display().to_string(),
        fraud::file_sha256(&bronze.transactions)?,
    );
    let silver_version = delta
        .write(
            fraud::SILVER_TABLE,
            &silver,
            WriteMode::Overwrite,
            &CommitLineage {
                operation: "silver".into(),
                input_files,
                definition_hash: fraud::definition_hash(&view),
                ..CommitLineage::default()
            },
        )
        .await?;
    steps.inc(1);

    steps.set_message("gold: per-customer windows → Delta");
    let (silver, silver_version_read) = delta
        .read(fraud::SILVER_TABLE, Some(silver_version))
        .await?;
    let gold = fraud::gold_customer_features(&silver)?;
    let mut input_tables = std::collections::BTreeMap::new();
    input_tables.insert(fraud::SILVER_TABLE.to_string(), silver_version_read);
    let gold_version = delta
        .write(
            &view.name,
            &gold,
            WriteMode::Overwrite,
            &CommitLineage {
                operation: "gold".into(),
                input_tables,
                definition_hash: fraud::definition_hash(&view),
                ..CommitLineage::default()
            },
        )
        .await?;
    steps.inc(1);

    steps.set_message("materializing the online store");
    let online = Arc::new(OnlineStore::new(256 << 20));
    online.register_view(view.clone());
    let (gold, gold_version_read) = delta.read(&view.name, Some(gold_version)).await?;
    let materialized = online.materialize(&view, &gold, gold_version_read)?;
    steps.inc(1);

    steps.set_message("point-in-time training set");
    let spine_frame = silver
        .select(["customer_id", "event_timestamp", "is_fraud"])
        .context("selecting the spine")?;
    let spine = Spine {
        frame: spine_frame,
        timestamp_column: "event_timestamp".into(),
    };
    let training_set = point_in_time_join(
        &spine,
        &[(&view, &gold, &view.features)],
        RetrievalOptions::default(),
    )?;
    steps.inc(1);

    steps.set_message("training a logistic regression with candle");
    let model = training::train_logistic(
        &training_set,
        &view.features,
        "is_fraud",
        "event_timestamp",
        &training::TrainOptions::default(),
    )?;
    steps.inc(1);

    steps.set_message("exporting ONNX and registering");
    let registry = Registry::open(dir.join("registry"))?;
    let mut table_versions = std::collections::BTreeMap::new();
    table_versions.insert(fraud::SILVER_TABLE.to_string(), silver_version_read);
    table_versions.insert(view.name.clone(), gold_version_read);
    let mut parameters = std::collections::BTreeMap::new();
    parameters.insert("seed".to_string(), args.seed.to_string());
    parameters.insert("epochs".to_string(), "300".to_string());
    let version = training::register(
        &registry,
        "fraud",
        &model,
        view.feature_refs(),
        Lineage {
            table_versions,
            training_set_sha256: training::training_set_sha256(&training_set)?,
            run_id: format!("demo-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")),
            parameters,
        },
    )?;
    steps.inc(1);

    steps.set_message("serving /predict");
    let state = Arc::new(AppState::new(online.clone(), registry.clone()));
    state.models.load_latest(&registry, "fraud", 2)?;
    state.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = client
        .post(format!("http://{address}/predict"))
        .json(&serde_json::json!({
            "model": "fraud",
            "entities": {"customer_id": args.customers},
        }))
        .send()
        .await
        .context("POST /predict")?;
    let status = response.status();
    let body = response.text().await?;
    let _ = stop.send(());
    server.await.context("joining the server")??;
    if !status.is_success() {
        bail!("/predict answered {status}: {body}");
    }
    let response: PredictResponse =
        serde_json::from_str(&body).with_context(|| format!("parsing /predict's answer {body}"))?;
    steps.inc(1);
    steps.finish_and_clear();

    let summary = Summary {
        project_dir: dir.clone(),
        bronze_rows: bronze.rows_written,
        silver_rows: silver.height(),
        silver_version: silver_version_read,
        gold_rows: gold.height(),
        gold_version: gold_version_read,
        online_entities: materialized.written,
        training_rows: training_set.height(),
        metrics: model.metrics.clone(),
        model: version.name.clone(),
        model_version: version.version,
        server: format!("http://{address}"),
        customers: args.customers.clone(),
        response,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, started.elapsed());
    }
    Ok(())
}

fn print_summary(s: &Summary, elapsed: Duration) {
    println!("aurum demo — project {}", s.project_dir.display());
    println!(
        "  bronze   {} rows generated (with re-delivered duplicates)",
        s.bronze_rows
    );
    println!(
        "  silver   {} rows → Delta table silver_transactions v{}",
        s.silver_rows, s.silver_version
    );
    println!(
        "  gold     {} rows → Delta table customer_features v{}",
        s.gold_rows, s.gold_version
    );
    println!("  online   {} customers materialized", s.online_entities);
    println!("  training {} point-in-time rows", s.training_rows);
    let metric = |k: &str| {
        s.metrics
            .get(k)
            .map_or("n/a".to_string(), |v| format!("{v:.3}"))
    };
    println!(
        "  model    {} v{} (validation ROC AUC {}, log loss {})",
        s.model,
        s.model_version,
        metric("val_roc_auc"),
        metric("val_log_loss")
    );
    println!("  served   POST {}/predict", s.server);
    for (customer, p) in s.customers.iter().zip(&s.response.predictions) {
        let versions: Vec<String> = s
            .response
            .feature_versions
            .iter()
            .map(|(view, v)| format!("{view} v{v}"))
            .collect();
        let missing = if p.feature_statuses.is_empty() {
            String::new()
        } else {
            format!(", {} features imputed", p.feature_statuses.len())
        };
        println!(
            "    customer {customer}: fraud probability {:.4} — model {} v{} (arm {}), features from {}{missing}",
            p.prediction,
            p.model,
            p.version,
            p.arm,
            versions.join(", ")
        );
    }
    println!("done in {:.1}s", elapsed.as_secs_f64());
}
