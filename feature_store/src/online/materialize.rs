//! Materialization: gold Delta tables → the online store, in full or
//! incrementally by Delta version.
//!
//! An incremental run reads only the data files added since the version the
//! online store last loaded for the view; the store's own rule (latest event
//! time, then created time, wins) keeps a late or re-computed row from
//! replacing a newer one.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::online::OnlineStore;
use crate::schema::FeatureView;
use crate::window;
use delta::DeltaStore;

/// What materializing one view did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterializeReport {
    /// The view.
    pub view: String,
    /// The version loaded before (`None`: nothing was loaded).
    pub from_version: Option<u64>,
    /// The version loaded now (`None`: the view has no gold table yet).
    pub to_version: Option<u64>,
    /// Gold rows read.
    pub rows_read: usize,
    /// Entities whose online row was replaced.
    pub written: usize,
    /// Entities whose online row was newer than what was read.
    pub skipped_older: usize,
    /// For a view whose windows are valued at the read: events loaded into
    /// its live tiles (those a read from now can still reach).
    #[serde(default)]
    pub window_events: usize,
}

/// Loads `view`'s gold rows into `online`: all of them, or with
/// `incremental` only those committed since the version loaded last.
pub async fn materialize(
    store: &DeltaStore,
    online: &OnlineStore,
    view: &FeatureView,
    incremental: bool,
) -> Result<MaterializeReport> {
    let from_version = online.loaded_version(&view.name).await?;
    let mut report = MaterializeReport {
        view: view.name.clone(),
        from_version,
        to_version: from_version,
        rows_read: 0,
        written: 0,
        skipped_older: 0,
        window_events: 0,
    };
    if store.latest_version(&view.name).await?.is_none() {
        return Ok(report);
    }
    let from = if incremental { from_version } else { None };
    let (files, version) = store.files_added(&view.name, from, None).await?;
    let columns: Vec<String> = view
        .entity
        .join_keys
        .iter()
        .chain([&view.timestamp_column, &view.created_column])
        .chain(&view.features)
        .cloned()
        .collect();
    let gold = store
        .read_files(&view.name, version, &files, Some(&columns))
        .await?;
    let stats = online.load(view, &gold, version).await?;
    report.to_version = Some(version);
    report.rows_read = gold.height();
    report.written = stats.written;
    report.skipped_older = stats.skipped_older;
    if let Some(windows) = &view.request_windows {
        // The tiles hold the events this gold version was computed from,
        // rebuilt when that changes and swapped in whole.
        let events = window::events::events_version(store, view, windows, Some(version)).await?;
        if let Some(events) = events
            && online.events_version(&view.name) != Some(events)
        {
            let (_, plan) = window::events::plan_of(view)?;
            let frame =
                window::events::read_events(store, view, windows, &plan, Some(events)).await?;
            let apply = || {
                online.apply_events(
                    &view.name,
                    &frame,
                    crate::online::push::now_micros(),
                    crate::online::EventsFrom::Table(events),
                )
            };
            // CPU work over the whole events table: off the async workers
            // where the runtime allows it.
            report.window_events = match tokio::runtime::Handle::try_current() {
                Ok(handle)
                    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(apply)?
                }
                _ => apply()?,
            };
        }
    }
    Ok(report)
}
