//! The shared online tier: rows in Redis (standalone or Redis Cluster), read
//! through the in-process moka store as a bounded L1 cache, so several
//! `aurum serve` replicas answer alike.
//!
//! **Keys** are `aurum:{<entity>}:<namespace>:<view>:<layout>`. The braces
//! make the entity key Redis Cluster's hash tag, so one entity's rows of
//! every view live in one slot and a lookup is one `MGET` on one node.
//! `<layout>` is a hash of the view's join keys and feature list: a view
//! redefined with other features never reads rows written under the old
//! layout.
//!
//! **Values** start with 32 hex digits, the event and created times (each
//! with its sign bit flipped, so the text orders as the numbers do), then a
//! format byte and the values, each a tag byte and its bytes. The write
//! script compares those 32 bytes on the server, in one step: the latest
//! row wins by event time then created time whichever replica or command
//! writes, exactly as in the memory store. Redis expiry is garbage
//! collection only (set well past the view's TTL); the TTL is enforced on
//! read, so a stale row reads `OUTSIDE_MAX_AGE` as it does in memory.
//!
//! **Bulk loads** write a chunk whose keys are all new with one `MSETNX`
//! (a cold materialize), without expiry: one command per chunk instead of
//! one per row. A sweep, run about once an hour by whichever replica takes
//! its lock, gives such rows an expiry once their TTL has passed (the
//! grace a write would give, from then).
//!
//! **Invalidation**: every write publishes the keys it wrote on
//! `aurum:<namespace>:invalidate` — the write script in the same step, the
//! `SET NX` path of keys that did not exist in the same pipeline. Each
//! replica's subscriber drops those rows from its L1. A read that raced
//! with an invalidation (the key's stripe epoch or the tier's generation
//! moved between sending the `MGET` and caching its answer) is answered but
//! not cached. The health check publishes a heartbeat every 250 ms; a
//! subscription that hears nothing for a second (or twice the command
//! timeout) is taken for dead even if its socket never closes. While the
//! subscription or Redis is down, L1 is emptied and bypassed. So a replica
//! never serves from L1 a row another replica replaced longer ago than a
//! PUBLISH takes to arrive (milliseconds on a LAN); reads go to Redis
//! otherwise. Changes made behind aurum's back (a `DEL` by hand) publish
//! nothing and are seen once L1 lets the row go.

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

/// Keys per write-script call: large enough to amortize a call, small
/// enough that one call holds Redis for well under a millisecond.
const WRITE_CHUNK: usize = 256;

/// Write-script calls in flight at once on the multiplexed connection.
const WRITES_IN_FLIGHT: usize = 32;

/// How often one replica (whichever takes the lock first) sweeps the tier
/// for rows past their TTL's grace.
const GC_INTERVAL: Duration = Duration::from_secs(3_600);

/// How often each replica tries to take the sweep's lock.
const GC_ATTEMPT: Duration = Duration::from_secs(300);

/// Keys one sweep step visits (one script call: a few milliseconds of
/// Redis's time).
const GC_SCAN_COUNT: usize = 1_000;

/// How often the health check publishes a heartbeat on the invalidation
/// channel.
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Stripes of the invalidation epochs (see [`SharedTier::stripe`]).
const STRIPES: usize = 4096;

/// Garbage collection: a row stays in Redis at least this long past the end
/// of its TTL, so it reads `OUTSIDE_MAX_AGE` (not `NOT_FOUND`) meanwhile.
const MIN_GRACE_MS: i64 = 24 * 3_600 * 1_000;

/// The latest-wins write, on the server: for each key, the row is written
/// only when the stored one is not newer (the first 32 bytes order rows by
/// event then created time); the keys written are published, each as
/// `<length>:<key>`, on the channel `ARGV[1]`. `ARGV[2i]` is key i's value,
/// `ARGV[2i+1]` its expiry in epoch milliseconds (`0`: none).
///
/// The headers are compared as four 8-hex-digit numbers, not as strings:
/// Lua compares strings with `strcoll`, which follows the server's locale.
/// A stored value that is not aurum's (no hex header, or another Redis
/// type) is replaced; `redis.pcall` keeps one odd key from stopping the
/// chunk half-written.
const WRITE_SCRIPT: &str = r"
local function not_newer(old, new)
  for i = 1, 25, 8 do
    local a = tonumber(string.sub(old, i, i + 7), 16)
    local b = tonumber(string.sub(new, i, i + 7), 16)
    if a == nil or b == nil then return true end
    if a ~= b then return a < b end
  end
  return true
end
local written = {}
for i = 1, #KEYS do
  local value = ARGV[2 * i]
  local old = redis.pcall('GETRANGE', KEYS[i], 0, 31)
  if type(old) ~= 'string' or string.len(old) < 32 or not_newer(old, value) then
    local expire_at = ARGV[2 * i + 1]
    if expire_at == '0' then
      redis.call('SET', KEYS[i], value)
    else
      redis.call('SET', KEYS[i], value, 'PXAT', expire_at)
    end
    written[#written + 1] = string.len(KEYS[i]) .. ':' .. KEYS[i]
  end
end
if #written > 0 then
  redis.call('PUBLISH', ARGV[1], table.concat(written))
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
/// `ARGV[1]` (`COUNT` `ARGV[2]`, `MATCH` `ARGV[3]`). A key of this
/// namespace (`ARGV[4]`) whose `<view>:<layout>` is listed (triples from
/// `ARGV[5]`: the suffix, a cutoff as 16 hex digits ordered as the value
/// headers' event times, an expiry in epoch milliseconds), that has no
/// expiry and whose row's event time is before the cutoff (its TTL has
/// passed) is given the expiry. Answers the next cursor and the number of
/// keys given one. A row a writer replaces later takes the writer's expiry
/// (or none), so a fresh row is never dropped.
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
for i = 5, #ARGV, 3 do views[ARGV[i]] = {ARGV[i + 1], ARGV[i + 2]} end
local step = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3], 'COUNT', ARGV[2])
local expiring = 0
for _, key in ipairs(step[2]) do
  local suffix = string.match(key, ':([^:]*:[^:]*)$')
  local view = suffix and views[suffix]
  local tail = suffix and ('}:' .. ARGV[4] .. ':' .. suffix)
  if view and string.sub(key, -string.len(tail)) == tail then
    local head = redis.pcall('GETRANGE', key, 0, 15)
    if type(head) == 'string' and string.len(head) == 16 and older(head, view[1])
        and redis.call('PTTL', key) == -1 then
      redis.call('PEXPIREAT', key, view[2])
      expiring = expiring + 1
    end
  end
end
return {step[1], expiring}
";

/// A row as the tier writes it: Redis key, encoded value, expiry (epoch
/// milliseconds; 0 for none).
pub(crate) type TierRow = (Vec<u8>, Vec<u8>, i64);

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

    async fn pipeline(&self, pipe: &redis::Pipeline) -> redis::RedisResult<Vec<redis::Value>> {
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
    /// Rows past their TTL the sweep gave an expiry (this replica's sweeps).
    pub rows_given_expiry: AtomicU64,
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
            rows_given_expiry: AtomicU64::new(0),
        }
    }
}

/// A connection to the shared tier, shared by every lookup and write.
pub struct SharedTier {
    conn: Conn,
    options: TierOptions,
    write: redis::Script,
    raise_version: redis::Script,
    channel: String,
    versions_key: String,
    /// The TTL of every (view, layout) loaded in bulk, for the sweep.
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
        Ok(SharedTier {
            conn,
            channel: format!("aurum:{}:invalidate", options.namespace),
            versions_key: format!("aurum:{{meta}}:{}:versions", options.namespace),
            ttls_key: format!("aurum:{{meta}}:{}:ttls", options.namespace),
            options,
            write: redis::Script::new(WRITE_SCRIPT),
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
    pub(crate) fn stripe(&self, key: &[u8]) -> usize {
        use std::hash::BuildHasher;
        (self.stripe_seed.hash_one(key) as usize) % STRIPES
    }

    pub(crate) fn epoch(&self, stripe: usize) -> u64 {
        self.epochs[stripe].load(Ordering::SeqCst)
    }

    /// Marks a row as replaced: a read in flight must not cache it. Called
    /// before the row leaves L1.
    pub(crate) fn bump(&self, stripe: usize) {
        self.epochs[stripe].fetch_add(1, Ordering::SeqCst);
    }

    /// The Redis key of an entity's row of a view.
    pub(crate) fn key(&self, view: &str, layout: &str, entity: &str) -> Vec<u8> {
        let ns = &self.options.namespace;
        let mut key = Vec::with_capacity(16 + entity.len() + ns.len() + view.len() + layout.len());
        key.extend_from_slice(b"aurum:{");
        key.extend_from_slice(entity.as_bytes());
        key.extend_from_slice(b"}:");
        key.extend_from_slice(ns.as_bytes());
        key.push(b':');
        key.extend_from_slice(view.as_bytes());
        key.push(b':');
        key.extend_from_slice(layout.as_bytes());
        key
    }

    /// Splits a key of this namespace into (view, layout, entity).
    fn parse_key<'k>(&self, key: &'k [u8]) -> Option<(&'k str, &'k str, &'k str)> {
        let text = std::str::from_utf8(key).ok()?;
        let rest = text.strip_prefix("aurum:{")?;
        let (before_layout, layout) = rest.rsplit_once(':')?;
        let (before_view, view) = before_layout.rsplit_once(':')?;
        let entity = before_view
            .strip_suffix(self.options.namespace.as_str())?
            .strip_suffix("}:")?;
        Some((view, layout, entity))
    }

    /// Reads rows by key, in order (`None`: no row). One `MGET` (split by
    /// slot on a cluster).
    pub(crate) async fn read(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let started = Instant::now();
        let result = self
            .conn
            .query::<Vec<Option<Vec<u8>>>>(redis::cmd("MGET").arg(keys))
            .await;
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| self.failed("reading rows from", &e))
    }

    /// Writes rows with the latest-wins script; returns how many replaced
    /// the stored row (or had none). `rows` are (key, value, expiry in
    /// epoch milliseconds or 0). A `bulk` write (a load: one row per key,
    /// keys listed in its view's recorded TTLs) tries each chunk as one
    /// `MSETNX` first, until one finds a key that exists.
    pub(crate) async fn write(&self, rows: Vec<TierRow>, bulk: bool) -> Result<usize> {
        let chunks = if self.options.cluster {
            chunks_by_slot(rows)
        } else {
            let mut chunks = Vec::with_capacity(rows.len().div_ceil(WRITE_CHUNK));
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                chunks.push(rows.by_ref().take(WRITE_CHUNK).collect::<Vec<_>>());
            }
            chunks
        };
        let bulk = AtomicBool::new(bulk);
        let mut calls = futures::stream::iter(chunks)
            .map(|chunk| self.write_chunk(chunk, &bulk))
            .buffer_unordered(WRITES_IN_FLIGHT);
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

    /// Writes one chunk (one slot on a cluster). While `bulk` holds, a chunk
    /// whose keys are all new is one `MSETNX` ([`SharedTier::write_new_chunk`]).
    /// Otherwise keys that do not exist yet take a plain `SET NX` (no
    /// script: a fraction of its cost); the same pipeline then publishes the
    /// chunk's keys, so a replica that still caches a row of a key Redis
    /// dropped (garbage collection) drops it too. Only the rows whose key
    /// exists go through the latest-wins script.
    async fn write_chunk(&self, chunk: Vec<TierRow>, bulk: &AtomicBool) -> Result<usize> {
        let mut notice = Vec::with_capacity(chunk.iter().map(|r| r.0.len() + 6).sum());
        for (key, _, _) in &chunk {
            notice.extend_from_slice(key.len().to_string().as_bytes());
            notice.push(b':');
            notice.extend_from_slice(key);
        }
        if bulk.load(Ordering::Relaxed) {
            if self.write_new_chunk(&chunk, &notice).await? {
                return Ok(chunk.len());
            }
            // Keys exist (a reload): the rest of the write goes the way
            // that checks each key, without a failed MSETNX per chunk.
            bulk.store(false, Ordering::Relaxed);
        }
        let started = Instant::now();
        let mut pipe = redis::pipe();
        for (key, value, expire_at) in &chunk {
            let set = pipe.cmd("SET").arg(key).arg(value).arg("NX");
            if *expire_at > 0 {
                set.arg("PXAT").arg(*expire_at);
            }
        }
        // A cluster client routes PUBLISH by its channel's slot, which is
        // not the chunk's: there it follows the pipeline.
        if !self.options.cluster {
            pipe.cmd("PUBLISH").arg(&self.channel).arg(&notice);
        }
        let replies = self.conn.pipeline(&pipe).await;
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        let replies = replies.map_err(|e| self.failed("writing rows to", &e))?;
        if self.options.cluster {
            self.conn
                .query::<i64>(redis::cmd("PUBLISH").arg(&self.channel).arg(&notice))
                .await
                .map_err(|e| self.failed("publishing invalidations to", &e))?;
        }
        let mut written = 0;
        let mut invocation = self.write.prepare_invoke();
        invocation.arg(&self.channel);
        let mut existing = 0;
        for ((key, value, expire_at), reply) in chunk.iter().zip(&replies) {
            match reply {
                redis::Value::Nil => {
                    invocation.key(key).arg(value).arg(*expire_at);
                    existing += 1;
                }
                _ => written += 1,
            }
        }
        if existing > 0 {
            let started = Instant::now();
            let result = self.conn.invoke::<usize>(&invocation).await;
            self.stats
                .round_trip
                .observe(started.elapsed().as_secs_f64());
            written += result.map_err(|e| self.failed("writing rows to", &e))?;
        }
        Ok(written)
    }

    /// Writes a chunk whose keys are all new (a cold load's) with one
    /// `MSETNX`, and publishes its keys; whether it did (`false`: a key
    /// exists, nothing was written). One command for the chunk costs Redis
    /// a fraction of a `SET` per row. Its rows take no expiry: the sweep
    /// ([`SharedTier::sweep`]) gives them one once their TTL has passed,
    /// and a later write through the script sets its own.
    async fn write_new_chunk(&self, chunk: &[TierRow], notice: &[u8]) -> Result<bool> {
        let started = Instant::now();
        let mut pipe = redis::pipe();
        let set = pipe.cmd("MSETNX");
        for (key, value, _) in chunk {
            set.arg(key).arg(value);
        }
        // Published even when nothing was set (the fallback publishes
        // again): the notice is cheap, a second round trip is not.
        if !self.options.cluster {
            pipe.cmd("PUBLISH").arg(&self.channel).arg(notice);
        }
        let replies = self.conn.pipeline(&pipe).await;
        self.stats
            .round_trip
            .observe(started.elapsed().as_secs_f64());
        let replies = replies.map_err(|e| self.failed("writing rows to", &e))?;
        let all_new = matches!(replies.first(), Some(redis::Value::Int(1)));
        if all_new && self.options.cluster {
            self.conn
                .query::<i64>(redis::cmd("PUBLISH").arg(&self.channel).arg(notice))
                .await
                .map_err(|e| self.failed("publishing invalidations to", &e))?;
        }
        Ok(all_new)
    }

    /// Gives the rows of `views` whose TTL has passed, and which have no
    /// expiry (rows written by `MSETNX`), an expiry, on every node; returns
    /// how many. `views` are (`<view>:<layout>`, the cutoff event time in
    /// microseconds since the epoch, the expiry in epoch milliseconds).
    /// Keys of other namespaces, and of views or layouts not listed
    /// (another version's), are left alone.
    pub(crate) async fn sweep(&self, views: &[(String, i64, i64)]) -> Result<usize> {
        if views.is_empty() {
            return Ok(0);
        }
        let pattern = format!("aurum:{{*}}:{}:*", glob_escaped(&self.options.namespace));
        let mut fixed = Vec::with_capacity(3 + 3 * views.len());
        fixed.push(GC_SCAN_COUNT.to_string().into_bytes());
        fixed.push(pattern.into_bytes());
        fixed.push(self.options.namespace.clone().into_bytes());
        for (suffix, cutoff, expire_at) in views {
            fixed.push(suffix.clone().into_bytes());
            let mut header = Vec::with_capacity(16);
            ordered_hex(*cutoff, &mut header);
            fixed.push(header);
            fixed.push(expire_at.to_string().into_bytes());
        }
        let nodes = match &self.conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(_) => self.masters().await?.into_iter().map(Some).collect(),
        };
        let mut expiring = 0;
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
                expiring += n;
                self.stats
                    .rows_given_expiry
                    .fetch_add(n as u64, Ordering::Relaxed);
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(expiring)
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
        tokio::time::timeout(self.options.timeout, pubsub.subscribe(&self.channel))
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
            })??;
        Ok(pubsub)
    }

    /// Drops the rows a published write names from L1.
    fn invalidate(&self, store: &OnlineStore, payload: &[u8]) {
        let mut rest = payload;
        while let Some(colon) = rest.iter().position(|&b| b == b':') {
            let Some(len) = std::str::from_utf8(&rest[..colon])
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return;
            };
            let start = colon + 1;
            let Some(key) = rest.get(start..start + len) else {
                return;
            };
            rest = &rest[start + len..];
            if let Some((view, layout, entity)) = self.parse_key(key) {
                // The epoch moves first: a read in flight must not cache
                // what it fetched before this write.
                self.bump(self.stripe(key));
                if store.invalidate_l1(view, layout, entity) {
                    self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
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

/// Groups rows by Redis Cluster slot (a script's keys must share one), in
/// chunks of at most [`WRITE_CHUNK`].
fn chunks_by_slot(rows: Vec<TierRow>) -> Vec<Vec<TierRow>> {
    let mut by_slot: std::collections::HashMap<u16, Vec<TierRow>> =
        std::collections::HashMap::new();
    let mut chunks = Vec::new();
    for row in rows {
        let slot = key_slot(&row.0);
        let group = by_slot.entry(slot).or_default();
        group.push(row);
        if group.len() == WRITE_CHUNK {
            chunks.push(std::mem::take(group));
        }
    }
    chunks.extend(by_slot.into_values().filter(|g| !g.is_empty()));
    chunks
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
/// the first value (their TTL has passed) take the second as their expiry,
/// in epoch milliseconds (the grace [`expire_at_ms`] gives a row written
/// now); `None` for a view without a TTL.
pub(crate) fn sweep_cutoff(ttl_micros: i64, now_micros: i64) -> Option<(i64, i64)> {
    if ttl_micros >= i64::MAX / 4 {
        return None;
    }
    let ttl_ms = ttl_micros / 1_000;
    Some((
        now_micros.saturating_sub(ttl_micros),
        (now_micros / 1_000).saturating_add(ttl_ms.max(MIN_GRACE_MS)),
    ))
}

/// When Redis may drop a row: well after its TTL ends (the TTL itself is
/// enforced on read), in epoch milliseconds; 0 for never.
pub(crate) fn expire_at_ms(event_micros: i64, ttl_micros: i64, now_micros: i64) -> i64 {
    let ttl_ms = ttl_micros / 1_000;
    if ttl_micros >= i64::MAX / 4 {
        return 0;
    }
    let end = (event_micros / 1_000).saturating_add(ttl_ms);
    end.max(now_micros / 1_000)
        .saturating_add(ttl_ms.max(MIN_GRACE_MS))
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
    fn the_sweep_expires_rows_past_their_ttl_with_a_writes_grace() {
        let day_ms = 86_400_000;
        let now = 1_000_000 * day_ms;
        let hour = 3_600_000_000;
        assert_eq!(
            sweep_cutoff(hour, now),
            Some((now - hour, now / 1_000 + day_ms))
        );
        assert_eq!(
            sweep_cutoff(7 * 24 * hour, now),
            Some((now - 7 * 24 * hour, now / 1_000 + 7 * day_ms))
        );
        assert_eq!(sweep_cutoff(i64::MAX, now), None);
        assert_eq!(glob_escaped("a*b?[c]\\d"), "a\\*b\\?\\[c\\]\\\\d");
    }

    #[test]
    fn expiry_is_only_garbage_collection() {
        let day = 86_400_000_000i64;
        // A row already past its TTL still lives a day (reads OUTSIDE_MAX_AGE).
        let now = 100 * day;
        assert!(expire_at_ms(0, day, now) >= (now + day) / 1_000);
        // A fresh row lives its TTL and as long again.
        assert_eq!(expire_at_ms(now, 7 * day, now), (now + 14 * day) / 1_000);
        assert_eq!(expire_at_ms(now, i64::MAX, now), 0);
    }
}
