//! Fixtures for tests and benches: the feature views, timestamp columns and
//! small gold frames that tests of this crate and of the crates above it
//! (serving, the Flight edge, the benches and end-to-end tests) would
//! otherwise each write again.
//!
//! Compiled for this crate's own tests and, for other crates, behind the
//! `testing` cargo feature, which they enable in their `[dev-dependencies]`
//! only: nothing here reaches a release build. A fixture that cannot be
//! built is a broken test, so these functions panic rather than return
//! errors.

use std::time::Duration;

use polars::prelude::*;

use crate::schema::{Entity, FeatureView};

/// One day, in microseconds: the unit most time-based tests count in.
pub const DAY_MICROS: i64 = 86_400_000_000;

/// Builds a [`FeatureView`] for a test, starting from the shape most tests
/// need and changing only what a test is about, e.g.
/// `ViewFixture::customer("v").features(["x", "y"]).build()`.
#[derive(Debug, Clone)]
pub struct ViewFixture {
    view: FeatureView,
}

impl ViewFixture {
    /// View `name` of entity `customer` keyed by `customer_id`, with event
    /// time `ts`, tie-breaking column `created`, a day's TTL, no features
    /// and no declared feature types.
    pub fn customer(name: &str) -> Self {
        Self {
            view: FeatureView {
                name: name.into(),
                entity: Entity {
                    name: "customer".into(),
                    join_keys: vec!["customer_id".into()],
                },
                features: Vec::new(),
                feature_types: Vec::new(),
                timestamp_column: "ts".into(),
                created_column: "created".into(),
                ttl: Duration::from_secs(86_400),
                request_windows: None,
            },
        }
    }

    /// Describes entity `entity`, identified by `join_keys` in order.
    pub fn keyed_by(mut self, entity: &str, join_keys: &[&str]) -> Self {
        self.view.entity = Entity {
            name: entity.into(),
            join_keys: join_keys.iter().map(|k| (*k).to_string()).collect(),
        };
        self
    }

    /// The feature columns, in order.
    pub fn features<S: Into<String>>(mut self, features: impl IntoIterator<Item = S>) -> Self {
        self.view.features = features.into_iter().map(Into::into).collect();
        self
    }

    /// Declares every feature set so far as `float64`.
    pub fn float64(mut self) -> Self {
        self.view.feature_types = vec!["float64".into(); self.view.features.len()];
        self
    }

    /// The event-time column and the column that breaks ties.
    pub fn timestamps(mut self, event: &str, created: &str) -> Self {
        self.view.timestamp_column = event.into();
        self.view.created_column = created.into();
        self
    }

    /// How long a value stays valid after its event time.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.view.ttl = ttl;
        self
    }

    /// The view.
    pub fn build(self) -> FeatureView {
        self.view
    }
}

/// A UTC datetime column `name` from microseconds since the epoch, the
/// type every gold table and spine timestamp has.
pub fn utc_micros(name: &str, micros: Vec<i64>) -> Column {
    utc_micros_nullable(name, micros.into_iter().map(Some).collect())
}

/// [`utc_micros`] with missing times.
pub fn utc_micros_nullable(name: &str, micros: Vec<Option<i64>>) -> Column {
    Series::new(name.into(), micros)
        .cast(&DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))
        .expect("integers cast to a UTC datetime")
        .into()
}

/// A gold frame of `view`: the `keys` columns, then the view's event and
/// created times (UTC microseconds), then the `features` columns, in that
/// order.
pub fn gold_frame(
    view: &FeatureView,
    keys: Vec<Column>,
    event_micros: Vec<i64>,
    created_micros: Vec<i64>,
    features: Vec<Column>,
) -> DataFrame {
    let mut columns = keys;
    columns.push(utc_micros(&view.timestamp_column, event_micros));
    columns.push(utc_micros(&view.created_column, created_micros));
    columns.extend(features);
    frame(columns)
}

/// A frame of `columns`, which must be of one height.
pub fn frame(columns: Vec<Column>) -> DataFrame {
    DataFrame::new_infer_height(columns).expect("fixture columns of one height")
}

/// The column names of `frame`, in order, as owned strings (to compare
/// with a literal list).
pub fn column_names(frame: &DataFrame) -> Vec<String> {
    frame
        .get_column_names()
        .into_iter()
        .map(|c| c.to_string())
        .collect()
}
