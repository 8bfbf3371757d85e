//! `aurum train` and `aurum retrain`: the project's `[model.training]`
//! specs run as training jobs, with a log line per stage and a progress bar
//! over epochs.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use registry::Registry;
use training::job::{self, JobOptions, Outcome, Progress};
use training::spec::ModelSpec;

use crate::project::ProjectArg;

/// Options of `aurum train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Train only this model (default: every model with a
    /// `[model.training]` table).
    #[arg(long)]
    model: Option<String>,
    /// Move `champion` to the new version when it beats the champion on
    /// the same validation window (metric and margin from the spec).
    #[arg(long)]
    promote_if_better: bool,
    /// Print one JSON document per model instead of log lines.
    #[arg(long)]
    json: bool,
    /// Push each job's outcome (version, promotion, rows, validation
    /// metrics, step times) to this Prometheus Pushgateway, as job
    /// `aurum_train` grouped by project and model.
    #[arg(long, value_name = "URL")]
    pushgateway: Option<String>,
}

/// Options of `aurum retrain`.
#[derive(Debug, clap::Args)]
pub struct RetrainArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Run one pass and exit, even when the spec sets `retrain_every`.
    #[arg(long)]
    once: bool,
    /// Run a pass every DURATION (e.g. 30m, 6h, 1d), overriding the spec's
    /// `retrain_every`.
    #[arg(long)]
    every: Option<String>,
}

/// `aurum train`: trains and registers each model now.
pub async fn train(args: TrainArgs) -> Result<()> {
    let (project, specs) = load(&args)?;
    let registry = aurum::project_registry::open(&project)?;
    for spec in &specs {
        run_one(&project, spec, &registry, &args, true).await?;
    }
    Ok(())
}

/// `aurum retrain`: trains each model whose tables have new versions since
/// its newest registered version; once, or on an interval.
pub async fn retrain(args: RetrainArgs) -> Result<()> {
    let (project, specs) = load(&args.train)?;
    let registry = aurum::project_registry::open(&project)?;
    let every = match &args.every {
        Some(text) => Some(
            feature_store::project::parse_duration(text)
                .with_context(|| format!("--every {text:?} is not a duration such as 30m or 6h"))?,
        ),
        None => specs.iter().filter_map(|s| s.retrain_every).min(),
    };
    loop {
        for spec in &specs {
            run_one(&project, spec, &registry, &args.train, false).await?;
        }
        match every {
            Some(every) if !args.once => {
                println!(
                    "next retraining pass in {}",
                    feature_store::project::format_duration(every)
                );
                tokio::time::sleep(every.max(Duration::from_secs(1))).await;
            }
            _ => return Ok(()),
        }
    }
}

fn load(args: &TrainArgs) -> Result<(feature_store::Project, Vec<ModelSpec>)> {
    let project = args.project.load()?;
    let mut specs = training::spec::specs(&project.models)?;
    if let Some(name) = &args.model {
        specs.retain(|s| &s.name == name);
        if specs.is_empty() {
            bail!("no [[model]] named {name:?} with a [model.training] table in the project");
        }
    }
    if specs.is_empty() {
        bail!("the project has no [[model]] with a [model.training] table to train");
    }
    // Registration validates in ONNX Runtime: fail first, naming the
    // command that installs it.
    onnx::init()?;
    Ok((project, specs))
}

async fn run_one(
    project: &feature_store::Project,
    spec: &ModelSpec,
    registry: &Registry,
    args: &TrainArgs,
    force: bool,
) -> Result<()> {
    let options = job_options(args, force);
    let bar = ProgressBar::hidden();
    if !args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    let name = spec.name.clone();
    let quiet = args.json;
    let progress = |p: Progress| match p {
        Progress::Stage(stage) => {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(format!("[{name}] {stage}"));
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Progress::Epoch(epoch, epochs, loss) => {
            if bar.length() != Some(epochs as u64) {
                bar.set_length(epochs as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "[{elapsed_precise}] {bar:30} epoch {pos}/{len} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_position(epoch as u64);
            bar.set_message(format!("validation loss {loss:.5}"));
        }
        Progress::Done(stage, seconds, summary) => {
            if !quiet {
                bar.suspend(|| println!("[{name}] {stage}: {summary} ({seconds:.2} s)"));
            }
        }
    };
    let outcome = job::run(project, spec, registry, &options, &progress)
        .await
        .with_context(|| format!("training {}", spec.name))?;
    bar.finish_and_clear();
    if let Some(gateway) = &args.pushgateway {
        let report = match &outcome {
            Outcome::Registered(report) => Some(report),
            Outcome::Skipped { .. } => None,
        };
        let metrics = crate::pushgateway::train_metrics(report);
        crate::pushgateway::push(
            gateway,
            "aurum_train",
            &[("project", &project.name), ("model", &spec.name)],
            &metrics,
        )
        .await;
    }
    print_outcome(&spec.name, outcome, args.json);
    Ok(())
}

/// The job's options: `train` forces a run, `retrain` runs only on new
/// data; the run id and the recorded user say which.
fn job_options(args: &TrainArgs, force: bool) -> JobOptions {
    let who = std::env::var("AURUM_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "aurum".into());
    JobOptions {
        force,
        promote_if_better: args.promote_if_better,
        run_id: format!(
            "{}-{}",
            if force { "train" } else { "retrain" },
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ),
        who: format!("{who} ({})", if force { "train" } else { "retrain" }),
    }
}

/// What the job did for model `name`, as JSON or a line of text.
fn print_outcome(name: &str, outcome: Outcome, json: bool) {
    match outcome {
        Outcome::Skipped { reason } => {
            if json {
                println!("{}", serde_json::json!({"model": name, "skipped": reason}));
            } else {
                println!("[{name}] skipped: {reason}");
            }
        }
        Outcome::Registered(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "model": report.model,
                        "version": report.version,
                        "sha256": report.sha256,
                        "train_rows": report.rows.0,
                        "validation_rows": report.rows.1,
                        "table_versions": report.table_versions,
                        "metrics": report.metrics,
                        "metric": report.comparison.0,
                        "value": report.comparison.1,
                        "champion_value": report.comparison.2,
                        "promoted": report.promoted.0,
                        "promotion": report.promoted.1,
                        "stages": report.stages.iter().map(|(s, t)| serde_json::json!({"stage": s, "seconds": t})).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!(
                    "[{}] registered v{} (sha256 {}…)",
                    report.model,
                    report.version,
                    &report.sha256[..12.min(report.sha256.len())]
                );
            }
        }
    }
}
