//! Point-in-time-correct training sets.
//!
//! For each spine row and feature view: the latest feature row of the same
//! entity with `event_timestamp <= spine timestamp` and within the view's TTL,
//! ties broken by the created timestamp; missing → null. The spine's columns,
//! row order and row count are kept. Built on polars' as-of join by entity.

use polars::prelude::*;

use crate::definitions::FeatureView;
use crate::error::{Error, Result};

const ROW: &str = "__aurum_row";
const FEATURE_TS: &str = "__aurum_feature_ts";
const CREATED: &str = "__aurum_created";
const GOLD_ROW: &str = "__aurum_gold_row";

/// Which spine columns drive the join.
#[derive(Debug, Clone)]
pub struct Spine {
    /// The spine rows: entity keys, an event timestamp, anything else.
    pub frame: DataFrame,
    /// The spine's event-time column.
    pub timestamp_column: String,
}

/// Options of a retrieval.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrievalOptions {
    /// Name feature columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// Only use feature rows strictly earlier than the spine timestamp.
    /// For spines of events that themselves feed the features (a
    /// transaction labelled at its own time), this gives the values known
    /// just before the event — what the online store serves when the event
    /// is scored.
    pub strictly_before: bool,
}

/// Joins each view's features onto the spine, point-in-time correctly.
/// `views` pairs each view with its gold frame and the features wanted.
pub fn point_in_time_join(
    spine: &Spine,
    views: &[(&FeatureView, &DataFrame, &[String])],
    options: RetrievalOptions,
) -> Result<DataFrame> {
    let prepared = views
        .iter()
        .map(|(view, frame, features)| PreparedView::new(view, frame, features, options))
        .collect::<Result<Vec<_>>>()?;
    join_prepared(spine, &prepared, options)
}

/// One view's gold rows made ready for as-of joins. The join itself runs
/// on narrow frames — entity keys, event time and a row number — and the
/// wanted feature columns are gathered only for the matched rows, in spine
/// order, at the end: the wide gold rows are never sorted, and the spine's
/// own columns are never moved. Preparing once and joining many spine
/// chunks is how a large spine streams.
#[derive(Debug, Clone)]
pub struct PreparedView {
    view: FeatureView,
    /// The output names of the features, in order.
    names: Vec<String>,
    /// Keys, `FEATURE_TS` and `GOLD_ROW`: one row per (entity, event time),
    /// the latest created, sorted by event time.
    narrow: DataFrame,
    /// The wanted feature columns, renamed, in gold row order.
    features: DataFrame,
}

impl PreparedView {
    /// Prepares `frame` (the view's gold rows) for joining `features`.
    pub fn new(
        view: &FeatureView,
        frame: &DataFrame,
        features: &[String],
        options: RetrievalOptions,
    ) -> Result<Self> {
        let ts_dtype = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
        let mut names = Vec::with_capacity(features.len());
        for feature in features {
            if !view.features.contains(feature) {
                return Err(Error::UnknownFeature(format!("{}:{feature}", view.name)));
            }
            names.push(if options.full_feature_names {
                format!("{}__{feature}", view.name)
            } else {
                feature.clone()
            });
        }
        let failed = |e| Error::polars(format!("preparing {} for joins", view.name))(e);
        let keys: Vec<PlSmallStr> = view
            .entity
            .join_keys
            .iter()
            .map(|k| k.as_str().into())
            .collect();
        let mut feature_columns = Vec::with_capacity(features.len());
        for (feature, name) in features.iter().zip(&names) {
            let mut column = frame.column(feature).map_err(failed)?.clone();
            column.rename(name.as_str().into());
            feature_columns.push(column);
        }
        let feature_frame = DataFrame::new_infer_height(feature_columns).map_err(failed)?;

        let mut narrow: Vec<Expr> = keys.iter().map(|k| col(k.clone())).collect();
        narrow.push(
            col(view.timestamp_column.as_str())
                .cast(ts_dtype)
                .alias(FEATURE_TS),
        );
        narrow.push(col(view.created_column.as_str()).alias(CREATED));
        let mut order: Vec<PlSmallStr> = vec![FEATURE_TS.into()];
        order.extend(keys.iter().cloned());
        order.push(CREATED.into());
        // Of equal (entity, event time), the latest created wins: sorted by
        // time, entity, then created, equal pairs are adjacent and the
        // winner is the last of its run; a row followed by one with the same
        // entity and time is dropped (no hashing needed).
        let same_as_next =
            |name: &str| col(name).eq(col(name).shift(lit(-1))).fill_null(lit(false));
        let superseded = keys.iter().fold(same_as_next(FEATURE_TS), |all, key| {
            all.and(same_as_next(key))
        });
        let narrow = frame
            .clone()
            .lazy()
            .select(narrow)
            .with_row_index(GOLD_ROW, None)
            .sort(
                order,
                SortMultipleOptions::default().with_maintain_order(true),
            )
            .filter(superseded.not())
            .drop(by_name([CREATED], true, false))
            .collect()
            .map_err(failed)?;
        Ok(PreparedView {
            view: view.clone(),
            names,
            narrow,
            features: feature_frame,
        })
    }
}

/// Joins prepared views onto the spine (see [`point_in_time_join`]).
pub fn join_prepared(
    spine: &Spine,
    views: &[PreparedView],
    options: RetrievalOptions,
) -> Result<DataFrame> {
    let ts_dtype = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let spine_ts = spine.timestamp_column.as_str();
    let mut taken: Vec<String> = spine
        .frame
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut keys: Vec<PlSmallStr> = Vec::new();
    for prepared in views {
        for name in &prepared.names {
            if taken.contains(name) {
                return Err(Error::Schema {
                    view: prepared.view.name.clone(),
                    message: format!(
                        "feature column {name:?} collides with a spine column or another \
                         view's feature; use full feature names"
                    ),
                });
            }
            taken.push(name.clone());
        }
        for key in &prepared.view.entity.join_keys {
            if !keys.iter().any(|k| k == key.as_str()) {
                keys.push(key.as_str().into());
            }
        }
    }
    // The spine, narrowed to what the joins read, with its row numbers.
    let mut narrow: Vec<Expr> = keys.iter().map(|k| col(k.clone())).collect();
    narrow.push(col(spine_ts).cast(ts_dtype.clone()).alias(spine_ts));
    let mut result = spine
        .frame
        .clone()
        .lazy()
        .select(narrow)
        .with_row_index(ROW, None)
        .sort([spine_ts], SortMultipleOptions::default());
    let matched: Vec<String> = (0..views.len()).map(|i| format!("{GOLD_ROW}{i}")).collect();
    for (prepared, matched) in views.iter().zip(&matched) {
        let view = &prepared.view;
        let view_keys: Vec<PlSmallStr> = view
            .entity
            .join_keys
            .iter()
            .map(|k| k.as_str().into())
            .collect();
        // The same TTL as the online store, to the microsecond.
        let asof = AsOfOptions {
            strategy: AsofStrategy::Backward,
            tolerance: None,
            tolerance_str: Some(format!("{}us", view.ttl_micros()).into()),
            left_by: Some(view_keys.clone()),
            right_by: Some(view_keys),
            allow_eq: !options.strictly_before,
            check_sortedness: false,
        };
        result = result
            .join(
                prepared.narrow.clone().lazy().select(
                    [col(FEATURE_TS), col(GOLD_ROW).alias(matched.as_str())]
                        .into_iter()
                        .chain(view.entity.join_keys.iter().map(|k| col(k.as_str())))
                        .collect::<Vec<_>>(),
                ),
                [col(spine_ts)],
                [col(FEATURE_TS)],
                JoinArgs::new(JoinType::AsOf(Box::new(asof))),
            )
            .drop(by_name([FEATURE_TS], true, false));
    }
    let rows = result
        .sort([ROW], SortMultipleOptions::default())
        .select(matched.iter().map(|m| col(m.as_str())).collect::<Vec<_>>())
        .collect()
        .map_err(Error::polars("point-in-time join"))?;
    // Gather each view's features for the matched gold rows, in spine
    // order; no match gives nulls.
    let mut out = spine.frame.clone();
    let spine_ts_column = out
        .column(spine_ts)
        .map_err(Error::polars("point-in-time join"))?
        .cast(&ts_dtype)
        .map_err(Error::polars("point-in-time join"))?;
    out.with_column(spine_ts_column)
        .map_err(Error::polars("point-in-time join"))?;
    for (prepared, matched) in views.iter().zip(&matched) {
        let index = rows
            .column(matched)
            .and_then(|c| c.idx().cloned())
            .map_err(Error::polars("point-in-time join"))?;
        let gathered = prepared
            .features
            .take(&index)
            .map_err(Error::polars(format!("gathering {}", prepared.view.name)))?;
        out.hstack_mut(gathered.columns())
            .map_err(Error::polars("point-in-time join"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::definitions::Entity;

    fn ts(v: Vec<i64>, name: &str) -> Column {
        Series::new(name.into(), v)
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))
            .unwrap()
            .into()
    }

    #[test]
    fn no_future_leakage_ttl_and_ties() {
        let view = FeatureView {
            name: "v".into(),
            entity: Entity {
                name: "c".into(),
                join_keys: vec!["id".into()],
            },
            features: vec!["x".into()],
            feature_types: Vec::new(),
            timestamp_column: "ts".into(),
            created_column: "created".into(),
            ttl: Duration::from_secs(10),
        };
        let s = 1_000_000i64;
        let features = DataFrame::new_infer_height(vec![
            Series::new("id".into(), [1i64, 1, 1, 2]).into(),
            ts(vec![10 * s, 20 * s, 20 * s, 10 * s], "ts"),
            ts(vec![10 * s, 21 * s, 20 * s, 10 * s], "created"),
            Series::new("x".into(), [1.0f64, 2.0, 3.0, 7.0]).into(),
        ])
        .unwrap();
        // Spine rows, deliberately out of time order.
        let spine = DataFrame::new_infer_height(vec![
            Series::new("id".into(), [1i64, 1, 1, 2, 3, 1]).into(),
            ts(vec![25 * s, 5 * s, 15 * s, 30 * s, 10 * s, 40 * s], "at"),
            Series::new("label".into(), [1i64, 2, 3, 4, 5, 6]).into(),
        ])
        .unwrap();
        let spine = Spine {
            frame: spine,
            timestamp_column: "at".into(),
        };
        let wanted = vec!["x".to_string()];
        let out = point_in_time_join(
            &spine,
            &[(&view, &features, &wanted)],
            RetrievalOptions::default(),
        )
        .unwrap();
        let labels: Vec<i64> = out
            .column("label")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(labels, vec![1, 2, 3, 4, 5, 6], "spine order kept");
        let x: Vec<Option<f64>> = out.column("x").unwrap().f64().unwrap().iter().collect();
        // t=25: rows at 20 tie, created 21 wins (2.0); t=5: nothing yet;
        // t=15: the row at 10; t=30 for id 2: the row at 10 is 20s old > TTL;
        // id 3 is unknown; t=40: 20s old > TTL.
        assert_eq!(x, vec![Some(2.0), None, Some(1.0), None, None, None]);

        // A feature named like a spine column is refused, not renamed.
        let clash = vec!["x".to_string()];
        let mut spine_with_x = spine.clone();
        spine_with_x
            .frame
            .with_column(Series::new("x".into(), [0.0f64; 6]).into())
            .unwrap();
        let err = point_in_time_join(
            &spine_with_x,
            &[(&view, &features, &clash)],
            RetrievalOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("collides"), "{err}");
        let out = point_in_time_join(
            &spine_with_x,
            &[(&view, &features, &clash)],
            RetrievalOptions {
                full_feature_names: true,
                ..RetrievalOptions::default()
            },
        )
        .unwrap();
        assert!(out.column("v__x").is_ok());

        // strictly_before drops the feature row at the spine's own time.
        let at_ten = Spine {
            frame: DataFrame::new_infer_height(vec![
                Series::new("id".into(), [1i64]).into(),
                ts(vec![20 * s], "at"),
            ])
            .unwrap(),
            timestamp_column: "at".into(),
        };
        let x_at = |strictly_before| {
            point_in_time_join(
                &at_ten,
                &[(&view, &features, &wanted)],
                RetrievalOptions {
                    strictly_before,
                    ..RetrievalOptions::default()
                },
            )
            .unwrap()
            .column("x")
            .unwrap()
            .f64()
            .unwrap()
            .get(0)
        };
        assert_eq!(x_at(false), Some(2.0));
        assert_eq!(x_at(true), Some(1.0));
    }
    mod property {
        use std::time::Duration;

        use proptest::prelude::*;

        use super::super::*;
        use super::ts;
        use crate::definitions::Entity;

        /// A gold row: entity, event second, feature value (None: null).
        type Row = (i64, i64, Option<i32>);

        fn view(name: &str, ttl_seconds: u64) -> FeatureView {
            FeatureView {
                name: name.into(),
                entity: Entity {
                    name: "c".into(),
                    join_keys: vec!["id".into()],
                },
                features: vec![format!("{name}_x")],
                feature_types: Vec::new(),
                timestamp_column: "ts".into(),
                created_column: "created".into(),
                ttl: Duration::from_secs(ttl_seconds),
            }
        }

        /// Gold rows with created = row index, so of rows with equal entity
        /// and event time the later one in the table wins.
        fn gold(view: &FeatureView, rows: &[Row]) -> DataFrame {
            let s = 1_000_000i64;
            DataFrame::new_infer_height(vec![
                Series::new("id".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()).into(),
                ts(rows.iter().map(|r| r.1 * s).collect(), "ts"),
                ts((0..rows.len() as i64).collect(), "created"),
                Series::new(
                    view.features[0].as_str().into(),
                    rows.iter().map(|r| r.2.map(f64::from)).collect::<Vec<_>>(),
                )
                .into(),
            ])
            .unwrap()
        }

        /// The reference: a loop over spine rows and gold rows.
        fn naive(spine: &[(i64, i64)], rows: &[Row], ttl: i64) -> Vec<Option<f64>> {
            spine
                .iter()
                .map(|&(id, at)| {
                    rows.iter()
                        .enumerate()
                        .filter(|(_, r)| r.0 == id && r.1 <= at && at - r.1 <= ttl)
                        .max_by_key(|(i, r)| (r.1, *i))
                        .and_then(|(_, r)| r.2.map(f64::from))
                })
                .collect()
        }

        fn rows() -> impl Strategy<Value = Vec<Row>> {
            prop::collection::vec(
                (0i64..4, 0i64..20, prop::option::weighted(0.8, -50i32..50)),
                0..30,
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn join_matches_a_naive_loop(
                a in rows(),
                b in rows(),
                ttl_a in 0u64..8,
                ttl_b in 0u64..25,
                spine in prop::collection::vec((0i64..5, 0i64..25), 1..25),
            ) {
                let (va, vb) = (view("a", ttl_a), view("b", ttl_b));
                let (ga, gb) = (gold(&va, &a), gold(&vb, &b));
                let s = 1_000_000i64;
                let frame = DataFrame::new_infer_height(vec![
                    Series::new("id".into(), spine.iter().map(|r| r.0).collect::<Vec<_>>()).into(),
                    ts(spine.iter().map(|r| r.1 * s).collect(), "at"),
                    Series::new("n".into(), (0..spine.len() as i64).collect::<Vec<_>>()).into(),
                ])
                .unwrap();
                let out = point_in_time_join(
                    &Spine { frame, timestamp_column: "at".into() },
                    &[(&va, &ga, &va.features), (&vb, &gb, &vb.features)],
                    RetrievalOptions::default(),
                )
                .unwrap();
                prop_assert_eq!(out.height(), spine.len());
                let order: Vec<i64> = out.column("n").unwrap().i64().unwrap().into_no_null_iter().collect();
                prop_assert_eq!(order, (0..spine.len() as i64).collect::<Vec<_>>());
                for (name, rows, ttl) in [("a_x", &a, ttl_a), ("b_x", &b, ttl_b)] {
                    let got: Vec<Option<f64>> = out.column(name).unwrap().f64().unwrap().iter().collect();
                    prop_assert_eq!(got, naive(&spine, rows, ttl as i64), "{}", name);
                }
            }
        }
    }
}
