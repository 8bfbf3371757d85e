//! The feature view the serving benches load (included with `#[path]`):
//! `bench`, keyed by `entity_id`, float features `f0..`, a day's TTL.

use std::time::Duration;

use feature_store::{Entity, FeatureView};

/// The view's name.
pub const VIEW: &str = "bench";

/// The view with `features` float features.
pub fn view(features: usize) -> FeatureView {
    FeatureView {
        name: VIEW.into(),
        entity: Entity {
            name: "entity".into(),
            join_keys: vec!["entity_id".into()],
        },
        features: (0..features).map(|i| format!("f{i}")).collect(),
        feature_types: vec!["float64".into(); features],
        timestamp_column: "event_timestamp".into(),
        created_column: "created_timestamp".into(),
        ttl: Duration::from_secs(86_400),
    }
}
