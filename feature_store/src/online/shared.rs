//! The shared online tier: rows in Redis (standalone or Redis Cluster), read
//! through the in-process moka store as a bounded L1 cache, so several
//! `aurum serve` replicas answer alike.
//!
//! **Keys.** Entities are spread over [`BUCKETS`] buckets by a hash of
//! their key ([`bucket_of`], fixed forever: readers compute it too), and a
//! view's rows of one bucket are one Redis hash,
//! `aurum:{<bucket>}:<namespace>:<view>:<layout>`, whose fields are the
//! entity keys. The braces make the bucket Redis Cluster's hash tag, so
//! one entity's rows of every view live in one slot. `<layout>` is a hash
//! of the view's join keys and feature list (and of this key scheme): a
//! view redefined with other features never reads rows written under the
//! old layout. Many rows per key is what makes a load fast: inserting a
//! field into a hash costs Redis a fraction of inserting a key into its
//! keyspace (BENCHMARKS.md, issue 20).
//!
//! **Values** start with 32 hex digits, the event and created times (each
//! with its sign bit flipped, so the text orders as the numbers do), then a
//! format byte and the values, each a tag byte and its bytes. Every write
//! to a live hash goes through [`MERGE_SCRIPT`], which compares those 32
//! bytes field by field on the server, in one step: the latest row wins
//! by event time then created time whichever replica or command writes,
//! exactly as in the memory store. The TTL is enforced on read, so a stale
//! row reads `OUTSIDE_MAX_AGE` as it does in memory.
//!
//! **Bulk loads** (materialize) write each bucket's rows into a staging
//! hash of their own with plain `HSET`s, then the merge script renames it
//! into place when the live hash does not exist yet (a cold load: no
//! per-row script work at all), or merges it field by field when it does.
//!
//! **Garbage**: Redis 7.0 has no expiry per hash field, so rows never
//! expire by themselves. A sweep, run about once an hour by whichever
//! replica takes its lock, deletes the rows whose TTL ended longer ago than
//! the grace ([`sweep_cutoff`]), using the TTLs every writer records.
//!
//! **Invalidation**: every write publishes the rows it wrote (hash key and
//! entity fields) on `aurum:<namespace>:invalidate`, from the merge
//! script, in the same step as the write (a load's notice, every row of
//! the bucket, is made by the client and handed to the script). Each
//! replica's subscriber drops those rows from its
//! L1. A read that raced with an invalidation (the row's stripe epoch or
//! the tier's generation moved between sending the read and caching its
//! answer) is answered but not cached. The health check publishes a
//! heartbeat every 250 ms; a subscription that hears nothing for a second
//! (or twice the command timeout) is taken for dead even if its socket
//! never closes. While the subscription or Redis is down, L1 is emptied
//! and bypassed. So a replica never serves from L1 a row another replica
//! replaced longer ago than a PUBLISH takes to arrive (milliseconds on a
//! LAN); reads go to Redis otherwise. Changes made behind aurum's back (an
//! `HDEL` by hand) publish nothing and are seen once L1 lets the row go.
//!
//! **Events feed** (request-time windows): a streaming replica appends
//! each hand-off of received events of a Kafka source to the Redis stream
//! `aurum:{events}:<namespace>:<source>` ([`SharedTier::publish_events`])
//! and wakes the others on `aurum:<namespace>:events`; every replica,
//! itself included, applies the feed's entries in the feed's order to its
//! own window tiles ([`SharedTier::read_events`]; the stream crate's
//! `TilesFeed` does both). So every replica's tiles hold the same events,
//! whichever replica consumed them. Entries are trimmed after
//! [`FEED_RETENTION_MS`].

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use super::store::{FeatureValue, OnlineRow, OnlineStore};
use crate::error::{Error, Result};
use crate::metrics::{Histogram, LATENCY_BUCKETS};

/// The environment variable the Redis URL is read from: one
/// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS), or,
/// for a cluster, several nodes separated by commas.
pub const REDIS_URL_ENV: &str = "AURUM_REDIS_URL";

/// Buckets entities are spread over (a power of two). A view of ten million
/// entities holds ~150 per bucket; one of a few thousand, one or so.
pub const BUCKETS: u32 = 65_536;

/// Rows per write pipeline on a standalone server (whole buckets are added
/// until it holds at least this many): large enough to amortize a round
/// trip, small enough that one holds Redis for about a millisecond.
const WRITE_CHUNK: usize = 256;

/// Fields per `HSET` into a staging hash.
const STAGE_FIELDS: usize = 1_000;

/// Write pipelines in flight at once on the multiplexed connection.
const WRITES_IN_FLIGHT: usize = 32;

/// How long a staging hash lives if its load dies before merging it.
const STAGE_LIFETIME_MS: u64 = 3_600_000;

/// How often one replica (whichever takes the lock first) sweeps the tier
/// for rows past their TTL's grace.
const GC_INTERVAL: Duration = Duration::from_secs(3_600);

/// How often each replica tries to take the sweep's lock.
const GC_ATTEMPT: Duration = Duration::from_secs(300);

/// Keys one sweep step visits (one script call; each key a bucket of
/// rows, so a few milliseconds of Redis's time for ~150 rows a bucket).
const GC_SCAN_COUNT: usize = 32;

/// How often the health check publishes a heartbeat on the invalidation
/// channel.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Stripes of the invalidation epochs (see [`SharedTier::stripe`]).
const STRIPES: usize = 4096;

/// Garbage collection: a row stays in Redis at least this long past the end
/// of its TTL, so it reads `OUTSIDE_MAX_AGE` (not `NOT_FOUND`) meanwhile.
const MIN_GRACE_MS: i64 = 24 * 3_600 * 1_000;

/// How long the events feed keeps an entry, milliseconds. A replica that
/// starts reads every retained entry beyond what bronze held when it
/// started, so a consumer has this long to land in bronze what it
/// published.
pub const FEED_RETENTION_MS: u64 = 600_000;

/// One entry of a source's events feed: its stream id and its payload
/// (one hand-off of cleaned events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// The Redis stream id (`<milliseconds>-<sequence>`).
    pub id: String,
    /// What the publisher appended.
    pub payload: Vec<u8>,
}

/// A feed entry id's (milliseconds, sequence), for ordering ids (`None`:
/// not an id).
pub fn feed_id_order(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The latest-wins write, on the server, into the live hash `KEYS[1]`.
///
/// With one key the rows are `ARGV` from the second on (field, value,
/// field, value, …), and those written are published on the channel
/// `ARGV[1]` in the same step, as an invalidation notice. With two, they
/// are the staging hash `KEYS[2]`'s: when the live hash does not exist it
/// is renamed into place whole (and loses the staging expiry); otherwise
/// merged and deleted; either way the notice `ARGV[2]` (every staged row)
/// is published on `ARGV[1]` in the same step. Answers how many rows were
/// written. The rows of one call name each field once (callers keep the
/// newest row per entity): the merge compares each with the stored row
/// only.
///
/// A row is written only when the stored one is not newer: the first 32
/// bytes order rows by event then created time, compared as four
/// 8-hex-digit numbers, not as strings (Lua compares strings with
/// `strcoll`, which follows the server's locale). A stored value that is
/// not aurum's (no hex header) is replaced. A live key of another type
/// (not a hash) is an error naming it, and nothing is written.
const MERGE_SCRIPT: &str = r"
local function not_newer(old, new)
  for i = 1, 25, 8 do
    local a = tonumber(string.sub(old, i, i + 7), 16)
    local b = tonumber(string.sub(new, i, i + 7), 16)
    if a == nil or b == nil then return true end
    if a ~= b then return a < b end
  end
  return true
end
local live = KEYS[1]
local kind = redis.call('TYPE', live).ok
if kind ~= 'none' and kind ~= 'hash' then
  return redis.error_reply('online tier key ' .. live .. ' holds a ' .. kind .. ', not a hash of rows')
end
local rows
local first = 1
local channel = ARGV[1]
if #KEYS == 2 then
  if kind == 'none' then
    redis.call('RENAME', KEYS[2], live)
    redis.call('PERSIST', live)
    redis.call('PUBLISH', channel, ARGV[2])
    return redis.call('HLEN', live)
  end
  rows = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[2])
else
  rows = ARGV
  first = 2
end
local written = {}
for start = first, #rows, 2000 do
  local stop = math.min(start + 1999, #rows)
  local fields = {}
  for j = start, stop, 2 do fields[#fields + 1] = rows[j] end
  local old = redis.call('HMGET', live, unpack(fields))
  local winners = {}
  for i = 1, #fields do
    local value = rows[start + 2 * i - 1]
    local stored = old[i]
    if not stored or string.len(stored) < 32 or not_newer(stored, value) then
      winners[#winners + 1] = fields[i]
      winners[#winners + 1] = value
      written[#written + 1] = string.len(fields[i]) .. ':' .. fields[i]
    end
  end
  if #winners > 0 then
    redis.call('HSET', live, unpack(winners))
  end
end
if #KEYS == 2 then
  redis.call('PUBLISH', channel, ARGV[2])
elseif #written > 0 then
  redis.call('PUBLISH', channel, string.len(live) .. ':' .. live .. #written .. ':' .. table.concat(written))
end
return #written
";

/// Raises a view's recorded materialized version (never lowers it).
const VERSION_SCRIPT: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
";

/// One step of the garbage sweep, on one node: `SCAN` from cursor
/// `ARGV[1]` (`COUNT` `ARGV[2]`, `MATCH` `ARGV[3]`). In each hash of this
/// namespace (`ARGV[4]`) whose `<view>:<layout>` is listed (pairs from
/// `ARGV[6]`: the suffix, a cutoff as 16 hex digits ordered as the value
/// headers' event times), the rows whose event time is before the cutoff
/// are deleted, and published on `ARGV[5]` as a write's are. Answers the
/// next cursor and the number of rows deleted. Staging hashes (one more
/// `:`-part) and other types are left alone.
const SWEEP_SCRIPT: &str = r"
local function older(head, cutoff)
  for i = 1, 9, 8 do
    local a = tonumber(string.sub(head, i, i + 7), 16)
    local b = tonumber(string.sub(cutoff, i, i + 7), 16)
    if a == nil or b == nil then return false end
    if a ~= b then return a < b end
  end
  return false
end
local views = {}
for i = 6, #ARGV, 2 do views[ARGV[i]] = ARGV[i + 1] end
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3], 'COUNT', ARGV[2])
local deleted = 0
local notice = {}
for _, key in ipairs(step[2]) do
  local suffix = string.match(key, ':([^:]*:[^:]*)$')
  local cutoff = suffix and views[suffix]
  local tail = suffix and ('}:' .. ARGV[4] .. ':' .. suffix)
  if cutoff and string.sub(key, -string.len(tail)) == tail
      and redis.call('TYPE', key).ok == 'hash' then
    local gone = {}
    local cursor = '0'
    repeat
      local page = redis.call('HSCAN', key, cursor, 'COUNT', 256)
      cursor = page[1]
      local items = page[2]
      for j = 1, #items, 2 do
        if older(items[j + 1], cutoff) then gone[#gone + 1] = items[j] end
      end
    until cursor == '0'
    if #gone > 0 then
      for j = 1, #gone, 1000 do
        deleted = deleted + redis.call('HDEL', key, unpack(gone, j, math.min(j + 999, #gone)))
      end
      notice[#notice + 1] = string.len(key) .. ':' .. key .. #gone .. ':'
      for _, field in ipairs(gone) do
        notice[#notice + 1] = string.len(field) .. ':' .. field
      end
    end
  end
end
if #notice > 0 then
  redis.call('PUBLISH', ARGV[5], table.concat(notice))
end
return {step[1], deleted}
";

/// A row as the tier writes it: its bucket ([`bucket_of`] of the entity),
/// the entity key (the hash field) and the encoded value.
pub(crate) type TierRow<'a> = (u32, &'a str, &'a [u8]);

/// The bucket of an entity key: FNV-1a (64-bit) of its bytes, folded, modulo
/// [`BUCKETS`]. Written down here rather than taken from a hashing crate,
/// because every replica and version must agree on it for good.
pub fn bucket_of(entity: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in entity.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash ^ (hash >> 32)) as u32) & (BUCKETS - 1)
}

/// How to reach the shared tier.
#[derive(Clone, PartialEq, Eq)]
pub struct TierOptions {
    /// Node URLs: one for a standalone server; any of a cluster's nodes.
    pub urls: Vec<String>,
    /// Whether the nodes form a Redis Cluster.
    pub cluster: bool,
    /// Keeps projects sharing one Redis apart (the project's name).
    pub namespace: String,
    /// The longest a connection attempt or a command may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for TierOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierOptions")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl TierOptions {
    /// Options with the URL(s) from [`REDIS_URL_ENV`].
    pub fn from_env(cluster: bool, namespace: &str, timeout: Duration) -> Result<Self> {
        let value = std::env::var(REDIS_URL_ENV).map_err(|_| Error::OnlineTier {
            message: format!(
                "the redis online store needs its URL in {REDIS_URL_ENV} \
                 (redis://[user:password@]host:port; several nodes, comma-separated, for a cluster)"
            ),
        })?;
        let urls: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            return Err(Error::OnlineTier {
                message: format!("{REDIS_URL_ENV} is empty"),
            });
        }
        if urls.len() > 1 && !cluster {
            return Err(Error::OnlineTier {
                message: format!(
                    "{REDIS_URL_ENV} names {} nodes: a standalone Redis has one URL (is it a cluster?)",
                    urls.len()
                ),
            });
        }
        // Colons separate the key's parts; a namespace never holds one.
        let namespace: String = namespace
            .chars()
            .map(|c| {
                if c == ':' || c == '{' || c == '}' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        Ok(TierOptions {
            urls,
            cluster,
            namespace,
            timeout,
        })
    }

    /// The URLs as logs and errors show them (passwords replaced).
    pub fn shown(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A Redis URL as logs and errors show it: parsed as the Redis client
/// parses it, then without password, query (`?pass=` on a socket URL) or
/// fragment ([`delta::location::redacted`]); a URL that does not parse is
/// not shown at all (where its password ends cannot be told).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => delta::location::redacted(&parsed),
        Err(_) => "(a Redis URL that does not parse)".to_string(),
    }
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }

    async fn pipeline_typed<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => invocation.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
        }
    }
}

/// Counters of the shared tier, read when `/metrics` is scraped.
#[derive(Debug)]
pub struct TierStats {
    /// Rows a lookup found in L1.
    pub l1_hits: AtomicU64,
    /// Rows a lookup had to read from Redis.
    pub l1_misses: AtomicU64,
    /// Round trips to Redis (reads and writes), in seconds.
    pub round_trip: Histogram,
    /// L1 rows dropped because a write (any replica's) replaced them.
    pub invalidations: AtomicU64,
    /// Times the invalidation subscription or the connection was lost and
    /// established again.
    pub reconnects: AtomicU64,
    /// Commands that failed (unreachable, timed out, refused).
    pub errors: AtomicU64,
    /// Values read that did not decode (written by another version).
    pub decode_errors: AtomicU64,
    /// Rows past their TTL's grace the sweep deleted (this replica's sweeps).
    pub rows_swept: AtomicU64,
    /// Hand-offs of events this replica appended to the events feed.
    pub events_published: AtomicU64,
    /// Feed entries this replica read and applied to its window tiles.
    pub feed_entries_read: AtomicU64,
    /// Hand-offs of events the feed did not take (Redis did not answer):
    /// applied to the publishing replica's tiles only.
    pub events_unpublished: AtomicU64,
    /// Times a follower found the feed trimmed past what it had read
    /// (it was cut off from Redis longer than the retention): its tiles
    /// miss those events until the next materialize or restart.
    pub feed_gaps: AtomicU64,
}

impl Default for TierStats {
    fn default() -> Self {
        TierStats {
            l1_hits: AtomicU64::new(0),
            l1_misses: AtomicU64::new(0),
            round_trip: Histogram::new(LATENCY_BUCKETS),
            invalidations: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            rows_swept: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            feed_entries_read: AtomicU64::new(0),
            events_unpublished: AtomicU64::new(0),
            feed_gaps: AtomicU64::new(0),
        }
    }
}

/// A connection to the shared tier, shared by every lookup and write.
pub struct SharedTier {
    conn: Conn,
    options: TierOptions,
    merge: redis::Script,
    raise_version: redis::Script,
    channel: String,
    /// Where publishers wake the events feed's followers.
    events_channel: String,
    /// Moved whenever a wake-up arrives (or the subscription is made
    /// again): followers wait on it between reads.
    feed_moved: tokio::sync::watch::Sender<u64>,
    versions_key: String,
    /// The TTL of every (view, layout) written, for the sweep.
    ttls_key: String,
    stats: TierStats,
    /// The invalidation subscription is live.
    subscribed: AtomicBool,
    /// The last health check reached Redis.
    healthy: AtomicBool,
    /// Bumped whenever L1 is emptied (subscription or health lost): a read
    /// sent before must not fill L1.
    generation: AtomicU64,
    /// Bumped per stripe whenever a row of that stripe is invalidated.
    epochs: Box<[AtomicU64]>,
    /// Seeds the stripe hash; fixed per process.
    stripe_seed: foldhash::fast::FixedState,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("options", &self.options)
            .finish()
    }
}

impl SharedTier {
    /// Connects (and checks the connection with a `PING`); an unreachable
    /// server or refused credentials are an error naming the URL, its
    /// password redacted.
    pub async fn connect(options: TierOptions) -> Result<Self> {
        let shown = options.shown();
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::OnlineTier {
            message: format!(
                "{what} {shown}: {}",
                redact_in(&e.to_string(), &options.urls)
            ),
        };
        let conn = if options.cluster {
            let client = redis::cluster::ClusterClient::builder(options.urls.clone())
                .connection_timeout(options.timeout)
                .response_timeout(options.timeout)
                .build()
                .map_err(|e| fail("cannot use the Redis Cluster URLs", &e))?;
            let connected = tokio::time::timeout(
                options.timeout.saturating_mul(2),
                client.get_async_connection(),
            )
            .await
            .map_err(|_| fail("timed out connecting to the Redis Cluster at", &"no answer"))?
            .map_err(|e| fail("cannot connect to the Redis Cluster at", &e))?;
            Conn::Cluster(connected)
        } else {
            let client = redis::Client::open(options.urls[0].as_str())
                .map_err(|e| fail("cannot use the Redis URL", &e))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(options.timeout))
                .set_response_timeout(Some(options.timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let connected = tokio::time::timeout(
                options.timeout.saturating_mul(2),
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| fail("timed out connecting to Redis at", &"no answer"))?
            .map_err(|e| fail("cannot connect to Redis at", &e))?;
            Conn::Single(connected)
        };
        let pong: String = conn
            .query(&redis::cmd("PING"))
            .await
            .map_err(|e| fail("Redis at", &e))?;
        if pong != "PONG" {
            return Err(fail("Redis at", &format!("answered PING with {pong:?}")));
        }
        // Loaded now (on every primary of a cluster) so that the first
        // writes do not each find it missing; a server restarted later is
        // given it again on its first `NOSCRIPT`.
        conn.query::<String>(redis::cmd("SCRIPT").arg("LOAD").arg(MERGE_SCRIPT))
            .await
            .map_err(|e| fail("loading the write script into Redis at", &e))?;
        Ok(SharedTier {
            conn,
            channel: format!("aurum:{}:invalidate", options.namespace),
            events_channel: format!("aurum:{}:events", options.namespace),
            feed_moved: tokio::sync::watch::Sender::new(0),
            versions_key: format!("aurum:{{meta}}:{}:versions", options.namespace),
            ttls_key: format!("aurum:{{meta}}:{}:ttls", options.namespace),
            options,
            merge: redis::Script::new(MERGE_SCRIPT),
            raise_version: redis::Script::new(VERSION_SCRIPT),
            stats: TierStats::default(),
            subscribed: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            stripe_seed: foldhash::fast::FixedState::with_seed(0x5eed),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &TierStats {
        &self.stats
    }

    /// The URL(s), passwords redacted.
    pub fn shown(&self) -> String {
        self.options.shown()
    }

    /// Whether the tier is usable: the last health check reached Redis and
    /// the invalidation subscription is live.
    pub fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The stripe of a row: invalidations bump its epoch.
    pub(crate) fn stripe(&self, view: &str, layout: &str, entity: &str) -> usize {
        use std::hash::BuildHasher;
        (self.stripe_seed.hash_one((view, layout, entity)) as usize) % STRIPES
    }

    pub(crate) fn epoch(&self, stripe: usize) -> u64 {
        self.epochs[stripe].load(Ordering::SeqCst)
    }

    /// Marks a row as replaced: a read in flight must not cache it. Called
    /// before the row leaves L1.
    pub(crate) fn bump(&self, stripe: usize) {
        self.epochs[stripe].fetch_add(1, Ordering::SeqCst);
    }

    /// The Redis key of a view's hash of rows of one bucket.
    pub(crate) fn key(&self, view: &str, layout: &str, bucket: u32) -> Vec<u8> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let ns = &self.options.namespace;
        let mut key = Vec::with_capacity(16 + ns.len() + view.len() + layout.len());
        key.extend_from_slice(b"aurum:{");
        for shift in (0..4).rev() {
            key.push(DIGITS[((bucket >> (shift * 4)) & 0xf) as usize]);
        }
        key.extend_from_slice(b"}:");
        key.extend_from_slice(ns.as_bytes());
        key.push(b':');
        key.extend_from_slice(view.as_bytes());
        key.push(b':');
        key.extend_from_slice(layout.as_bytes());
        key
    }

    /// Splits a hash key of this namespace into (view, layout).
    fn parse_key<'k>(&self, key: &'k [u8]) -> Option<(&'k str, &'k str)> {
        let text = std::str::from_utf8(key).ok()?;
        let rest = text.strip_prefix("aurum:{")?;
        let (bucket, rest) = rest.split_once("}:")?;
        if bucket.len() != 4 || !bucket.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let rest = rest
            .strip_prefix(self.options.namespace.as_str())?
            .strip_prefix(':')?;
        let (view, layout) = rest.rsplit_once(':')?;
        Some((view, layout))
    }

    /// Reads rows, each a (hash key, entity) pair, in order (`None`: no
    /// row): one pipeline of `HGET`s (one per slot, concurrently, on a
    /// cluster).
    pub(crate) async fn read(&self, cells: &[(Vec<u8>, &str)]) -> Result<Vec<Option<Vec<u8>>>> {
        let started = Instant::now();
        let result = match &self.conn {
            Conn::Single(_) => {
                let mut pipe = redis::pipe();
                for (key, entity) in cells {
                    pipe.cmd("HGET").arg(key).arg(*entity);
                }
                self.conn.pipeline_typed(&pipe).await
            }
            Conn::Cluster(_) => {
                // A cluster pipeline must stay within one slot.
                let mut by_slot: Vec<(u16, redis::Pipeline, Vec<usize>)> = Vec::new();
                for (i, (key, entity)) in cells.iter().enumerate() {
                    let slot = key_slot(key);
                    let at = match by_slot.iter().position(|(s, _, _)| *s == slot) {
                        Some(at) => at,
                        None => {
                            by_slot.push((slot, redis::pipe(), Vec::new()));
                            by_slot.len() - 1
                        }
                    };
                    by_slot[at].1.cmd("HGET").arg(key).arg(*entity);
                    by_slot[at].2.push(i);
                }
                let answers =
                    futures::future::join_all(by_slot.iter().map(|(_, pipe, _)| {
                        self.conn.pipeline_typed::<Vec<Option<Vec<u8>>>>(pipe)
                    }))
                    .await;
                let mut values = vec![None; cells.len()];
                let mut failed = None;
                for ((_, _, positions), answer) in by_slot.iter().zip(answers) {
                    match answer {
                        Ok(answer) if answer.len() == positions.len() => {
                            for (&i, value) in positions.iter().zip(answer) {
                                values[i] = value;
                            }
                        }
                        Ok(answer) => {
                            return Err(Error::OnlineTier {
                                message: format!(
                                    "{} answered {} values for {} rows",
                                    self.shown(),
                                    answer.len(),
                                    positions.len()
                                ),
                            });
                        }
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
                match failed {
                    None => Ok(values),
                    Some(e) => Err(e),
                }
            }
        };
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| self.failed("reading rows from", &e))
    }

    /// Writes rows of one view with the latest-wins script; returns how
    /// many replaced the stored row (or had none). A `bulk` write (a load)
    /// stages each bucket's rows in a hash of its own first, so a bucket
    /// the tier does not hold yet is renamed into place instead of merged
    /// row by row; its rows should come sorted by bucket, each bucket's
    /// together (they are sorted here otherwise).
    pub(crate) async fn write(
        &self,
        view: &str,
        layout: &str,
        mut rows: Vec<TierRow<'_>>,
        bulk: bool,
    ) -> Result<usize> {
        if !rows.is_sorted_by_key(|r| r.0) {
            rows.sort_by_key(|r| r.0);
        }
        // Whole buckets per pipeline: one on a cluster (a pipeline stays in
        // one slot), at least WRITE_CHUNK rows' worth on a standalone server.
        let mut pipelines: Vec<Vec<TierRow<'_>>> = Vec::new();
        let mut current: Vec<TierRow<'_>> = Vec::new();
        for row in rows {
            if let Some(last) = current.last()
                && last.0 != row.0
                && (self.options.cluster || current.len() >= WRITE_CHUNK)
            {
                pipelines.push(std::mem::take(&mut current));
            }
            current.push(row);
        }
        if !current.is_empty() {
            pipelines.push(current);
        }
        let load = bulk.then(load_id);
        // The futures made first: a stream holding a closure over borrowed
        // rows would not be `Send` for every lifetime the caller needs.
        let mut writes = Vec::with_capacity(pipelines.len());
        for rows in pipelines {
            writes.push(self.write_buckets(view, layout, rows, load));
        }
        let mut calls = futures::stream::iter(writes).buffer_unordered(WRITES_IN_FLIGHT);
        let mut written = 0;
        let mut first_error = None;
        while let Some(result) = calls.next().await {
            match result {
                Ok(n) => written += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(written),
            Some(e) => Err(e),
        }
    }

    /// Writes whole buckets' rows (sorted by bucket) in one pipeline: per
    /// bucket, with a `load` id, `HSET`s into a staging hash and the merge
    /// script renaming or merging it into place; without, the merge script
    /// with the rows as its arguments. Either way the script publishes the
    /// rows in the same step as it writes them.
    async fn write_buckets(
        &self,
        view: &str,
        layout: &str,
        rows: Vec<TierRow<'_>>,
        load: Option<u64>,
    ) -> Result<usize> {
        let mut pipe = redis::pipe();
        let mut scripts = 0;
        for group in rows.chunk_by(|a, b| a.0 == b.0) {
            let key = self.key(view, layout, group[0].0);
            match load {
                Some(load) => {
                    let mut notice = Vec::with_capacity(
                        key.len() + 8 + group.iter().map(|r| r.1.len() + 4).sum::<usize>(),
                    );
                    notice_key(&key, group.len(), &mut notice);
                    for (_, entity, _) in group {
                        notice_field(entity.as_bytes(), &mut notice);
                    }
                    let mut staged = key.clone();
                    staged.extend_from_slice(format!(":load-{load:016x}").as_bytes());
                    for part in group.chunks(STAGE_FIELDS) {
                        let set = pipe.cmd("HSET").arg(&staged).ignore();
                        for (_, entity, value) in part {
                            set.arg(*entity).arg(*value);
                        }
                    }
                    pipe.cmd("PEXPIRE")
                        .arg(&staged)
                        .arg(STAGE_LIFETIME_MS)
                        .ignore();
                    pipe.cmd("EVALSHA")
                        .arg(self.merge.get_hash())
                        .arg(2)
                        .arg(&key)
                        .arg(&staged)
                        .arg(&self.channel)
                        .arg(notice);
                }
                None => {
                    let merge = pipe
                        .cmd("EVALSHA")
                        .arg(self.merge.get_hash())
                        .arg(1)
                        .arg(&key)
                        .arg(&self.channel);
                    for (_, entity, value) in group {
                        merge.arg(*entity).arg(*value);
                    }
                }
            }
            scripts += 1;
        }
        let started = Instant::now();
        let mut answer = self.conn.pipeline_typed::<Vec<usize>>(&pipe).await;
        if answer
            .as_ref()
            .is_err_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        {
            // The server does not know the script yet (started, flushed):
            // load it and write again. Harmless: a staging hash is filled
            // again with the same rows, and a row written twice is refused
            // by the same script the second time.
            self.conn
                .query::<String>(redis::cmd("SCRIPT").arg("LOAD").arg(MERGE_SCRIPT))
                .await
                .map_err(|e| self.failed("loading the write script into", &e))?;
            answer = self.conn.pipeline_typed::<Vec<usize>>(&pipe).await;
        }
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        let written = answer.map_err(|e| self.failed("writing rows to", &e))?;
        if written.len() != scripts {
            return Err(Error::OnlineTier {
                message: format!(
                    "{} answered {} writes for {scripts} buckets",
                    self.shown(),
                    written.len()
                ),
            });
        }
        Ok(written.into_iter().sum())
    }

    /// Deletes the rows of `views` whose TTL ended longer ago than the
    /// grace, on every node; returns how many. `views` are
    /// (`<view>:<layout>`, the cutoff event time in microseconds since the
    /// epoch, [`sweep_cutoff`]). Keys of other namespaces, and of views or
    /// layouts not listed (another version's), are left alone.
    pub(crate) async fn sweep(&self, views: &[(String, i64)]) -> Result<usize> {
        if views.is_empty() {
            return Ok(0);
        }
        let pattern = format!("aurum:{{*}}:{}:*", glob_escaped(&self.options.namespace));
        let mut fixed = Vec::with_capacity(4 + 2 * views.len());
        fixed.push(GC_SCAN_COUNT.to_string().into_bytes());
        fixed.push(pattern.into_bytes());
        fixed.push(self.options.namespace.clone().into_bytes());
        fixed.push(self.channel.clone().into_bytes());
        for (suffix, cutoff) in views {
            fixed.push(suffix.clone().into_bytes());
            let mut header = Vec::with_capacity(16);
            ordered_hex(*cutoff, &mut header);
            fixed.push(header);
        }
        let nodes = match &self.conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(_) => self.masters().await?.into_iter().map(Some).collect(),
        };
        let mut deleted = 0;
        for node in nodes {
            let mut cursor = "0".to_string();
            loop {
                let mut step = redis::cmd("EVAL");
                step.arg(SWEEP_SCRIPT).arg(0).arg(&cursor);
                for arg in &fixed {
                    step.arg(arg);
                }
                let started = Instant::now();
                let answer: redis::RedisResult<(String, usize)> = match (&self.conn, &node) {
                    (Conn::Cluster(c), Some((host, port))) => {
                        let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port: *port,
                            },
                        );
                        match c.clone().route_command(step, routing).await {
                            Ok(value) => redis::from_redis_value(value).map_err(Into::into),
                            Err(e) => Err(e),
                        }
                    }
                    _ => self.conn.query(&step).await,
                };
                self.stats
                    .round_trip
                    .observe(started.elapsed().as_secs_f64());
                let (next, n) = answer.map_err(|e| self.failed("sweeping expired rows in", &e))?;
                deleted += n;
                self.stats.rows_swept.fetch_add(n as u64, Ordering::Relaxed);
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// Records the TTL of `view`'s rows under `layout` before a bulk load
    /// writes them without expiry, so that whichever replica sweeps gives
    /// them one, even one that does not serve that view or layout.
    pub(crate) async fn record_ttl(&self, view: &str, layout: &str, ttl_micros: i64) -> Result<()> {
        self.conn
            .query::<i64>(
                redis::cmd("HSET")
                    .arg(&self.ttls_key)
                    .arg(format!("{view}:{layout}"))
                    .arg(ttl_micros),
            )
            .await
            .map_err(|e| self.failed("recording a view's TTL in", &e))?;
        Ok(())
    }

    /// The TTLs recorded by bulk loads, by `view:layout`.
    pub(crate) async fn recorded_ttls(&self) -> Result<std::collections::HashMap<String, i64>> {
        self.conn
            .query(redis::cmd("HGETALL").arg(&self.ttls_key))
            .await
            .map_err(|e| self.failed("reading the views' TTLs from", &e))
    }

    /// The primaries of the cluster, as (host, port), from `CLUSTER SLOTS`.
    async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let ranges: Vec<redis::Value> =
            self.conn
                .query(redis::cmd("CLUSTER").arg("SLOTS"))
                .await
                .map_err(|e| self.failed("reading the cluster's nodes from", &e))?;
        let mut masters = Vec::new();
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let Some(redis::Value::Array(master)) = parts.get(2) else {
                continue;
            };
            let host: Option<String> = master
                .first()
                .and_then(|v| redis::from_redis_value_ref(v).ok());
            let port: Option<u16> = master
                .get(1)
                .and_then(|v| redis::from_redis_value_ref(v).ok());
            if let (Some(host), Some(port)) = (host, port)
                && !masters.contains(&(host.clone(), port))
            {
                masters.push((host, port));
            }
        }
        if masters.is_empty() {
            return Err(Error::OnlineTier {
                message: format!("the Redis Cluster at {} lists no primaries", self.shown()),
            });
        }
        Ok(masters)
    }

    /// The Delta version of `view` last materialized into the tier (by any
    /// replica or command).
    pub(crate) async fn loaded_version(&self, view: &str, layout: &str) -> Result<Option<u64>> {
        let field = format!("{view}:{layout}");
        let value: Option<u64> = self
            .conn
            .query(redis::cmd("HGET").arg(&self.versions_key).arg(field))
            .await
            .map_err(|e| self.failed("reading materialized versions from", &e))?;
        Ok(value)
    }

    /// Every view's recorded materialized version, by `view:layout`.
    pub(crate) async fn loaded_versions(&self) -> Result<std::collections::HashMap<String, u64>> {
        self.conn
            .query(redis::cmd("HGETALL").arg(&self.versions_key))
            .await
            .map_err(|e| self.failed("reading materialized versions from", &e))
    }

    /// Records `version` as materialized for `view` (raised, never lowered).
    pub(crate) async fn record_version(
        &self,
        view: &str,
        layout: &str,
        version: u64,
    ) -> Result<()> {
        let field = format!("{view}:{layout}");
        let mut invocation = self.raise_version.prepare_invoke();
        invocation.key(&self.versions_key).arg(field).arg(version);
        self.conn
            .invoke::<i64>(&invocation)
            .await
            .map_err(|e| self.failed("recording the materialized version in", &e))?;
        Ok(())
    }

    fn feed_key(&self, source: &str) -> String {
        format!("aurum:{{events}}:{}:{source}", self.options.namespace)
    }

    /// Appends `payload` (one hand-off of cleaned events of `source`) to
    /// the source's events feed, trimming entries older than
    /// [`FEED_RETENTION_MS`] on the way, and wakes every replica's
    /// follower. Returns the entry's id.
    pub async fn publish_events(&self, source: &str, payload: &[u8]) -> Result<String> {
        let key = self.feed_key(source);
        let cutoff =
            (chrono::Utc::now().timestamp_millis().max(0) as u64).saturating_sub(FEED_RETENTION_MS);
        let started = Instant::now();
        let id: String = self
            .conn
            .query(
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("MINID")
                    .arg("~")
                    .arg(cutoff)
                    .arg("*")
                    .arg("events")
                    .arg(payload),
            )
            .await
            .map_err(|e| self.failed("appending to the events feed in", &e))?;
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        self.stats.events_published.fetch_add(1, Ordering::Relaxed);
        // Only a wake-up: followers also read every poll interval, so a
        // lost one delays, and loses nothing.
        if let Err(e) = self
            .conn
            .query::<i64>(redis::cmd("PUBLISH").arg(&self.events_channel).arg(source))
            .await
        {
            tracing::debug!("waking the events feed's followers: {e}");
        }
        Ok(id)
    }

    /// Up to `count` entries of `source`'s events feed after the entry
    /// `after` (from the oldest retained when `None`), oldest first.
    pub async fn read_events(
        &self,
        source: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<FeedEntry>> {
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let started = Instant::now();
        let entries: Vec<(String, Vec<Vec<u8>>)> = self
            .conn
            .query(
                redis::cmd("XRANGE")
                    .arg(self.feed_key(source))
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await
            .map_err(|e| self.failed("reading the events feed in", &e))?;
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        self.stats
            .feed_entries_read
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(entries
            .into_iter()
            .map(|(id, fields)| {
                // One field, `events`, and its value.
                let payload = fields.into_iter().nth(1).unwrap_or_default();
                FeedEntry { id, payload }
            })
            .collect())
    }

    /// The id of the newest entry Redis trimmed from `source`'s events
    /// feed (`None`: none trimmed, or no feed yet). Redis 7.0 or later
    /// (`XINFO STREAM`'s `max-deleted-entry-id`).
    pub async fn newest_trimmed_event_id(&self, source: &str) -> Result<Option<String>> {
        let key = self.feed_key(source);
        let exists: bool = self
            .conn
            .query(redis::cmd("EXISTS").arg(&key))
            .await
            .map_err(|e| self.failed("reading the events feed in", &e))?;
        if !exists {
            return Ok(None);
        }
        let info: std::collections::HashMap<String, redis::Value> = self
            .conn
            .query(redis::cmd("XINFO").arg("STREAM").arg(&key))
            .await
            .map_err(|e| self.failed("reading the events feed in", &e))?;
        let deleted = info
            .get("max-deleted-entry-id")
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .filter(|id| id != "0-0");
        Ok(deleted)
    }

    /// A receiver that changes whenever a publisher wakes the followers
    /// (or the subscription is made again); a follower marks it seen
    /// before each read and waits on it after.
    pub fn feed_wake_ups(&self) -> tokio::sync::watch::Receiver<u64> {
        self.feed_moved.subscribe()
    }

    fn failed(&self, what: &str, e: &redis::RedisError) -> Error {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            // Whatever L1 holds may have been replaced meanwhile.
            self.lose_health();
        }
        Error::OnlineTier {
            message: format!(
                "{what} {}: {}",
                self.shown(),
                redact_in(&e.to_string(), &self.options.urls)
            ),
        }
    }

    fn lose_health(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Starts the invalidation subscriber and the health checker; both end
    /// when `store` is dropped.
    pub(crate) fn start(self: &Arc<Self>, store: Weak<OnlineStore>) {
        let tier = self.clone();
        let subscriber_store = store.clone();
        tokio::spawn(async move { tier.subscribe(subscriber_store).await });
        let tier = self.clone();
        let sweeper_store = store.clone();
        tokio::spawn(async move { tier.check_health(store).await });
        let tier = self.clone();
        tokio::spawn(async move { tier.collect_garbage(sweeper_store).await });
    }

    /// Every [`GC_ATTEMPT`] (the first one interval after start), tries to take the sweep's
    /// lock, a key that lives [`GC_INTERVAL`]; the replica that takes it
    /// sweeps ([`OnlineStore::sweep_tier`]). So the tier is swept about once
    /// an interval, by one replica, however many run.
    async fn collect_garbage(self: Arc<Self>, store: Weak<OnlineStore>) {
        let lock = format!("aurum:{{meta}}:{}:sweep", self.options.namespace);
        let mut attempts =
            tokio::time::interval_at(tokio::time::Instant::now() + GC_ATTEMPT, GC_ATTEMPT);
        attempts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            attempts.tick().await;
            let Some(store) = store.upgrade() else { return };
            if !self.is_ready() {
                continue;
            }
            let taken = self
                .conn
                .query::<Option<String>>(
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg(std::process::id())
                        .arg("NX")
                        .arg("PX")
                        .arg(GC_INTERVAL.as_millis() as u64),
                )
                .await;
            if !matches!(taken, Ok(Some(_))) {
                continue;
            }
            match store.sweep_tier().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "gave {n} rows past their TTL in the online tier an expiry (garbage collection)"
                ),
                Err(e) => tracing::warn!("sweeping the online tier: {e}"),
            }
        }
    }

    /// How long the subscriber waits for any message (heartbeats come
    /// every [`HEARTBEAT`]) before it takes the subscription for dead.
    fn heartbeat_deadline(&self) -> Duration {
        (HEARTBEAT * 4).max(self.options.timeout.saturating_mul(2))
    }

    async fn check_health(self: Arc<Self>, store: Weak<OnlineStore>) {
        let mut interval = tokio::time::interval(HEARTBEAT);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            interval.tick().await;
            ticks += 1;
            let Some(store) = store.upgrade() else { return };
            // The heartbeat doubles as the health check: a PUBLISH on the
            // invalidation channel (an empty notice) that every replica's
            // subscriber hears.
            let beat = tokio::time::timeout(
                self.options.timeout,
                self.conn
                    .query::<i64>(redis::cmd("PUBLISH").arg(&self.channel).arg("")),
            )
            .await;
            let mut ok = matches!(beat, Ok(Ok(_)));
            if ok && self.options.cluster {
                // PING reaches every primary; the heartbeat only the node
                // its channel hashes to.
                let ping = tokio::time::timeout(
                    self.options.timeout,
                    self.conn.query::<String>(&redis::cmd("PING")),
                )
                .await;
                ok = matches!(ping, Ok(Ok(ref pong)) if pong == "PONG");
            }
            if ok && ticks.is_multiple_of(8) {
                // Versions another replica materialized, for the answers'
                // `feature_versions` and /metrics.
                if let Err(e) = store.refresh_versions().await {
                    tracing::debug!("reading the materialized versions: {e}");
                }
            }
            if ok {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("the online tier at {} answers again", self.shown());
                    store.clear_l1();
                }
            } else if self.healthy.load(Ordering::Acquire) {
                tracing::warn!(
                    "the online tier at {} does not answer; lookups go to it (and fail) until it does",
                    self.shown()
                );
                self.lose_health();
                store.clear_l1();
            }
        }
    }

    async fn subscribe(self: Arc<Self>, store: Weak<OnlineStore>) {
        let mut backoff = Duration::from_millis(50);
        let mut node = 0usize;
        let mut first = true;
        loop {
            if store.strong_count() == 0 {
                return;
            }
            let url = &self.options.urls[node % self.options.urls.len()];
            node += 1;
            match self.subscription(url).await {
                Ok(mut pubsub) => {
                    backoff = Duration::from_millis(50);
                    if let Some(store) = store.upgrade() {
                        store.clear_l1();
                    }
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    self.subscribed.store(true, Ordering::Release);
                    // Wake-ups sent while unsubscribed were missed.
                    self.feed_moved.send_modify(|n| *n = n.wrapping_add(1));
                    if !first {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!("subscribed to the online tier's invalidations again");
                    }
                    first = false;
                    // The health check publishes a heartbeat every
                    // HEARTBEAT: a subscription that hears nothing for a
                    // while is dead even if its socket never says so
                    // (a vanished host, a node cut off from its cluster).
                    let deadline = self.heartbeat_deadline();
                    let mut messages = pubsub.on_message();
                    while let Ok(Some(message)) =
                        tokio::time::timeout(deadline, messages.next()).await
                    {
                        let Some(store) = store.upgrade() else { return };
                        if message.get_channel_name() == self.events_channel {
                            self.feed_moved.send_modify(|n| *n = n.wrapping_add(1));
                            continue;
                        }
                        self.invalidate(&store, message.get_payload_bytes());
                    }
                    drop(messages);
                    self.subscribed.store(false, Ordering::Release);
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    if let Some(store) = store.upgrade() {
                        store.clear_l1();
                    }
                    tracing::warn!(
                        "lost the online tier's invalidation subscription at {}; L1 is bypassed until it is back",
                        redact_url(url)
                    );
                }
                Err(e) => {
                    tracing::debug!("subscribing to {}: {e}", redact_url(url));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscription(&self, url: &str) -> redis::RedisResult<redis::aio::PubSub> {
        let client = redis::Client::open(url)?;
        let mut pubsub = tokio::time::timeout(self.options.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
            })??;
        tokio::time::timeout(
            self.options.timeout,
            pubsub.subscribe(vec![self.channel.as_str(), self.events_channel.as_str()]),
        )
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
        Ok(pubsub)
    }

    /// Drops the rows a published write names from L1. A notice is a run
    /// of hash keys, each `<length>:<key><count>:` and that many fields
    /// (entity keys), each `<length>:<field>`.
    fn invalidate(&self, store: &OnlineStore, payload: &[u8]) {
        let mut rest = payload;
        while !rest.is_empty() {
            let Some(key) = next_part(&mut rest) else {
                return;
            };
            let Some(count) = next_number(&mut rest) else {
                return;
            };
            let parsed = self.parse_key(key);
            let mut entities = Vec::with_capacity(count.min(4096));
            for _ in 0..count {
                let Some(field) = next_part(&mut rest) else {
                    break;
                };
                let (Some((view, layout)), Ok(entity)) = (parsed, std::str::from_utf8(field))
                else {
                    continue;
                };
                // The epoch moves first: a read in flight must not cache
                // what it fetched before this write.
                self.bump(self.stripe(view, layout, entity));
                entities.push(entity);
            }
            if let Some((view, layout)) = parsed {
                let dropped = store.invalidate_l1_rows(view, layout, &entities);
                self.stats
                    .invalidations
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Reads a decimal number and its `:` from the front of `rest`.
fn next_number(rest: &mut &[u8]) -> Option<usize> {
    let colon = rest.iter().position(|&b| b == b':')?;
    let number = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    *rest = &rest[colon + 1..];
    Some(number)
}

/// Reads a `<length>:<bytes>` part from the front of `rest`.
fn next_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = next_number(rest)?;
    let part = rest.get(..len)?;
    *rest = &rest[len..];
    Some(part)
}

/// A name for one load's staging hashes, unique among every process's
/// loads: the time, the process and a count.
fn load_id() -> u64 {
    static LOADS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x10ad).hash_one((
        nanos,
        std::process::id(),
        LOADS.fetch_add(1, Ordering::Relaxed),
    ))
}

/// Adds a hash key to an invalidation notice, with the number of its
/// fields that follow ([`notice_field`]).
fn notice_key(key: &[u8], fields: usize, notice: &mut Vec<u8>) {
    push_decimal(key.len(), notice);
    notice.push(b':');
    notice.extend_from_slice(key);
    push_decimal(fields, notice);
    notice.push(b':');
}

/// Appends `n` in decimal (a notice holds one per row: no `String` each).
fn push_decimal(mut n: usize, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Adds a field (an entity key) to an invalidation notice.
fn notice_field(field: &[u8], notice: &mut Vec<u8>) {
    push_decimal(field.len(), notice);
    notice.push(b':');
    notice.extend_from_slice(field);
}

/// `text` with the characters `SCAN`'s `MATCH` treats as a pattern escaped.
fn glob_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Replaces each URL's password in an error message, should a client
/// library quote the URL.
fn redact_in(message: &str, urls: &[String]) -> String {
    let mut shown = message.to_string();
    for url in urls {
        if shown.contains(url.as_str()) {
            shown = shown.replace(url.as_str(), &redact_url(url));
        }
    }
    shown
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (the
/// bytes between the first `{` and the next `}`, when not empty) or of the
/// whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tail = &key[open + 1..];
            let close = tail.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tail[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % 16_384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The format byte after the times: bumped when the encoding changes, so a
/// row written by another version is refused by name, not misread.
const FORMAT: u8 = 1;

const HEADER: usize = 32;

fn ordered_hex(value: i64, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let flipped = (value as u64) ^ (1 << 63);
    for shift in (0..16).rev() {
        out.push(DIGITS[((flipped >> (shift * 4)) & 0xf) as usize]);
    }
}

fn from_ordered_hex(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let flipped = u64::from_str_radix(text, 16).ok()?;
    Some((flipped ^ (1 << 63)) as i64)
}

/// Encodes a row as the tier stores it.
pub(crate) fn encode(row: &OnlineRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 1 + row.values.len() * 9);
    encode_header(row.event_micros, row.created_micros, &mut out);
    for value in row.values.iter() {
        encode_value(value, &mut out);
    }
    out
}

/// The start of an encoded row: its times and the format byte; the values
/// follow, each through [`encode_value`].
pub(crate) fn encode_header(event_micros: i64, created_micros: i64, out: &mut Vec<u8>) {
    ordered_hex(event_micros, out);
    ordered_hex(created_micros, out);
    out.push(FORMAT);
}

/// One encoded value: a tag byte and its bytes.
pub(crate) fn encode_value(value: &FeatureValue, out: &mut Vec<u8>) {
    match value {
        FeatureValue::Null => out.push(0),
        FeatureValue::Int(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        FeatureValue::Float(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_le_bytes());
        }
        FeatureValue::Bool(v) => {
            out.push(3);
            out.push(u8::from(*v));
        }
        FeatureValue::Str(s) => {
            out.push(4);
            let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&s.as_bytes()[..len as usize]);
        }
    }
}

/// Decodes a stored row of a view with `features` features; the error says
/// what does not fit.
pub(crate) fn decode(bytes: &[u8], features: usize) -> std::result::Result<OnlineRow, String> {
    if bytes.len() < HEADER + 1 {
        return Err(format!("{} bytes, shorter than a row header", bytes.len()));
    }
    let event_micros = from_ordered_hex(&bytes[..16]).ok_or("the event time is not hex")?;
    let created_micros = from_ordered_hex(&bytes[16..32]).ok_or("the created time is not hex")?;
    if bytes[HEADER] != FORMAT {
        return Err(format!(
            "format {} (this aurum reads format {FORMAT}; written by another version?)",
            bytes[HEADER]
        ));
    }
    let mut rest = &bytes[HEADER + 1..];
    let mut values = Vec::with_capacity(features);
    let take = |rest: &mut &[u8], n: usize| -> std::result::Result<Vec<u8>, String> {
        if rest.len() < n {
            return Err("the values end early".to_string());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    while !rest.is_empty() {
        let tag = rest[0];
        rest = &rest[1..];
        let value = match tag {
            0 => FeatureValue::Null,
            1 => FeatureValue::Int(i64::from_le_bytes(
                take(&mut rest, 8)?.try_into().map_err(|_| "bad int")?,
            )),
            2 => FeatureValue::Float(f64::from_le_bytes(
                take(&mut rest, 8)?.try_into().map_err(|_| "bad float")?,
            )),
            3 => FeatureValue::Bool(take(&mut rest, 1)?[0] != 0),
            4 => {
                let len = u32::from_le_bytes(
                    take(&mut rest, 4)?
                        .try_into()
                        .map_err(|_| "bad string length")?,
                ) as usize;
                let text = String::from_utf8(take(&mut rest, len)?)
                    .map_err(|_| "a string value is not UTF-8")?;
                FeatureValue::Str(text.into())
            }
            other => return Err(format!("unknown value tag {other}")),
        };
        values.push(value);
    }
    if values.len() != features {
        return Err(format!(
            "{} values, the view has {features} features",
            values.len()
        ));
    }
    Ok(OnlineRow {
        event_micros,
        created_micros,
        values: values.into_boxed_slice(),
    })
}

/// What the sweep asks of a view's rows: those whose event time is before
/// the answer are deleted (their TTL ended longer ago than the grace: the
/// TTL again, and at least a day); `None` for a view without a TTL.
pub(crate) fn sweep_cutoff(ttl_micros: i64, now_micros: i64) -> Option<i64> {
    if ttl_micros >= i64::MAX / 4 {
        return None;
    }
    let grace = ttl_micros.max(MIN_GRACE_MS * 1_000);
    Some(now_micros.saturating_sub(ttl_micros).saturating_sub(grace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_their_headers_order_as_their_times() {
        let row = |event: i64, created: i64| OnlineRow {
            event_micros: event,
            created_micros: created,
            values: vec![
                FeatureValue::Float(1.5),
                FeatureValue::Int(-3),
                FeatureValue::Null,
                FeatureValue::Bool(true),
                FeatureValue::Str("é:}{".into()),
            ]
            .into_boxed_slice(),
        };
        let times = [
            (i64::MIN, i64::MIN),
            (-5, 0),
            (-5, 3),
            (0, i64::MIN),
            (7, -1),
            (7, 2),
            (1_700_000_000_000_000, 0),
            (i64::MAX, i64::MAX),
        ];
        let encoded: Vec<Vec<u8>> = times.iter().map(|&(e, c)| encode(&row(e, c))).collect();
        for (bytes, &(e, c)) in encoded.iter().zip(&times) {
            assert_eq!(decode(bytes, 5).unwrap(), row(e, c));
        }
        for pair in encoded.windows(2) {
            assert!(pair[0][..HEADER] < pair[1][..HEADER]);
        }
        assert!(decode(&encoded[0], 4).unwrap_err().contains("5 values"));
        let mut other = encoded[0].clone();
        other[HEADER] = 9;
        assert!(decode(&other, 5).unwrap_err().contains("format 9"));
        assert!(decode(b"short", 5).is_err());
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's examples.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"aurum:{17}:p:a:x"), key_slot(b"aurum:{17}:p:b:y"));
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") % 16_384
        );
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://user:s3cret@127.0.0.1:6379/0"),
            "redis://user@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        // A password that breaks the URL (unescaped `/`) is not shown.
        assert!(!redact_url("redis://:a/b?c#d@h:1/2").contains("b?c"));
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?db=1&pass=s3cret"),
            "redis+unix:///tmp/r.sock"
        );
        let options = TierOptions {
            urls: vec!["redis://:pw@h:1".into()],
            cluster: false,
            namespace: "p".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{options:?}").contains("pw"));
        assert!(!redact_in("failed redis://:pw@h:1 x", &options.urls).contains("pw"));
    }

    #[test]
    fn the_sweep_deletes_rows_past_their_ttl_and_a_grace() {
        let day = 86_400_000_000i64;
        let hour = 3_600_000_000;
        let now = 1_000_000 * day;
        // A day's grace at least; a long TTL's grace is the TTL again.
        assert_eq!(sweep_cutoff(hour, now), Some(now - hour - day));
        assert_eq!(sweep_cutoff(7 * day, now), Some(now - 14 * day));
        assert_eq!(sweep_cutoff(i64::MAX, now), None);
        assert_eq!(glob_escaped("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
    }

    #[test]
    fn buckets_are_fixed_and_spread() {
        // Fixed forever: every replica and version must agree.
        // FNV-1a's published vectors: "" → cbf29ce484222325, "a" →
        // af63dc4c8601ec8c; folded and cut to 16 bits.
        assert_eq!(bucket_of(""), 0xbfc1);
        assert_eq!(bucket_of("a"), 0x30c0);
        assert_eq!(bucket_of("17"), 0x97f6);
        let counts = (0..655_360u32).fold(vec![0u32; BUCKETS as usize], |mut c, i| {
            c[bucket_of(&i.to_string()) as usize] += 1;
            c
        });
        // Ten a bucket on average; as a random spread would give, a few
        // buckets (e^-10 of them: ~3) are empty and none holds over ~30.
        let empty = counts.iter().filter(|&&c| c == 0).count();
        let max = counts.iter().max().copied().unwrap_or(0);
        assert!(empty <= 20 && max <= 35, "{empty} empty, at most {max}");
    }

    #[test]
    fn notices_name_each_row() {
        let mut notice = Vec::new();
        notice_key(b"aurum:{00ff}:p:v:abc", 2, &mut notice);
        notice_field(b"17", &mut notice);
        notice_field(b"a:b", &mut notice);
        notice_key(b"other", 1, &mut notice);
        notice_field(b"", &mut notice);
        assert_eq!(
            notice,
            b"20:aurum:{00ff}:p:v:abc2:2:173:a:b5:other1:0:".to_vec()
        );
        let mut rest = &notice[..];
        assert_eq!(next_part(&mut rest), Some(&b"aurum:{00ff}:p:v:abc"[..]));
        assert_eq!(next_number(&mut rest), Some(2));
        assert_eq!(next_part(&mut rest), Some(&b"17"[..]));
        assert_eq!(next_part(&mut rest), Some(&b"a:b"[..]));
        assert_eq!(next_part(&mut rest), Some(&b"other"[..]));
        assert_eq!(next_number(&mut rest), Some(1));
        assert_eq!(next_part(&mut rest), Some(&b""[..]));
        assert!(rest.is_empty());
        let mut short = &b"9:abc"[..];
        assert_eq!(next_part(&mut short), None);
    }
}
