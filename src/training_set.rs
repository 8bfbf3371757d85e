//! `aurum training-set`: a spine file joined point-in-time with features
//! from the gold tables, written as Parquet, with the table versions used.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use feature_store::retrieval::training_set::{self, TrainingSetRequest};

use crate::project::ProjectArg;

/// Options of `aurum training-set`.
#[derive(Debug, clap::Args)]
pub struct TrainingSetArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// The spine: a Parquet file of entity keys, an event timestamp and any
    /// other columns (labels), kept as they are.
    #[arg(long)]
    spine: PathBuf,
    /// Features: `view:feature` references, comma-separated, or the name of
    /// a feature service.
    #[arg(long, required = true)]
    features: String,
    /// The spine's event-time column.
    #[arg(long, default_value = "event_timestamp")]
    timestamp_column: String,
    /// Pin a view's gold table to a version: `view=N` (repeatable).
    #[arg(long = "as-of-version", value_name = "VIEW=N")]
    as_of_versions: Vec<String>,
    /// Name feature columns `view__feature`.
    #[arg(long)]
    full_feature_names: bool,
    /// The Parquet file to write.
    #[arg(long)]
    out: PathBuf,
    /// Spine rows joined and written at a time: memory holds the gold rows
    /// the features need and one batch, however large the spine.
    #[arg(long, default_value_t = training_set::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
}

pub async fn run(args: TrainingSetArgs) -> Result<()> {
    let project = args.project.load()?;
    let features: Vec<String> = match project
        .feature_services
        .iter()
        .find(|s| s.name == args.features)
    {
        Some(service) => service.features.clone(),
        None => args
            .features
            .split(',')
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect(),
    };
    let mut as_of_versions = BTreeMap::new();
    for pin in &args.as_of_versions {
        let Some((view, version)) = pin.split_once('=') else {
            bail!("--as-of-version {pin:?}: expected VIEW=N");
        };
        let version: u64 = version
            .parse()
            .with_context(|| format!("--as-of-version {pin:?}: {version:?} is not a version"))?;
        as_of_versions.insert(view.to_string(), version);
    }
    let views: Vec<_> = project
        .feature_views
        .iter()
        .map(|v| v.feature_view())
        .collect();
    let request = TrainingSetRequest {
        features,
        timestamp_column: args.timestamp_column,
        as_of_versions,
        full_feature_names: args.full_feature_names,
    };
    let store = project.delta_store()?;
    let set = training_set::write_streaming(
        &store,
        &views,
        &request,
        &args.spine,
        &args.out,
        args.batch_rows,
    )
    .await?;
    let pins: Vec<String> = set
        .versions
        .iter()
        .map(|(view, version)| format!("--as-of-version {view}={version}"))
        .collect();
    println!(
        "wrote {} rows x {} columns to {}; reproduce with {}",
        set.rows,
        set.columns,
        args.out.display(),
        pins.join(" ")
    );
    Ok(())
}
