//! Drift report at scale (issue 9): 1M current rows × 50 features against
//! a 1M-row reference, with a planted shift in 10 features.
//!
//! Measures, on the machine's cores: profiling the reference (what
//! registration does once), comparing the current data with that profile
//! (what a report costs when the reference profile is stored), both
//! together (`aurum drift --reference --current` on data in memory), and
//! the same through Parquet files as the CLI reads them.
//!
//! usage: cargo bench --bench drift -- [--rows N] [--features F] [--runs R]

#[path = "common/cli.rs"]
mod cli;

use std::time::Instant;

use anyhow::Result;
use drift::{Column, DriftOptions, Profile, Values};
use polars::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn main() -> Result<()> {
    let (mut rows, mut features, mut runs) = (1_000_000usize, 50usize, 3usize);
    cli::flags(|flag, value| {
        match flag {
            "--rows" => rows = value()?.parse()?,
            "--features" => features = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    println!(
        "drift bench: {rows} reference rows, {rows} current rows, {features} features, {} threads",
        rayon::current_num_threads()
    );
    let started = Instant::now();
    let reference = dataset(rows, features, 0.0, 1);
    let current = dataset(rows, features, 0.3, 2);
    println!("generated in {:.1} s", started.elapsed().as_secs_f64());
    let options = DriftOptions::default();
    for run in 1..=runs {
        let t = Instant::now();
        let profile = Profile::build(&reference, None)?;
        let profiled = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let report = profile.compare(&current, None, &options)?;
        let compared = t.elapsed().as_secs_f64();
        println!(
            "run {run}: profile reference {profiled:.3} s, compare current {compared:.3} s, both {:.3} s (target < 2 s); {} of {} drifted, dataset drift {}",
            profiled + compared,
            report.drifted_columns,
            report.tested_columns,
            report.dataset_drift
        );
    }
    // Through Parquet, as `aurum drift --reference a --current b` reads.
    let dir = tempfile::tempdir()?;
    let (a, b) = (
        dir.path().join("reference.parquet"),
        dir.path().join("current.parquet"),
    );
    write(&a, &reference)?;
    write(&b, &current)?;
    drop((reference, current));
    let runtime = tokio::runtime::Runtime::new()?;
    for run in 1..=runs {
        let t = Instant::now();
        let (r, c) = runtime.block_on(async {
            tokio::try_join!(aurum::drift_data::load(&a), aurum::drift_data::load(&b))
        })?;
        let read = t.elapsed().as_secs_f64();
        let report = drift::report::compare_datasets(&r.columns, &c.columns, &options)?;
        println!(
            "parquet run {run}: read both {read:.3} s, report {:.3} s total ({} drifted)",
            t.elapsed().as_secs_f64(),
            report.drifted_columns
        );
    }
    Ok(())
}

fn dataset(rows: usize, features: usize, shift: f64, seed: u64) -> Vec<Column> {
    use rayon::prelude::*;
    (0..features)
        .into_par_iter()
        .map(|f| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + f as u64);
            let normal = Normal::new(0.0, 1.0 + f as f64 / 10.0).unwrap();
            // The first ten features move.
            let s = if f < 10 {
                shift * (1.0 + f as f64 / 10.0)
            } else {
                0.0
            };
            Column {
                name: format!("f{f}"),
                values: Values::Numeric((0..rows).map(|_| normal.sample(&mut rng) + s).collect()),
            }
        })
        .collect()
}

fn write(path: &std::path::Path, columns: &[Column]) -> Result<()> {
    let cols: Vec<polars::prelude::Column> = columns
        .iter()
        .map(|c| match &c.values {
            Values::Numeric(v) => Series::new(c.name.as_str().into(), v).into(),
            Values::Categorical(v) => Series::new(c.name.as_str().into(), v).into(),
        })
        .collect();
    let mut df = DataFrame::new_infer_height(cols)?;
    ParquetWriter::new(std::fs::File::create(path)?).finish(&mut df)?;
    Ok(())
}
