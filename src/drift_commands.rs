//! `aurum drift` and `aurum ab report`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aurum::drift_data;
use drift::{Column, DriftOptions, DriftReport, Profile};
use monitoring::ab::{self, AbMetric};
use monitoring::feedback;
use monitoring::predictions::{self, PredictionQuery};
use registry::Registry;

use crate::project::ProjectArg;

/// Options of `aurum drift`.
#[derive(Debug, clap::Args)]
pub struct DriftArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Compare with this model version's reference profile (recorded when
    /// `aurum train` registered it).
    #[arg(long, conflicts_with = "reference")]
    model: Option<String>,
    /// The version (default: the champion, else the newest).
    #[arg(long, requires = "model")]
    version: Option<u64>,
    /// The reference dataset: a Parquet file or a Delta table directory.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The current dataset: a Parquet file or a Delta table directory; with
    /// --model also `log` (the whole prediction log of that version) or
    /// `log:FROM..TO` (RFC 3339 times, either side may be empty).
    #[arg(long)]
    current: Option<PathBuf>,
    /// With --model: profile this dataset (Parquet or Delta) as the
    /// version's reference instead of reporting.
    #[arg(long, requires = "model", conflicts_with = "current")]
    set_reference: Option<PathBuf>,
    /// Per-column test, `COLUMN=TEST[:THRESHOLD]` (TEST: ks, chi_squared,
    /// psi, jensen_shannon, wasserstein); `*=TEST` for every column.
    #[arg(long = "test", value_name = "COLUMN=TEST[:THRESHOLD]")]
    tests: Vec<String>,
    /// The dataset drifts when at least this share of columns drift.
    #[arg(long, default_value_t = 0.5)]
    drift_share: f64,
    /// Print the results as JSON (per column: test, statistic, p-value,
    /// threshold, drifted; and the dataset verdict).
    #[arg(long)]
    json: bool,
    /// Where the HTML report goes (default: drift_report.html).
    #[arg(long, default_value = "drift_report.html")]
    out: PathBuf,
}

/// `aurum drift`.
pub async fn drift(args: DriftArgs) -> Result<()> {
    let options = drift_options(&args)?;
    if let Some(path) = &args.set_reference {
        return set_reference(&args, path).await;
    }
    let Some(current_arg) = &args.current else {
        bail!("--current is required (a Parquet file, a Delta table, or with --model `log`)");
    };
    let (report, title) = match (&args.model, &args.reference) {
        (Some(model), None) => {
            let project = args.project.load()?;
            let registry = aurum::project_registry::open(&project)?;
            let version = resolve_version(&registry, model, args.version)?;
            let profile = reference_profile(&registry, model, version)?;
            let (current, prediction) = if let Some((from, to)) = log_range(current_arg)? {
                let logs = project.store_under(monitoring::LOG_DIR)?;
                let query = PredictionQuery {
                    model: model.clone(),
                    version,
                    from_micros: from,
                    to_micros: to,
                };
                let Some(window) = predictions::read_window(&logs, &query).await? else {
                    bail!(
                        "there is no prediction log at {} (serve predictions first)",
                        logs.table_location(predictions::TABLE)
                    );
                };
                let (columns, prediction) = window.into_columns();
                (columns, Some(prediction))
            } else {
                let data = drift_data::load(current_arg).await?;
                let features = registry.version(model, version)?.features;
                (match_features(&features, data.columns, current_arg)?, None)
            };
            let report = profile.compare(&current, prediction.as_ref(), &options)?;
            (
                report,
                format!("Drift — {model} v{version} vs {}", current_arg.display()),
            )
        }
        (None, Some(reference)) => {
            // Both files decode at once (each reader is mostly one thread).
            let (r, c) =
                tokio::try_join!(drift_data::load(reference), drift_data::load(current_arg))?;
            for skipped in r.skipped.iter().chain(&c.skipped) {
                eprintln!("not compared (type): {skipped}");
            }
            let columns = r.columns;
            let current = c.columns;
            let report = tokio::task::spawn_blocking(move || {
                drift::report::compare_datasets(&columns, &current, &options)
            })
            .await
            .context("the drift computation stopped")??;
            (
                report,
                format!(
                    "Drift — {} vs {}",
                    reference.display(),
                    current_arg.display()
                ),
            )
        }
        _ => bail!("give either --model M or --reference DATA (with --current DATA)"),
    };
    if args.json {
        let mut report = report;
        strip_charts(&mut report);
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let page = drift::html::render(
            &title,
            &format!(
                "generated by aurum drift on {}",
                chrono::Utc::now().to_rfc3339()
            ),
            &report,
            &[],
        );
        std::fs::write(&args.out, page)
            .with_context(|| format!("writing {}", args.out.display()))?;
        print_summary(&report);
        println!("report written to {}", args.out.display());
    }
    Ok(())
}

fn drift_options(args: &DriftArgs) -> Result<DriftOptions> {
    let mut options = DriftOptions {
        drift_share: args.drift_share,
        ..DriftOptions::default()
    };
    for test in &args.tests {
        let (column, spec) = test
            .split_once('=')
            .with_context(|| format!("--test {test:?} is not COLUMN=TEST[:THRESHOLD]"))?;
        let (method, threshold) = match spec.split_once(':') {
            Some((m, t)) => (
                m,
                Some(
                    t.parse::<f64>()
                        .with_context(|| format!("--test {test:?}: {t:?} is not a number"))?,
                ),
            ),
            None => (spec, None),
        };
        let test = drift::ColumnTest {
            method: drift::Method::parse(method)?,
            threshold,
        };
        if column == "*" {
            options.all_columns = Some(test);
        } else {
            options.columns.insert(column.to_string(), test);
        }
    }
    options.validate()?;
    Ok(options)
}

fn resolve_version(registry: &Registry, model: &str, version: Option<u64>) -> Result<u64> {
    if let Some(v) = version {
        registry.version(model, v)?;
        return Ok(v);
    }
    if let Ok(v) = registry.by_alias(model, registry::CHAMPION) {
        return Ok(v.version);
    }
    Ok(registry.latest(model)?.version)
}

fn reference_profile(registry: &Registry, model: &str, version: u64) -> Result<Profile> {
    match monitoring::reference_profile(registry, model, version) {
        Ok(Some(profile)) => Ok(profile),
        Ok(None) => bail!(
            "version {version} of {model} has no reference profile: versions trained by `aurum \
             train` get one; set one with `aurum drift --model {model} --version {version} \
             --set-reference DATA`"
        ),
        Err(monitoring::Error::Profile(e)) => {
            Err(anyhow::Error::new(e).context("reading the reference profile"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `log` or `log:FROM..TO` → the time range (µs), else `None` (a path).
fn log_range(arg: &Path) -> Result<Option<(Option<i64>, Option<i64>)>> {
    let Some(text) = arg.to_str() else {
        return Ok(None);
    };
    if text == "log" {
        return Ok(Some((None, None)));
    }
    let Some(range) = text.strip_prefix("log:") else {
        return Ok(None);
    };
    let (from, to) = range
        .split_once("..")
        .with_context(|| format!("--current {text:?}: write the range as log:FROM..TO"))?;
    let parse = |t: &str| -> Result<Option<i64>> {
        if t.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("{t:?} is not an RFC 3339 time"))?
                .timestamp_micros(),
        ))
    };
    Ok(Some((parse(from)?, parse(to)?)))
}

/// A dataset's columns named as the model's features (`view:feature`),
/// found as `view:feature`, `view__feature` or `feature`.
fn match_features(features: &[String], columns: Vec<Column>, path: &Path) -> Result<Vec<Column>> {
    let mut out = Vec::with_capacity(features.len());
    let mut missing = Vec::new();
    for reference in features {
        let bare = reference.rsplit(':').next().unwrap_or(reference);
        let full = reference.replace(':', "__");
        match columns
            .iter()
            .find(|c| c.name == *reference)
            .or_else(|| columns.iter().find(|c| c.name == full))
            .or_else(|| columns.iter().find(|c| c.name == bare))
        {
            Some(c) => out.push(Column {
                name: reference.clone(),
                values: c.values.clone(),
            }),
            None => missing.push(reference.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} has no column for the model's features {} (looked for view:feature, view__feature and feature)",
            path.display(),
            missing.join(", ")
        );
    }
    Ok(out)
}

async fn set_reference(args: &DriftArgs, path: &Path) -> Result<()> {
    let Some(model) = &args.model else {
        bail!("--set-reference needs --model");
    };
    let project = args.project.load()?;
    let registry = aurum::project_registry::open(&project)?;
    let version = resolve_version(&registry, model, args.version)?;
    let features = registry.version(model, version)?.features;
    let data = drift_data::load(path).await?;
    let rows = data.rows;
    let columns = match_features(&features, data.columns, path)?;
    let profile = Profile::build(&columns, None)?;
    registry.put_attachment(
        model,
        version,
        drift::profile::REFERENCE_PROFILE,
        &serde_json::to_vec(&profile)?,
    )?;
    println!(
        "reference profile of {model} v{version} set from {} ({rows} rows, {} features)",
        path.display(),
        columns.len()
    );
    Ok(())
}

fn strip_charts(report: &mut DriftReport) {
    for c in report.columns.iter_mut().chain(report.prediction.as_mut()) {
        c.chart = drift::report::Chart {
            labels: Vec::new(),
            edges: Vec::new(),
            reference: Vec::new(),
            current: Vec::new(),
        };
    }
}

fn print_summary(report: &DriftReport) {
    println!(
        "{:<32} {:<15} {:>12} {:>10} {:>9}  drift",
        "column", "test", "statistic", "p-value", "threshold"
    );
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for c in report.columns.iter().chain(&report.prediction) {
        println!(
            "{:<32} {:<15} {:>12} {:>10} {:>9}  {}",
            c.column,
            c.method.map_or("-", |m| m.as_str()),
            num(c.statistic),
            num(c.p_value),
            num(c.threshold),
            match (c.status, c.drifted) {
                (drift::Status::Skipped, _) =>
                    format!("skipped: {}", c.note.as_deref().unwrap_or("")),
                (_, true) => "DRIFTED".into(),
                _ => "no".into(),
            }
        );
    }
    println!(
        "dataset drift: {} ({} of {} tested columns, threshold {:.0}%)",
        if report.dataset_drift { "YES" } else { "no" },
        report.drifted_columns,
        report.tested_columns,
        report.drift_share_threshold * 100.0
    );
}

/// Options of `aurum ab`.
#[derive(Debug, clap::Args)]
pub struct AbArgs {
    #[command(subcommand)]
    command: AbCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AbCommand {
    /// Compare each A/B arm with the control from the outcomes sent to
    /// `/feedback`, and recommend promote / keep / keep collecting.
    Report(AbReportArgs),
}

#[derive(Debug, clap::Args)]
struct AbReportArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// The model.
    model: String,
    /// The control arm (alias).
    #[arg(long, default_value = registry::CHAMPION)]
    control: String,
    /// The outcome compared: `accuracy` (prediction ≥ 0.5 equals a 0/1
    /// outcome; the default for 0/1 outcomes), `outcome` (the outcome
    /// itself, e.g. a conversion), `absolute_error` (|prediction −
    /// outcome|, lower is better; the default otherwise).
    #[arg(long)]
    metric: Option<String>,
    /// The smallest absolute difference worth detecting (default 0.02 for
    /// rates; a tenth of the control's standard deviation otherwise).
    #[arg(long)]
    mde: Option<f64>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Power at the minimum detectable effect.
    #[arg(long, default_value_t = 0.8)]
    power: f64,
    /// Move the control's alias to the winning arm's version when the
    /// recommendation is to promote (recorded in the alias history).
    #[arg(long)]
    apply: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `aurum ab`.
pub async fn ab(args: AbArgs) -> Result<()> {
    match args.command {
        AbCommand::Report(args) => ab_report(args).await,
    }
}

async fn ab_report(args: AbReportArgs) -> Result<()> {
    let project = args.project.load()?;
    let registry = aurum::project_registry::open(&project)?;
    let aliases = registry.aliases(&args.model)?;
    let Some(&control_version) = aliases.get(&args.control) else {
        bail!(
            "model {} has no alias {:?} to use as the control",
            args.model,
            args.control
        );
    };
    let logs = project.store_under(monitoring::LOG_DIR)?;
    let Some(outcomes) = feedback::read_outcomes(&logs, &args.model).await? else {
        bail!(
            "no outcomes yet: {} does not exist (send them to POST /feedback)",
            logs.table_location(feedback::TABLE)
        );
    };
    // The metric is checked after the read, as the outcomes decide the
    // default and whether accuracy applies.
    let metric = args
        .metric
        .as_deref()
        .map(AbMetric::parse)
        .transpose()
        .map_err(metric_error)?;
    // Each arm's outcomes under the version its alias points at now.
    let inputs = ab::ab_inputs(&outcomes, &aliases, &args.control, metric).map_err(metric_error)?;
    let results = inputs.compare(inputs.options(args.mde, args.alpha, args.power))?;
    if results.is_empty() {
        bail!(
            "no outcomes for any arm other than {} (at the versions the aliases point at now)",
            args.control
        );
    }
    let metric = inputs.metric.as_str();
    if args.json {
        let doc: Vec<serde_json::Value> = results
            .iter()
            .map(|c| {
                serde_json::json!({"arm": c.arm, "version": c.version, "control_version": control_version, "metric": metric, "result": c.result})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_comparisons(&args, control_version, metric, &results);
    }
    // The best promotable arm, if any.
    let winner = ab::winner(&results, inputs.higher_is_better);
    if args.apply {
        match winner {
            Some(w) => {
                let change = registry.set_alias(
                    &args.model,
                    &args.control,
                    w.version,
                    &format!("aurum ab report --apply ({} won)", w.arm),
                )?;
                println!(
                    "applied: {} of {} now points at v{} (was {:?})",
                    args.control, args.model, w.version, change.from
                );
            }
            None => println!("nothing applied: no arm is to be promoted"),
        }
    }
    Ok(())
}

/// The A/B report as text: per arm, both arms' means, the difference and
/// the recommendation.
fn print_comparisons(
    args: &AbReportArgs,
    control_version: u64,
    metric: &str,
    results: &[ab::ArmComparison],
) {
    println!(
        "A/B report for {} (metric {metric}; {})",
        args.model,
        drift::ab::PEEKING_RULE
    );
    for ab::ArmComparison {
        arm,
        version,
        result: r,
    } in results
    {
        println!(
            "  {} v{control_version}: n {} mean {:.4} [{:.4}, {:.4}]",
            args.control, r.control.n, r.control.mean, r.control.ci_low, r.control.ci_high
        );
        println!(
            "  {arm} v{version}: n {} mean {:.4} [{:.4}, {:.4}]",
            r.treatment.n, r.treatment.mean, r.treatment.ci_low, r.treatment.ci_high
        );
        println!(
            "  difference {:+.4} [{:+.4}, {:+.4}], {} {:.3}, p = {:.4}; horizon {} per arm",
            r.difference,
            r.difference_ci.0,
            r.difference_ci.1,
            r.test,
            r.statistic,
            r.p_value,
            r.required_per_arm
        );
        println!(
            "  recommendation for {arm}: {} — {}",
            r.decision.as_str(),
            r.reason
        );
    }
}

/// The metric errors worded for the command line's `--metric`.
fn metric_error(e: monitoring::Error) -> anyhow::Error {
    match e {
        monitoring::Error::UnknownMetric(other) => {
            anyhow::anyhow!("--metric {other:?}: use accuracy, outcome or absolute_error")
        }
        monitoring::Error::MetricNeedsBinary => {
            anyhow::anyhow!("--metric accuracy needs 0/1 outcomes")
        }
        other => other.into(),
    }
}
