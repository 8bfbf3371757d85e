//! The medallion pipeline benchmark: N bronze rows → silver → gold (one
//! feature view, 3 windows × 5 aggregations) end to end, then an
//! incremental run adding 1% new rows. A bench binary rather than
//! criterion: one full run is a measurement of tens of seconds.
//!
//! usage: cargo bench --bench pipeline -- [--rows N] [--keep DIR] [--s3]
//!
//! With `--s3`, the same input is also run with the project's tables on a
//! real S3 server (moto's, from the test virtualenv) and the two full and
//! incremental runs are compared, with the object-store requests (LIST,
//! GET, HEAD, PUT) each stage made.
//!
//! Peak memory is the process's peak resident set (VmHWM), reset before
//! each stage through /proc/self/clear_refs.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/memory.rs"]
mod memory;
#[path = "common/s3.rs"]
mod s3;

use std::path::Path;
use std::time::Instant;

use aurum::example::{self, GenerateOptions};
use feature_store::Project;
use feature_store::pipeline::{self, PipelineOptions, PipelineReport, SourceReport};

const HOUR: i64 = 3_600_000_000;
const END: i64 = 1_795_000_000_000_000;

fn main() -> anyhow::Result<()> {
    // AURUM_LOG=info shows the time of each stage.
    cli::init_logging();
    let mut rows = 10_000_000usize;
    let mut keep = None;
    let mut on_s3 = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => rows = args.next().unwrap_or_default().parse()?,
            "--keep" => keep = args.next(),
            "--s3" => on_s3 = true,
            _ => {} // cargo passes --bench
        }
    }
    if on_s3 {
        // Started before the runtime's threads (it sets the credentials).
        let server = s3::S3Server::start("bench")?;
        return compare_with_s3(&server, rows);
    }
    let temp = tempfile::tempdir()?;
    let dir = keep
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let project = bench_project(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    measure(&project, rows, &runtime)?.print();
    Ok(())
}

/// What the stages did, with the peak resident set of each (MiB).
struct Measured {
    files: example::BronzeFiles,
    /// Bytes of the transactions CSV.
    bytes: u64,
    generate_seconds: f64,
    generate_peak: u64,
    full: PipelineReport,
    full_peak: u64,
    incremental: PipelineReport,
    incremental_peak: u64,
    /// A run with no new input.
    unchanged: PipelineReport,
}

/// Generates `rows` transactions, runs the pipeline in full, adds 1% new
/// rows an hour later and runs it again, then once more with nothing new.
fn measure(
    project: &Project,
    rows: usize,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Measured> {
    let quiet = |_: &str| {};
    let run = || runtime.block_on(pipeline::run(project, &PipelineOptions::default(), &quiet));

    memory::reset_peak();
    let started = Instant::now();
    let files = first_input(project, rows, None)?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let generate_peak = peak_mib();
    let bytes = std::fs::metadata(&files.transactions)?.len();

    memory::reset_peak();
    let full = run()?;
    let full_peak = peak_mib();

    new_hour(project, rows, files.customers)?;
    memory::reset_peak();
    let incremental = run()?;
    let incremental_peak = peak_mib();
    let unchanged = run()?;
    Ok(Measured {
        files,
        bytes,
        generate_seconds,
        generate_peak,
        full,
        full_peak,
        incremental,
        incremental_peak,
        unchanged,
    })
}

impl Measured {
    fn print(&self) {
        let Measured { files, .. } = self;
        let tx = transactions(&self.full);
        println!(
            "pipeline benchmark, {} bronze rows ({} MiB CSV, {} customers)",
            files.rows_written,
            self.bytes >> 20,
            files.customers
        );
        println!(
            "  generate        {:>8.2} s  {:>10.0} rows/s  peak {:>6} MiB",
            self.generate_seconds,
            files.rows_written as f64 / self.generate_seconds,
            self.generate_peak
        );
        let full = &self.full;
        println!(
            "  full run        {:>8.2} s  {:>10.0} rows/s  peak {:>6} MiB  (silver {} rows, {} quarantined, quality {:.3}%; gold {} rows)",
            full.seconds,
            tx.silver_rows_in as f64 / full.seconds,
            self.full_peak,
            tx.silver_rows_out,
            tx.quarantined,
            tx.quality_score * 100.0,
            full.views[0].rows,
        );
        let incremental = &self.incremental;
        let ix = transactions(incremental);
        println!(
            "  incremental 1%  {:>8.2} s  {:>10.0} rows/s  peak {:>6} MiB  ({} new rows, gold {} rows, {:.1}% of the full run)",
            incremental.seconds,
            ix.silver_rows_in as f64 / incremental.seconds,
            self.incremental_peak,
            ix.silver_rows_in,
            incremental.views[0].rows,
            100.0 * incremental.seconds / full.seconds,
        );
        println!(
            "  no new input    {:>8.3} s  (committed: {})",
            self.unchanged.seconds,
            self.unchanged.committed()
        );
        println!(
            "  vs the roadmap's 1M rows in 30 min: {:.0}x faster per row",
            (1_800.0 / 1_000_000.0) / (full.seconds / tx.silver_rows_in as f64)
        );
    }
}

/// The full run's input: `rows` transactions over 30 days.
fn first_input(
    project: &Project,
    rows: usize,
    customers: Option<usize>,
) -> anyhow::Result<example::BronzeFiles> {
    Ok(example::generate(
        &project.data_dir.join("bronze"),
        &GenerateOptions {
            rows,
            seed: 1,
            end_micros: END,
            days: 30.0,
            customers,
        },
    )?)
}

/// The incremental run's input: 1 % of `rows` more, in the hour after.
fn new_hour(project: &Project, rows: usize, customers: usize) -> anyhow::Result<()> {
    example::generate(
        &project.data_dir.join("bronze"),
        &GenerateOptions {
            rows: rows / 100,
            seed: 2,
            end_micros: END + HOUR,
            days: 1.0 / 24.0,
            customers: Some(customers),
        },
    )?;
    Ok(())
}

/// The transactions source's part of a run.
fn transactions(report: &PipelineReport) -> &SourceReport {
    report
        .sources
        .iter()
        .find(|s| s.source == "transactions")
        .expect("transactions")
}

/// The example project with one feature view of 3 windows × 5 aggregations.
fn bench_project(dir: &Path) -> anyhow::Result<Project> {
    bench_project_with(dir, "")
}

/// [`bench_project`] with more of the project file (`[storage]`).
fn bench_project_with(dir: &Path, extra: &str) -> anyhow::Result<Project> {
    let text = example::EXAMPLE_PROJECT;
    let cut = text
        .find("[[feature_view.aggregation]]\ncolumn = \"merchant_id\"")
        .expect("example layout");
    std::fs::write(dir.join("aurum.toml"), format!("{}{extra}", &text[..cut]))?;
    Ok(Project::load(&dir.join("aurum.toml"))?)
}

/// The same input through the pipeline on local disk and on S3, full and
/// 1% incremental, with the S3 requests of each stage.
fn compare_with_s3(server: &s3::S3Server, rows: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (local_dir, s3_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let local = bench_project(local_dir.path())?;
    let remote = bench_project_with(s3_dir.path(), &server.storage_toml("s3://bench/shop"))?;
    for project in [&local, &remote] {
        first_input(project, rows, Some(rows / 50))?;
    }
    let quiet = |_: &str| {};
    let stages = std::sync::Mutex::new(Vec::<(String, s3::Requests)>::new());
    let record = |stage: &str| {
        if let Ok(mut stages) = stages.lock() {
            stages.push((stage.to_string(), server.requests()));
        }
    };
    let options = PipelineOptions::default();
    println!("pipeline on local disk and on S3 (moto), {rows} generated rows");
    for run in ["full", "incremental 1%"] {
        if run != "full" {
            for project in [&local, &remote] {
                new_hour(project, rows, rows / 50)?;
            }
        }
        let on_disk = runtime.block_on(pipeline::run(&local, &options, &quiet))?;
        if let Ok(mut stages) = stages.lock() {
            stages.clear();
        }
        let on_s3 = runtime.block_on(pipeline::run(&remote, &options, &record))?;
        record("end");
        println!(
            "  {run:<15} local {:>7.2} s   S3 {:>7.2} s   S3 / local {:.2}",
            on_disk.seconds,
            on_s3.seconds,
            on_s3.seconds / on_disk.seconds
        );
        let stages = stages.lock().map(|s| s.clone()).unwrap_or_default();
        for pair in stages.windows(2) {
            println!("      {:<28} {}", pair[0].0, pair[1].1 - pair[0].1);
        }
    }
    Ok(())
}

fn peak_mib() -> u64 {
    memory::peak_bytes() >> 20
}
