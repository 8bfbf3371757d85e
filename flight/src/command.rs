//! Commands and tickets: JSON documents naming what a call wants.

use std::collections::BTreeMap;

use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::{FlightDescriptor, Ticket};
use serde::{Deserialize, Serialize};
use tonic::Status;

use feature_store::online::push::PushTo;

/// A Flight command (a descriptor's `cmd`), as JSON.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// A feature view's gold table (`DoGet`), at a version (default: the
    /// latest) and optionally only rows with event times in
    /// `[start, end)` (RFC 3339).
    FeatureView {
        /// The feature view.
        name: String,
        /// The table version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
        /// Earliest event time included.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        /// Event times before this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
    },
    /// Online feature values for a list of entities (`DoGet`): the join
    /// keys, then one column per feature (null when missing, null or older
    /// than the view's TTL).
    OnlineFeatures {
        /// `view:feature` references (or `feature_service`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<String>>,
        /// A feature service's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature_service: Option<String>,
        /// Join key → one value per entity.
        #[serde(default)]
        entities: BTreeMap<String, Vec<serde_json::Value>>,
        /// Name features `view__feature`.
        #[serde(default)]
        full_feature_names: bool,
    },
    /// A point-in-time training set (`DoExchange`): the client streams the
    /// spine, the answer is the spine's columns followed by the features.
    TrainingSet {
        /// `view:feature` references (or `feature_service`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        features: Option<Vec<String>>,
        /// A feature service's name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature_service: Option<String>,
        /// The spine's event-time column.
        #[serde(default = "default_timestamp_column")]
        timestamp_column: String,
        /// Gold table versions to read, by view (default: the latest).
        #[serde(default)]
        as_of_versions: BTreeMap<String, u64>,
        /// Name features `view__feature`.
        #[serde(default)]
        full_feature_names: bool,
    },
    /// Push rows into a feature view (`DoPut`).
    Push {
        /// The feature view.
        feature_view: String,
        /// Where the rows go (default: online).
        #[serde(default)]
        to: PushTo,
        /// Apply a batch's good rows and report the bad ones instead of
        /// refusing the batch.
        #[serde(default)]
        allow_partial: bool,
        /// Makes a retried call apply each batch once: batches the first
        /// call with this key applied are answered again, not applied (the
        /// retry must send the same batches in the same order).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
    },
}

/// What a client stream's descriptor asks for: an aurum command, or a
/// command of Feast's remote offline store.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    /// One of aurum's commands.
    Aurum(Command),
    /// A Feast offline-store method.
    Feast(crate::feast::FeastCommand),
}

pub(crate) fn default_timestamp_column() -> String {
    feature_store::pipeline::gold::EVENT_TIMESTAMP.to_string()
}

impl Command {
    /// Reads a ticket: a JSON command.
    pub fn from_ticket(ticket: &Ticket) -> Result<Command, Status> {
        Command::from_json(&ticket.ticket)
    }

    pub(crate) fn from_json(bytes: &[u8]) -> Result<Command, Status> {
        serde_json::from_slice(bytes).map_err(|e| {
            Status::invalid_argument(format!(
                "not a valid aurum command ({e}); expected JSON such as \
                 {{\"command\": \"feature_view\", \"name\": \"customer_features\"}}"
            ))
        })
    }

    /// Reads a descriptor: a JSON command, or a one-element path naming a
    /// feature view (an online push).
    pub fn from_descriptor(descriptor: &FlightDescriptor) -> Result<Command, Status> {
        if descriptor.r#type == DescriptorType::Path as i32 {
            return match descriptor.path.as_slice() {
                [view] => Ok(Command::Push {
                    feature_view: view.clone(),
                    to: PushTo::Online,
                    allow_partial: false,
                    idempotency_key: None,
                }),
                other => Err(Status::invalid_argument(format!(
                    "a descriptor path names one feature view; got {other:?}"
                ))),
            };
        }
        Command::from_json(&descriptor.cmd)
    }
}
