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
//!
//! **With a shared online tier** (Redis), the cleaned events do not go
//! straight into this replica's tiles: each hand-off is appended to the
//! tier's events feed ([`feature_store::online::shared::SharedTier::publish_events`]),
//! and every replica, this one included, follows the feed
//! ([`TilesFeed::follow`]) and applies its entries in the feed's order. So
//! the replicas' tiles hold the same events whichever replica consumed
//! them, and several streaming replicas of one consumer group each add
//! their partitions' share. A follower applies each partition offset once:
//! offsets below what bronze held when it caught up, or below one it
//! applied, are left out (a re-read after a rebalance or a replica's crash
//! publishes them again), and so are re-deliveries of a record
//! (`dedup_key`), as before.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feature_store::OnlineStore;
use feature_store::online::EventsFrom;
use feature_store::online::shared::{SharedTier, feed_id_order};
use feature_store::pipeline::bronze::{SOURCE_FILE, SOURCE_ROW};
use feature_store::pipeline::silver::{self, BatchContext};
use feature_store::project::{Project, Source};
use polars::prelude::{DataFrame, IpcReader, IpcWriter, SerReader, SerWriter};

use delta::DeltaStore;

use crate::consumer::ReceivedHook;
use crate::error::{Error, Result};
use crate::stats::StreamStats;

/// Hand-offs waiting for the feed's thread before the consumer waits.
pub const QUEUED_BATCHES: usize = 64;

/// Sees the clean rows of each batch the feed applied.
pub type CleanHook = Arc<dyn Fn(&DataFrame) + Send + Sync>;

/// Events feed entries a follower reads at once.
const FEED_PAGE: usize = 64;

/// How long a follower waits for a wake-up before it reads the feed
/// anyway (a wake-up lost with a dropped subscription delays by this).
const FEED_POLL: Duration = Duration::from_millis(100);

/// How often a follower asks Redis whether the feed was trimmed past
/// what it read (and after every error reading it).
const GAP_CHECK: Duration = Duration::from_secs(30);

/// How long a consumer keeps trying to append a hand-off to the events
/// feed (holding its commit back) before applying it locally only.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(2);

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
    /// The runtime a hand-off is published on (the feed's thread is not
    /// one of its workers); `None` outside one.
    runtime: Option<tokio::runtime::Handle>,
    /// Following the events feed: which partition offsets are in the
    /// tiles.
    next_offsets: Mutex<Marks>,
    /// The bronze table and version the tiles were caught up to: a
    /// partition's offsets below what bronze held there are in the tiles.
    caught_up: Mutex<Option<(DeltaStore, u64)>>,
}

/// Which partition offsets a follower's tiles hold (beyond what was in
/// silver and bronze when it started).
#[derive(Debug, Default)]
struct Marks {
    /// Per partition (bronze's `_source_file`, `topic/partition`), the
    /// next offset the feed has not brought.
    next: HashMap<String, i64>,
    /// Offsets at or past their partition's mark applied without the
    /// feed (it did not take them): the feed may still bring them, or
    /// bring entries below them that were not read yet.
    local: std::collections::HashSet<(String, i64)>,
}

/// How the rows [`TilesFeed::unapplied_offsets`] keeps are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Read from the events feed, in its order.
    FromFeed,
    /// Applied locally because the feed did not take them.
    LocalOnly,
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
            runtime: tokio::runtime::Handle::try_current().ok(),
            next_offsets: Mutex::new(Marks::default()),
            caught_up: Mutex::new(None),
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
        // One bronze version for every view, recorded: a follower of the
        // events feed leaves out the offsets bronze held there.
        let Some(to) = store.latest_version(&bronze).await? else {
            return Ok(0);
        };
        if let Ok(mut caught_up) = self.caught_up.lock() {
            *caught_up = Some((store.clone(), to));
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
            let (files, version) = store.files_added(&bronze, mark, Some(to)).await?;
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
    /// With a shared tier this is the fallback for events the feed could
    /// not take: partition offsets the follower applied are left out.
    pub fn apply(&self, bronze: &DataFrame) -> Option<DataFrame> {
        if self.views.is_empty() {
            return None;
        }
        let clean = self.clean(bronze)?;
        let clean = match self.online.tier() {
            Some(_) => match self.unapplied_offsets(clean, Applied::LocalOnly) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(source = %self.source.name, error = %e, "events the shared feed could not take are not applied either; the next materialize brings them to the tiles");
                    return None;
                }
            },
            None => clean,
        };
        Some(self.apply_clean(&self.views, clean, EventsFrom::Stream))
    }

    /// Cleans bronze rows by the source's silver rules (`None`, logged,
    /// when that fails).
    fn clean(&self, bronze: &DataFrame) -> Option<DataFrame> {
        let ctx = BatchContext {
            run_id: self.run_id.clone(),
            bronze_version: 0,
            now_micros: chrono::Utc::now().timestamp_micros(),
        };
        match silver::process(bronze.clone(), &self.source, &self.dimensions, &ctx) {
            Ok(batch) => Some(batch.clean),
            Err(e) => {
                tracing::warn!(source = %self.source.name, error = %e, "cleaning received events for the window tiles");
                None
            }
        }
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
        let clean = self.clean(bronze)?;
        Some(self.apply_clean(views, clean, from))
    }

    /// Adds clean rows (but re-deliveries) to `views`' tiles; returns
    /// those added.
    fn apply_clean(&self, views: &[String], clean: DataFrame, from: EventsFrom) -> DataFrame {
        let now = chrono::Utc::now().timestamp_micros();
        let clean = self.first_deliveries(clean, now);
        for view in views {
            if let Err(e) = self.online.apply_events(view, &clean, now, from) {
                tracing::warn!(source = %self.source.name, view, error = %e, "applying received events to window tiles");
            }
        }
        clean
    }

    /// Appends a hand-off of received events (bronze's rows, before their
    /// commit) to the shared tier's events feed, trying for about
    /// [`PUBLISH_PATIENCE`] while Redis does not answer; returns whether
    /// the feed took them. Called on the consumer's thread, before the
    /// commit of these events: whatever lands in bronze was published,
    /// or failed to be and was applied here.
    fn publish(
        &self,
        tier: &SharedTier,
        runtime: &tokio::runtime::Handle,
        bronze: &DataFrame,
    ) -> bool {
        let mut payload = Vec::new();
        if let Err(e) = IpcWriter::new(&mut payload).finish(&mut bronze.clone()) {
            tracing::warn!(source = %self.source.name, error = %e, "encoding received events for the shared events feed");
            return false;
        }
        let mut pause = Duration::from_millis(50);
        let deadline = std::time::Instant::now() + PUBLISH_PATIENCE;
        loop {
            // While the tier is known to be down (its health check), the
            // consumer is not held up: the hand-off goes local at once.
            let outcome = match tier.is_ready() {
                true => runtime.block_on(tier.publish_events(&self.source.name, &payload)),
                false => Err(feature_store::Error::OnlineTier {
                    message: format!("the online tier at {} is not ready", tier.shown()),
                }),
            };
            match outcome {
                Ok(_) => return true,
                Err(e) if std::time::Instant::now() >= deadline || !tier.is_ready() => {
                    tier.stats()
                        .events_unpublished
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %self.source.name, error = %e, "the shared events feed did not take {} received events; applied to this replica's window tiles only (the others get them from silver at the next materialize)", bronze.height());
                    return false;
                }
                Err(_) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Follows the shared tier's events feed of the source until `stop`:
    /// every entry, whichever replica appended it, is cleaned by the
    /// source's silver rules and applied to the tiles in the feed's order,
    /// each partition offset once. Starts at the oldest entry retained;
    /// run it after [`TilesFeed::catch_up`], whose bronze version tells
    /// which offsets the tiles hold already. Redis unreachable: retried
    /// with backoff (the tier reports not-ready meanwhile); entries
    /// trimmed before they were read are counted and warned about.
    pub async fn follow(self: Arc<Self>, stop: Arc<AtomicBool>) {
        let Some(tier) = self.online.tier().cloned() else {
            return;
        };
        let mut wake_ups = tier.feed_wake_ups();
        let mut after: Option<String> = None;
        let mut failing = false;
        let mut backoff = Duration::from_millis(50);
        let mut gap_checked = std::time::Instant::now();
        // Applying an entry that fails (bronze's offsets unreadable) is
        // retried with a backoff of its own, which reads that succeed do
        // not reset, and said once per run of failures.
        let mut apply_backoff = Duration::from_millis(50);
        let mut apply_failing = false;
        while !stop.load(Ordering::Relaxed) {
            wake_ups.borrow_and_update();
            let read = tier
                .read_events(&self.source.name, after.as_deref(), FEED_PAGE)
                .await;
            let entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    if !failing {
                        tracing::warn!(source = %self.source.name, error = %e, "reading the shared events feed; retrying");
                    }
                    failing = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if std::mem::take(&mut failing) || gap_checked.elapsed() > GAP_CHECK {
                backoff = Duration::from_millis(50);
                gap_checked = std::time::Instant::now();
                self.check_gap(&tier, after.as_deref()).await;
            }
            let full = entries.len() == FEED_PAGE;
            let mut stalled = false;
            for entry in entries {
                let applied = tokio::task::block_in_place(|| self.apply_entry(&entry.payload));
                if let Err(e) = applied {
                    // Read again from the same entry: nothing of it was
                    // applied.
                    if !apply_failing {
                        tracing::warn!(source = %self.source.name, error = %e, "applying an events feed entry; retrying until it applies (this replica's windows wait meanwhile)");
                    }
                    apply_failing = true;
                    stalled = true;
                    tokio::time::sleep(apply_backoff).await;
                    apply_backoff = (apply_backoff * 2).min(Duration::from_secs(5));
                    break;
                }
                if std::mem::take(&mut apply_failing) {
                    apply_backoff = Duration::from_millis(50);
                    tracing::info!(source = %self.source.name, "events feed entries apply again");
                }
                after = Some(entry.id);
            }
            if !full && !stalled {
                let _ = tokio::time::timeout(FEED_POLL, wake_ups.changed()).await;
            }
        }
    }

    /// Whether Redis trimmed an entry of the feed newer than `after` (the
    /// last one read): its events are missing from the tiles.
    async fn check_gap(&self, tier: &SharedTier, after: Option<&str>) {
        let Some(after) = after else { return };
        let Ok(Some(deleted)) = tier.newest_trimmed_event_id(&self.source.name).await else {
            return;
        };
        if feed_id_order(&deleted) > feed_id_order(after) {
            tier.stats().feed_gaps.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %self.source.name, read_to = after, trimmed_to = %deleted, "the shared events feed was trimmed past what this replica had read: its window tiles miss those events until the next materialize or restart");
        }
    }

    /// Applies one feed entry (an Arrow IPC file of received bronze rows):
    /// cleaned, then the offsets not yet applied. An entry that does not
    /// decode is counted and left out; an error reading bronze's offsets
    /// applies nothing (the caller tries again).
    fn apply_entry(&self, payload: &[u8]) -> std::result::Result<(), String> {
        let bronze = match IpcReader::new(std::io::Cursor::new(payload)).finish() {
            Ok(bronze) => bronze,
            Err(e) => {
                if let Some(tier) = self.online.tier() {
                    tier.stats().decode_errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(source = %self.source.name, error = %e, "an events feed entry does not decode (written by another version?); left out");
                return Ok(());
            }
        };
        let Some(clean) = self.clean(&bronze) else {
            return Ok(());
        };
        let fresh = self.unapplied_offsets(clean, Applied::FromFeed)?;
        if fresh.height() > 0 {
            self.apply_clean(&self.views, fresh, EventsFrom::Stream);
        }
        Ok(())
    }

    /// `clean` without the rows whose partition offset is in the tiles
    /// already: below what bronze held at the version caught up to, below
    /// one the feed brought before this call (counted as repeats), or
    /// one applied locally because the feed did not take it. Offsets
    /// within one call may come in any order (silver orders rows by event
    /// time). Offsets from the feed move the partition's mark; offsets
    /// applied locally are remembered apart, so that feed entries still
    /// unread below them are not taken for repeats. Fails, changing
    /// nothing, when bronze's offsets cannot be read.
    fn unapplied_offsets(
        &self,
        clean: DataFrame,
        applied: Applied,
    ) -> std::result::Result<DataFrame, String> {
        let (Ok(files), Ok(offsets)) = (
            clean.column(SOURCE_FILE).and_then(|c| c.str().cloned()),
            clean.column(SOURCE_ROW).and_then(|c| c.i64().cloned()),
        ) else {
            return Ok(clean);
        };
        let Ok(mut marks) = self.next_offsets.lock() else {
            return Ok(clean);
        };
        let Marks { next, local } = &mut *marks;
        // Partitions met for the first time start where bronze was.
        for file in files.iter().flatten() {
            if !next.contains_key(file) {
                let in_bronze = self.next_in_bronze(file)?;
                next.insert(file.to_string(), in_bronze);
            }
        }
        let base = next.clone();
        let mut keep = Vec::with_capacity(clean.height());
        let mut repeats = 0u64;
        for (file, offset) in files.iter().zip(offsets.iter()) {
            let (Some(file), Some(offset)) = (file, offset) else {
                keep.push(true);
                continue;
            };
            let first = base.get(file).is_none_or(|from| offset >= *from)
                && (local.is_empty() || !local.contains(&(file.to_string(), offset)));
            if first {
                match applied {
                    Applied::FromFeed => {
                        if let Some(next_offset) = next.get_mut(file) {
                            *next_offset = (*next_offset).max(offset + 1);
                        }
                    }
                    Applied::LocalOnly => {
                        local.insert((file.to_string(), offset));
                    }
                }
            }
            repeats += u64::from(!first);
            keep.push(first);
        }
        // What the feed's mark has passed needs no remembering.
        if !local.is_empty() {
            local.retain(|(file, offset)| next.get(file).is_none_or(|n| offset >= n));
        }
        drop(marks);
        if repeats == 0 {
            return Ok(clean);
        }
        StreamStats::add(&self.stats.repeats, repeats);
        let mask: polars::prelude::BooleanChunked = keep.iter().copied().collect();
        Ok(clean.filter(&mask).unwrap_or(clean))
    }

    /// The next offset bronze held of partition `file` (`topic/partition`)
    /// at the version the tiles were caught up to (0: none caught up, or
    /// the partition had landed nothing then).
    fn next_in_bronze(&self, file: &str) -> std::result::Result<i64, String> {
        let caught_up = self.caught_up.lock().ok().and_then(|c| c.clone());
        let (Some((store, version)), Some(runtime)) = (caught_up, &self.runtime) else {
            return Ok(0);
        };
        let Some((topic, partition)) = file
            .rsplit_once('/')
            .and_then(|(t, p)| Some((t, p.parse::<i32>().ok()?)))
        else {
            return Ok(0);
        };
        let id = crate::consumer::offset_app_id(topic, partition);
        let versions = runtime
            .block_on(store.transaction_versions_at(
                &self.source.bronze_table(),
                &[id],
                Some(version),
            ))
            .map_err(|e| format!("reading bronze's offset of partition {file}: {e}"))?;
        Ok(versions.first().copied().flatten().unwrap_or(0))
    }

    /// The feed as a consumer's [`ReceivedHook`]: events are cleaned and
    /// applied on a thread of the feed's own, in the order received, so
    /// the consumer goes on reading meanwhile (it waits only when
    /// [`QUEUED_BATCHES`] are queued); hand-offs queued while the thread
    /// was busy are cleaned together. `on_clean` sees the clean rows once
    /// applied. The thread ends when the hook is dropped.
    ///
    /// With a shared tier, each hand-off is appended to the tier's events
    /// feed on the consumer's thread instead, before the consumer commits
    /// it ([`TilesFeed::follow`] applies it, on every replica; `on_clean`
    /// does not see it); only a hand-off the feed did not take goes to
    /// the thread.
    pub fn hook(self: Arc<Self>, on_clean: Option<CleanHook>) -> std::io::Result<ReceivedHook> {
        let (send, receive) = std::sync::mpsc::sync_channel::<DataFrame>(QUEUED_BATCHES);
        let feed = self.clone();
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
                            tracing::warn!(source = %feed.source.name, error = %e, "joining received events");
                            feed.apply_and_tell(&received, on_clean.as_ref());
                            received = more;
                        }
                    }
                    received.rechunk_mut();
                    feed.apply_and_tell(&received, on_clean.as_ref());
                }
            })?;
        let shared = match (self.online.tier(), &self.runtime) {
            (Some(tier), Some(runtime)) if !self.views.is_empty() => {
                Some((tier.clone(), runtime.clone()))
            }
            (Some(_), None) => {
                tracing::warn!(source = %self.source.name, "the window tiles' feed was made outside the async runtime: received events reach this replica's tiles only");
                None
            }
            _ => None,
        };
        let send = std::sync::Mutex::new(send);
        Ok(ReceivedHook(Arc::new(move |bronze: &DataFrame| {
            if let Some((tier, runtime)) = &shared
                && self.publish(tier, runtime, bronze)
            {
                return;
            }
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

    /// A follower keeps each partition offset once, whatever the order of
    /// the offsets within a hand-off (silver orders rows by event time),
    /// and leaves out the offsets of a hand-off published again.
    #[test]
    fn each_partition_offset_is_kept_once_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aurum.toml"), PROJECT).unwrap();
        let project = Project::load(&dir.path().join("aurum.toml")).unwrap();
        let online = Arc::new(OnlineStore::new(1 << 26));
        let stats = Arc::new(StreamStats::default());
        let feed = TilesFeed::new(
            &project,
            &project.sources[0],
            BTreeMap::new(),
            online,
            "test",
            stats.clone(),
        );
        let rows = |files: &[&str], offsets: &[i64]| {
            DataFrame::new_infer_height(vec![
                polars::prelude::Column::new(SOURCE_FILE.into(), files.to_vec()),
                polars::prelude::Column::new(SOURCE_ROW.into(), offsets.to_vec()),
            ])
            .unwrap()
        };
        let kept = |frame: DataFrame| -> Vec<i64> {
            let kept = feed.unapplied_offsets(frame, Applied::FromFeed).unwrap();
            kept.column(SOURCE_ROW)
                .unwrap()
                .i64()
                .unwrap()
                .into_no_null_iter()
                .collect()
        };
        assert_eq!(
            kept(rows(&["p/0", "p/0", "p/0", "p/1"], &[11, 10, 12, 3])),
            vec![11, 10, 12, 3]
        );
        assert_eq!(
            kept(rows(&["p/0", "p/1", "p/0", "p/1"], &[10, 3, 13, 4])),
            vec![13, 4]
        );
        assert_eq!(stats.repeats.load(Ordering::Relaxed), 2);
        // A hand-off the feed did not take is applied locally: the feed's
        // entries still unread below it are not repeats, and the feed
        // bringing it after all (published again) is.
        let local = feed
            .unapplied_offsets(rows(&["p/0"], &[20]), Applied::LocalOnly)
            .unwrap();
        assert_eq!(local.height(), 1);
        assert_eq!(kept(rows(&["p/0", "p/0"], &[14, 15])), vec![14, 15]);
        assert_eq!(kept(rows(&["p/0", "p/0"], &[20, 21])), vec![21]);
        assert_eq!(stats.repeats.load(Ordering::Relaxed), 3);
    }
}
