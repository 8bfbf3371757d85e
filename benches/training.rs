//! Training at scale (issue 8): a logistic regression and an MLP (2 × 64)
//! on 1M rows × 50 features with planted signal, with wall time, epochs,
//! validation ROC AUC and peak memory.
//!
//! usage: cargo bench --bench training -- [--rows N] [--features F]
//!        [--epochs E] [--batch B]

#[path = "common/cli.rs"]
mod cli;
#[path = "common/memory.rs"]
mod memory;

use std::time::Instant;

use anyhow::Result;
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use training::data::{self, Rules};
use training::fit::{self, Preset};
use training::spec::{ClassWeight, Family, Hyperparameters, Task};

fn main() -> Result<()> {
    let (mut rows, mut features, mut epochs, mut batch) =
        (1_000_000usize, 50usize, 5usize, 2048usize);
    cli::flags(|flag, value| {
        match flag {
            "--rows" => rows = value()?.parse()?,
            "--features" => features = value()?.parse()?,
            "--epochs" => epochs = value()?.parse()?,
            "--batch" => batch = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let started = Instant::now();
    let df = synthetic(rows, features, 11)?;
    println!(
        "generated {rows} rows x {features} features in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let names: Vec<String> = (0..features).map(|j| format!("f{j}")).collect();
    for (label, family) in [
        ("logistic regression", Family::Linear),
        ("MLP 2 x 64", Family::Mlp),
    ] {
        memory::reset_peak();
        let started = Instant::now();
        let data = data::dataset(
            &df,
            &names,
            "y",
            "ts",
            Task::BinaryClassification,
            0.2,
            &Rules::SPEC,
        )?;
        let prepared = started.elapsed().as_secs_f64();
        let hyper = Hyperparameters {
            family,
            hidden: vec![64, 64],
            epochs,
            batch_size: batch,
            learning_rate: if family == Family::Mlp { 0.003 } else { 0.01 },
            class_weight: ClassWeight::None,
            patience: 2,
            ..Hyperparameters::default()
        };
        let model = fit::fit(
            &data,
            Task::BinaryClassification,
            &hyper,
            &Preset::NETWORK,
            &|_, _| {},
        )?;
        let total = started.elapsed().as_secs_f64();
        println!(
            "{label}: {total:.1} s in all ({prepared:.1} s reading the frame, {} epochs of batch {batch}, \
             permutation importance and ONNX export included); val ROC AUC {:.4}; peak RSS {:.2} GiB",
            model.epochs_run,
            model.metrics["val_roc_auc"],
            memory::peak_bytes() as f64 / f64::from(1u32 << 30)
        );
    }
    Ok(())
}

/// Rows in time order; the label follows a logistic model of six of the
/// features (one interaction), the rest are noise; 2 % of values missing.
fn synthetic(rows: usize, features: usize, seed: u64) -> Result<DataFrame> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut columns: Vec<Vec<Option<f32>>> = vec![Vec::with_capacity(rows); features];
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let x: Vec<f32> = (0..features)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect();
        let logit = -2.0 + 2.0 * x[0] - 1.5 * x[1] + x[2] + 0.8 * x[3] * x[4] - 0.5 * x[5];
        y.push(i64::from(
            rng.random::<f32>() < 1.0 / (1.0 + (-logit).exp()),
        ));
        for (j, v) in x.into_iter().enumerate() {
            columns[j].push((rng.random::<f32>() >= 0.02).then_some(v));
        }
    }
    let mut frame: Vec<Column> = columns
        .into_iter()
        .enumerate()
        .map(|(j, c)| Column::new(format!("f{j}").into(), c))
        .collect();
    frame.push(Column::new("y".into(), y));
    frame.push(Column::new(
        "ts".into(),
        (0..rows as i64).collect::<Vec<_>>(),
    ));
    Ok(DataFrame::new_infer_height(frame)?)
}
