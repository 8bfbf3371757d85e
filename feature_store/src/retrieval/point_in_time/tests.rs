use std::time::Duration;

use super::*;
use crate::testing::{ViewFixture, gold_frame, utc_micros, utc_micros_nullable};

/// A view of entity `c` keyed by `id` with the given features and TTL.
fn view_by_id(name: &str, features: &[&str], ttl_seconds: u64) -> FeatureView {
    ViewFixture::customer(name)
        .keyed_by("c", &["id"])
        .features(features.iter().copied())
        .ttl(Duration::from_secs(ttl_seconds))
        .build()
}

#[test]
fn no_future_leakage_ttl_and_ties() {
    let view = view_by_id("v", &["x"], 10);
    let s = 1_000_000i64;
    let features = gold_frame(
        &view,
        vec![Series::new("id".into(), [1i64, 1, 1, 2]).into()],
        vec![10 * s, 20 * s, 20 * s, 10 * s],
        vec![10 * s, 21 * s, 20 * s, 10 * s],
        vec![Series::new("x".into(), [1.0f64, 2.0, 3.0, 7.0]).into()],
    );
    // Spine rows, deliberately out of time order.
    let spine = DataFrame::new_infer_height(vec![
        Series::new("id".into(), [1i64, 1, 1, 2, 3, 1]).into(),
        utc_micros("at", vec![25 * s, 5 * s, 15 * s, 30 * s, 10 * s, 40 * s]),
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
            utc_micros("at", vec![20 * s]),
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
#[test]
fn composite_string_keys_nulls_and_key_type_mismatch() {
    let view = ViewFixture::customer("v")
        .keyed_by("merchant_day", &["merchant", "shard"])
        .features(["x"])
        .ttl(Duration::from_secs(100))
        .build();
    let s = 1_000_000i64;
    // ("a", 1) and ("a", 2) are different entities; ("ab", 1) must not
    // collide with ("a", 1) however the parts are laid out. A row with a
    // null key part or a null event time never matches.
    let mut gold = gold_frame(
        &view,
        vec![
            Series::new(
                "merchant".into(),
                [Some("a"), Some("a"), Some("ab"), None, Some("a")],
            )
            .into(),
            Series::new("shard".into(), [1i32, 2, 1, 1, 1]).into(),
        ],
        vec![10 * s, 10 * s, 10 * s, 10 * s, 5 * s],
        vec![10 * s, 10 * s, 10 * s, 10 * s, 5 * s],
        vec![Series::new("x".into(), [1.0f64, 2.0, 3.0, 4.0, 5.0]).into()],
    );
    let null_time = utc_micros_nullable(
        "ts",
        vec![
            Some(10 * s),
            Some(10 * s),
            Some(10 * s),
            Some(10 * s),
            None::<i64>,
        ],
    );
    gold.with_column(null_time).unwrap();
    let spine = DataFrame::new_infer_height(vec![
        Series::new(
            "merchant".into(),
            [Some("a"), Some("a"), Some("ab"), None, Some("b")],
        )
        .into(),
        // A narrower integer type than the gold table's still matches.
        Series::new("shard".into(), [1i64, 2, 1, 1, 1]).into(),
        utc_micros("at", vec![20 * s; 5]),
    ])
    .unwrap();
    let wanted = vec!["x".to_string()];
    let out = point_in_time_join(
        &Spine {
            frame: spine.clone(),
            timestamp_column: "at".into(),
        },
        &[(&view, &gold, &wanted)],
        RetrievalOptions::default(),
    )
    .unwrap();
    let x: Vec<Option<f64>> = out.column("x").unwrap().f64().unwrap().iter().collect();
    assert_eq!(x, vec![Some(1.0), Some(2.0), Some(3.0), None, None]);

    // A string key read from an integer column is refused, naming it.
    let mut wrong = spine;
    wrong
        .with_column(Series::new("merchant".into(), [1i64, 2, 3, 4, 5]).into())
        .unwrap();
    let err = point_in_time_join(
        &Spine {
            frame: wrong,
            timestamp_column: "at".into(),
        },
        &[(&view, &gold, &wanted)],
        RetrievalOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSpine { column, .. } if column == "merchant"),
        "{err}"
    );
    assert!(err.to_string().contains("integers"), "{err}");
}

mod property {
    use proptest::prelude::*;

    use super::super::*;
    use super::view_by_id;
    use crate::testing::{gold_frame, utc_micros};

    /// A gold row: entity, event second, feature value (None: null).
    type Row = (i64, i64, Option<i32>);

    fn view(name: &str, ttl_seconds: u64) -> FeatureView {
        view_by_id(name, &[format!("{name}_x").as_str()], ttl_seconds)
    }

    /// Gold rows with created = row index, so of rows with equal entity
    /// and event time the later one in the table wins.
    fn gold(view: &FeatureView, rows: &[Row]) -> DataFrame {
        let s = 1_000_000i64;
        gold_frame(
            view,
            vec![Series::new("id".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()).into()],
            rows.iter().map(|r| r.1 * s).collect(),
            (0..rows.len() as i64).collect(),
            vec![
                Series::new(
                    view.features[0].as_str().into(),
                    rows.iter().map(|r| r.2.map(f64::from)).collect::<Vec<_>>(),
                )
                .into(),
            ],
        )
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
                utc_micros("at", spine.iter().map(|r| r.1 * s).collect()),
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
