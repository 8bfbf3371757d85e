//! Landed events into the online store's window tiles: what `aurum serve
//! --stream` does with each batch once its bronze commit lands.
//!
//! A batch is cleaned by the source's silver rules in memory (the step
//! `aurum pipeline` later runs on the same bronze rows, so the tiles and
//! the training set see the same events) and added to the tiles of every
//! request-time view over the source. The hook runs once per landed
//! commit, so each event reaches the tiles once.

use std::collections::BTreeMap;
use std::sync::Arc;

use feature_store::OnlineStore;
use feature_store::online::EventsFrom;
use feature_store::pipeline::silver::{self, BatchContext};
use feature_store::project::{Project, Source};
use polars::prelude::DataFrame;

use crate::consumer::LandedHook;

/// Landed batches waiting for the feed's thread before the consumer waits.
pub const QUEUED_BATCHES: usize = 64;

/// Sees the clean rows of each batch the feed applied.
pub type CleanHook = Arc<dyn Fn(&DataFrame) + Send + Sync>;

/// Feeds one source's landed batches to the window tiles of the views
/// over it.
pub struct TilesFeed {
    source: Source,
    views: Vec<String>,
    dimensions: BTreeMap<String, DataFrame>,
    online: Arc<OnlineStore>,
    run_id: String,
}

impl TilesFeed {
    /// A feed of `source` (of `project`) into `online`; `dimensions` are
    /// the silver frames it is enriched from
    /// (`feature_store::pipeline::silver_step::dimensions`).
    pub fn new(
        project: &Project,
        source: &Source,
        dimensions: BTreeMap<String, DataFrame>,
        online: Arc<OnlineStore>,
        run_id: &str,
    ) -> Self {
        let views = project
            .feature_views
            .iter()
            .filter(|v| v.source == source.name && v.request_windows().is_some())
            .map(|v| v.name.clone())
            .collect();
        TilesFeed {
            source: source.clone(),
            views,
            dimensions,
            online,
            run_id: run_id.to_string(),
        }
    }

    /// The views whose tiles the feed updates.
    pub fn views(&self) -> &[String] {
        &self.views
    }

    /// Cleans a landed bronze batch and adds it to the tiles; returns the
    /// clean rows (none when no view needs them, or when cleaning failed,
    /// which is logged: the events are in bronze, and the next pipeline
    /// run and materialize bring them to the tiles).
    pub fn apply(&self, bronze: &DataFrame) -> Option<DataFrame> {
        if self.views.is_empty() {
            return None;
        }
        let now = chrono::Utc::now().timestamp_micros();
        let ctx = BatchContext {
            run_id: self.run_id.clone(),
            bronze_version: 0,
            now_micros: now,
        };
        let batch = match silver::process(bronze.clone(), &self.source, &self.dimensions, &ctx) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(source = %self.source.name, error = %e, "cleaning landed events for the window tiles");
                return None;
            }
        };
        for view in &self.views {
            if let Err(e) = self
                .online
                .apply_events(view, &batch.clean, now, EventsFrom::Stream)
            {
                tracing::warn!(source = %self.source.name, view, error = %e, "applying landed events to window tiles");
            }
        }
        Some(batch.clean)
    }

    /// The feed as a consumer's [`LandedHook`]: batches are cleaned and
    /// applied on a thread of the feed's own, in commit order, so the
    /// consumer goes on reading meanwhile (it waits only when
    /// [`QUEUED_BATCHES`] are queued). `on_clean` sees each batch's clean
    /// rows once applied. The thread ends when the hook is dropped.
    pub fn hook(self: Arc<Self>, on_clean: Option<CleanHook>) -> std::io::Result<LandedHook> {
        let (send, receive) = std::sync::mpsc::sync_channel::<DataFrame>(QUEUED_BATCHES);
        std::thread::Builder::new()
            .name(format!("aurum-tiles-{}", self.source.name))
            .spawn(move || {
                for bronze in receive {
                    if let (Some(clean), Some(on_clean)) = (self.apply(&bronze), &on_clean) {
                        on_clean(&clean);
                    }
                }
            })?;
        let send = std::sync::Mutex::new(send);
        Ok(LandedHook(Arc::new(move |bronze: &DataFrame| {
            // Columns are shared, not copied. A feed thread that is gone
            // (it panicked) leaves the batch in bronze only; the next
            // pipeline run and materialize bring it to the tiles.
            if let Ok(send) = send.lock() {
                let _ = send.send(bronze.clone());
            }
        })))
    }
}
