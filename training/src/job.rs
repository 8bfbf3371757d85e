//! A training job: a model spec → its point-in-time training set from the
//! project's Delta tables → a fitted model → a registered version with
//! lineage, aliased `challenger`, and optionally promoted to `champion`
//! when it beats the champion on the same validation window.

use std::collections::BTreeMap;
use std::time::Instant;

use delta::DeltaStore;
use feature_store::retrieval::training_set::{self, TrainingSetRequest};
use feature_store::{FeatureView, Project};
use polars::prelude::DataFrame;
use registry::{Lineage, ModelVersion, NewVersion, Registry};

use crate::data;
use crate::error::{Error, Result};
use crate::evaluation;
use crate::fit::{self, Fitted, Preset};
use crate::spec::{FeatureList, ModelSpec, Task};

/// The alias a newly trained version gets.
pub const CHALLENGER: &str = "challenger";

/// How a job runs.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// Train even when no table has a new version since the last training.
    pub force: bool,
    /// Move `champion` to the new version when it beats the champion.
    pub promote_if_better: bool,
    /// The run's identifier, recorded in the lineage.
    pub run_id: String,
    /// Who runs it, recorded in the alias history.
    pub who: String,
}

/// What a job reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A stage started.
    Stage(&'static str),
    /// A stage finished after `seconds`, with a one-line summary.
    Done(&'static str, f64, String),
    /// An epoch ended with this validation loss (of at most `epochs`).
    Epoch(usize, usize, f64),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing new to learn from.
    Skipped {
        /// Why, in a sentence.
        reason: String,
    },
    /// A version was registered.
    Registered(Report),
}

/// A registered version and how it compares with the champion.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The model.
    pub model: String,
    /// The new version.
    pub version: u64,
    /// Its ONNX file's sha256.
    pub sha256: String,
    /// Rows of the training and validation splits.
    pub rows: (usize, usize),
    /// The table versions trained on.
    pub table_versions: BTreeMap<String, u64>,
    /// The validation metrics.
    pub metrics: BTreeMap<String, f64>,
    /// The promotion metric: the new version's value and the champion's
    /// on the same validation rows (when there is a comparable champion).
    pub comparison: (String, f64, Option<f64>),
    /// Whether `champion` now points at the new version, and why (not).
    pub promoted: (bool, String),
    /// Seconds per stage.
    pub stages: Vec<(&'static str, f64)>,
}

/// The `view:feature` references a spec names, in order.
pub fn feature_refs(project: &Project, spec: &ModelSpec) -> Result<Vec<String>> {
    let named = match &spec.features {
        FeatureList::Service(name) => project
            .feature_services
            .iter()
            .find(|s| &s.name == name)
            .map(|s| s.features.clone())
            .ok_or_else(|| {
                Error::Spec(format!(
                    "model {}: no feature service named {name:?}",
                    spec.name
                ))
            })?,
        FeatureList::References(list) => list.clone(),
    };
    let mut refs = Vec::new();
    for reference in named {
        if reference.contains(':') {
            refs.push(reference);
        } else {
            let view = project.view(&reference).ok_or_else(|| {
                Error::Spec(format!(
                    "model {}: {reference:?} is neither a view:feature reference nor a view",
                    spec.name
                ))
            })?;
            refs.extend(view.feature_view().feature_refs());
        }
    }
    Ok(refs)
}

/// The span of one step of a training job (a child of the command's run,
/// when traced).
fn step_trace(step: &'static str, spec: &ModelSpec) -> telemetry::Trace {
    let span = telemetry::Trace::step(step);
    span.set("aurum.model", spec.name.clone());
    span
}

/// A step's outcome, marking its span failed on an error.
fn traced<T>(span: &telemetry::Trace, outcome: Result<T>) -> Result<T> {
    if let Err(e) = &outcome {
        span.fail(e.to_string());
        span.end();
    }
    outcome
}

/// Runs one training job for `spec`.
pub async fn run(
    project: &Project,
    spec: &ModelSpec,
    registry: &Registry,
    options: &JobOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Outcome> {
    let mut stages = Vec::new();
    let refs = feature_refs(project, spec)?;
    let views: Vec<FeatureView> = project
        .feature_views
        .iter()
        .map(|v| v.feature_view())
        .collect();
    let store = project
        .delta_store()
        .map_err(|e| Error::TrainingSet(e.to_string()))?;

    // The versions to train on, pinned before anything is read: the skip
    // decision and the training set see the same tables.
    let plan = training_set::plan(&views, &refs)
        .map_err(|e| Error::Spec(format!("model {}: {e}", spec.name)))?;
    let table_versions = pin_versions(&store, spec, &plan).await?;
    if let Some(reason) = skip_reason(registry, spec, options, &table_versions)? {
        return Ok(Outcome::Skipped { reason });
    }

    progress(Progress::Stage("training set"));
    let started = Instant::now();
    let span = step_trace("training set", spec);
    let frame = traced(
        &span,
        read_training_set(&store, &views, &plan, &refs, spec, &table_versions).await,
    )?;
    span.set("aurum.rows", frame.height() as i64);
    span.set("aurum.features", refs.len() as i64);
    span.end();
    let summary = format!(
        "{} rows x {} features; {}",
        frame.height(),
        refs.len(),
        describe_versions(&table_versions)
    );
    finish(&mut stages, progress, "training set", started, summary);

    progress(Progress::Stage("training"));
    let started = Instant::now();
    let span = step_trace("training", spec);
    let (fitted, data_sha) = traced(&span, train(frame, &refs, spec, progress))?;
    span.set("aurum.epochs", fitted.epochs_run as i64);
    span.end();
    let (metric, value) = promotion_value(spec, &fitted)?;
    let summary = format!(
        "{} epochs; {metric} {value:.4}; {} training and {} validation rows",
        fitted.epochs_run, fitted.metrics["train_rows"], fitted.metrics["validation_rows"]
    );
    finish(&mut stages, progress, "training", started, summary);

    progress(Progress::Stage("registering"));
    let started = Instant::now();
    let span = step_trace("registering", spec);
    let lineage = Lineage {
        table_versions: table_versions.clone(),
        training_set_sha256: data_sha,
        run_id: options.run_id.clone(),
        parameters: BTreeMap::new(),
    };
    let version = traced(
        &span,
        register_challenger(registry, spec, options, &fitted, &refs, lineage),
    )?;
    span.set("aurum.model.version", version.version as i64);
    span.end();
    let champion =
        champion_on_validation(registry, spec, &fitted, &refs, version.version, &metric)?;
    let promoted = if options.promote_if_better {
        promotion(spec, &metric, value, &champion)
    } else {
        (false, "not asked to promote".to_string())
    };
    if promoted.0 {
        registry.set_alias(
            &spec.name,
            registry::CHAMPION,
            version.version,
            &options.who,
        )?;
    }
    let summary = format!(
        "v{} as {CHALLENGER}; {}",
        version.version,
        if promoted.0 {
            format!("promoted to champion: {}", promoted.1)
        } else {
            format!("champion kept: {}", promoted.1)
        }
    );
    finish(&mut stages, progress, "registering", started, summary);
    Ok(Outcome::Registered(Report {
        model: spec.name.clone(),
        version: version.version,
        sha256: version.sha256,
        rows: (
            fitted.metrics["train_rows"] as usize,
            fitted.metrics["validation_rows"] as usize,
        ),
        table_versions,
        metrics: fitted.metrics,
        comparison: (metric, value, champion.and_then(|(_, old)| old)),
        promoted,
        stages,
    }))
}

/// The latest version of every table the job reads (the views' gold tables
/// and the spine), refused by name when a table does not exist yet.
async fn pin_versions(
    store: &DeltaStore,
    spec: &ModelSpec,
    plan: &[(&FeatureView, Vec<String>)],
) -> Result<BTreeMap<String, u64>> {
    let mut table_versions = BTreeMap::new();
    for table in plan
        .iter()
        .map(|(view, _)| view.name.clone())
        .chain([spec.spine_table.clone()])
    {
        let version = store
            .latest_version(&table)
            .await
            .map_err(|e| Error::Spec(format!("model {}: table {table}: {e}", spec.name)))?
            .ok_or_else(|| {
                Error::Spec(format!(
                    "model {}: table {table} does not exist yet (run `aurum pipeline`)",
                    spec.name
                ))
            })?;
        table_versions.insert(table, version);
    }
    Ok(table_versions)
}

/// Why the job has nothing to do: unless forced, when the model's newest
/// version was trained on exactly these table versions.
fn skip_reason(
    registry: &Registry,
    spec: &ModelSpec,
    options: &JobOptions,
    table_versions: &BTreeMap<String, u64>,
) -> Result<Option<String>> {
    if !options.force
        && let Some(last) = registry.newest(&spec.name)?
        && &last.lineage.table_versions == table_versions
    {
        return Ok(Some(format!(
            "no new data since v{} was trained ({})",
            last.version,
            describe_versions(table_versions)
        )));
    }
    Ok(None)
}

/// The point-in-time training set at the pinned versions: the spine's
/// join keys, timestamp and label (only those columns are read), joined
/// with the views' features under their full names.
async fn read_training_set(
    store: &DeltaStore,
    views: &[FeatureView],
    plan: &[(&FeatureView, Vec<String>)],
    refs: &[String],
    spec: &ModelSpec,
    table_versions: &BTreeMap<String, u64>,
) -> Result<DataFrame> {
    let mut wanted: Vec<String> = Vec::new();
    for (view, _) in plan {
        for key in &view.entity.join_keys {
            if !wanted.contains(key) {
                wanted.push(key.clone());
            }
        }
    }
    wanted.extend([spec.spine_timestamp.clone(), spec.label.clone()]);
    let spine_error =
        |e: delta::Error| Error::Spec(format!("model {}: the spine table: {e}", spec.name));
    let spine_version = pinned(table_versions, &spec.spine_table)?;
    let (schema, _) = store
        .arrow_schema(&spec.spine_table, Some(spine_version))
        .await
        .map_err(spine_error)?;
    if let Some(column) = wanted.iter().find(|c| schema.field_with_name(c).is_err()) {
        return Err(Error::Spec(format!(
            "model {}: the spine table {} has no column {column:?}",
            spec.name, spec.spine_table
        )));
    }
    let (files, _) = store
        .files(&spec.spine_table, Some(spine_version))
        .await
        .map_err(spine_error)?;
    let spine = store
        .read_files(&spec.spine_table, spine_version, &files, Some(&wanted))
        .await
        .map_err(spine_error)?;
    let request = TrainingSetRequest {
        features: refs.to_vec(),
        timestamp_column: spec.spine_timestamp.clone(),
        as_of_versions: plan
            .iter()
            .map(|(view, _)| -> Result<(String, u64)> {
                Ok((view.name.clone(), pinned(table_versions, &view.name)?))
            })
            .collect::<Result<_>>()?,
        full_feature_names: true,
    };
    let set = training_set::training_set(store, views, spine, &request)
        .await
        .map_err(|e| Error::Spec(format!("model {}: the training set: {e}", spec.name)))?;
    Ok(set.frame)
}

/// The pinned version of `table` (every table read was pinned first).
fn pinned(table_versions: &BTreeMap<String, u64>, table: &str) -> Result<u64> {
    table_versions
        .get(table)
        .copied()
        .ok_or_else(|| Error::Internal(format!("table {table} was read without a pinned version")))
}

/// Hashes the frame and fits the spec's network on it, on a blocking
/// thread (the frame is dropped as soon as it has been read).
fn train(
    frame: DataFrame,
    refs: &[String],
    spec: &ModelSpec,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(Fitted, String)> {
    let columns: Vec<String> = refs.iter().map(|r| r.replacen(':', "__", 1)).collect();
    let (hyper, task) = (&spec.hyper, spec.task);
    let preset = Preset::NETWORK;
    let epochs = hyper.epochs;
    tokio::task::block_in_place(|| -> Result<(Fitted, String)> {
        let sha = crate::training_set_sha256(&frame)?;
        let data = data::dataset(
            &frame,
            &columns,
            &spec.label,
            &spec.spine_timestamp,
            task,
            hyper.validation_fraction,
            &preset.rules,
        )?;
        drop(frame);
        let fitted = fit::fit(&data, task, hyper, &preset, &|epoch, loss| {
            progress(Progress::Epoch(epoch, epochs, loss));
        })?;
        Ok((fitted, sha))
    })
}

/// The spec's promotion metric and the new version's value of it, refused
/// (listing the task's metrics) when the task has no such metric.
fn promotion_value(spec: &ModelSpec, fitted: &Fitted) -> Result<(String, f64)> {
    let metric = spec.promote_metric.clone();
    let value = fitted.metrics.get(&metric).copied().ok_or_else(|| {
        Error::Spec(format!(
            "model {}: promote_metric {metric:?} is not a metric of this task (have: {})",
            spec.name,
            fitted
                .metrics
                .keys()
                .filter(|k| k.starts_with("val_") && !k.starts_with("val_calibration"))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    Ok((metric, value))
}

/// Registers the fit as the next version (with `lineage` completed by the
/// hyperparameters and training time), attaches its drift reference
/// profile, and points `challenger` at it.
fn register_challenger(
    registry: &Registry,
    spec: &ModelSpec,
    options: &JobOptions,
    fitted: &Fitted,
    refs: &[String],
    mut lineage: Lineage,
) -> Result<ModelVersion> {
    let mut parameters: BTreeMap<String, String> = hyper_parameters(spec);
    parameters.insert(
        "training_seconds".into(),
        format!("{:.3}", fitted.metrics["training_seconds"]),
    );
    let mut tags = BTreeMap::new();
    tags.insert("framework".to_string(), "candle".to_string());
    tags.insert("task".to_string(), parameters["task"].clone());
    tags.insert("family".to_string(), parameters["family"].clone());
    let description = format!(
        "{} {} on {} features, trained on {} rows",
        parameters["family"],
        parameters["task"],
        refs.len(),
        fitted.metrics["train_rows"]
    );
    lineage.parameters = parameters;
    let version = registry.register(
        &spec.name,
        &fitted.onnx,
        NewVersion {
            description,
            features: refs.to_vec(),
            imputation: fitted.means.clone(),
            metrics: fitted.metrics.clone(),
            lineage,
            tags,
            source: String::new(),
        },
    )?;
    // The reference drift is measured against: the validation rows (the
    // latest of the training set) and the model's out-of-sample
    // predictions on them.
    let profile = reference_profile(fitted, refs)?;
    registry.put_attachment(
        &spec.name,
        version.version,
        drift::profile::REFERENCE_PROFILE,
        &profile,
    )?;
    registry.set_alias(&spec.name, CHALLENGER, version.version, &options.who)?;
    Ok(version)
}

/// The champion other than `new_version` (if any), with its value of
/// `metric` on the same validation rows when it reads the same features.
fn champion_on_validation(
    registry: &Registry,
    spec: &ModelSpec,
    fitted: &Fitted,
    refs: &[String],
    new_version: u64,
    metric: &str,
) -> Result<Option<(ModelVersion, Option<f64>)>> {
    let champion = match registry.by_alias(&spec.name, registry::CHAMPION) {
        Ok(champion) if champion.version != new_version => champion,
        Ok(_) | Err(registry::Error::AliasNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let value = if champion.features == refs {
        let bytes = registry.model_bytes(&champion)?;
        let predictions = predict_onnx(&bytes, &champion.imputation, fitted, refs.len())?;
        evaluation::metric(metric, spec.task, &predictions, &fitted.validation_labels)
    } else {
        None
    };
    Ok(Some((champion, value)))
}

/// Whether the new version (worth `value`) should become champion, and
/// why (not).
fn promotion(
    spec: &ModelSpec,
    metric: &str,
    value: f64,
    champion: &Option<(ModelVersion, Option<f64>)>,
) -> (bool, String) {
    let better = |new: f64, old: f64| {
        if spec.higher_is_better() {
            new >= old + spec.promote_margin
        } else {
            new <= old - spec.promote_margin
        }
    };
    match champion {
        None => (true, "there was no champion".to_string()),
        Some((c, Some(old))) if better(value, *old) => (
            true,
            format!(
                "{metric} {value:.4} beats champion v{}'s {old:.4} by the margin {}",
                c.version, spec.promote_margin
            ),
        ),
        Some((c, Some(old))) => (
            false,
            format!(
                "{metric} {value:.4} does not beat champion v{}'s {old:.4} by the margin {}",
                c.version, spec.promote_margin
            ),
        ),
        Some((c, None)) => (
            false,
            format!(
                "champion v{} reads other features, so it was not compared on this window",
                c.version
            ),
        ),
    }
}

/// Records a finished stage's time and tells `progress`.
fn finish(
    stages: &mut Vec<(&'static str, f64)>,
    progress: &(dyn Fn(Progress) + Sync),
    stage: &'static str,
    started: Instant,
    summary: String,
) {
    let seconds = started.elapsed().as_secs_f64();
    stages.push((stage, seconds));
    progress(Progress::Done(stage, seconds, summary));
}

/// The drift reference of a fitted model, as JSON: its validation rows'
/// features (named as registered) and its predictions on them.
fn reference_profile(fitted: &Fitted, refs: &[String]) -> Result<Vec<u8>> {
    let width = refs.len();
    let rows = fitted.validation_predictions.len();
    let columns: Vec<drift::Column> = refs
        .iter()
        .enumerate()
        .map(|(j, name)| drift::Column {
            name: name.clone(),
            values: drift::Values::Numeric(
                (0..rows)
                    .map(|i| f64::from(fitted.validation_features[i * width + j]))
                    .collect(),
            ),
        })
        .collect();
    let prediction = drift::Column {
        name: "prediction".into(),
        values: drift::Values::Numeric(
            fitted
                .validation_predictions
                .iter()
                .map(|&p| f64::from(p))
                .collect(),
        ),
    };
    let profile = drift::Profile::build(&columns, Some(&prediction))
        .map_err(|e| Error::Spec(format!("profiling the validation rows: {e}")))?;
    serde_json::to_vec(&profile).map_err(|e| Error::Spec(format!("encoding the profile: {e}")))
}

fn hyper_parameters(spec: &ModelSpec) -> BTreeMap<String, String> {
    let mut parameters: BTreeMap<String, String> = spec.hyper.parameters().into_iter().collect();
    parameters.insert(
        "task".into(),
        match spec.task {
            Task::BinaryClassification => "binary_classification".into(),
            Task::Regression => "regression".into(),
        },
    );
    parameters.insert("label".into(), spec.label.clone());
    parameters.insert("spine".into(), spec.spine_table.clone());
    parameters
}

fn describe_versions(versions: &BTreeMap<String, u64>) -> String {
    versions
        .iter()
        .map(|(t, v)| format!("{t} v{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Another model's answers on the validation rows (its first float output;
/// a two-column output is read as `[P(0), P(1)]`).
fn predict_onnx(
    bytes: &[u8],
    imputation: &[f32],
    fitted: &Fitted,
    width: usize,
) -> Result<Vec<f32>> {
    let mut session = onnx::Model::load("champion", bytes)?;
    let mut input = fitted.validation_features.clone();
    for (i, v) in input.iter_mut().enumerate() {
        if v.is_nan()
            && let Some(mean) = imputation.get(i % width)
        {
            *v = *mean;
        }
    }
    let rows = input.len() / width.max(1);
    // ONNX Runtime's own words after the step's name, as before the onnx
    // crate named steps itself.
    let tensor = onnx::Matrix::new(&input, rows, width).map_err(|e| {
        Error::TrainingSet(format!("the champion's input: {}", e.runtime_message()))
    })?;
    let outputs = session.run_matrix(tensor).map_err(|e| {
        Error::TrainingSet(format!("running the champion: {}", e.runtime_message()))
    })?;
    for output in outputs.iter() {
        if let Ok((_, values)) = output.f32() {
            let per_row = values.len() / rows.max(1);
            return Ok(values
                .chunks(per_row.max(1))
                .map(|row| if row.len() == 2 { row[1] } else { row[0] })
                .collect());
        }
    }
    Err(Error::TrainingSet(
        "the champion has no float output".into(),
    ))
}
