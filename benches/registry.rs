//! Registry benchmarks (issue 6): registering a 50 MB ONNX file (validation
//! in ONNX Runtime, sha256, the content-addressed write with fsync, the
//! metadata commit), and resolving a model by alias in process.
//!
//! usage: cargo bench --bench registry -- [--megabytes N] [--lookups N]
//!
//! The model is sigmoid((x · W) · V) with W [2, K] and V [K, 1] float
//! constants sized to N megabytes; each registration changes one weight, so
//! every one stores a new file.

#[path = "common/cli.rs"]
mod cli;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use onnx::{Dim, GraphBuilder};
use registry::{NewVersion, Registry};

fn model(megabytes: usize, seed: f32) -> Vec<u8> {
    let k = megabytes * (1 << 20) / 4 / 3;
    let mut w = vec![0.001f32; 2 * k];
    w[0] = seed;
    let v = vec![0.002f32; k];
    let mut g = GraphBuilder::new("large");
    g.input("x", &[Dim::Dynamic("batch"), Dim::Fixed(2)])
        .output("y", &[Dim::Dynamic("batch"), Dim::Fixed(1)])
        .constant("w", &[2, k as i64], &w)
        .constant("v", &[k as i64, 1], &v)
        .node("MatMul", &["x", "w"], &["h"])
        .node("MatMul", &["h", "v"], &["z"])
        .node("Sigmoid", &["z"], &["y"]);
    g.finish("registry benchmark model")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let (mut megabytes, mut lookups) = (50usize, 100_000usize);
    // Flags it does not know are ignored.
    cli::flags(|flag, value| {
        match flag {
            "--megabytes" => megabytes = value()?.parse()?,
            "--lookups" => lookups = value()?.parse()?,
            _ => {}
        }
        Ok(true)
    })?;
    let dir = tempfile::tempdir()?;
    let registry = Registry::open(dir.path())?;
    onnx::init()?;
    let new = || NewVersion {
        features: vec!["v:a".into(), "v:b".into()],
        metrics: BTreeMap::from([("auc".to_string(), 0.9)]),
        ..NewVersion::default()
    };

    let mut times = Vec::new();
    for i in 0..5 {
        let bytes = model(megabytes, i as f32);
        let started = Instant::now();
        let version = registry.register("large", &bytes, new())?;
        times.push(started.elapsed().as_secs_f64());
        if i == 0 {
            println!(
                "registering a {:.1} MB ONNX file (version {})",
                bytes.len() as f64 / 1e6,
                version.version
            );
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "  registration: median {:.3} s, min {:.3} s, max {:.3} s over {} runs",
        percentile(&times, 0.5),
        times[0],
        times[times.len() - 1],
        times.len()
    );

    registry.set_alias("large", "champion", 3, "bench")?;
    registry.set_alias("large", "challenger", 5, "bench")?;
    let mut latencies = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let started = Instant::now();
        let version = registry.by_alias("large", "champion")?;
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(version);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "  get by alias: p50 {:.1} us, p99 {:.1} us, max {:.1} us over {lookups} lookups",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    Ok(())
}
