//! The project commands: `init`, `generate`, `pipeline`, `lineage`,
//! `optimize`, `vacuum`. Each finds `aurum.toml` in the current directory
//! or above it, or takes `--project DIR`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use aurum::example::{self, GenerateOptions};
use delta::DeltaStore;
use feature_store::Project;
use feature_store::pipeline::lineage;
use feature_store::pipeline::{self, PipelineOptions, PipelineReport};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the project is.
#[derive(Debug, clap::Args)]
pub struct ProjectArg {
    /// The project directory (default: the nearest directory, from the
    /// current one up, that holds aurum.toml).
    #[arg(long, global = true)]
    project: Option<PathBuf>,
}

impl ProjectArg {
    pub(crate) fn load(&self) -> Result<Project> {
        let start = match &self.project {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().context("reading the current directory")?,
        };
        let file = Project::find(&start)?;
        Ok(Project::load(&file)?)
    }
}

/// Options of `aurum init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The directory of the new project (created if missing).
    dir: PathBuf,
}

/// Options of `aurum generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Number of transactions.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Random seed; the same seed and --end give the same files.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Days of history the transactions span.
    #[arg(long, default_value_t = 30.0)]
    days: f64,
    /// End of the window, RFC 3339 (default: the start of the current UTC
    /// hour).
    #[arg(long)]
    end: Option<String>,
    /// Number of customers (default: one per 40 transactions).
    #[arg(long)]
    customers: Option<usize>,
}

/// Options of `aurum pipeline`.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Recompute silver and gold from all of bronze.
    #[arg(long)]
    full_refresh: bool,
    /// Allow definition changes that remove, rename or retype columns of an
    /// existing table; the table is rewritten.
    #[arg(long)]
    allow_breaking_schema_change: bool,
    /// Print the run report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Push the run's metrics (rows per stage, quality, gates, duration,
    /// success) to this Prometheus Pushgateway, as job `aurum_pipeline`.
    #[arg(long, value_name = "URL")]
    pushgateway: Option<String>,
}

/// Options of `aurum lineage`.
#[derive(Debug, clap::Args)]
pub struct LineageArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// The table (bronze_*, silver_*, a feature view, quarantine, quality).
    table: String,
    /// The table version (default: the latest).
    #[arg(long)]
    version: Option<u64>,
    /// Print JSON instead of a tree.
    #[arg(long)]
    json: bool,
}

/// Options of `aurum optimize`.
#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Only this table (default: every table of the project).
    #[arg(long)]
    table: Option<String>,
    /// Target rows per file.
    #[arg(long, default_value_t = delta::DEFAULT_ROWS_PER_FILE)]
    rows_per_file: usize,
}

/// Options of `aurum vacuum`.
#[derive(Debug, clap::Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    project: ProjectArg,
    /// Only this table (default: every table of the project).
    #[arg(long)]
    table: Option<String>,
    /// Keep files that versions younger than this many hours still need.
    #[arg(long, default_value_t = 168)]
    retention_hours: u64,
    /// Allow a retention shorter than the table's (seven days): time travel
    /// to older versions stops working.
    #[arg(long)]
    force: bool,
    /// List the files that would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn init(args: InitArgs) -> Result<()> {
    let path = example::init(&args.dir)?;
    println!("wrote {}", path.display());
    println!(
        "next: cd {} && aurum generate --rows 100000 && aurum pipeline",
        args.dir.display()
    );
    Ok(())
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let project = args.project.load()?;
    let end_micros = match &args.end {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--end {text:?} is not an RFC 3339 time"))?
            .timestamp_micros(),
        None => {
            let now = chrono::Utc::now().timestamp();
            (now - now.rem_euclid(3600)) * 1_000_000
        }
    };
    if args.rows == 0 || !(args.days > 0.0 && args.days <= 3_650.0) {
        bail!("--rows must be positive and --days between 0 and 3650");
    }
    let spinner = spinner(&format!("generating {} transactions", args.rows));
    let files = example::generate(
        &project.data_dir.join("bronze"),
        &GenerateOptions {
            rows: args.rows,
            seed: args.seed,
            end_micros,
            days: args.days,
            customers: args.customers,
        },
    )?;
    spinner.finish_and_clear();
    println!(
        "wrote {} transaction rows ({} customers) to {}",
        files.rows_written,
        files.customers,
        shown(&project.root, &files.transactions)
    );
    println!(
        "wrote merchants to {}",
        shown(&project.root, &files.merchants)
    );
    Ok(())
}

pub async fn pipeline(args: PipelineArgs) -> Result<()> {
    let project = args.project.load()?;
    let spinner = spinner("pipeline");
    if args.json {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress = |stage: &str| spinner.set_message(stage.to_string());
    let ran = pipeline::run(
        &project,
        &PipelineOptions {
            allow_breaking_schema_change: args.allow_breaking_schema_change,
            full_refresh: args.full_refresh,
            now_micros: None,
        },
        &progress,
    )
    .await;
    spinner.finish_and_clear();
    if let Some(gateway) = &args.pushgateway {
        let metrics = match &ran {
            Ok(report) => crate::pushgateway::pipeline_metrics(report, true),
            Err(feature_store::Error::QualityGate { report, .. }) => {
                crate::pushgateway::pipeline_metrics(report, false)
            }
            Err(_) => crate::pushgateway::pipeline_failure_metrics(),
        };
        crate::pushgateway::push(
            gateway,
            "aurum_pipeline",
            &[("project", &project.name)],
            &metrics,
        )
        .await;
    }
    let report = ran?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn print_report(report: &PipelineReport) {
    println!("pipeline run {} ({:.2} s)", report.run_id, report.seconds);
    for s in &report.sources {
        println!(
            "  {:<14} bronze +{} rows ({} new files, {} already ingested); silver {}: {} in → {} out, {} quarantined, {} duplicates, quality {:.2}%{}",
            s.source,
            s.bronze_rows,
            s.files_ingested,
            s.files_skipped,
            s.silver_mode,
            s.silver_rows_in,
            s.silver_rows_out,
            s.quarantined,
            s.duplicates_resolved,
            s.quality_score * 100.0,
            s.silver_version
                .map(|v| format!(" (v{v})"))
                .unwrap_or_default(),
        );
        for (check, n) in s.failures.iter().filter(|(_, n)| **n > 0) {
            println!("      {check}: {n} rows failed");
        }
    }
    for v in &report.views {
        println!(
            "  {:<14} gold {}: {} rows{}",
            v.view,
            v.mode,
            v.rows,
            v.version.map(|x| format!(" (v{x})")).unwrap_or_default()
        );
    }
    if !report.committed() {
        println!("  nothing new: no commit");
    }
}

pub async fn lineage(args: LineageArgs) -> Result<()> {
    let project = args.project.load()?;
    let store = project.delta_store()?;
    if !store.exists(&args.table).await? {
        bail!(
            "no table {:?} at {} (tables: {})",
            args.table,
            store.table_location(&args.table),
            store.tables().await?.join(", ")
        );
    }
    let node = lineage::trace(&store, &args.table, args.version).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&node)?);
    } else {
        print!("{}", lineage::render(&node));
    }
    Ok(())
}

async fn selected_tables(store: &DeltaStore, table: &Option<String>) -> Result<Vec<String>> {
    let all = store.tables().await?;
    match table {
        Some(t) if all.contains(t) => Ok(vec![t.clone()]),
        Some(t) => bail!("no table {t:?} (tables: {})", all.join(", ")),
        None => Ok(all),
    }
}

pub async fn optimize(args: OptimizeArgs) -> Result<()> {
    let project = args.project.load()?;
    let store = project.delta_store()?;
    let consumed = pipeline::consumed_versions(&project).await?;
    for table in selected_tables(&store, &args.table).await? {
        let upto = match consumed.get(&table) {
            None => None,
            Some(Some(v)) => Some(*v),
            Some(None) => {
                println!("{table}: not yet read by the pipeline; left as it is");
                continue;
            }
        };
        let (removed, added, version) = store.optimize(&table, args.rows_per_file, upto).await?;
        match version {
            Some(v) => println!("{table}: {removed} files compacted into {added} (v{v})"),
            None => println!("{table}: nothing to compact"),
        }
    }
    Ok(())
}

pub async fn vacuum(args: VacuumArgs) -> Result<()> {
    let project = args.project.load()?;
    let store = project.delta_store()?;
    let retention = args
        .retention_hours
        .checked_mul(3600)
        .map(Duration::from_secs)
        .context("--retention-hours is too large")?;
    for table in selected_tables(&store, &args.table).await? {
        let files = store
            .vacuum(&table, retention, args.dry_run, args.force)
            .await
            .with_context(|| {
                format!("vacuum {table} (a retention under 168 hours needs --force)")
            })?;
        let verb = if args.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        println!("{table}: {verb} {} files", files.len());
    }
    Ok(())
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Options of `aurum materialize`.
#[derive(Debug, clap::Args)]
pub struct MaterializeArgs {
    /// Load only gold commits newer than the ones the server holds.
    #[arg(long)]
    incremental: bool,
    /// The running server whose online store to load (`aurum serve`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Print the reports as JSON.
    #[arg(long)]
    json: bool,
    /// Push what was loaded (rows per view, gold versions, duration) to
    /// this Prometheus Pushgateway, as job `aurum_materialize`.
    #[arg(long, value_name = "URL")]
    pushgateway: Option<String>,
}

/// The online store lives in the server process: `materialize` asks the
/// running server to load the gold tables' new rows.
pub async fn materialize(args: MaterializeArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let base = args.server.trim_end_matches('/');
    let client = reqwest::Client::new();
    // The server's token, when it checks them (an admin one: materialize
    // is an admin call).
    let token = std::env::var("AURUM_TOKEN").ok().filter(|t| !t.is_empty());
    // The run's trace continues on the server (W3C `traceparent`).
    let traced = telemetry::Trace::current().headers();
    let authed = |mut request: reqwest::RequestBuilder| {
        for (name, value) in &traced {
            request = request.header(*name, value);
        }
        match &token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let unreachable = || {
        format!(
            "no aurum server answers at {} (start one with `aurum serve`)",
            args.server
        )
    };
    let call = |request: reqwest::RequestBuilder, url: String| async move {
        let response = request.send().await.with_context(unreachable)?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url} answered {status} without JSON"))?;
        if !status.is_success() {
            bail!("{url} answered {status}: {}", body["error"]["message"]);
        }
        Ok(body)
    };
    let views_url = format!("{base}/feature-views");
    let listed = call(authed(client.get(&views_url)), views_url.clone()).await?;
    let names: Vec<String> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    // One request per view, so the bar moves as each view is loaded.
    let bar = ProgressBar::new(names.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} views {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let url = format!("{base}/materialize");
    let mut reports = Vec::new();
    for name in &names {
        bar.set_message(name.clone());
        let body = serde_json::json!({"incremental": args.incremental, "views": [name]});
        let answer = call(authed(client.post(&url)).json(&body), url.clone()).await?;
        reports.extend(answer["views"].as_array().cloned().unwrap_or_default());
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(gateway) = &args.pushgateway {
        let metrics =
            crate::pushgateway::materialize_metrics(&reports, started.elapsed().as_secs_f64());
        // The server's host and port only (never its user information).
        let server = url::Url::parse(&args.server)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| "unknown".to_string());
        let server = server.as_str();
        crate::pushgateway::push(
            gateway,
            "aurum_materialize",
            &[("server", server)],
            &metrics,
        )
        .await;
    }
    let body = serde_json::json!({ "views": reports });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    for view in body["views"].as_array().into_iter().flatten() {
        println!(
            "{}: Delta v{} → v{}, {} rows read, {} entities updated, {} older rows ignored",
            view["view"].as_str().unwrap_or("?"),
            view["from_version"],
            view["to_version"],
            view["rows_read"],
            view["written"],
            view["skipped_older"],
        );
    }
    Ok(())
}
