//! The example project `aurum demo` builds: every stage of the product,
//! real but thin, in one directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::example::{self, GenerateOptions};
use anyhow::{Context, Result, bail};
use feature_store::pipeline::{self, PipelineOptions};
use feature_store::retrieval::{PreparedView, RetrievalOptions, Spine, join_prepared};
use feature_store::window::history::History;
use feature_store::{OnlineStore, Project};
use polars::prelude::DataFrame;
use registry::Lineage;
use serde::Serialize;
use serving::AppState;

/// The registered model's name.
pub const MODEL: &str = example::MODEL;

/// How much data to make.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Number of synthetic transactions.
    pub rows: usize,
    /// Seed of the synthetic data.
    pub seed: u64,
    /// End of the generated window, microseconds since the epoch (the data
    /// must be recent for the online store's TTL to find it fresh).
    pub end_micros: i64,
}

/// What each stage produced.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Bronze rows written, duplicates included.
    pub bronze_rows: usize,
    /// Rows in the silver table.
    pub silver_rows: usize,
    /// Rows the silver step quarantined.
    pub quarantined: usize,
    /// The silver batch quality score.
    pub quality_score: f64,
    /// The silver table version written.
    pub silver_version: u64,
    /// Rows in the gold table.
    pub gold_rows: usize,
    /// The gold table version written.
    pub gold_version: u64,
    /// Entities loaded into the online store.
    pub online_entities: usize,
    /// Rows of the point-in-time training set.
    pub training_rows: usize,
    /// Validation metrics of the trained model.
    pub metrics: BTreeMap<String, f64>,
    /// The model name.
    pub model: String,
    /// The registered version.
    pub model_version: u64,
}

/// A built project, ready to serve.
#[derive(Debug)]
pub struct DemoProject {
    /// Server state: online store warm, model loaded, ready.
    pub state: Arc<AppState>,
    /// What each stage produced.
    pub report: BuildReport,
}

/// Runs every stage in `dir`, reporting each stage's name to `progress`.
pub async fn build(
    dir: &Path,
    options: &DemoOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<DemoProject> {
    if options.rows < 200 {
        bail!("at least 200 rows are needed so that training and validation sets are not empty");
    }
    let project = open_project(dir)?;
    let delta = project.delta_store()?;
    let spec = project
        .view(example::CUSTOMER_VIEW)
        .with_context(|| format!("the project has no feature view {}", example::CUSTOMER_VIEW))?;
    let view = spec.feature_view();

    progress("generating bronze transactions");
    let bronze = generate(&project, options)?;

    progress("pipeline: bronze → silver → gold Delta tables");
    let pipeline = pipeline::run(&project, &PipelineOptions::default(), progress).await?;
    let silver_report = pipeline
        .sources
        .iter()
        .find(|s| s.source == "transactions")
        .context("the pipeline did not process transactions")?;
    let silver_version = delta
        .latest_version(example::SILVER_TABLE)
        .await?
        .context("no silver table was written")?;
    let gold_version = delta
        .latest_version(&view.name)
        .await?
        .context("no gold table was written")?;

    progress("materializing the online store");
    let online = Arc::new(OnlineStore::new(256 << 20));
    online.register_view(view.clone());
    let (gold, gold_version) = delta.read(&view.name, Some(gold_version)).await?;
    let materialized = online.materialize(&view, &gold, gold_version)?;
    let (silver, silver_version) = delta
        .read(example::SILVER_TABLE, Some(silver_version))
        .await?;
    // Windows valued at the request read the events' tiles.
    online.apply_events(
        &view.name,
        &silver,
        chrono::Utc::now().timestamp_micros(),
        feature_store::online::EventsFrom::Table(silver_version),
    )?;

    progress("point-in-time training set");
    let training_set = training_set(&silver, &view, &gold)?;

    progress("training a logistic regression with candle");
    let train_options = training::TrainOptions::default();
    let model = training::train_logistic(
        &training_set,
        &view.features,
        example::LABEL,
        example::EVENT_TIME,
        &train_options,
    )?;

    progress("exporting ONNX and registering");
    let registry = crate::project_registry::open(&project)?;
    let table_versions = BTreeMap::from([
        (example::SILVER_TABLE.to_string(), silver_version),
        (view.name.clone(), gold_version),
    ]);
    let lineage = Lineage {
        table_versions,
        training_set_sha256: training::training_set_sha256(&training_set)?,
        run_id: format!("demo-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S")),
        parameters: parameters(options, &train_options),
    };
    let version = training::register(&registry, MODEL, &model, view.feature_refs(), lineage)?;

    progress("loading the model for serving");
    let state = Arc::new(AppState::new(online, registry.clone()));
    state.models.load_latest(&registry, MODEL, 2)?;
    state.set_ready(true);

    Ok(DemoProject {
        state,
        report: BuildReport {
            bronze_rows: bronze.rows_written,
            silver_rows: silver.height(),
            quarantined: silver_report.quarantined,
            quality_score: silver_report.quality_score,
            silver_version,
            gold_rows: gold.height(),
            gold_version,
            online_entities: materialized.written,
            training_rows: training_set.height(),
            metrics: model.metrics,
            model: version.name,
            model_version: version.version,
        },
    })
}

/// The demo project in `dir` (the example's project file, written when
/// missing), once ONNX Runtime is known to load: the error names the
/// command that installs it, before any work.
fn open_project(dir: &Path) -> Result<Project> {
    onnx::init()?;
    let project_file = dir.join(feature_store::project::PROJECT_FILE);
    if !project_file.exists() {
        example::init(dir)?;
    }
    Ok(Project::load(&project_file)?)
}

/// The demo's bronze data: 30 days up to the options' end.
fn generate(project: &Project, options: &DemoOptions) -> Result<example::BronzeFiles> {
    Ok(example::generate(
        &project.data_dir.join("bronze"),
        &GenerateOptions {
            rows: options.rows,
            seed: options.seed,
            end_micros: options.end_micros,
            days: 30.0,
            customers: None,
        },
    )?)
}

/// The point-in-time training set of the silver transactions. Each
/// transaction is scored with the features known just before it, as the
/// online store serves them when a new transaction arrives.
fn training_set(
    silver: &DataFrame,
    view: &feature_store::FeatureView,
    gold: &DataFrame,
) -> Result<DataFrame> {
    let spine = Spine {
        frame: silver
            .select(["customer_id", example::EVENT_TIME, example::LABEL])
            .context("selecting the spine")?,
        timestamp_column: example::EVENT_TIME.into(),
    };
    let options = RetrievalOptions {
        strictly_before: true,
        ..RetrievalOptions::default()
    };
    let mut prepared = PreparedView::new(view, gold, &view.features, options)?;
    // Windows valued at each transaction's time, from the same events.
    if let Some(windows) = &view.request_windows {
        let (_, plan) = feature_store::window::events::plan_of(view)?;
        let history = History::build(
            plan,
            silver,
            &view.entity.join_keys,
            &windows.timestamp_column,
        )
        .map_err(|message| anyhow::anyhow!("indexing the transactions: {message}"))?;
        prepared = prepared.with_events(Arc::new(history));
    }
    Ok(join_prepared(&spine, &[prepared], options)?)
}

/// The training parameters recorded in the model's lineage.
fn parameters(
    options: &DemoOptions,
    train_options: &training::TrainOptions,
) -> BTreeMap<String, String> {
    let mut parameters = BTreeMap::new();
    parameters.insert("seed".to_string(), options.seed.to_string());
    parameters.insert("epochs".to_string(), train_options.epochs.to_string());
    parameters.insert(
        "learning_rate".to_string(),
        train_options.learning_rate.to_string(),
    );
    parameters
}
