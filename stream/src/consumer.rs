//! One source's consumer: events from the topic into the source's bronze
//! table, exactly once.
//!
//! Bronze itself says which events it holds: every commit records, for
//! each partition it lands, the next offset as a Delta application
//! transaction (`aurum:stream:{topic}:{partition}`) moved from the version
//! the consumer read to the new one ([`delta::Advance`]). So:
//! - a consumer assigned a partition starts at the offset bronze records
//!   (the consumer group's committed offsets are written after each commit
//!   for lag tools, and never read);
//! - a crash (`kill -9`) anywhere loses only uncommitted events, which the
//!   next consumer reads again from the recorded offset; events it
//!   receives that bronze already holds are skipped;
//! - two consumers holding the same partition for a moment (a rebalance)
//!   cannot both land it: the second commit finds the offset moved and is
//!   refused whole, and that consumer re-reads from what is committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use delta::{Advance, CommitLineage, DeltaStore, SchemaChange, WriteOptions};
use feature_store::project::{Assignment, KafkaSpec, Source, StartAt, ValueFormat};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::avro::AvroEvents;
use crate::batch::BronzeBatch;
use crate::client::client_config;
use crate::decode::{Row, decode_json};
use crate::error::{Error, Result};
use crate::stats::StreamStats;

/// How long the consumer waits for the brokers' answer about the topic.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one poll blocks (the loop checks its deadlines between).
const POLL: Duration = Duration::from_millis(50);
/// How often partition lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// How often a consumer assigned every partition looks for new ones.
const TOPIC_CHECK_EVERY: Duration = Duration::from_secs(30);
/// The longest wait between attempts after a broker or storage failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest a received event waits before it is handed on
/// ([`StreamOptions::on_received`]).
pub const HANDOFF_INTERVAL: Duration = Duration::from_millis(5);
/// The most events handed on at once.
pub const HANDOFF_EVENTS: usize = 8192;

/// Called with the events received since the last call (bronze's columns,
/// as they will land), at most [`HANDOFF_INTERVAL`] after they arrive and
/// before their bronze commit: e.g. for the online store's window tiles,
/// which should not wait for a commit. Each offset is handed on once per
/// [`run`], however often it is read (a refused or failed commit makes
/// the consumer read it again; it is then landed, not handed on again).
#[derive(Clone)]
pub struct ReceivedHook(pub Arc<dyn Fn(&polars::prelude::DataFrame) + Send + Sync>);

impl std::fmt::Debug for ReceivedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReceivedHook")
    }
}

/// How a stream runs.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Called with the events received, before they land.
    pub on_received: Option<ReceivedHook>,
    /// Stop once every event received has landed and none arrived for this
    /// long (`None`: run until stopped).
    pub exit_when_idle: Option<Duration>,
    /// Recorded in each commit's lineage.
    pub run_id: String,
    /// The consumer group when the source names none.
    pub default_group: String,
}

/// Lands `source`'s events in its bronze table until `stop` is set (the
/// batch in memory is landed first) or, with
/// [`StreamOptions::exit_when_idle`], until caught up. Broker and storage
/// failures are retried with backoff (each logged with the brokers and
/// topic). Returned as errors: settings that cannot work (a missing
/// password variable, a setting librdkafka refuses), a topic that does not
/// exist, refused credentials, and bronze recording offsets beyond the
/// topic's end ([`Error::Offsets`]).
///
/// Blocking: run it on a thread of its own (`spawn_blocking`); `runtime`
/// runs the Delta reads and writes.
pub fn run(
    store: DeltaStore,
    source: &Source,
    options: &StreamOptions,
    stop: &AtomicBool,
    stats: Arc<StreamStats>,
    runtime: tokio::runtime::Handle,
) -> Result<()> {
    let kafka = source.kafka.clone().ok_or_else(|| Error::Config {
        source_name: source.name.clone(),
        message: "not a Kafka source (format = \"kafka\")".into(),
    })?;
    let names: Vec<String> = source.columns.iter().map(|c| c.name.clone()).collect();
    let decoder = Decoder::new(&kafka, &names).map_err(|message| Error::Config {
        source_name: source.name.clone(),
        message,
    })?;
    let mut backoff = Duration::from_millis(500);
    // Outlives each consumer: an event read again after a reconnect is not
    // handed on twice.
    let handed: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
    loop {
        let started = Instant::now();
        let lander = Lander {
            store: store.clone(),
            runtime: runtime.clone(),
            source: source.clone(),
            kafka: kafka.clone(),
            table: source.bronze_table(),
            positions: BTreeMap::new(),
            batch: BronzeBatch::new(&kafka.topic, names.clone()),
            fresh: BronzeBatch::new(&kafka.topic, names.clone()),
            decoder: decoder.clone(),
            handed_next: handed.lock().map(|h| h.clone()).unwrap_or_default(),
            handed: handed.clone(),
            stats: stats.clone(),
            fatal: None,
            assigned_at: None,
            run_id: options.run_id.clone(),
            definition_hash: feature_store::project::hash_json("aurum-bronze-v1", &source.columns),
            on_received: options.on_received.clone(),
        };
        match consume(lander, &kafka, options, stop) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() && !stop.load(Ordering::Relaxed) => {
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(source = %source.name, error = %e, retry_in = ?backoff, "stream interrupted; retrying");
                let until = Instant::now() + backoff;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

/// One consumer's life: subscribe, land batches, stop or fail.
fn consume(
    lander: Lander,
    kafka: &KafkaSpec,
    options: &StreamOptions,
    stop: &AtomicBool,
) -> Result<()> {
    let source_name = lander.source.name.clone();
    let context = StreamContext {
        lander: Arc::new(Mutex::new(lander)),
        brokers: kafka.bootstrap_servers.clone(),
        topic: kafka.topic.clone(),
        last_error: Mutex::new(None),
    };
    let lander = context.lander.clone();
    let group = kafka
        .group
        .clone()
        .unwrap_or_else(|| options.default_group.clone());
    let config = client_config(&source_name, kafka, &group)?;
    let consumer: BaseConsumer<StreamContext> =
        config.create_with_context(context).map_err(|e| {
            // librdkafka quotes the value it refuses; the password is
            // never shown.
            let mut message = e.to_string();
            if let Some(secret) = config.get("sasl.password").filter(|s| !s.is_empty()) {
                message = message.replace(secret, "***");
            }
            Error::Config {
                source_name: source_name.clone(),
                message: format!("librdkafka refused the settings: {message}"),
            }
        })?;
    let kafka_error = |message: String| Error::Kafka {
        brokers: kafka.bootstrap_servers.clone(),
        topic: kafka.topic.clone(),
        message,
    };
    let partitions = check_topic(&consumer, kafka).map_err(kafka_error)?;
    match kafka.assignment {
        Assignment::Group => consumer
            .subscribe(&[kafka.topic.as_str()])
            .map_err(|e| kafka_error(format!("subscribing: {e}")))?,
        Assignment::All => {
            let mut tpl = TopicPartitionList::new();
            for partition in partitions {
                tpl.add_partition(&kafka.topic, partition);
            }
            locked(&lander).assign(&consumer, &mut tpl);
            consumer
                .assign(&tpl)
                .map_err(|e| kafka_error(format!("assigning the partitions: {e}")))?;
        }
    }
    let result = poll_loop(&consumer, &lander, kafka, options, stop);
    let mut guard = locked(&lander);
    // What was received is handed on, landed or not: read again, it is
    // landed without being handed on twice.
    guard.hand_off();
    if result.is_err() {
        // Closing revokes the partitions; what did not land is read again.
        guard.batch.clear();
    }
    drop(guard);
    drop(consumer);
    result
}

fn poll_loop(
    consumer: &BaseConsumer<StreamContext>,
    lander: &Arc<Mutex<Lander>>,
    kafka: &KafkaSpec,
    options: &StreamOptions,
    stop: &AtomicBool,
) -> Result<()> {
    let kafka_error = |message: String| Error::Kafka {
        brokers: kafka.bootstrap_servers.clone(),
        topic: kafka.topic.clone(),
        message,
    };
    let mut last_event = Instant::now();
    let mut last_lag = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut last_topic_check = Instant::now();
    let mut last_warning: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return locked(lander).land(consumer);
        }
        if let Some(e) = locked(lander).fatal.take() {
            return Err(e);
        }
        if let Some((code, reason)) = consumer.context().take_error() {
            let message = match code {
                Some(RDKafkaErrorCode::Authentication)
                | Some(RDKafkaErrorCode::SaslAuthenticationFailed) => {
                    return Err(kafka_error(format!(
                        "the brokers refused the credentials: {reason}"
                    )));
                }
                Some(RDKafkaErrorCode::AllBrokersDown) => {
                    format!("cannot reach the brokers: {reason}")
                }
                _ => reason,
            };
            if last_warning.is_none_or(|w| w.elapsed() > Duration::from_secs(5)) {
                tracing::warn!(brokers = %kafka.bootstrap_servers, topic = %kafka.topic, "{message}");
                last_warning = Some(Instant::now());
            }
        }
        // The lock is not held while polling: a rebalance runs inside poll.
        // Events waiting to be handed on bound the wait (whole
        // milliseconds: librdkafka spins through a fraction of one).
        let wait = {
            let guard = locked(lander);
            if guard.fresh.is_empty() {
                POLL
            } else {
                let left = HANDOFF_INTERVAL.saturating_sub(guard.fresh.age());
                Duration::from_millis(left.as_millis().clamp(1, POLL.as_millis()) as u64)
            }
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => {
                last_event = Instant::now();
                locked(lander).accept(&message);
            }
            Some(Err(e)) => {
                match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                        return Err(kafka_error("the topic does not exist".into()));
                    }
                    Some(RDKafkaErrorCode::AutoOffsetReset) => {
                        locked(lander).out_of_range(consumer)?;
                        continue;
                    }
                    _ => {}
                }
                if last_warning.is_none_or(|w| w.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(brokers = %kafka.bootstrap_servers, topic = %kafka.topic, error = %e, "consuming");
                    last_warning = Some(Instant::now());
                }
            }
            None => {}
        }
        let mut guard = locked(lander);
        if guard.fresh.len() >= HANDOFF_EVENTS
            || (!guard.fresh.is_empty() && guard.fresh.age() >= HANDOFF_INTERVAL)
        {
            guard.hand_off();
        }
        if guard.batch.len() >= kafka.max_batch_events
            || (!guard.batch.is_empty() && guard.batch.age() >= kafka.commit_interval)
        {
            guard.land(consumer)?;
        }
        if last_lag.elapsed() >= LAG_EVERY {
            // Asking the brokers can take a while: what arrived goes on
            // first.
            guard.hand_off();
            guard.measure_lag(consumer);
            last_lag = Instant::now();
        }
        // Caught up: nothing waiting to land, every assigned partition
        // landed up to the brokers' end (an unreachable broker is never
        // idle), and quiet for `idle` since the last event and the last
        // assignment (a member the group gives no partition is idle too).
        if let Some(idle) = options.exit_when_idle
            && guard.batch.is_empty()
            && last_event.elapsed() >= idle
            && guard.assigned_at.is_some_and(|at| at.elapsed() >= idle)
            && last_idle_check.elapsed() >= POLL * 10
        {
            last_idle_check = Instant::now();
            if guard
                .measure_lag(consumer)
                .is_some_and(|lag| lag.values().all(|l| *l == 0))
            {
                return Ok(());
            }
        }
        // Partitions added to the topic: a consumer assigned them all
        // reconnects to take them (a group's members are rebalanced by
        // librdkafka when its metadata shows them).
        if kafka.assignment == Assignment::All && last_topic_check.elapsed() >= TOPIC_CHECK_EVERY {
            last_topic_check = Instant::now();
            guard.hand_off();
            if let Ok(partitions) = check_topic(consumer, kafka)
                && partitions.iter().any(|p| !guard.positions.contains_key(p))
            {
                guard.land(consumer)?;
                return Err(kafka_error(format!(
                    "the topic now has {} partitions; reconnecting to read them all",
                    partitions.len()
                )));
            }
        }
    }
}

/// Asks the brokers about the topic: reachable, and it exists; returns
/// its partitions.
fn check_topic(
    consumer: &BaseConsumer<StreamContext>,
    kafka: &KafkaSpec,
) -> Result<Vec<i32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(&kafka.topic), METADATA_TIMEOUT)
        .map_err(|e| match consumer.context().take_error() {
            Some((_, reason)) => format!("cannot reach the brokers: {reason} ({e})"),
            None => format!("cannot reach the brokers: {e}"),
        })?;
    let Some(topic) = metadata.topics().iter().find(|t| t.name() == kafka.topic) else {
        return Err("the topic does not exist".into());
    };
    match topic.error() {
        None => {}
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            return Err("the topic does not exist".into());
        }
        Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) => {
            return Err("these credentials may not read the topic".into());
        }
        Some(other) => return Err(format!("the brokers answered {other:?} about the topic")),
    }
    if topic.partitions().is_empty() {
        return Err("the topic has no partitions".into());
    }
    Ok(topic.partitions().iter().map(|p| p.id()).collect())
}

fn locked(lander: &Mutex<Lander>) -> MutexGuard<'_, Lander> {
    // A panic while landing cannot leave a half-committed batch (commits
    // are atomic), so the state behind a poisoned lock is still usable.
    lander
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a partition starts: the offset bronze records, else as `start`
/// says.
fn start_offset(landed: Option<i64>, start: StartAt) -> Offset {
    match (landed, start) {
        (Some(next), _) => Offset::Offset(next),
        (None, StartAt::Earliest) => Offset::Beginning,
        (None, StartAt::Latest) => Offset::End,
    }
}

/// How event values become the declared columns' text.
#[derive(Debug, Clone)]
enum Decoder {
    Json,
    Avro(Box<AvroEvents>),
}

impl Decoder {
    /// The decoder of `kafka`'s value format; an Avro schema that cannot
    /// be read is an error saying why.
    fn new(kafka: &KafkaSpec, columns: &[String]) -> std::result::Result<Self, String> {
        let confluent = match kafka.value_format {
            ValueFormat::Json => return Ok(Decoder::Json),
            ValueFormat::Avro => None,
            ValueFormat::AvroConfluent => Some(kafka.avro_schema_id),
        };
        let schema = kafka
            .avro_schema
            .as_deref()
            .ok_or("the Avro formats need avro_schema")?;
        AvroEvents::new(schema, columns, confluent)
            .map(|events| Decoder::Avro(Box::new(events)))
            .map_err(|e| format!("avro_schema: {e}"))
    }

    /// An undecodable payload as `_raw` keeps it: JSON's as text (lossy
    /// where it is not UTF-8), Avro's (binary) as `base64:` and its
    /// base64, so it can be recovered byte for byte.
    fn raw_text<'a>(&self, payload: &'a [u8]) -> std::borrow::Cow<'a, str> {
        use base64::Engine;
        match self {
            Decoder::Json => String::from_utf8_lossy(payload),
            Decoder::Avro(_) => format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(payload)
            )
            .into(),
        }
    }

    fn decode<'a>(
        &self,
        payload: Option<&'a [u8]>,
        columns: &[String],
    ) -> std::result::Result<Row<'a>, String> {
        match self {
            Decoder::Json => decode_json(payload, columns),
            Decoder::Avro(events) => events.decode(payload),
        }
    }
}

/// The application transaction recording `partition`'s next offset.
pub fn offset_app_id(topic: &str, partition: i32) -> String {
    format!("aurum:stream:{topic}:{partition}")
}

/// The consumer's state: the assigned partitions' landed offsets and the
/// batch waiting to land.
struct Lander {
    store: DeltaStore,
    runtime: tokio::runtime::Handle,
    source: Source,
    kafka: KafkaSpec,
    table: String,
    /// Assigned partitions → the next offset bronze holds (`None`: none
    /// landed yet).
    positions: BTreeMap<i32, Option<i64>>,
    batch: BronzeBatch,
    /// Events received and not yet handed on (only with a hook).
    fresh: BronzeBatch,
    decoder: Decoder,
    /// Per partition, the next offset to hand on (this consumer's copy).
    handed_next: BTreeMap<i32, i64>,
    /// The same, shared by the consumers of one [`run`].
    handed: Arc<Mutex<BTreeMap<i32, i64>>>,
    stats: Arc<StreamStats>,
    /// An error met inside a rebalance, returned by the poll loop.
    fatal: Option<Error>,
    /// When partitions were last assigned (an idle consumer waits at least
    /// that long from then before it is caught up).
    assigned_at: Option<Instant>,
    run_id: String,
    definition_hash: String,
    on_received: Option<ReceivedHook>,
}

impl Lander {
    /// The landed offsets of `partitions`, read from bronze.
    fn read_positions(&self, partitions: &[i32]) -> Result<Vec<Option<i64>>> {
        let ids: Vec<String> = partitions
            .iter()
            .map(|p| offset_app_id(&self.kafka.topic, *p))
            .collect();
        Ok(self
            .runtime
            .block_on(self.store.transaction_versions(&self.table, &ids))?)
    }

    /// Newly assigned partitions start where bronze says.
    fn assign(&mut self, consumer: &BaseConsumer<StreamContext>, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.kafka.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let positions = match self
            .read_positions(&partitions)
            .and_then(|positions| self.pin_latest(consumer, &partitions, positions))
        {
            Ok(positions) => positions,
            Err(e) => {
                self.fatal = Some(e);
                return;
            }
        };
        for (partition, position) in partitions.into_iter().zip(positions) {
            let offset = start_offset(position, self.kafka.start);
            if let Err(e) = tpl.set_partition_offset(&self.kafka.topic, partition, offset) {
                self.fatal = Some(Error::Internal(format!("setting a start offset: {e}")));
                return;
            }
            self.positions.insert(partition, position);
        }
        self.assigned_at = Some(Instant::now());
        tracing::info!(source = %self.source.name, partitions = ?self.positions, "partitions assigned");
    }

    /// With `start = "latest"`, partitions bronze has no offset for get
    /// the topic's end (its beginning, for a partition added to a topic the
    /// source already streams) recorded in bronze (an empty commit moving
    /// their transactions), so the start is chosen once: a consumer that
    /// crashes before its first batch lands resumes there instead of at a
    /// later end, and loses nothing produced meanwhile.
    fn pin_latest(
        &mut self,
        consumer: &BaseConsumer<StreamContext>,
        partitions: &[i32],
        positions: Vec<Option<i64>>,
    ) -> Result<Vec<Option<i64>>> {
        if self.kafka.start != StartAt::Latest || positions.iter().all(Option::is_some) {
            return Ok(positions);
        }
        // A partition added to a topic this source already streams starts
        // at its beginning: everything in it was produced after the
        // source's start.
        let streamed = match check_topic(consumer, &self.kafka) {
            Ok(all) => self.read_positions(&all)?.iter().any(Option::is_some),
            Err(_) => false,
        };
        let mut advances = Vec::new();
        let mut input_offsets = BTreeMap::new();
        for (partition, position) in partitions.iter().zip(&positions) {
            if position.is_some() {
                continue;
            }
            let (low, end) = consumer
                .fetch_watermarks(&self.kafka.topic, *partition, METADATA_TIMEOUT)
                .map_err(|e| Error::Kafka {
                    brokers: self.kafka.bootstrap_servers.clone(),
                    topic: self.kafka.topic.clone(),
                    message: format!(
                        "reading partition {partition}'s end (start = \"latest\"): {e}"
                    ),
                })?;
            let start = if streamed { low } else { end };
            advances.push(Advance {
                app_id: offset_app_id(&self.kafka.topic, *partition),
                expected: None,
                to: start,
            });
            input_offsets.insert(format!("{}/{partition}", self.kafka.topic), [start, start]);
        }
        let empty = BronzeBatch::new(&self.kafka.topic, self.batch.names().to_vec())
            .take_frame()
            .map_err(|e| Error::Batch {
                source_name: self.source.name.clone(),
                message: e.to_string(),
            })?;
        let options = WriteOptions {
            schema_change: SchemaChange::AddColumns,
            advances,
            ..WriteOptions::append()
        };
        let lineage = CommitLineage {
            operation: "bronze_stream_start".into(),
            input_offsets,
            definition_hash: self.definition_hash.clone(),
            run_id: self.run_id.clone(),
            ..CommitLineage::default()
        };
        match self
            .runtime
            .block_on(self.store.write(&self.table, &empty, &options, &lineage))
        {
            Ok(_) => {}
            // Another consumer recorded a start first: take its.
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        self.read_positions(partitions)
    }

    /// Revoked partitions: what was received lands first (another
    /// consumer takes them from the landed offsets).
    fn revoke(&mut self, consumer: &BaseConsumer<StreamContext>, tpl: &TopicPartitionList) {
        self.hand_off();
        let landed = self.land(consumer);
        for element in tpl.elements_for_topic(&self.kafka.topic) {
            self.positions.remove(&element.partition());
        }
        if let Err(e) = landed {
            tracing::warn!(source = %self.source.name, error = %e, "landing before a rebalance failed; the new owner reads those events again");
            self.batch.clear();
            // Partitions this consumer keeps (a cooperative rebalance
            // revokes some only) go on from what bronze holds.
            if let Err(e) = self.reseek(consumer) {
                self.fatal = Some(e);
            }
        }
    }

    /// Some partition's next offset is outside what the brokers hold
    /// (`auto.offset.reset = error`: librdkafka never jumps by itself, and
    /// its error does not say which partition). Events that expired
    /// before they landed: go on from the oldest the brokers hold, the gap
    /// counted and warned in `accept`. Bronze ahead of the topic's end
    /// (the topic was deleted and recreated, or truncated): stop, since
    /// any resume point would skip events or land them under offsets
    /// bronze already records.
    fn out_of_range(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        let positions: Vec<(i32, Option<i64>)> =
            self.positions.iter().map(|(p, o)| (*p, *o)).collect();
        for (partition, position) in positions {
            let Some(next) = self.batch.next_offset(partition).or(position) else {
                continue;
            };
            let kafka_error = |message: String| Error::Kafka {
                brokers: self.kafka.bootstrap_servers.clone(),
                topic: self.kafka.topic.clone(),
                message,
            };
            let (low, high) = consumer
                .fetch_watermarks(&self.kafka.topic, partition, METADATA_TIMEOUT)
                .map_err(|e| {
                    kafka_error(format!("reading partition {partition}'s offsets: {e}"))
                })?;
            if next > high {
                return Err(Error::Offsets {
                    brokers: self.kafka.bootstrap_servers.clone(),
                    topic: self.kafka.topic.clone(),
                    message: format!(
                        "partition {partition}: bronze ({}) holds events up to offset {next} but the topic ends at {high}, so the topic was deleted and recreated or truncated; land it into a new bronze table, or remove the table's `{}` transaction to start over",
                        self.table,
                        offset_app_id(&self.kafka.topic, partition)
                    ),
                });
            }
            if next < low {
                consumer
                    .seek(
                        &self.kafka.topic,
                        partition,
                        Offset::Offset(low),
                        Duration::from_secs(5),
                    )
                    .map_err(|e| {
                        kafka_error(format!("seeking partition {partition} to {low}: {e}"))
                    })?;
            }
        }
        Ok(())
    }

    /// Takes one received event into the batch, unless bronze holds it.
    fn accept<M: Message>(&mut self, message: &M) {
        StreamStats::add(&self.stats.consumed, 1);
        let (partition, offset) = (message.partition(), message.offset());
        let Some(position) = self.positions.get(&partition) else {
            // Not (or no longer) this consumer's partition.
            return;
        };
        let in_batch = self.batch.next_offset(partition);
        let next = in_batch.or(*position);
        if next.is_some_and(|n| offset < n) {
            StreamStats::add(&self.stats.already_landed, 1);
            return;
        }
        if let Some(n) = next.filter(|n| offset > *n) {
            StreamStats::add(&self.stats.skipped_offsets, (offset - n) as u64);
            if in_batch.is_none() {
                tracing::warn!(source = %self.source.name, partition, resumed_at = n, first_received = offset, "the brokers skipped {} offsets where this partition resumed (compacted or expired events, transaction markers, or a broker fault)", offset - n);
            }
        }
        let now = chrono::Utc::now().timestamp_micros();
        self.stats.last_contact_ms.store(
            (now / 1000).max(0) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        // Handed on unless it was before (read again after a reconnect or
        // a refused commit).
        let hand_on = self.on_received.is_some()
            && self
                .fresh
                .next_offset(partition)
                .or_else(|| self.handed_next.get(&partition).copied())
                .is_none_or(|n| offset >= n);
        match self.decoder.decode(message.payload(), self.batch.names()) {
            Ok(values) => {
                if hand_on {
                    self.fresh.push(partition, offset, now, values.clone());
                }
                self.batch.push(partition, offset, now, values);
            }
            Err(reason) => {
                let raw = message.payload().map(|p| self.decoder.raw_text(p));
                if hand_on {
                    self.fresh
                        .push_undecodable(partition, offset, now, &reason, raw.as_deref());
                }
                self.batch
                    .push_undecodable(partition, offset, now, &reason, raw.as_deref());
            }
        }
    }

    /// Hands the events received since the last hand-off to the hook.
    fn hand_off(&mut self) {
        let Some(hook) = &self.on_received else {
            return;
        };
        if self.fresh.is_empty() {
            return;
        }
        let frame = self.fresh.take_frame();
        for (partition, [_, next]) in self.fresh.ranges() {
            self.handed_next.insert(*partition, *next);
        }
        if let Ok(mut shared) = self.handed.lock() {
            shared.extend(self.handed_next.iter().map(|(p, n)| (*p, *n)));
        }
        self.fresh.clear();
        match frame {
            Ok(frame) => (hook.0)(&frame),
            // Cannot happen for text columns of equal length; said if it
            // does: the events still land.
            Err(e) => {
                tracing::error!(source = %self.source.name, error = %e, "handing received events on")
            }
        }
    }

    /// Commits the batch to bronze with its partitions' new offsets (what
    /// was received is handed on first: a commit takes tens of
    /// milliseconds).
    fn land(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        self.hand_off();
        if self.batch.is_empty() {
            return Ok(());
        }
        let clock = Instant::now();
        // The frame is taken out of the batch: from here every way out
        // either lands it or clears the batch (its events are read again).
        let frame = match self.batch.take_frame() {
            Ok(frame) => frame,
            Err(e) => {
                self.batch.clear();
                return Err(Error::Batch {
                    source_name: self.source.name.clone(),
                    message: e.to_string(),
                });
            }
        };
        let undecodable = frame
            .column(feature_store::pipeline::bronze::STREAM_ERROR)
            .map(|c| (c.len() - c.null_count()) as u64)
            .unwrap_or(0);
        let mut advances = Vec::new();
        let mut input_offsets = BTreeMap::new();
        for (partition, [first, next]) in self.batch.ranges() {
            advances.push(Advance {
                app_id: offset_app_id(&self.kafka.topic, *partition),
                expected: self.positions.get(partition).copied().flatten(),
                to: *next,
            });
            input_offsets.insert(format!("{}/{partition}", self.kafka.topic), [*first, *next]);
        }
        let options = WriteOptions {
            schema_change: SchemaChange::AddColumns,
            advances,
            ..WriteOptions::append()
        };
        let lineage = CommitLineage {
            operation: "bronze_stream".into(),
            input_offsets,
            definition_hash: self.definition_hash.clone(),
            run_id: self.run_id.clone(),
            ..CommitLineage::default()
        };
        let written =
            self.runtime
                .block_on(self.store.write(&self.table, &frame, &options, &lineage));
        match written {
            Ok(version) => {
                let rows = self.batch.len() as u64;
                let mut offsets = TopicPartitionList::new();
                for (partition, [_, next]) in self.batch.ranges() {
                    self.positions.insert(*partition, Some(*next));
                    let _ = offsets.add_partition_offset(
                        &self.kafka.topic,
                        *partition,
                        Offset::Offset(*next),
                    );
                }
                self.batch.clear();
                StreamStats::add(&self.stats.landed, rows);
                StreamStats::add(&self.stats.undecodable, undecodable);
                StreamStats::add(&self.stats.commits, 1);
                // For lag tools only: bronze's offsets are the truth.
                if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                    tracing::debug!(error = %e, "committing group offsets");
                }
                tracing::debug!(source = %self.source.name, version, rows, elapsed = ?clock.elapsed(), "bronze batch landed");
                Ok(())
            }
            Err(e) if e.is_conflict() => {
                // Another consumer landed one of these partitions: drop the
                // batch and go on from what bronze holds now.
                StreamStats::add(&self.stats.conflicts, 1);
                tracing::warn!(source = %self.source.name, error = %e, "another consumer landed these partitions first; re-reading from bronze's offsets");
                self.batch.clear();
                self.reseek(consumer)
            }
            Err(e) => {
                self.batch.clear();
                Err(e.into())
            }
        }
    }

    /// Moves every assigned partition to the offset bronze holds.
    fn reseek(&mut self, consumer: &BaseConsumer<StreamContext>) -> Result<()> {
        let partitions: Vec<i32> = self.positions.keys().copied().collect();
        let positions = self.read_positions(&partitions)?;
        for (partition, position) in partitions.into_iter().zip(positions) {
            self.positions.insert(partition, position);
            let offset = start_offset(position, self.kafka.start);
            consumer
                .seek(&self.kafka.topic, partition, offset, Duration::from_secs(5))
                .map_err(|e| Error::Kafka {
                    brokers: self.kafka.bootstrap_servers.clone(),
                    topic: self.kafka.topic.clone(),
                    message: format!("seeking partition {partition} to {offset:?}: {e}"),
                })?;
        }
        Ok(())
    }

    /// Each assigned partition's lag (events the brokers hold that bronze
    /// does not), kept in the stats; `None` when a partition's could not
    /// be read.
    fn measure_lag(&self, consumer: &BaseConsumer<StreamContext>) -> Option<BTreeMap<i32, i64>> {
        let mut lag = BTreeMap::new();
        let mut complete = true;
        for (partition, position) in &self.positions {
            match consumer.fetch_watermarks(&self.kafka.topic, *partition, Duration::from_secs(1)) {
                Ok((low, high)) => {
                    lag.insert(*partition, (high - position.unwrap_or(low)).max(0));
                }
                Err(_) => complete = false,
            }
        }
        if let Ok(mut shared) = self.stats.lag.lock() {
            *shared = lag.clone();
        }
        if complete {
            self.stats.touch();
        }
        complete.then_some(lag)
    }
}

/// The librdkafka callbacks: rebalances go through the lander, errors are
/// kept for the poll loop, logs go to tracing.
struct StreamContext {
    lander: Arc<Mutex<Lander>>,
    brokers: String,
    topic: String,
    last_error: Mutex<Option<(Option<RDKafkaErrorCode>, String)>>,
}

impl StreamContext {
    fn take_error(&self) -> Option<(Option<RDKafkaErrorCode>, String)> {
        self.last_error.lock().ok()?.take()
    }
}

impl ClientContext for StreamContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::warn!(brokers = %self.brokers, topic = %self.topic, facility, "librdkafka: {message}")
            }
            _ => tracing::debug!(facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((error.rdkafka_error_code(), reason.to_string()));
        }
    }
}

impl ConsumerContext for StreamContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                locked(&self.lander).assign(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                locked(&self.lander).revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::warn!(brokers = %self.brokers, topic = %self.topic, error = ?other, "rebalance failed");
                let mut lander = locked(&self.lander);
                lander.hand_off();
                lander.positions.clear();
                lander.batch.clear();
                consumer.unassign()
            }
        };
        if let Err(e) = outcome {
            locked(&self.lander).fatal = Some(Error::Kafka {
                brokers: self.brokers.clone(),
                topic: self.topic.clone(),
                message: format!("applying a rebalance: {e}"),
            });
        }
    }
}
