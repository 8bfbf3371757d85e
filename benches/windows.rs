//! Request-time window benchmarks (issue 19).
//!
//! usage: cargo bench --bench windows -- [MODE...] [--entities N]
//!        [--events-per-entity E] [--lookups L] [--spine S] [--events M]
//!   read: one entity × 50 features looked up in process, from a view
//!         whose windows are valued at the read (tiles of E events per
//!         entity over the last day merged per lookup) and from the same
//!         view served as stored gold rows (today's plain row lookup),
//!         interleaved; the difference is what valuing windows at the read
//!         costs. Read at the loading clock, then 24 minutes on (tiles
//!         have left and entered the windows); windowed reads are split
//!         by whether they merged the window's earlier tiles themselves.
//!   join: the point-in-time join of S spine rows over M events with the
//!         windows valued at each spine row's time (indexing the events
//!         included), beside the same join taking the gold rows' values.
//!   (default: both)

#[path = "common/view.rs"]
mod view;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Result;
use feature_store::FeatureView;
use feature_store::online::{EventsFrom, OnlineStore};
use feature_store::retrieval::{PreparedView, RetrievalOptions, Spine, join_prepared};
use feature_store::testing::{frame, gold_frame, utc_micros};
use feature_store::window::history::History;
use feature_store::window::{Function, RequestWindows, WindowFeature, WindowPlan};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

struct Options {
    modes: Vec<String>,
    entities: usize,
    events_per_entity: usize,
    lookups: usize,
    spine: usize,
    events: usize,
}

fn main() -> Result<()> {
    let mut o = Options {
        modes: Vec::new(),
        entities: 100_000,
        events_per_entity: 20,
        lookups: 1_000_000,
        spine: 1_000_000,
        events: 10_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--entities" => o.entities = value()?.parse()?,
            "--events-per-entity" => o.events_per_entity = value()?.parse()?,
            "--lookups" => o.lookups = value()?.parse()?,
            "--spine" => o.spine = value()?.parse()?,
            "--events" => o.events = value()?.parse()?,
            "--bench" => {}
            mode if !mode.starts_with('-') => o.modes.push(mode.to_string()),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    if o.modes.is_empty() {
        o.modes = vec!["read".into(), "join".into()];
    }
    for mode in &o.modes {
        match mode.as_str() {
            "read" => read(&o)?,
            "join" => join(&o)?,
            other => anyhow::bail!("unknown mode {other}"),
        }
    }
    Ok(())
}

/// `functions` of `columns` over `windows`, named `{column}_{function}_{i}`.
fn windows(columns: &[&str], functions: &[Function], windows: &[i64]) -> RequestWindows {
    let mut features = Vec::new();
    for (w, window) in windows.iter().enumerate() {
        for column in columns {
            for function in functions {
                features.push(WindowFeature {
                    name: format!("{column}_{function:?}_{w}").to_lowercase(),
                    column: column.to_string(),
                    function: *function,
                    window_micros: *window,
                });
            }
        }
    }
    RequestWindows {
        events_table: "events".into(),
        timestamp_column: "event_timestamp".into(),
        features,
        derived: Vec::new(),
    }
}

fn request_view(name: &str, windows: RequestWindows) -> FeatureView {
    let mut view = view::bench_view(name)
        .features(windows.features.iter().map(|f| f.name.clone()))
        .float64()
        .build();
    view.request_windows = Some(windows);
    view
}

/// Events of `entities` entities, `per_entity` each, over the day before
/// `end`, with float columns `columns`.
fn events(entities: usize, per_entity: usize, end: i64, span: i64, columns: &[&str]) -> DataFrame {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = entities * per_entity;
    let ids: Vec<i64> = (0..n).map(|i| (i % entities) as i64).collect();
    let times: Vec<i64> = (0..n).map(|_| end - rng.random_range(0..span)).collect();
    let mut cols = vec![
        Column::new("entity_id".into(), ids),
        utc_micros("event_timestamp", times),
    ];
    for c in columns {
        let values: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..500.0)).collect();
        cols.push(Column::new((*c).into(), values));
    }
    frame(cols)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn read(o: &Options) -> Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    let spec = windows(
        &["c0", "c1", "c2", "c3", "c4"],
        &[
            Function::Count,
            Function::Sum,
            Function::Mean,
            Function::Max,
            Function::Stddev,
        ],
        &[HOUR, DAY],
    );
    let windowed = request_view("windowed", spec);
    let mut plain = windowed.clone();
    plain.name = "plain".into();
    plain.request_windows = None;
    let features = windowed.features.len();

    let online = OnlineStore::new(4 << 30);
    online.register_view(plain.clone());
    online.register_view(windowed.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ids: Vec<i64> = (0..o.entities as i64).collect();
    let gold_features: Vec<Column> = windowed
        .features
        .iter()
        .map(|f| {
            let values: Vec<f64> = (0..o.entities)
                .map(|_| rng.random_range(0.0..9.0))
                .collect();
            Column::new(f.as_str().into(), values)
        })
        .collect();
    let gold = gold_frame(
        &windowed,
        vec![Column::new("entity_id".into(), ids)],
        vec![now - 60_000_000; o.entities],
        vec![now; o.entities],
        gold_features,
    );
    online.materialize(&plain, &gold, 1)?;
    online.materialize(&windowed, &gold, 1)?;
    let started = Instant::now();
    let events = events(
        o.entities,
        o.events_per_entity,
        now,
        DAY,
        &["c0", "c1", "c2", "c3", "c4"],
    );
    let applied = online.apply_events("windowed", &events, now, EventsFrom::Table(1))?;
    println!(
        "read: {} entities, {features} features (5 columns × count/sum/mean/max/stddev × 1h, 1d; tiles of 1 and 24 minutes), {applied} events applied to tiles in {:.2} s",
        o.entities,
        started.elapsed().as_secs_f64()
    );
    let refs = |view: &str| -> Vec<String> {
        windowed
            .features
            .iter()
            .map(|f| format!("{view}:{f}"))
            .collect()
    };
    let plain_set = online.resolve(&refs("plain"))?;
    let windowed_set = online.resolve(&refs("windowed"))?;
    let merges = || {
        online
            .live_tiles("windowed")
            .map_or(0, |t| t.stats().read_merges.load(Ordering::Relaxed))
    };
    let mut checksum = 0.0;
    // At the loading clock, then with the clock one tile of the day
    // window (24 minutes) on: non-empty tiles leave and enter the windows,
    // so a share of the entities' kept merges are not the ones their next
    // read needs.
    for (phase, at) in [
        ("at the load", now),
        ("24 minutes on", now + 24 * 60_000_000),
    ] {
        let mut times = [Vec::with_capacity(o.lookups), Vec::with_capacity(o.lookups)];
        // Windowed reads split by whether they merged the window's earlier
        // tiles themselves or found the kept merge.
        let (mut merging, mut kept) = (Vec::new(), Vec::new());
        let mut keys = vec![String::new()];
        for i in 0..o.lookups * 2 {
            let entity = rng.random_range(0..o.entities);
            keys[0] = entity.to_string();
            let (set, slot) = if i % 2 == 0 {
                (&plain_set, 0)
            } else {
                (&windowed_set, 1)
            };
            let before = merges();
            let clock = Instant::now();
            let batch = online.get_set(set, &keys, at)?;
            let nanos = clock.elapsed().as_nanos() as u64;
            times[slot].push(nanos);
            if slot == 1 {
                if merges() > before {
                    merging.push(nanos);
                } else {
                    kept.push(nanos);
                }
            }
            checksum += batch.rows[0][0].0.as_f64().unwrap_or(0.0);
        }
        for t in &mut times {
            t.sort_unstable();
        }
        let mean = |t: &[u64]| t.iter().sum::<u64>() as f64 / t.len().max(1) as f64;
        let (pm, wm) = (mean(&times[0]), mean(&times[1]));
        println!("read, {phase}:");
        println!(
            "read:   plain row lookup       mean {:>7.0} ns  p50 {:>6} ns  p99 {:>6} ns",
            pm,
            percentile(&times[0], 0.5),
            percentile(&times[0], 0.99)
        );
        println!(
            "read:   windows at the read    mean {:>7.0} ns  p50 {:>6} ns  p99 {:>6} ns",
            wm,
            percentile(&times[1], 0.5),
            percentile(&times[1], 0.99)
        );
        println!(
            "read:   cost of valuing {features} window features at the read: {:+.0} ns mean, {:+} ns p50 (target < 2000 ns) [checksum {checksum:.0}]",
            wm - pm,
            percentile(&times[1], 0.5) as i64 - percentile(&times[0], 0.5) as i64
        );
        for (what, t) in [
            ("reads merging the window's earlier tiles", &mut merging),
            ("reads finding the kept merge", &mut kept),
        ] {
            t.sort_unstable();
            if t.is_empty() {
                println!("read:     {what}: none");
                continue;
            }
            println!(
                "read:     {what}: {} reads, mean {:.0} ns ({:+.0} ns over the plain lookup's mean), p50 {} ns, p99 {} ns",
                t.len(),
                mean(&t[..]),
                mean(&t[..]) - pm,
                percentile(&t[..], 0.5),
                percentile(&t[..], 0.99)
            );
        }
    }
    Ok(())
}

fn join(o: &Options) -> Result<()> {
    let end = 1_790_000_000_000_000i64;
    let span = 30 * DAY;
    let entities = (o.events / 100).max(1);
    let per_entity = o.events / entities;
    let spec = windows(
        &["amount"],
        &[
            Function::Count,
            Function::Sum,
            Function::Mean,
            Function::Max,
            Function::Stddev,
        ],
        &[HOUR, DAY, 7 * DAY],
    );
    let view = request_view("payments", spec.clone());
    let started = Instant::now();
    let events = events(entities, per_entity, end, span, &["amount"]);
    // Gold: one row per event (values as of the event; only its presence
    // is read for request-time windows).
    let n = events.height();
    let gold_columns: Vec<Column> = view
        .features
        .iter()
        .map(|f| Column::new(f.as_str().into(), vec![0.0f64; n]))
        .collect();
    let times = events.column("event_timestamp")?.clone();
    let mut gold = gold_frame(
        &view,
        vec![events.column("entity_id")?.clone()],
        vec![0; n],
        vec![0; n],
        gold_columns,
    );
    gold.with_column(times.with_name("event_timestamp".into()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let spine = frame(vec![
        Column::new(
            "entity_id".into(),
            (0..o.spine)
                .map(|_| rng.random_range(0..entities) as i64)
                .collect::<Vec<_>>(),
        ),
        utc_micros(
            "event_timestamp",
            (0..o.spine)
                .map(|_| end - rng.random_range(0..span))
                .collect(),
        ),
    ]);
    println!(
        "join: {} spine rows, {n} events of {entities} entities over 30 days, {} features (count/sum/mean/max/stddev × 1h, 1d, 7d); data generated in {:.1} s",
        o.spine,
        view.features.len(),
        started.elapsed().as_secs_f64()
    );
    let options = RetrievalOptions::default();
    let spine = Spine {
        frame: spine,
        timestamp_column: "event_timestamp".into(),
    };

    // Baseline: the gold rows' own values.
    let mut plain = view.clone();
    plain.request_windows = None;
    let clock = Instant::now();
    let prepared = PreparedView::new(&plain, &gold, &plain.features, options)?;
    let joined = join_prepared(&spine, &[prepared], options)?;
    let plain_seconds = clock.elapsed().as_secs_f64();
    assert_eq!(joined.height(), o.spine);

    let clock = Instant::now();
    let plan = WindowPlan::new(&spec, &[]).map_err(anyhow::Error::msg)?;
    let history = History::build(plan, &events, &["entity_id".into()], "event_timestamp")
        .map_err(anyhow::Error::msg)?;
    let indexed = clock.elapsed().as_secs_f64();
    let prepared =
        PreparedView::new(&view, &gold, &view.features, options)?.with_events(Arc::new(history));
    let joined = join_prepared(&spine, &[prepared], options)?;
    let seconds = clock.elapsed().as_secs_f64();
    assert_eq!(joined.height(), o.spine);
    let counted = joined
        .column(view.features[0].as_str())?
        .f64()?
        .sum()
        .unwrap_or(0.0);
    println!("join: gold rows' values (baseline)        {plain_seconds:>6.2} s");
    println!(
        "join: windows at each spine row's time    {seconds:>6.2} s  (indexing the events {indexed:.2} s; target < 10 s; {:.2}× the baseline) [events counted {counted:.0}]",
        seconds / plain_seconds
    );
    Ok(())
}
