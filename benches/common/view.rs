//! The feature views the benches load (included with `#[path]`; each
//! bench uses some of it): keyed by `entity_id`, event time
//! `event_timestamp`, ties broken by `created_timestamp`, float features.
#![allow(dead_code)]

use feature_store::FeatureView;
use feature_store::testing::ViewFixture;

/// The serving benches' view name.
pub const VIEW: &str = "bench";

/// The serving benches' view: [`VIEW`] with `features` float features
/// `f0..` and a day's TTL.
pub fn view(features: usize) -> FeatureView {
    bench_view(VIEW)
        .features((0..features).map(|i| format!("f{i}")))
        .float64()
        .build()
}

/// A view `name` in the bench tables' layout, a day's TTL, features still
/// to set.
pub fn bench_view(name: &str) -> ViewFixture {
    ViewFixture::customer(name)
        .keyed_by("entity", &["entity_id"])
        .timestamps("event_timestamp", "created_timestamp")
}
