//! Push ingestion: rows for a feature view, validated against its schema,
//! written to the online store, to the view's gold Delta table, or both.
//!
//! The wire formats (Feast's JSON body over HTTP, Arrow record batches over
//! Flight `DoPut`) are parsed at the edges into [`PushRow`]s with
//! [`coerce`] and [`check_columns`]; everything after that is shared here.
//! Offline writes go through one group-commit [`PushWriter`] per server, so
//! concurrent pushes share Delta commits instead of making one commit per
//! request. The offline commit happens before the online write: when it
//! fails, nothing went online either.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::metrics::{FRESHNESS_BUCKETS, Histogram};
use crate::online::{FeatureValue, OnlineRow, OnlineStore, entity_key};
use crate::schema::FeatureView;
use delta::{CommitLineage, DeltaStore, WriteOptions};

/// The most rows one push may carry.
pub const MAX_PUSH_ROWS: usize = 100_000;

/// Where pushed rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PushTo {
    /// The online store only.
    #[default]
    Online,
    /// The gold Delta table only.
    Offline,
    /// Both.
    OnlineAndOffline,
}

/// One part of an entity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    /// An integer key.
    Int(i64),
    /// A string key.
    Str(String),
}

impl KeyValue {
    /// A string key value for join key `key`, refused (naming the key) when
    /// longer than [`crate::online::MAX_KEY_BYTES`].
    pub fn text(key: &str, value: &str) -> Result<KeyValue, String> {
        if value.len() > crate::online::MAX_KEY_BYTES {
            return Err(format!(
                "{key}: a key of {} bytes; the limit is {} bytes",
                value.len(),
                crate::online::MAX_KEY_BYTES
            ));
        }
        Ok(KeyValue::Str(value.to_string()))
    }

    /// The key part as the online store spells it.
    pub fn as_key_part(&self) -> String {
        match self {
            KeyValue::Int(v) => v.to_string(),
            KeyValue::Str(s) => s.clone(),
        }
    }
}

/// One validated row.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRow {
    /// The join-key values, in the entity's key order.
    pub keys: Vec<KeyValue>,
    /// The event time, microseconds since the epoch.
    pub event_micros: i64,
    /// The created time, microseconds since the epoch.
    pub created_micros: i64,
    /// The feature values, in the view's feature order, typed as declared.
    pub values: Vec<FeatureValue>,
}

/// A row that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The row index in the request.
    pub row: usize,
    /// What is wrong, naming the column.
    pub reason: String,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// Rows accepted.
    pub accepted: usize,
    /// Rows written online (a row older than the stored one is not).
    pub online_written: usize,
    /// The gold table version the rows were committed in, when written
    /// offline.
    pub offline_version: Option<u64>,
    /// Rows rejected, with reasons (only when partial pushes are allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedRow>,
}

/// Checks a push's column names against the view: every join key, the
/// event timestamp and every feature must be present; the created
/// timestamp may be; nothing else may.
pub fn check_columns<'a>(
    view: &FeatureView,
    columns: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let invalid = |message: String| Error::InvalidPush {
        view: view.name.clone(),
        message,
    };
    if view.request_windows.is_some() {
        // Its windows are valued at each read from the source's events: a
        // pushed window value would never be served.
        return Err(invalid(
            "the view values its windows at the read from its source's events (windows_at = \"request\"), so pushed feature rows would never be served; land the events in its source, or declare windows_at = \"event\" to serve pushed rows".into(),
        ));
    }
    let columns: Vec<&str> = columns.into_iter().collect();
    let mut required: Vec<&str> = view.entity.join_keys.iter().map(String::as_str).collect();
    required.push(&view.timestamp_column);
    required.extend(view.features.iter().map(String::as_str));
    if let Some(missing) = required.iter().find(|c| !columns.contains(c)) {
        return Err(invalid(format!("the push has no column {missing:?}")));
    }
    if let Some(extra) = columns
        .iter()
        .find(|c| !required.contains(c) && **c != view.created_column)
    {
        return Err(invalid(format!("the view has no column {extra:?}")));
    }
    Ok(())
}

/// Converts a pushed value of `feature` to the view's declared type
/// (`float64`, `int64`, `bool`, `string`, `categorical`, `decimal(p,s)`;
/// an empty type accepts any scalar). Integers widen to floats; nothing
/// else is converted.
pub fn coerce(feature: &str, declared: &str, value: FeatureValue) -> Result<FeatureValue, String> {
    let float = declared.is_empty() || declared == "float64" || declared.starts_with("decimal");
    Ok(match (declared, value) {
        (_, FeatureValue::Null) => FeatureValue::Null,
        (_, FeatureValue::Int(v)) if float => FeatureValue::Float(v as f64),
        (_, FeatureValue::Float(v)) if float => FeatureValue::Float(v),
        ("int64" | "", FeatureValue::Int(v)) => FeatureValue::Int(v),
        ("bool" | "", FeatureValue::Bool(v)) => FeatureValue::Bool(v),
        ("string" | "categorical" | "", FeatureValue::Str(s)) => FeatureValue::Str(s),
        (_, other) => {
            let shown = serde_json::to_string(&other).unwrap_or_default();
            return Err(format!("{feature}: {shown} is not of type {declared}"));
        }
    })
}

/// The earliest event time a push accepts: 0001-01-01T00:00:00Z.
pub const MIN_EVENT_MICROS: i64 = -62_135_596_800_000_000;
/// The latest event time a push accepts: 9999-12-31T23:59:59.999999Z.
pub const MAX_EVENT_MICROS: i64 = 253_402_300_799_999_999;

/// A time as clients write it, in microseconds since the epoch: RFC 3339,
/// or ISO 8601 without an offset (taken as UTC), as Python's `isoformat()`
/// of a naive time and Feast's SDK write them.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

/// How far ahead of the server's clock a pushed event time may be by
/// default (clocks differ a little; an event time far in the future would
/// pin an entity's online row until then).
pub const DEFAULT_MAX_FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// Checks a pushed event time of `column`: within years 1 to 9999 and no
/// later than `latest` (microseconds; see [`Pusher::latest_event_micros`]).
pub fn check_time(column: &str, micros: i64, latest: i64) -> Result<i64, String> {
    if !(MIN_EVENT_MICROS..=MAX_EVENT_MICROS).contains(&micros) {
        return Err(format!(
            "{column}: {micros} µs since the epoch is outside years 1 to 9999"
        ));
    }
    if micros > latest {
        let shown = chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_else(|| micros.to_string());
        return Err(format!(
            "{column}: {shown} is {:.0} s ahead of the server's clock, more than the {} s it \
             accepts (--max-future-skew-secs)",
            (micros - now_micros()) as f64 / 1e6,
            (latest - now_micros() + 500_000) / 1_000_000
        ));
    }
    Ok(micros)
}

fn default_skew() -> std::sync::atomic::AtomicI64 {
    std::sync::atomic::AtomicI64::new(DEFAULT_MAX_FUTURE_SKEW.as_micros() as i64)
}

/// Counters of pushed rows, shared by every edge that pushes.
#[derive(Debug)]
pub struct PushStats {
    /// Rows accepted.
    pub accepted: AtomicU64,
    /// Rows rejected.
    pub rejected: AtomicU64,
    /// Event time → visible online, per row written online.
    pub freshness_seconds: Histogram,
}

impl Default for PushStats {
    fn default() -> Self {
        PushStats {
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            freshness_seconds: Histogram::new(FRESHNESS_BUCKETS),
        }
    }
}

/// Applies validated pushes to the online store and, through a
/// group-commit writer, to the gold tables.
#[derive(Debug)]
pub struct Pusher {
    online: Arc<OnlineStore>,
    writer: Option<PushWriter>,
    stats: PushStats,
    /// How far ahead of now an event time may be, in microseconds.
    max_future_skew_micros: std::sync::atomic::AtomicI64,
}

impl Pusher {
    /// A pusher into `online` only (offline pushes are refused).
    pub fn online_only(online: Arc<OnlineStore>) -> Self {
        Pusher {
            online,
            writer: None,
            stats: PushStats::default(),
            max_future_skew_micros: default_skew(),
        }
    }

    /// A pusher into `online` and the gold tables of `store`. Starts the
    /// writer task, so it must be called inside a tokio runtime.
    pub fn with_offline(online: Arc<OnlineStore>, store: DeltaStore) -> Self {
        Pusher {
            online,
            writer: Some(PushWriter::start(store)),
            stats: PushStats::default(),
            max_future_skew_micros: default_skew(),
        }
    }

    /// Sets how far ahead of the server's clock a pushed event time may be
    /// (default [`DEFAULT_MAX_FUTURE_SKEW`]).
    pub fn set_max_future_skew(&self, skew: std::time::Duration) {
        let micros = i64::try_from(skew.as_micros()).unwrap_or(i64::MAX);
        self.max_future_skew_micros.store(micros, Ordering::Relaxed);
    }

    /// The latest event time a push accepts now, in microseconds.
    pub fn latest_event_micros(&self) -> i64 {
        now_micros().saturating_add(self.max_future_skew_micros.load(Ordering::Relaxed))
    }

    /// The push counters.
    pub fn stats(&self) -> &PushStats {
        &self.stats
    }

    /// Counts `rows` rejected before they reached [`Pusher::apply`] (a
    /// whole batch refused for one bad row).
    pub fn count_rejected(&self, rows: usize) {
        self.stats
            .rejected
            .fetch_add(count(rows), Ordering::Relaxed);
    }

    /// Applies `rows` of `view` (already validated) to `to`; `rejected`
    /// are the request's rows refused by validation, reported back.
    pub async fn apply(
        &self,
        view: &FeatureView,
        rows: Vec<PushRow>,
        rejected: Vec<RejectedRow>,
        to: PushTo,
    ) -> Result<PushOutcome> {
        self.count_rejected(rejected.len());
        // A push to both stores needs the shared tier: refused before the
        // gold commit rather than committed offline and failed online (a
        // retry would then commit its rows to gold again).
        if matches!(to, PushTo::OnlineAndOffline)
            && let Some(tier) = self.online.tier()
            && !tier.is_ready()
        {
            return Err(Error::OnlineTier {
                message: format!(
                    "{} is unavailable; nothing of this push was applied",
                    tier.shown()
                ),
            });
        }
        let mut offline_version = None;
        if matches!(to, PushTo::Offline | PushTo::OnlineAndOffline) && !rows.is_empty() {
            let writer = self.writer.as_ref().ok_or_else(|| Error::NoOfflineStore {
                view: view.name.clone(),
            })?;
            let frame = rows_frame(view, &rows)?;
            offline_version = Some(writer.append(view.name.clone(), frame).await?);
        }
        let accepted = rows.len();
        let mut online_written = 0;
        if matches!(to, PushTo::Online | PushTo::OnlineAndOffline) {
            let mut online_rows = Vec::with_capacity(rows.len());
            for row in rows {
                let key = match row.keys.as_slice() {
                    [single] => single.as_key_part(),
                    keys => entity_key(&keys.iter().map(KeyValue::as_key_part).collect::<Vec<_>>()),
                };
                online_rows.push((
                    key,
                    OnlineRow {
                        event_micros: row.event_micros,
                        created_micros: row.created_micros,
                        values: row.values.into_boxed_slice(),
                    },
                ));
            }
            let event_times: Vec<i64> = online_rows.iter().map(|(_, r)| r.event_micros).collect();
            // With a shared tier this returns once the tier holds the rows:
            // the push is acknowledged only then.
            online_written = self.online.write(&view.name, online_rows).await?;
            let now = now_micros();
            for event_micros in event_times {
                self.stats
                    .freshness_seconds
                    .observe(now.saturating_sub(event_micros) as f64 / 1e6);
            }
        }
        self.stats
            .accepted
            .fetch_add(count(accepted), Ordering::Relaxed);
        Ok(PushOutcome {
            accepted,
            online_written,
            offline_version,
            rejected,
        })
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The current time, microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The rows as a frame in the gold table's layout.
fn rows_frame(view: &FeatureView, rows: &[PushRow]) -> Result<DataFrame> {
    let failed = |source: PolarsError| Error::Polars {
        context: format!("building pushed rows of {}", view.name),
        source,
    };
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let mut columns: Vec<Column> = Vec::new();
    for (k, key) in view.entity.join_keys.iter().enumerate() {
        let all_int = rows.iter().all(|r| matches!(r.keys[k], KeyValue::Int(_)));
        columns.push(if all_int {
            let values: Vec<i64> = rows
                .iter()
                .map(|r| match r.keys[k] {
                    KeyValue::Int(v) => v,
                    KeyValue::Str(_) => 0,
                })
                .collect();
            Column::new(key.as_str().into(), values)
        } else {
            let values: Vec<String> = rows.iter().map(|r| r.keys[k].as_key_part()).collect();
            Column::new(key.as_str().into(), values)
        });
    }
    for (name, micros) in [
        (
            &view.timestamp_column,
            rows.iter().map(|r| r.event_micros).collect::<Vec<_>>(),
        ),
        (
            &view.created_column,
            rows.iter().map(|r| r.created_micros).collect(),
        ),
    ] {
        let series = Series::new(name.as_str().into(), micros);
        let column = series.cast(&utc).map_err(failed)?;
        columns.push(column.into());
    }
    for (i, feature) in view.features.iter().enumerate() {
        let values = rows.iter().map(|r| &r.values[i]);
        // Undeclared, the values decide (so a string or a boolean is not
        // written as a float).
        let inferred = || {
            let mut present = rows
                .iter()
                .map(|r| &r.values[i])
                .filter(|v| **v != FeatureValue::Null);
            match present.next() {
                Some(FeatureValue::Str(_)) => "string",
                Some(FeatureValue::Bool(_)) => "bool",
                Some(FeatureValue::Int(_))
                    if present.all(|v| matches!(v, FeatureValue::Int(_))) =>
                {
                    "int64"
                }
                _ => "float64",
            }
        };
        let declared = match view.feature_types.get(i).map(String::as_str) {
            Some(declared) if !declared.is_empty() => declared,
            _ => inferred(),
        };
        let name: PlSmallStr = feature.as_str().into();
        columns.push(match declared {
            "int64" => Column::new(
                name,
                values
                    .map(|v| match v {
                        FeatureValue::Int(x) => Some(*x),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            "string" | "categorical" => Column::new(
                name,
                values
                    .map(|v| match v {
                        FeatureValue::Str(s) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            "bool" => Column::new(
                name,
                values
                    .map(|v| match v {
                        FeatureValue::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => Column::new(name, values.map(FeatureValue::as_f64).collect::<Vec<_>>()),
        });
    }
    DataFrame::new_infer_height(columns).map_err(failed)
}

/// Where a queued push's commit result goes.
type Reply = oneshot::Sender<Result<u64, String>>;
/// A queued push: view, rows, reply.
type Pending = (String, DataFrame, Reply);

/// Appends pushed rows to gold tables in group commits: requests that
/// arrive while a commit is being written share the next one.
#[derive(Debug, Clone)]
pub struct PushWriter {
    sender: mpsc::Sender<Pending>,
}

impl PushWriter {
    /// Starts the writer task over `store` (inside a tokio runtime).
    pub fn start(store: DeltaStore) -> Self {
        let (sender, receiver) = mpsc::channel::<Pending>(1024);
        tokio::spawn(write_batches(store, receiver));
        PushWriter { sender }
    }

    /// Appends `frame` to view `view`'s gold table and returns the version
    /// that holds it.
    pub async fn append(&self, view: String, frame: DataFrame) -> Result<u64> {
        let stopped = || Error::Internal("the push writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((view.clone(), frame, reply))
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|message| Error::OfflineWrite { view, message })
    }
}

async fn write_batches(store: DeltaStore, mut receiver: mpsc::Receiver<Pending>) {
    while let Some(first) = receiver.recv().await {
        // Whatever else arrives while the first waits joins this commit.
        let mut batch = vec![first];
        tokio::time::sleep(Duration::from_millis(2)).await;
        while let Ok(next) = receiver.try_recv() {
            batch.push(next);
        }
        // Frames are grouped by view and by schema: a push whose columns do
        // not stack with another's (a string key where others sent integers)
        // fails alone instead of failing the whole group.
        let mut by_view: BTreeMap<(String, String), Vec<(DataFrame, Reply)>> = BTreeMap::new();
        for (view, frame, reply) in batch {
            let shape = format!("{:?}", frame.schema());
            by_view
                .entry((view, shape))
                .or_default()
                .push((frame, reply));
        }
        for ((view, _), parts) in by_view {
            let mut frames = parts.iter().map(|(f, _)| f.clone());
            let mut all = frames.next().unwrap_or_default();
            let mut result: Result<u64, String> = Ok(0);
            for f in frames {
                if let Err(e) = all.vstack_mut(&f) {
                    result = Err(format!("stacking pushed rows: {e}"));
                }
            }
            if result.is_ok() {
                let lineage = CommitLineage {
                    operation: "push".into(),
                    ..CommitLineage::default()
                };
                result = store
                    .write(&view, &all, &WriteOptions::append(), &lineage)
                    .await
                    .map_err(|e| e.to_string());
            }
            for (_, reply) in parts {
                let _ = reply.send(result.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_widens_integers_and_names_the_feature_on_mismatch() {
        assert_eq!(
            coerce("x", "float64", FeatureValue::Int(3)),
            Ok(FeatureValue::Float(3.0))
        );
        assert_eq!(
            coerce("x", "int64", FeatureValue::Int(3)),
            Ok(FeatureValue::Int(3))
        );
        assert_eq!(
            coerce("x", "int64", FeatureValue::Null),
            Ok(FeatureValue::Null)
        );
        let err = coerce("x", "int64", FeatureValue::Float(1.5)).unwrap_err();
        assert_eq!(err, "x: 1.5 is not of type int64");
        let err = coerce("flag", "bool", FeatureValue::Str("yes".into())).unwrap_err();
        assert_eq!(err, "flag: \"yes\" is not of type bool");
    }

    #[test]
    fn string_keys_are_bounded_and_refusals_do_not_echo_them() {
        let limit = crate::online::MAX_KEY_BYTES;
        assert_eq!(
            KeyValue::text("customer_id", &"k".repeat(limit)),
            Ok(KeyValue::Str("k".repeat(limit)))
        );
        let err = KeyValue::text("customer_id", &"k".repeat(limit + 1)).unwrap_err();
        assert!(
            err.starts_with("customer_id:") && err.contains("1024 bytes"),
            "{err}"
        );
        assert!(!err.contains("kkkk"), "{err}");
        let huge = serde_json::Value::String("k".repeat(10_000));
        assert_eq!(crate::online::key_part(&huge), None);
        assert!(crate::online::shown_key(&huge).len() < 100);
    }
}
