//! A feature view's gold rows as they are, for clients that pull a view's
//! table rather than join it onto a spine (Feast's offline store calls
//! `pull_all_from_table_or_query` and `pull_latest_from_table_or_query`):
//! the columns asked for, event times in a range, and optionally only each
//! entity's latest row.

use delta::DeltaStore;
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::schema::FeatureView;

/// What to pull from a view's gold table.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    /// The columns, in output order: any of the view's join keys, features,
    /// event and created timestamp columns.
    pub columns: Vec<String>,
    /// Earliest event time kept (inclusive), microseconds since the epoch.
    pub start_micros: Option<i64>,
    /// Latest event time kept (inclusive), microseconds since the epoch.
    pub end_micros: Option<i64>,
    /// Keep only each entity's latest row (by event time, then created
    /// time) among those in the range.
    pub latest_only: bool,
}

/// Pulls `request` from the latest version of `view`'s gold table. A column
/// the view does not have is refused by name before anything is read.
pub async fn pull(
    store: &DeltaStore,
    view: &FeatureView,
    request: &PullRequest,
) -> Result<DataFrame> {
    let known = |column: &str| {
        view.entity.join_keys.iter().any(|k| k == column)
            || view.features.iter().any(|f| f == column)
            || column == view.timestamp_column
            || column == view.created_column
    };
    if let Some(unknown) = request.columns.iter().find(|c| !known(c)) {
        return Err(Error::InvalidRequest(format!(
            "feature view {} has no column {unknown:?} (its columns: {}, {}, {}, {})",
            view.name,
            view.entity.join_keys.join(", "),
            view.features.join(", "),
            view.timestamp_column,
            view.created_column
        )));
    }
    let (frame, _) = store.read(&view.name, None).await?;
    let time = col(view.timestamp_column.as_str()).cast(DataType::Datetime(
        TimeUnit::Microseconds,
        Some(TimeZone::UTC),
    ));
    let mut keep = lit(true);
    if let Some(start) = request.start_micros {
        keep = keep.and(time.clone().gt_eq(lit(start).cast(DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))));
    }
    if let Some(end) = request.end_micros {
        keep = keep.and(time.clone().lt_eq(lit(end).cast(DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))));
    }
    let mut rows = frame.lazy().filter(keep);
    if request.latest_only {
        let keys: Vec<Expr> = view
            .entity
            .join_keys
            .iter()
            .map(|k| col(k.as_str()))
            .collect();
        rows = rows
            .sort(
                [view.timestamp_column.as_str(), view.created_column.as_str()],
                SortMultipleOptions::default().with_order_descending(true),
            )
            .unique_stable_generic(Some(keys), UniqueKeepStrategy::First);
    }
    let columns: Vec<Expr> = request.columns.iter().map(|c| col(c.as_str())).collect();
    rows.select(columns)
        .collect()
        .map_err(Error::polars(format!("pulling rows of {}", view.name)))
}
