//! Offline retrieval benchmarks (issue 5): point-in-time training sets from
//! gold Delta tables, and the Arrow Flight service to a pyarrow client.
//!
//! usage: cargo bench --bench retrieval -- [MODE...] [--spine-rows N]
//!        [--feature-rows N] [--views V] [--features F] [--entities E]
//!   MODE: join | flight (default: both)
//!
//! and, for `benches/feast/compare_historical.sh` (the same rows Feast
//! reads):
//!   cargo bench --bench retrieval -- parquet --features-file F.parquet
//!        --spine-file S.parquet --out T.parquet
//!
//! `join`: V views × F float features, N feature rows in all (split evenly,
//! entities drawn at random, event times over 30 days), written as gold
//! Delta tables; then a spine of N rows joined point-in-time against all of
//! them through `training_set` (reading the tables included). Peak memory
//! is the process's VmHWM, reset before the join.
//! `flight`: the Flight service in this process on loopback, and the test
//! virtualenv's pyarrow as the client (`benches/flight_client.py`): DoGet of
//! one whole gold table, and DoExchange of the spine to a pandas frame.

#[path = "common/cli.rs"]
mod cli;
#[path = "common/memory.rs"]
mod memory;
#[path = "common/view.rs"]
mod view;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use delta::DeltaStore;
use feature_store::FeatureView;
use feature_store::retrieval::training_set::{self, TrainingSetRequest};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use view::bench_view;

const DAY: i64 = 86_400_000_000;
const END: i64 = 1_795_000_000_000_000;

struct Options {
    modes: Vec<String>,
    spine_rows: usize,
    feature_rows: usize,
    views: usize,
    features: usize,
    entities: usize,
    features_file: Option<String>,
    spine_file: Option<String>,
    out: Option<String>,
}

fn main() -> Result<()> {
    // AURUM_LOG=feature_store::retrieval::training_set=debug shows the stages.
    cli::init_logging();
    let mut o = Options {
        modes: Vec::new(),
        spine_rows: 1_000_000,
        feature_rows: 10_000_000,
        views: 3,
        features: 20,
        entities: 1_000_000,
        features_file: None,
        spine_file: None,
        out: None,
    };
    o.modes = cli::flags_and_modes(|flag, value| {
        match flag {
            "--spine-rows" => o.spine_rows = value()?.parse()?,
            "--feature-rows" => o.feature_rows = value()?.parse()?,
            "--views" => o.views = value()?.parse()?,
            "--features" => o.features = value()?.parse()?,
            "--entities" => o.entities = value()?.parse()?,
            "--features-file" => o.features_file = Some(value()?),
            "--spine-file" => o.spine_file = Some(value()?),
            "--out" => o.out = Some(value()?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if o.modes.is_empty() {
        o.modes = vec!["join".into(), "flight".into()];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if o.modes.iter().any(|m| m == "parquet") {
        return runtime.block_on(from_parquet(&o));
    }
    let dir = tempfile::tempdir()?;
    let store = DeltaStore::new(dir.path());
    let views = runtime.block_on(write_views(&store, &o))?;
    let spine = spine_frame(o.spine_rows, o.entities, 99)?;
    for mode in &o.modes {
        match mode.as_str() {
            "join" => runtime.block_on(join(&store, &views, spine.clone(), &o))?,
            "flight" => flight(&runtime, &store, &views, &spine, dir.path())?,
            other => bail!("unknown mode {other}"),
        }
    }
    Ok(())
}

fn view(index: usize, features: usize) -> FeatureView {
    bench_view(&format!("view_{index}"))
        .features((0..features).map(|f| format!("v{index}_f{f}")))
        .float64()
        .ttl(Duration::from_secs(7 * 86_400))
        .build()
}

fn utc() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
}

async fn write_views(store: &DeltaStore, o: &Options) -> Result<Vec<FeatureView>> {
    let started = Instant::now();
    let mut views = Vec::new();
    let per_view = o.feature_rows / o.views;
    for v in 0..o.views {
        let view = view(v, o.features);
        let mut rng = ChaCha8Rng::seed_from_u64(v as u64);
        let times: Vec<i64> = (0..per_view)
            .map(|_| END - rng.random_range(0..30 * DAY))
            .collect();
        let mut columns: Vec<Column> = vec![
            Column::new(
                "entity_id".into(),
                (0..per_view)
                    .map(|_| rng.random_range(0..o.entities as i64))
                    .collect::<Vec<_>>(),
            ),
            Series::new("event_timestamp".into(), times.clone())
                .cast(&utc())?
                .into(),
            Series::new("created_timestamp".into(), times)
                .cast(&utc())?
                .into(),
        ];
        for f in &view.features {
            columns.push(Column::new(
                f.as_str().into(),
                (0..per_view)
                    .map(|_| rng.random::<f64>())
                    .collect::<Vec<_>>(),
            ));
        }
        let df = DataFrame::new_infer_height(columns)?;
        store
            .write(
                &view.name,
                &df,
                &delta::WriteOptions::overwrite(),
                &delta::CommitLineage::default(),
            )
            .await?;
        views.push(view);
    }
    println!(
        "wrote {} gold tables of {per_view} rows x {} features ({} rows in all) in {:.1} s",
        o.views,
        o.features,
        per_view * o.views,
        started.elapsed().as_secs_f64()
    );
    Ok(views)
}

fn spine_frame(rows: usize, entities: usize, seed: u64) -> Result<DataFrame> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let times: Vec<i64> = (0..rows)
        .map(|_| END - rng.random_range(0..30 * DAY))
        .collect();
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            "entity_id".into(),
            (0..rows)
                .map(|_| rng.random_range(0..entities as i64))
                .collect::<Vec<_>>(),
        ),
        Series::new("event_timestamp".into(), times)
            .cast(&utc())?
            .into(),
        Column::new(
            "label".into(),
            (0..rows).map(|i| (i % 7 == 0) as i64).collect::<Vec<_>>(),
        ),
    ])?)
}

fn all_features(views: &[FeatureView]) -> Vec<String> {
    views.iter().flat_map(FeatureView::feature_refs).collect()
}

async fn join(
    store: &DeltaStore,
    views: &[FeatureView],
    spine: DataFrame,
    o: &Options,
) -> Result<()> {
    let request = TrainingSetRequest {
        features: all_features(views),
        timestamp_column: "event_timestamp".into(),
        as_of_versions: BTreeMap::new(),
        full_feature_names: false,
    };
    memory::reset_peak();
    let started = Instant::now();
    let loaded = training_set::load(store, views, &request).await?;
    let loaded_in = started.elapsed();
    let frame =
        tokio::task::spawn_blocking(move || loaded.join(spine).map_err(anyhow::Error::from))
            .await??;
    let took = started.elapsed();
    println!(
        "  reading and preparing the gold rows {:.2} s, the join {:.2} s",
        loaded_in.as_secs_f64(),
        (took - loaded_in).as_secs_f64()
    );
    let set = training_set::TrainingSet {
        frame,
        versions: BTreeMap::new(),
    };
    let filled = set
        .frame
        .column(&views[0].features[0])?
        .is_not_null()
        .sum()
        .unwrap_or(0);
    println!(
        "training set: spine {} rows x {} views x {} features against {} feature rows: \
         {:.2} s (reading the tables included), peak RSS {:.2} GiB; {} x {} out, \
         {filled} rows with a value of the first view",
        o.spine_rows,
        o.views,
        o.features,
        o.feature_rows,
        took.as_secs_f64(),
        memory::peak_bytes() as f64 / (1u64 << 30) as f64,
        set.frame.height(),
        set.frame.width()
    );
    Ok(())
}

fn flight(
    runtime: &tokio::runtime::Runtime,
    store: &DeltaStore,
    views: &[FeatureView],
    spine: &DataFrame,
    dir: &Path,
) -> Result<()> {
    let online = Arc::new(feature_store::OnlineStore::new(1 << 30));
    for view in views {
        online.register_view(view.clone());
    }
    let pusher = Arc::new(feature_store::online::push::Pusher::online_only(
        online.clone(),
    ));
    let server = flight::FlightServer::new(online, pusher).with_store(store.clone());
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    runtime.spawn(server.serve(listener, std::future::pending::<()>()));

    let spine_path = dir.join("spine.parquet");
    let mut spine = spine.clone();
    ParquetWriter::new(std::fs::File::create(&spine_path)?).finish(&mut spine)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".tools/venv/bin/python");
    if !python.exists() {
        bail!("the test virtualenv is missing: run `make python` first");
    }
    let features = all_features(views).join(",");
    let output = std::process::Command::new(python)
        .arg(root.join("benches/flight_client.py"))
        .arg(format!("grpc://{addr}"))
        .arg(&views[0].name)
        .arg(&spine_path)
        .arg(features)
        .output()?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        bail!(
            "the pyarrow client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The comparison with Feast: gold rows and a spine from Parquet files,
/// the training set written to Parquet for the value check.
async fn from_parquet(o: &Options) -> Result<()> {
    let read = |path: &Option<String>, what: &str| -> Result<DataFrame> {
        let path = path
            .as_ref()
            .with_context(|| format!("parquet needs --{what}"))?;
        Ok(ParquetReader::new(std::fs::File::open(path)?).finish()?)
    };
    let gold = read(&o.features_file, "features-file")?;
    let spine = read(&o.spine_file, "spine-file")?;
    let features: Vec<String> = gold
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !["entity_id", "event_timestamp", "created_timestamp"].contains(&c.as_str()))
        .collect();
    let view = bench_view("bench")
        .features(features)
        .float64()
        .ttl(Duration::from_secs(
            std::env::var("TTL_SECONDS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(86_400),
        ))
        .build();
    let dir = tempfile::tempdir()?;
    let store = DeltaStore::new(dir.path());
    store
        .write(
            "bench",
            &gold,
            &delta::WriteOptions::overwrite(),
            &delta::CommitLineage::default(),
        )
        .await?;
    let request = TrainingSetRequest {
        features: view.feature_refs(),
        timestamp_column: "event_timestamp".into(),
        as_of_versions: BTreeMap::new(),
        full_feature_names: false,
    };
    let started = Instant::now();
    let mut set = training_set::training_set(&store, &[view], spine, &request).await?;
    let took = started.elapsed();
    if let Some(out) = &o.out {
        training_set::write_parquet(&mut set.frame, Path::new(out))?;
    }
    println!(
        "aurum training set: {} rows x {} columns in {:.3} s",
        set.frame.height(),
        set.frame.width(),
        took.as_secs_f64()
    );
    Ok(())
}
