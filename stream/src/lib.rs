//! Stream sources: events on a Kafka topic (or an Azure Event Hub through
//! its Kafka endpoint) landed in the source's bronze Delta table exactly
//! once, from where the pipeline's silver and gold steps take them like
//! any bronze rows.
//!
//! - [`consumer`]: the consumer loop, offsets recorded in the bronze
//!   commits themselves (why that makes landing exactly once is there);
//! - `decode` (JSON) and `avro` (Avro with a declared schema, framed by
//!   Confluent's Schema Registry or not): an event's value → the declared
//!   columns' text; an
//!   event that does not decode is landed with the reason and its payload
//!   (`_error`, `_raw`), and silver quarantines it with its partition and
//!   offset, so a bad event neither stops the stream nor disappears;
//! - `batch`: the events of one commit, column by column;
//! - [`stats`]: counters and lag, for progress and metrics;
//! - [`tiles`]: received events, cleaned by silver's rules, into the
//!   online store's request-time window tiles (`aurum serve --stream`),
//!   without waiting for their bronze commit.
//!
//! This crate knows Kafka and the feature store's project, bronze layout,
//! silver step and online store; it knows nothing of models or HTTP. The Kafka client is
//! librdkafka (through `rdkafka`): the client Confluent's own libraries
//! are built on, with consumer groups, cooperative rebalancing, TLS and
//! SASL PLAIN/SCRAM, which Event Hubs needs.

mod avro;
mod batch;
mod client;
pub mod consumer;
mod decode;
pub mod error;
pub mod stats;
pub mod tiles;

pub use consumer::{ReceivedHook, StreamOptions, offset_app_id, run};
pub use error::{Error, Result};
pub use stats::{StreamReport, StreamStats};
