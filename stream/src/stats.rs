//! What a stream consumer has done, shared with whoever reports it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one source's consumer, updated as it goes.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Events received from the brokers.
    pub consumed: AtomicU64,
    /// Events landed in bronze (committed).
    pub landed: AtomicU64,
    /// Landed events that did not decode (silver quarantines them).
    pub undecodable: AtomicU64,
    /// Events received again that bronze already held (after a restart
    /// or a rebalance), skipped.
    pub already_landed: AtomicU64,
    /// Offsets a partition skipped: the first event received after
    /// resuming at offset n was n + k (compacted or expired events,
    /// transaction markers, or a broker that skipped them), or events
    /// within a partition jumped by k + 1. Counted and warned, since bronze
    /// cannot hold what was never received.
    pub skipped_offsets: AtomicU64,
    /// Bronze commits.
    pub commits: AtomicU64,
    /// Commits refused because another consumer landed a partition first
    /// (the batch was dropped and re-read from the committed offsets).
    pub conflicts: AtomicU64,
    /// Events the window tiles' feed left out as a re-delivery of one it
    /// applied (same dedup key and event time; `aurum serve --stream`).
    pub repeats: AtomicU64,
    /// Each assigned partition's lag: the broker's high watermark minus
    /// the next offset bronze holds, as last measured.
    pub lag: Mutex<BTreeMap<i32, i64>>,
    /// When the brokers last answered (an event, or every partition's
    /// offsets), milliseconds since the epoch; 0: never.
    pub last_contact_ms: AtomicU64,
    /// Why the consumer stopped for good (an error retrying cannot fix),
    /// once it has.
    pub failed: Mutex<Option<String>>,
}

/// A snapshot of [`StreamStats`], for reports.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamReport {
    /// The source.
    pub source: String,
    /// The topic.
    pub topic: String,
    /// Events received from the brokers.
    pub consumed: u64,
    /// Events landed in bronze.
    pub landed: u64,
    /// Landed events that did not decode.
    pub undecodable: u64,
    /// Events skipped because bronze already held them.
    pub already_landed: u64,
    /// Offsets skipped between events received.
    pub skipped_offsets: u64,
    /// Bronze commits.
    pub commits: u64,
    /// Commits refused by another consumer's.
    pub conflicts: u64,
    /// Lag per partition, as last measured.
    pub lag: BTreeMap<i32, i64>,
}

impl StreamStats {
    /// A snapshot for `source`'s `topic`.
    pub fn report(&self, source: &str, topic: &str) -> StreamReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamReport {
            source: source.to_string(),
            topic: topic.to_string(),
            consumed: get(&self.consumed),
            landed: get(&self.landed),
            undecodable: get(&self.undecodable),
            already_landed: get(&self.already_landed),
            skipped_offsets: get(&self.skipped_offsets),
            commits: get(&self.commits),
            conflicts: get(&self.conflicts),
            lag: self.lag.lock().map(|l| l.clone()).unwrap_or_default(),
        }
    }

    /// Records that the brokers answered just now.
    pub(crate) fn touch(&self) {
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        self.last_contact_ms.store(now, Ordering::Relaxed);
    }

    /// Events the brokers hold that bronze does not, over every partition
    /// as last measured.
    pub fn total_lag(&self) -> i64 {
        self.lag.lock().map(|l| l.values().sum()).unwrap_or(0)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
