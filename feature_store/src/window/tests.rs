use std::collections::HashSet;

use polars::prelude::*;
use proptest::prelude::*;

use super::history::History;
use super::live::LiveTiles;
use super::*;

const MINUTE: i64 = 60_000_000;

fn windows() -> RequestWindows {
    let feature = |name: &str, column: &str, function, minutes: i64| WindowFeature {
        name: name.into(),
        column: column.into(),
        function,
        window_micros: minutes * MINUTE,
    };
    RequestWindows {
        events_table: "silver_payments".into(),
        timestamp_column: "ts".into(),
        features: vec![
            feature("count_1h", "amount", Function::Count, 60),
            feature("sum_1h", "amount", Function::Sum, 60),
            feature("mean_1h", "amount", Function::Mean, 60),
            feature("min_7m", "amount", Function::Min, 7),
            feature("max_7m", "amount", Function::Max, 7),
            feature("std_1h", "amount", Function::Stddev, 60),
            feature("merchants_1h", "merchant", Function::DistinctCount, 60),
        ],
        derived: vec![DerivedAtRead {
            name: "ratio".into(),
            expr: "sum_1h / count_1h".into(),
        }],
    }
}

/// One event: entity, time (µs), amount (maybe null), merchant.
type Event = (u8, i64, Option<f64>, String);

/// The definition, computed the slow way from the raw events.
fn naive(events: &[Event], entity: u8, t: i64) -> Vec<Option<f64>> {
    let spec = windows();
    let mut out = Vec::new();
    for f in &spec.features {
        let grid = Grid {
            tile: tile_micros(f.window_micros),
            tiles: f.window_micros / tile_micros(f.window_micros),
        };
        let inside: Vec<&Event> = events
            .iter()
            .filter(|e| e.0 == entity && e.1 <= t && grid.tile_of(e.1) >= grid.first_tile(t))
            .collect();
        let values: Vec<f64> = inside.iter().filter_map(|e| e.2).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        out.push(match f.function {
            Function::Count => Some(inside.len() as f64),
            Function::Sum => Some(values.iter().sum()),
            Function::Mean => (n > 0.0).then_some(mean),
            Function::Min => values.iter().copied().reduce(f64::min),
            Function::Max => values.iter().copied().reduce(f64::max),
            Function::Stddev => (n > 1.0).then(|| {
                (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
            }),
            Function::DistinctCount => Some(
                inside
                    .iter()
                    .map(|e| e.3.as_str())
                    .collect::<HashSet<_>>()
                    .len() as f64,
            ),
        });
    }
    let ratio = match (out[1], out[0]) {
        (Some(s), Some(c)) if c != 0.0 => Some(s / c),
        _ => None,
    };
    out.push(ratio);
    out
}

fn frame(events: &[Event]) -> DataFrame {
    let entity: Vec<String> = events.iter().map(|e| format!("c{}", e.0)).collect();
    let ts: Vec<i64> = events.iter().map(|e| e.1).collect();
    let amount: Vec<Option<f64>> = events.iter().map(|e| e.2).collect();
    let merchant: Vec<&str> = events.iter().map(|e| e.3.as_str()).collect();
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), entity),
        Column::new("ts".into(), ts)
            .cast(&DataType::Datetime(TimeUnit::Microseconds, None))
            .unwrap(),
        Column::new("amount".into(), amount),
        Column::new("merchant".into(), merchant),
    ])
    .unwrap()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
        _ => false,
    }
}

/// Random events over 3 hours (sparse: the history folds the events) or
/// over 10 minutes (dense: it merges whole tiles).
fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::sample::select(vec![10 * MINUTE, 3 * 60 * MINUTE]).prop_flat_map(|span| {
        prop::collection::vec(
            (
                0u8..4,
                0i64..span,
                prop::option::weighted(0.9, -1000.0f64..1000.0),
                0u8..6,
            )
                .prop_map(|(e, t, v, m)| (e, t, v, format!("m{m}"))),
            0..400,
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The point-in-time side (whole tiles plus the current tile's events
    /// up to t) and the live side (events applied in any order, late ones
    /// included) agree with the definition computed from the raw events.
    #[test]
    fn tiles_agree_with_a_naive_loop_over_the_events(
        events in events(),
        reads in prop::collection::vec((0u8..4, 0i64..(4 * 60 * MINUTE)), 1..30),
        arrival_seed in any::<u64>(),
    ) {
        let spec = windows();
        let plan = WindowPlan::new(&spec, &[]).unwrap();
        let history = History::build(plan.clone(), &frame(&events), &["customer_id".into()], "ts").unwrap();
        let mut aggs = Vec::new();
        let mut out = Vec::new();
        for (entity, t) in &reads {
            let found = history.aggregates(&format!("c{entity}"), *t, &mut aggs);
            let expected = naive(&events, *entity, *t);
            prop_assert_eq!(found, events.iter().any(|e| e.0 == *entity && e.1 <= *t));
            plan.finish(&aggs, &|_| None, &mut out);
            for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                prop_assert!(close(*got, *want), "{} at {}: {:?} != {:?}", plan.names[i], t, got, want);
            }
        }

        // Live: the events in a shuffled (late, out-of-order) arrival
        // order, read after the last of them.
        let mut arrival = events.clone();
        let mut state = arrival_seed | 1;
        for i in (1..arrival.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            arrival.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let live = LiveTiles::new(plan.clone(), 10 * 60 * MINUTE, Default::default());
        let end = 3 * 60 * MINUTE;
        // The clock follows the newest event: an event at the clock makes
        // the merge a read then needs as it lands, and later arrivals
        // into earlier tiles must undo that.
        let mut clock = 0;
        for (i, e) in arrival.iter().enumerate() {
            let (values, keys) = (vec![e.2, None], vec![None, Some(distinct_key(&e.3))]);
            let key = format!("c{}", e.0);
            clock = clock.max(e.1);
            prop_assert!(live.apply(&key, e.1, &values, &keys, clock));
            // Reads between arrivals: a late event lands in a tile whose
            // merge a read kept, and the next read must see it.
            if i % 7 == 3 {
                let (entity, t) = reads[i % reads.len()];
                let t = end + t % (10 * MINUTE);
                live.aggregates(&format!("c{entity}"), t, &mut aggs);
                plan.finish(&aggs, &|_| None, &mut out);
                let expected = naive(&arrival[..=i], entity, t);
                for (n, (got, want)) in out.iter().zip(&expected).enumerate() {
                    prop_assert!(close(*got, *want), "live after {} arrivals {} at {}: {:?} != {:?}", i + 1, plan.names[n], t, got, want);
                }
            }
        }
        for (entity, t) in &reads {
            let t = end + t % (10 * MINUTE);
            live.aggregates(&format!("c{entity}"), t, &mut aggs);
            plan.finish(&aggs, &|_| None, &mut out);
            let expected = naive(&events, *entity, t);
            for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                prop_assert!(close(*got, *want), "live {} at {}: {:?} != {:?}", plan.names[i], t, got, want);
            }
        }
    }
}

#[test]
fn tiles_divide_every_window() {
    assert_eq!(tile_micros(60 * MINUTE), MINUTE);
    assert_eq!(tile_micros(7 * MINUTE), 7 * MINUTE / 60);
    assert_eq!(tile_micros(7), 1);
    assert_eq!(tile_micros(1), 1);
    for w in [1i64, 7, 13, 59, 61, 3_600_000_001] {
        assert_eq!(w % tile_micros(w), 0, "{w}");
    }
}

#[test]
fn a_window_ends_at_the_read_not_at_the_last_event() {
    let plan = WindowPlan::new(&windows(), &[]).unwrap();
    // One event at 10:00; read at 10:30 it is in the hour, at 11:30 not.
    let ten = 10 * 60 * MINUTE;
    let events = vec![(1u8, ten, Some(5.0), "m1".to_string())];
    let history =
        History::build(plan.clone(), &frame(&events), &["customer_id".into()], "ts").unwrap();
    let mut aggs = Vec::new();
    let mut out = Vec::new();
    assert!(history.aggregates("c1", ten + 30 * MINUTE, &mut aggs));
    plan.finish(&aggs, &|_| None, &mut out);
    assert_eq!(out[0], Some(1.0));
    assert!(history.aggregates("c1", ten + 90 * MINUTE, &mut aggs));
    plan.finish(&aggs, &|_| None, &mut out);
    assert_eq!(out[0], Some(0.0), "count");
    assert_eq!(out[1], Some(0.0), "sum");
    assert_eq!(out[2], None, "mean");
    assert_eq!(out[7], None, "ratio: 0 / 0");
}

#[test]
fn live_refuses_events_no_window_can_read_and_forgets_old_tiles() {
    let plan = WindowPlan::new(&windows(), &[]).unwrap();
    let live = LiveTiles::new(plan, 5 * MINUTE, Default::default());
    let now = 100 * 60 * MINUTE;
    let v = [Some(1.0), None];
    let k = [None, Some(distinct_key("m"))];
    assert!(live.apply("c1", now - MINUTE, &v, &k, now));
    assert!(!live.apply("c2", now - 2 * 60 * MINUTE, &v, &k, now));
    assert_eq!(
        live.stats()
            .too_late
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(live.entities(), 1);
    assert_eq!(live.prune(now + 3 * 60 * MINUTE), 0);
}
