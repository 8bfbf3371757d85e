//! The protocol read path (`delta::read_table`, the one aurum uses for
//! Delta sources and `aurum table show`) on a table with deletion vectors
//! against the same table without them (issue 18's target: at least half
//! the speed).
//!
//! usage: cargo bench --bench delta_read -- [--rows N] [--files F]
//!        [--deleted-share S] [--rounds R]
//!
//! The table is written by aurum's Delta layer in F files; a copy gets a
//! second commit that adds a deletion vector to every file (every
//! 1/S-th row deleted), written with the Delta kernel's own deletion-vector
//! writer into one DV file (`storageType` `p`, as Spark writes absolute
//! ones). Both are then read in full, R rounds, alternating.

#[path = "common/cli.rs"]
mod cli;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use delta::{DeltaStore, ReadOptions, StorageLocation};
use delta_kernel::actions::deletion_vector_writer::{
    KernelDeletionVector, StreamingDeletionVectorWriter,
};
use polars::prelude::*;

fn main() -> Result<()> {
    cli::init_logging();
    let (mut rows, mut files, mut share, mut rounds) = (10_000_000usize, 10usize, 0.1f64, 3usize);
    cli::flags(|flag, value| {
        match flag {
            "--rows" => rows = value()?.parse()?,
            "--files" => files = value()?.parse()?,
            "--deleted-share" => share = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if !(share > 0.0 && share < 1.0) {
        bail!("--deleted-share must be between 0 and 1");
    }
    let every = (1.0 / share).round() as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let store = DeltaStore::new(dir.path());
    let started = Instant::now();
    runtime.block_on(store.write(
        "plain",
        &frame(rows)?,
        &delta::WriteOptions {
            rows_per_file: rows.div_ceil(files.max(1)),
            ..delta::WriteOptions::overwrite()
        },
        &delta::CommitLineage::default(),
    ))?;
    copy_dir(&dir.path().join("plain"), &dir.path().join("with_dv"))?;
    let deleted = runtime.block_on(add_deletion_vectors(&store, dir.path(), every))?;
    println!(
        "delta read: {rows} rows in {files} files; the copy has deletion vectors on {deleted} rows \
         ({:.1}%); set up in {:.1} s",
        100.0 * deleted as f64 / rows as f64,
        started.elapsed().as_secs_f64()
    );
    let location = |name: &str| -> Result<StorageLocation> {
        Ok(StorageLocation::parse(
            &dir.path().join(name).display().to_string(),
            &BTreeMap::new(),
        )?)
    };
    let (plain, with_dv) = (location("plain")?, location("with_dv")?);
    let mut seconds = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, table) in [&plain, &with_dv].into_iter().enumerate() {
            let started = Instant::now();
            let read = runtime.block_on(delta::read_table(table, ReadOptions::default()))?;
            seconds[i].push(started.elapsed().as_secs_f64());
            let expected = if i == 0 { rows } else { rows - deleted };
            if read.rows != expected {
                bail!("read {} rows of {table}, expected {expected}", read.rows);
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain_s, dv_s) = (median(&mut seconds[0]), median(&mut seconds[1]));
    println!(
        "  without deletion vectors {plain_s:>6.2} s  {:>12.0} rows/s",
        rows as f64 / plain_s
    );
    println!(
        "  with deletion vectors    {dv_s:>6.2} s  {:>12.0} rows/s (of the rows read from files: {:.0}/s)",
        (rows - deleted) as f64 / dv_s,
        rows as f64 / dv_s
    );
    println!(
        "  speed with / without (rows read from files per second): {:.2}",
        plain_s / dv_s
    );
    Ok(())
}

/// `rows` rows: an id, a value and an event time.
fn frame(rows: usize) -> Result<DataFrame> {
    let ids: Vec<i64> = (0..rows as i64).collect();
    let values: Vec<f64> = ids.iter().map(|i| (*i as f64 * 0.37).sin()).collect();
    let times: Vec<i64> = ids
        .iter()
        .map(|i| 1_790_000_000_000_000 + i * 1_000)
        .collect();
    let df = DataFrame::new_infer_height(vec![
        Column::new("id".into(), ids),
        Column::new("value".into(), values),
        Column::new("event_time".into(), times),
    ])?
    .lazy()
    .with_column(col("event_time").cast(DataType::Datetime(
        TimeUnit::Microseconds,
        Some(TimeZone::UTC),
    )))
    .collect()?;
    Ok(df)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Commits version 1 of `with_dv`: the protocol upgraded to deletion
/// vectors and every data file re-added with a deletion vector on every
/// `every`-th row. Returns the rows deleted.
async fn add_deletion_vectors(store: &DeltaStore, root: &Path, every: u64) -> Result<usize> {
    let (files, _) = store.files("with_dv", None).await?;
    let table = root.join("with_dv");
    let dv_file = table.join("deletion_vectors.bin");
    let dv_url = url::Url::from_file_path(std::path::absolute(&dv_file)?)
        .map_err(|()| anyhow::anyhow!("no URL for {}", dv_file.display()))?;
    let mut bytes = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
    let log = std::fs::read_to_string(table.join("_delta_log/00000000000000000000.json"))?;
    let adds: BTreeMap<String, serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|action| action.get("add").cloned())
        .filter_map(|add| Some((add.get("path")?.as_str()?.to_string(), add)))
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    let mut actions = vec![serde_json::json!({"protocol": {
        "minReaderVersion": 3,
        "minWriterVersion": 7,
        "readerFeatures": ["deletionVectors"],
        "writerFeatures": ["deletionVectors"],
    }})];
    let mut deleted = 0usize;
    for file in &files {
        let rows = file.rows.context("a data file without a row count")? as u64;
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes((0..rows).step_by(every as usize));
        deleted += dv.cardinality() as usize;
        let written = writer.write_deletion_vector(dv)?;
        let mut add = adds
            .get(&file.path)
            .cloned()
            .with_context(|| format!("{} is not in the log", file.path))?;
        add["deletionVector"] = serde_json::json!({
            "storageType": "p",
            "pathOrInlineDv": dv_url.as_str(),
            "offset": written.offset,
            "sizeInBytes": written.size_in_bytes,
            "cardinality": written.cardinality,
        });
        add["dataChange"] = serde_json::json!(true);
        actions.push(serde_json::json!({"remove": {
            "path": file.path,
            "deletionTimestamp": now,
            "dataChange": true,
        }}));
        actions.push(serde_json::json!({ "add": add }));
    }
    writer.finalize()?;
    std::fs::write(&dv_file, bytes)?;
    let commit: String = actions.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(table.join("_delta_log/00000000000000000001.json"), commit)?;
    Ok(deleted)
}
