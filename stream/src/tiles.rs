//! Received events into the online store's window tiles: what `aurum
//! serve --stream` does with the events as they arrive, without waiting
//! for their bronze commit.
//!
//! Events are cleaned by the source's silver rules in memory (the step
//! `aurum pipeline` later runs on the same bronze rows, so the tiles and
//! the training set see the same events) and added to the tiles of every
//! request-time view over the source. The consumer hands each offset on
//! once ([`crate::consumer::ReceivedHook`]), so each event reaches the
//! tiles once, whether its commit lands at the first try or after a
//! re-read.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use feature_store::OnlineStore;
use feature_store::online::EventsFrom;
use feature_store::pipeline::silver::{self, BatchContext};
use feature_store::project::{Project, Source};
use polars::prelude::DataFrame;

use delta::DeltaStore;

use crate::consumer::ReceivedHook;
use crate::error::{Error, Result};
use crate::stats::StreamStats;

/// Hand-offs waiting for the feed's thread before the consumer waits.
pub const QUEUED_BATCHES: usize = 64;

/// Sees the clean rows of each batch the feed applied.
pub type CleanHook = Arc<dyn Fn(&DataFrame) + Send + Sync>;

/// Feeds one source's received events to the window tiles of the views
/// over it.
pub struct TilesFeed {
    source: Source,
    views: Vec<String>,
    dimensions: BTreeMap<String, DataFrame>,
    online: Arc<OnlineStore>,
    run_id: String,
    stats: Arc<StreamStats>,
    /// Record keys applied, for re-deliveries (with a dedup key and a
    /// declared lateness only).
    applied: Option<Mutex<RecentRecords>>,
}

/// The record keys (a hash of the dedup key's values and the event time)
/// of the events applied, with that time, kept while a re-delivery could
/// still be applied: silver's `late` rule keeps an event only if its time
/// is within the lateness of its consumption (`_ingested_at`), and events
/// reach the feed in the order consumed, so once a hand-off's earliest
/// consumption time minus the lateness has passed an event's time, no
/// later re-delivery of it can be applied. Silver keeps one delivery of a
/// record (the last), and so do the tiles (the first applied): the same
/// values for a producer's retry. (Two records whose 64-bit hashes
/// collide, about one in 10^19 per pair, would be taken for one.)
struct RecentRecords {
    keys: HashMap<u64, i64>,
    lateness_micros: i64,
    pruned_at: i64,
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
        stats: Arc<StreamStats>,
    ) -> Self {
        let views = project
            .feature_views
            .iter()
            .filter(|v| v.source == source.name && v.request_windows().is_some())
            .map(|v| v.name.clone())
            .collect();
        let lateness = source.kafka.as_ref().map_or(0, |k| k.lateness.as_micros());
        let applied = (!source.dedup_key.is_empty() && lateness > 0).then(|| {
            Mutex::new(RecentRecords {
                keys: HashMap::new(),
                lateness_micros: i64::try_from(lateness).unwrap_or(i64::MAX),
                pruned_at: 0,
            })
        });
        TilesFeed {
            source: source.clone(),
            views,
            dimensions,
            online,
            run_id: run_id.to_string(),
            stats,
            applied,
        }
    }

    /// `clean` without the events whose record (dedup key and event time)
    /// was applied before, which it then records.
    fn first_deliveries(&self, clean: DataFrame, now: i64) -> DataFrame {
        let Some(applied) = &self.applied else {
            return clean;
        };
        let hashes = match record_hashes(&clean, &self.source) {
            Ok(hashes) => hashes,
            Err(e) => {
                tracing::warn!(source = %self.source.name, error = %e, "hashing record keys; re-deliveries are not left out of this hand-off");
                return clean;
            }
        };
        let Ok(mut applied) = applied.lock() else {
            return clean;
        };
        // The earliest consumption in this hand-off bounds what any later
        // re-delivery can repeat.
        let consumed = feature_store::window::history::micros(
            &clean,
            feature_store::pipeline::bronze::INGESTED_AT,
        )
        .ok()
        .and_then(|t| t.into_iter().flatten().min());
        if let Some(consumed) = consumed
            && now - applied.pruned_at > 1_000_000
        {
            let horizon = consumed.saturating_sub(applied.lateness_micros);
            applied.keys.retain(|_, t| *t >= horizon);
            applied.pruned_at = now;
        }
        let mut keep = Vec::with_capacity(hashes.len());
        let mut repeats = 0;
        for (hash, time) in hashes {
            let first = match (hash, time) {
                (Some(hash), Some(time)) => applied.keys.insert(hash, time).is_none(),
                _ => true,
            };
            repeats += u64::from(!first);
            keep.push(first);
        }
        if repeats == 0 {
            return clean;
        }
        StreamStats::add(&self.stats.repeats, repeats);
        let mask: polars::prelude::BooleanChunked = keep.iter().copied().collect();
        clean.filter(&mask).unwrap_or(clean)
    }

    /// The views whose tiles the feed updates.
    pub fn views(&self) -> &[String] {
        &self.views
    }

    /// Brings the tiles up to bronze before the consumer starts: the
    /// tiles were loaded from the events table (silver) at some version,
    /// which holds bronze up to the version its commit records; the rows
    /// bronze gained since (landed by an earlier run that a restart cut
    /// off from the tiles) are cleaned and added as received events are.
    /// The consumer then resumes where bronze ends, so each event reaches
    /// the tiles once. Views loaded from different silver versions are
    /// caught up separately. Returns the bronze rows added.
    pub async fn catch_up(&self, store: &DeltaStore) -> Result<usize> {
        let failed = |message: String| Error::Tiles {
            source_name: self.source.name.clone(),
            message,
        };
        let bronze = self.source.bronze_table();
        if self.views.is_empty() || !store.exists(&bronze).await? {
            return Ok(0);
        }
        // The bronze version each view's tiles hold, grouped.
        let mut by_mark: BTreeMap<Option<u64>, Vec<String>> = BTreeMap::new();
        for view in &self.views {
            let mark = match self.online.events_version(view) {
                Some(silver) => {
                    feature_store::pipeline::bronze_processed_at(store, &self.source, silver)
                        .await
                        .map_err(|e| failed(e.to_string()))?
                }
                None => None,
            };
            by_mark.entry(mark).or_default().push(view.clone());
        }
        let mut added = 0;
        for (mark, views) in by_mark {
            let (files, version) = store.files_added(&bronze, mark, None).await?;
            if files.is_empty() {
                continue;
            }
            let rows = store.read_files(&bronze, version, &files, None).await?;
            tracing::info!(source = %self.source.name, views = ?views, since = ?mark, to = version, rows = rows.height(), "adding bronze rows the pipeline has not processed to the window tiles");
            added += rows.height();
            let clean =
                tokio::task::block_in_place(|| self.apply_to(&views, &rows, EventsFrom::Landed));
            if clean.is_none() {
                return Err(failed(format!(
                    "the {} bronze rows since version {mark:?} could not be cleaned (logged above)",
                    rows.height()
                )));
            }
        }
        Ok(added)
    }

    /// Cleans received events (bronze's columns) and adds them to the
    /// tiles; returns the clean rows (none when no view needs them, or
    /// when cleaning failed, which is logged: the events land in bronze,
    /// and the next pipeline run and materialize bring them to the tiles).
    pub fn apply(&self, bronze: &DataFrame) -> Option<DataFrame> {
        self.apply_to(&self.views, bronze, EventsFrom::Stream)
    }

    fn apply_to(
        &self,
        views: &[String],
        bronze: &DataFrame,
        from: EventsFrom,
    ) -> Option<DataFrame> {
        if views.is_empty() {
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
                tracing::warn!(source = %self.source.name, error = %e, "cleaning received events for the window tiles");
                return None;
            }
        };
        let clean = self.first_deliveries(batch.clean, now);
        for view in views {
            if let Err(e) = self.online.apply_events(view, &clean, now, from) {
                tracing::warn!(source = %self.source.name, view, error = %e, "applying received events to window tiles");
            }
        }
        Some(clean)
    }

    /// The feed as a consumer's [`ReceivedHook`]: events are cleaned and
    /// applied on a thread of the feed's own, in the order received, so
    /// the consumer goes on reading meanwhile (it waits only when
    /// [`QUEUED_BATCHES`] are queued); hand-offs queued while the thread
    /// was busy are cleaned together. `on_clean` sees the clean rows once
    /// applied. The thread ends when the hook is dropped.
    pub fn hook(self: Arc<Self>, on_clean: Option<CleanHook>) -> std::io::Result<ReceivedHook> {
        let (send, receive) = std::sync::mpsc::sync_channel::<DataFrame>(QUEUED_BATCHES);
        std::thread::Builder::new()
            .name(format!("aurum-tiles-{}", self.source.name))
            .spawn(move || {
                while let Ok(mut received) = receive.recv() {
                    // What queued meanwhile joins it: one cleaning per
                    // wake-up, however small the hand-offs.
                    while let Ok(more) = receive.try_recv() {
                        if let Err(e) = received.vstack_mut(&more) {
                            // Cannot happen (one schema); if it does, the
                            // events still go in the order received.
                            tracing::warn!(source = %self.source.name, error = %e, "joining received events");
                            self.apply_and_tell(&received, on_clean.as_ref());
                            received = more;
                        }
                    }
                    received.rechunk_mut();
                    self.apply_and_tell(&received, on_clean.as_ref());
                }
            })?;
        let send = std::sync::Mutex::new(send);
        Ok(ReceivedHook(Arc::new(move |bronze: &DataFrame| {
            // Columns are shared, not copied. A feed thread that is gone
            // (it panicked) leaves the events in bronze only; the next
            // pipeline run and materialize bring them to the tiles.
            if let Ok(send) = send.lock() {
                let _ = send.send(bronze.clone());
            }
        })))
    }

    fn apply_and_tell(&self, bronze: &DataFrame, on_clean: Option<&CleanHook>) {
        if let (Some(clean), Some(on_clean)) = (self.apply(bronze), on_clean) {
            on_clean(&clean);
        }
    }
}

/// A row's record key hash and event time (`None` with a null part).
type RecordHash = (Option<u64>, Option<i64>);

/// Per row of `clean`, a hash of its record key (the dedup key's values
/// and the event time) and its event time.
fn record_hashes(clean: &DataFrame, source: &Source) -> Result<Vec<RecordHash>, String> {
    let times = feature_store::window::history::micros(clean, &source.timestamp)?;
    let mut parts = Vec::with_capacity(source.dedup_key.len());
    for key in &source.dedup_key {
        let column = clean
            .column(key)
            .map_err(|_| format!("dedup key column {key:?} is missing"))?
            .cast(&polars::prelude::DataType::String)
            .map_err(|e| format!("dedup key {key:?}: {e}"))?;
        parts.push(
            column
                .str()
                .map_err(|e| format!("dedup key {key:?}: {e}"))?
                .clone(),
        );
    }
    let state = foldhash::quality::FixedState::with_seed(0x7265_6465_6c69_7665);
    Ok(times
        .into_iter()
        .enumerate()
        .map(|(row, time)| {
            let mut hasher = state.build_hasher();
            for part in &parts {
                let value = part.get(row)?;
                hasher.write(value.as_bytes());
                hasher.write_u8(0xff);
            }
            hasher.write_i64(time?);
            Some((Some(hasher.finish()), time))
        })
        .map(|hashed| hashed.unwrap_or((None, None)))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::batch::BronzeBatch;

    const PROJECT: &str = r#"[project]
name = "feed"

[[entity]]
name = "customer"
join_keys = ["customer_id"]

[[source]]
name = "payments"
format = "kafka"
timestamp = "ts"
columns = [
  { name = "event_id", type = "int64" },
  { name = "customer_id", type = "string" },
  { name = "amount", type = "float64" },
  { name = "ts", type = "timestamp" },
]

[source.kafka]
bootstrap_servers = "127.0.0.1:9092"
topic = "payments"
lateness = "10m"

[source.silver]
dedup_key = ["event_id"]

[[feature_view]]
name = "customer_payments"
entity = "customer"
source = "payments"
ttl = "7d"
windows = ["1h"]
windows_at = "request"

[[feature_view.aggregation]]
column = "amount"
functions = ["count", "sum"]
"#;

    /// A re-delivery (same event id and time) in a later hand-off is left
    /// out of the tiles and counted, as silver keeps one delivery; another
    /// event at the same time is not.
    #[test]
    fn a_re_delivery_within_the_lateness_reaches_the_tiles_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aurum.toml"), PROJECT).unwrap();
        let project = Project::load(&dir.path().join("aurum.toml")).unwrap();
        let online = Arc::new(OnlineStore::new(1 << 26));
        for view in &project.feature_views {
            online.register_view(view.feature_view());
        }
        let stats = Arc::new(StreamStats::default());
        let feed = TilesFeed::new(
            &project,
            &project.sources[0],
            BTreeMap::new(),
            online.clone(),
            "test",
            stats.clone(),
        );
        let now = chrono::Utc::now();
        let ts = now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let names: Vec<String> = ["event_id", "customer_id", "amount", "ts"]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let hand_off = |offset: i64, event_id: &str| {
            let mut batch = BronzeBatch::new("payments", names.clone());
            let values = vec![
                Some(Cow::Borrowed(event_id)),
                Some(Cow::Borrowed("c1")),
                Some(Cow::Borrowed("2.5")),
                Some(Cow::Borrowed(ts.as_str())),
            ];
            batch.push(0, offset, now.timestamp_micros(), values);
            let clean = feed.apply(&batch.take_frame().unwrap()).unwrap();
            clean.height()
        };
        assert_eq!(hand_off(0, "1"), 1);
        assert_eq!(hand_off(1, "1"), 0, "the re-delivery is left out");
        assert_eq!(hand_off(2, "2"), 1);
        let tiles = online.live_tiles("customer_payments").unwrap();
        assert_eq!(tiles.stats().applied.load(Ordering::Relaxed), 2);
        assert_eq!(stats.repeats.load(Ordering::Relaxed), 1);
    }
}
