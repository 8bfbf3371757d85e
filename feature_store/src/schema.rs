//! Entities and feature views.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The gold tables' event-time column.
pub const EVENT_TIMESTAMP: &str = "event_timestamp";
/// The gold tables' processing-time column, which breaks ties.
pub const CREATED_TIMESTAMP: &str = "created_timestamp";

/// A business object features describe, identified by one or more join keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entity {
    /// The entity name, e.g. `customer`.
    pub name: String,
    /// The key columns, in order; more than one makes a composite key.
    pub join_keys: Vec<String>,
}

/// A named set of features of one entity, stored as a gold Delta table with
/// one row per entity and event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureView {
    /// The view name, also the gold table's name.
    pub name: String,
    /// The entity the view describes.
    pub entity: Entity,
    /// The feature columns.
    pub features: Vec<String>,
    /// Each feature's value type (`float64`, `int64`, `string`, …), in
    /// feature order; empty when not declared.
    #[serde(default)]
    pub feature_types: Vec<String>,
    /// The event-time column.
    pub timestamp_column: String,
    /// The column that breaks ties between rows with the same event time.
    pub created_column: String,
    /// How long a value stays valid after its event time, online and offline.
    pub ttl: Duration,
    /// When set, the windowed features are valued at the time they are
    /// read (the request's, the spine row's) from these events, not taken
    /// from the gold row as of the entity's last event ([`crate::window`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_windows: Option<crate::window::RequestWindows>,
}

impl FeatureView {
    /// The `view:feature` reference of each feature, in order.
    pub fn feature_refs(&self) -> Vec<String> {
        self.features
            .iter()
            .map(|f| format!("{}:{f}", self.name))
            .collect()
    }

    /// The TTL in microseconds, saturating.
    pub fn ttl_micros(&self) -> i64 {
        i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A named list of features, usable wherever a feature list is (Feast's
/// feature service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureService {
    /// The service name.
    pub name: String,
    /// Its features as `view:feature` references, in order.
    pub features: Vec<String>,
}

/// Splits a `view:feature` reference.
pub fn split_ref(reference: &str) -> Option<(&str, &str)> {
    let (view, feature) = reference.split_once(':')?;
    (!view.is_empty() && !feature.is_empty()).then_some((view, feature))
}
