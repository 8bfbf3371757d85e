//! Reading a view's events (its source's silver rows) for request-time
//! windows: the same rows gold computed from.

use std::sync::Arc;

use delta::DeltaStore;
use polars::prelude::DataFrame;

use super::history::{History, event_columns};
use super::{RequestWindows, WindowPlan};
use crate::error::{Error, Result};
use crate::schema::FeatureView;

/// The view's request-time windows and their plan; an error for a view
/// without them.
pub fn plan_of(view: &FeatureView) -> Result<(&RequestWindows, WindowPlan)> {
    let windows = view.request_windows.as_ref().ok_or_else(|| {
        Error::Internal(format!(
            "feature view {} has no request-time windows",
            view.name
        ))
    })?;
    let plan = WindowPlan::new(windows, &[]).map_err(|message| Error::Schema {
        view: view.name.clone(),
        message,
    })?;
    Ok((windows, plan))
}

/// The version of the events table that gold version `gold_version` (or
/// the latest) of `view` was computed from, as its lineage records; the
/// events table's latest when no commit says.
pub async fn events_version(
    store: &DeltaStore,
    view: &FeatureView,
    windows: &RequestWindows,
    gold_version: Option<u64>,
) -> Result<Option<u64>> {
    if store.exists(&view.name).await? {
        let history = store.history(&view.name).await?;
        // Newest first; compaction commits carry no lineage.
        let recorded = history
            .iter()
            .filter(|c| gold_version.is_none_or(|v| c.version <= v))
            .find_map(|c| {
                c.lineage
                    .as_ref()
                    .and_then(|l| l.input_tables.get(&windows.events_table).copied())
            });
        if recorded.is_some() {
            return Ok(recorded);
        }
    }
    store
        .latest_version(&windows.events_table)
        .await
        .map_err(Error::from)
}

/// Reads the events `view`'s request-time windows aggregate (at
/// `version`, or the latest) and indexes them for reads at any time.
pub async fn load_history(
    store: &DeltaStore,
    view: &FeatureView,
    version: Option<u64>,
) -> Result<Arc<History>> {
    let (windows, plan) = plan_of(view)?;
    let frame = read_events(store, view, windows, &plan, version).await?;
    let join_keys = view.entity.join_keys.clone();
    let timestamp = windows.timestamp_column.clone();
    let name = view.name.clone();
    let history =
        tokio::task::spawn_blocking(move || History::build(plan, &frame, &join_keys, &timestamp))
            .await
            .map_err(|e| Error::Internal(format!("indexing the events of {name} stopped: {e}")))?
            .map_err(|message| Error::Schema {
                view: view.name.clone(),
                message: format!("its events ({}): {message}", windows.events_table),
            })?;
    Ok(Arc::new(history))
}

/// The events table's rows at `version` (or the latest), projected to the
/// columns the plan needs; empty when the table does not exist yet.
pub async fn read_events(
    store: &DeltaStore,
    view: &FeatureView,
    windows: &RequestWindows,
    plan: &WindowPlan,
    version: Option<u64>,
) -> Result<DataFrame> {
    let columns = event_columns(plan, &view.entity.join_keys, &windows.timestamp_column);
    if !store.exists(&windows.events_table).await? {
        return Err(Error::from(delta::Error::TableMissing(
            windows.events_table.clone(),
        )));
    }
    let (files, version) = store.files(&windows.events_table, version).await?;
    Ok(store
        .read_files(&windows.events_table, version, &files, Some(&columns))
        .await?)
}
