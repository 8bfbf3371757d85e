//! librdkafka's settings for a source: the brokers, the group, offsets
//! kept by aurum, and the security Event Hubs' Kafka endpoint needs.

use feature_store::project::KafkaSpec;
use rdkafka::config::ClientConfig;

use crate::error::{Error, Result};

/// The consumer settings of `source_name`'s `kafka` table. The SASL
/// password comes from the environment variable the source names; it is
/// handed to librdkafka only, never logged or put in an error.
pub(crate) fn client_config(
    source_name: &str,
    kafka: &KafkaSpec,
    group: &str,
) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", group)
        .set("client.id", format!("aurum-stream-{source_name}"))
        // Bronze records the offsets (see `consumer`): the group's are
        // written after each commit for lag tools, never read to start.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // An offset the brokers no longer (or do not yet) hold is an error
        // the consumer handles (`Lander::out_of_range`): librdkafka's
        // default jumps to the end, skipping events unseen, and a
        // recreated topic would look already landed.
        .set("auto.offset.reset", "error")
        .set("allow.auto.create.topics", "false")
        // A broker answers a fetch when it has data or after this long:
        // librdkafka's 500 ms default is most of an event's time to the
        // window tiles on a quiet topic, and a broker that does not answer
        // as soon as data arrives (tansu 0.6 here) holds every event up to
        // this long. 10 ms: at most 100 empty fetches a second per broker.
        .set("fetch.wait.max.ms", "10")
        // Once the local queue holds `queued.min.messages`, librdkafka
        // postpones a partition's next fetch by this long (1 s by
        // default): with short fetch waits that stalled a consumer behind
        // on events at ~130,000 events/s; at 10 ms it reads 760,000.
        .set("fetch.queue.backoff.ms", "10")
        // Larger fetches per partition (librdkafka's default is 1 MiB):
        // fewer round trips when a partition is far behind.
        .set("max.partition.fetch.bytes", "8388608")
        .set("security.protocol", kafka.security_protocol.label());
    if let Some(mechanism) = &kafka.sasl_mechanism {
        config.set("sasl.mechanism", mechanism);
    }
    if let Some(user) = &kafka.sasl_username {
        config.set("sasl.username", user);
    }
    if let Some(variable) = &kafka.sasl_password_env {
        let password = std::env::var(variable).map_err(|_| Error::Config {
            source_name: source_name.to_string(),
            message: format!("the environment variable {variable} (sasl_password_env) is not set"),
        })?;
        config.set("sasl.password", password);
    }
    if let Some(ca) = &kafka.ssl_ca_location {
        config.set("ssl.ca.location", ca);
    }
    Ok(config)
}
