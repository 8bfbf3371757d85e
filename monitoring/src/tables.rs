//! What the `predictions` and `feedback` tables share: the names of their
//! common columns (feedback rows are matched to logged predictions by
//! request id and row, and both are read by model, version and arm), how
//! those values are stored, and how the tables are read.

use delta::DeltaStore;
use polars::prelude::*;

use crate::error::Result;

pub(crate) const REQUEST_ID: &str = "request_id";
pub(crate) const ROW: &str = "row";
pub(crate) const MODEL: &str = "model";
pub(crate) const VERSION: &str = "version";
pub(crate) const ARM: &str = "arm";
pub(crate) const PREDICTION: &str = "prediction";

/// A UTC timestamp column `name` from microseconds since the epoch.
pub(crate) fn utc_micros(name: &str, micros: Vec<i64>) -> PolarsResult<Column> {
    Ok(Series::new(name.into(), micros)
        .cast(&DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))?
        .into())
}

/// A [`VERSION`] column: Delta has no unsigned integers, so versions are
/// stored as `i64` (saturating; no real version comes near).
pub(crate) fn versions(versions: impl Iterator<Item = u64>) -> Column {
    Series::new(
        VERSION.into(),
        versions
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    )
    .into()
}

/// The `columns` of every row of `table` in `store`, at its latest
/// version; `None` when the table does not exist yet.
pub(crate) async fn read_columns(
    store: &DeltaStore,
    table: &str,
    columns: &[&str],
) -> Result<Option<DataFrame>> {
    if !store.exists(table).await? {
        return Ok(None);
    }
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let (files, version) = store.files(table, None).await?;
    let df = store
        .read_files(table, version, &files, Some(columns.as_slice()))
        .await?;
    Ok(Some(df))
}
