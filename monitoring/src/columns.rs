//! The columns the `predictions` and `feedback` tables share: their names
//! (feedback rows are matched to logged predictions by request id and row,
//! and both are read by model, version and arm) and how their values are
//! stored.

use polars::prelude::*;

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
