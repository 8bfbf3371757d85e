//! `aurum demo`: build the example project, serve it, and ask `/predict`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aurum::demo_project::{self, BuildReport, DemoOptions};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serving::routes::predict::PredictResponse;

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
    #[serde(flatten)]
    report: BuildReport,
    server: String,
    customers: Vec<i64>,
    response: PredictResponse,
    /// `/get-online-features` for the same customers right after: the
    /// feature values the prediction was made on (windows valued at the
    /// read).
    online_features: serde_json::Value,
}

pub async fn run(args: DemoArgs) -> Result<()> {
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
    let steps = ProgressBar::new(9).with_style(
        ProgressStyle::with_template("{bar:24} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.json {
        steps.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let options = DemoOptions {
        rows: args.rows,
        seed: args.seed,
        end_micros: chrono::Utc::now().timestamp() * 1_000_000,
    };
    let progress = |stage: &str| {
        steps.inc(1);
        steps.set_message(stage.to_string());
    };
    let project = demo_project::build(&dir, &options, &progress).await?;
    let features: Vec<String> = project
        .state
        .online
        .view(aurum::example::CUSTOMER_VIEW)
        .map(|v| v.feature_refs())
        .unwrap_or_default();

    steps.set_message("serving POST /predict");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serving::serve(listener, project.state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = client
        .post(format!("http://{address}/predict"))
        .json(&serde_json::json!({
            "model": demo_project::MODEL,
            "entities": {"customer_id": args.customers},
        }))
        .send()
        .await
        .context("POST /predict")?;
    let status = response.status();
    let body = response.text().await?;
    let online_features: serde_json::Value = client
        .post(format!("http://{address}/get-online-features"))
        .json(&serde_json::json!({
            "entities": {"customer_id": args.customers},
            "features": features,
        }))
        .send()
        .await
        .context("POST /get-online-features")?
        .json()
        .await
        .context("parsing /get-online-features' answer")?;
    let _ = stop.send(());
    server.await.context("joining the server")??;
    if !status.is_success() {
        bail!("/predict answered {status}: {body}");
    }
    let response: PredictResponse =
        serde_json::from_str(&body).with_context(|| format!("parsing /predict's answer {body}"))?;
    steps.finish_and_clear();

    let summary = Summary {
        project_dir: dir.clone(),
        report: project.report,
        server: format!("http://{address}"),
        customers: args.customers.clone(),
        response,
        online_features,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, started.elapsed());
    }
    Ok(())
}

fn print_summary(s: &Summary, elapsed: Duration) {
    let r = &s.report;
    println!("aurum demo — project {}", s.project_dir.display());
    println!(
        "  bronze   {} rows generated (with re-delivered duplicates)",
        r.bronze_rows
    );
    println!(
        "  silver   {} rows → Delta table silver_transactions v{}",
        r.silver_rows, r.silver_version
    );
    println!(
        "  gold     {} rows → Delta table customer_features v{}",
        r.gold_rows, r.gold_version
    );
    println!("  online   {} customers materialized", r.online_entities);
    println!("  training {} point-in-time rows", r.training_rows);
    let metric = |k: &str| {
        r.metrics
            .get(k)
            .map_or("n/a".to_string(), |v| format!("{v:.3}"))
    };
    println!(
        "  model    {} v{} (validation ROC AUC {}, log loss {})",
        r.model,
        r.model_version,
        metric("val_roc_auc"),
        metric("val_log_loss")
    );
    println!("  served   POST {}/predict", s.server);
    let versions: Vec<String> = s
        .response
        .feature_versions
        .iter()
        .map(|(view, v)| format!("{view} v{v}"))
        .collect();
    for (customer, p) in s.customers.iter().zip(&s.response.predictions) {
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
