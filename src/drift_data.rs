//! Datasets for drift reports: Parquet files and Delta tables, read into
//! the drift crate's columns. (The prediction log is read by
//! `monitoring::predictions::read_window`.)

use std::path::Path;

use anyhow::{Context, Result, bail};
use delta::DeltaStore;
use polars::prelude::*;

/// A dataset read for a drift report, and the columns left out (with why).
pub struct Dataset {
    /// Rows.
    pub rows: usize,
    /// The usable columns.
    pub columns: Vec<drift::Column>,
    /// Columns of other types, not compared.
    pub skipped: Vec<String>,
}

/// Reads a Parquet file or a Delta table directory (one holding
/// `_delta_log`) into a frame.
pub async fn read_frame(path: &Path) -> Result<DataFrame> {
    if path.join("_delta_log").is_dir() {
        let parent = path.parent().unwrap_or_else(|| Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} is not a usable table path", path.display()))?;
        let (df, _) = DeltaStore::new(parent)
            .read(name, None)
            .await
            .with_context(|| format!("reading the Delta table {}", path.display()))?;
        return Ok(df);
    }
    if !path.is_file() {
        bail!(
            "{} is neither a Parquet file nor a Delta table directory",
            path.display()
        );
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<DataFrame> {
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        ParquetReader::new(file)
            .finish()
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))
    })
    .await
    .context("the Parquet reader stopped")?
}

/// The frame's columns as drift columns: numbers (and booleans, as 0/1) are
/// numeric, strings and categoricals categorical; other types are skipped.
pub fn columns(df: &DataFrame) -> Result<Dataset> {
    let mut columns = Vec::new();
    let mut skipped = Vec::new();
    for column in df.columns() {
        let name = column.name().to_string();
        let dtype = column.dtype();
        let values = if dtype.is_primitive_numeric() || dtype == &DataType::Boolean {
            let cast = column
                .cast(&DataType::Float64)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("reading column {name} as numbers"))?;
            let ca = cast.f64()?;
            drift::Values::Numeric(ca.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        } else if matches!(
            dtype,
            DataType::String | DataType::Categorical(..) | DataType::Enum(..)
        ) {
            let cast = column
                .cast(&DataType::String)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("reading column {name} as text"))?;
            let ca = cast.str()?;
            drift::Values::Categorical(ca.iter().map(|v| v.map(str::to_string)).collect())
        } else {
            skipped.push(format!("{name} ({dtype})"));
            continue;
        };
        columns.push(drift::Column { name, values });
    }
    Ok(Dataset {
        rows: df.height(),
        columns,
        skipped,
    })
}

/// Reads a Parquet file or a Delta table as drift columns.
pub async fn load(path: &Path) -> Result<Dataset> {
    let df = read_frame(path).await?;
    columns(&df)
}
