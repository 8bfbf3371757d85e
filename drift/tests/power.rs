//! Power and false alarms on synthetic data, with the default tests: a
//! planted shift is found in at least 95% of trials, identical
//! distributions raise drift in at most 5% of 200 trials. Plus the defined
//! results for awkward data.

use drift::{Column, DriftOptions, Method, Profile, Status, Values};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

const TRIALS: usize = 200;

fn dataset(rng: &mut ChaCha8Rng, rows: usize, shift: f64) -> Vec<Column> {
    let normal = Normal::new(0.0, 1.0).unwrap();
    let mut columns: Vec<Column> = (0..4)
        .map(|f| Column {
            name: format!("x{f}"),
            values: Values::Numeric(
                (0..rows)
                    .map(|_| normal.sample(rng) * (1.0 + f as f64) + shift * (1.0 + f as f64))
                    .collect(),
            ),
        })
        .collect();
    // A categorical column whose most common category loses share under a
    // shift.
    let categories = ["a", "b", "c", "d"];
    let weights = [0.4 - 0.2 * shift, 0.3, 0.2, 0.1 + 0.2 * shift];
    let cat = (0..rows)
        .map(|_| {
            let u: f64 = rand::Rng::random(rng);
            let mut acc = 0.0;
            for (c, w) in categories.iter().zip(weights) {
                acc += w;
                if u < acc {
                    return Some(c.to_string());
                }
            }
            Some("d".to_string())
        })
        .collect();
    columns.push(Column {
        name: "category".into(),
        values: Values::Categorical(cat),
    });
    columns
}

/// Runs `TRIALS` reference/current pairs; counts dataset verdicts and
/// column verdicts that drifted.
fn trials(
    seed: u64,
    reference_rows: usize,
    current_rows: usize,
    shift: f64,
) -> (usize, usize, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut datasets, mut columns, mut tested) = (0, 0, 0);
    for _ in 0..TRIALS {
        let reference = dataset(&mut rng, reference_rows, 0.0);
        let current = dataset(&mut rng, current_rows, shift);
        let report = Profile::build(&reference, None)
            .unwrap()
            .compare(&current, None, &DriftOptions::default())
            .unwrap();
        datasets += usize::from(report.dataset_drift);
        columns += report.drifted_columns;
        tested += report.tested_columns;
        for c in &report.columns {
            assert!(c.statistic.is_some_and(f64::is_finite), "{c:?}");
        }
    }
    eprintln!(
        "reference {reference_rows}, current {current_rows}, shift {shift}: dataset drift in {datasets} of {TRIALS} trials, {columns} of {tested} column tests drifted"
    );
    (datasets, columns, tested)
}

#[test]
fn small_references_use_hypothesis_tests() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let report = Profile::build(&dataset(&mut rng, 500, 0.0), None)
        .unwrap()
        .compare(&dataset(&mut rng, 300, 0.0), None, &DriftOptions::default())
        .unwrap();
    assert_eq!(report.column("x0").unwrap().method, Some(Method::Ks));
    assert_eq!(
        report.column("category").unwrap().method,
        Some(Method::ChiSquared)
    );
    let large = Profile::build(&dataset(&mut rng, 2_000, 0.0), None)
        .unwrap()
        .compare(&dataset(&mut rng, 300, 0.0), None, &DriftOptions::default())
        .unwrap();
    assert_eq!(
        large.column("x0").unwrap().method,
        Some(Method::Wasserstein)
    );
    assert_eq!(
        large.column("category").unwrap().method,
        Some(Method::JensenShannon)
    );
}

#[test]
fn a_planted_shift_is_detected_with_power_of_at_least_95_percent() {
    // Small reference (KS, chi-squared): a shift of 0.4 standard deviations
    // (and 8 points of category share) over 500 vs 500 rows.
    let (datasets, _, _) = trials(11, 500, 500, 0.4);
    assert!(
        datasets as f64 >= 0.95 * TRIALS as f64,
        "small: {datasets} of {TRIALS}"
    );
    // Large reference (normalized Wasserstein, Jensen–Shannon at 0.1): a
    // shift of 0.25 standard deviations over 5,000 vs 2,000 rows.
    let (datasets, _, _) = trials(12, 5_000, 2_000, 0.25);
    assert!(
        datasets as f64 >= 0.95 * TRIALS as f64,
        "large: {datasets} of {TRIALS}"
    );
}

#[test]
fn identical_distributions_raise_drift_in_at_most_5_percent_of_trials() {
    let (datasets, columns, tested) = trials(21, 500, 500, 0.0);
    assert!(
        datasets as f64 <= 0.05 * TRIALS as f64,
        "small: {datasets} of {TRIALS}"
    );
    // Each column test has size at most alpha (0.05); over 1,000 column
    // tests allow the binomial's 3-sigma spread above it.
    let rate = columns as f64 / tested as f64;
    assert!(
        rate <= 0.05 + 3.0 * (0.05f64 * 0.95 / tested as f64).sqrt(),
        "columns: {columns} of {tested}"
    );
    let (datasets, columns, tested) = trials(22, 5_000, 2_000, 0.0);
    assert!(
        datasets as f64 <= 0.05 * TRIALS as f64,
        "large: {datasets} of {TRIALS}"
    );
    assert!(
        columns as f64 <= 0.05 * tested as f64,
        "large columns: {columns} of {tested}"
    );
}

fn numeric(name: &str, values: Vec<f64>) -> Column {
    Column {
        name: name.into(),
        values: Values::Numeric(values),
    }
}

#[test]
fn awkward_data_gets_defined_results() {
    let reference = vec![
        numeric("x", (0..100).map(f64::from).collect()),
        numeric("constant", vec![3.0; 100]),
        numeric("nulls", vec![f64::NAN; 100]),
        Column {
            name: "city".into(),
            values: Values::Categorical(
                (0..100)
                    .map(|i| Some(if i % 2 == 0 { "a" } else { "b" }.into()))
                    .collect(),
            ),
        },
    ];
    let profile = Profile::build(&reference, None).unwrap();
    // An empty window.
    let empty: Vec<Column> = vec![
        numeric("x", vec![]),
        numeric("constant", vec![]),
        numeric("nulls", vec![]),
        Column {
            name: "city".into(),
            values: Values::Categorical(vec![]),
        },
    ];
    let r = profile
        .compare(&empty, None, &DriftOptions::default())
        .unwrap();
    assert_eq!(r.tested_columns, 0);
    assert!(!r.dataset_drift);
    assert!(r.note.is_some());
    assert!(
        r.columns
            .iter()
            .all(|c| c.status == Status::Skipped && c.note.is_some())
    );
    // Constant feature moving, all-null column, unseen category.
    let current = vec![
        numeric("x", (0..100).map(f64::from).collect()),
        numeric(
            "constant",
            vec![4.0; 50].into_iter().chain(vec![3.0; 50]).collect(),
        ),
        numeric("nulls", vec![f64::NAN; 100]),
        Column {
            name: "city".into(),
            values: Values::Categorical(
                (0..100)
                    .map(|i| Some(if i % 3 == 0 { "zz" } else { "a" }.into()))
                    .collect(),
            ),
        },
    ];
    let r = profile
        .compare(&current, None, &DriftOptions::default())
        .unwrap();
    let constant = r.column("constant").unwrap();
    assert!(constant.drifted, "{constant:?}");
    assert!(
        constant
            .chart
            .labels
            .contains(&"(unseen values)".to_string())
    );
    let nulls = r.column("nulls").unwrap();
    assert_eq!(nulls.status, Status::Skipped);
    assert!(nulls.note.as_deref().unwrap().contains("missing"));
    let city = r.column("city").unwrap();
    assert!(
        city.drifted && city.chart.labels.contains(&"zz".to_string()),
        "{city:?}"
    );
    let x = r.column("x").unwrap();
    assert_eq!(x.statistic, Some(0.0));
    // Everything is serializable without NaN.
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("NaN") && !json.contains("null,\"p_value\":NaN"));
    // The HTML page renders every column.
    let html = drift::html::render("t", "s", &r, &[]);
    assert!(html.contains("<svg") && html.contains("zz"));
    // A numeric reference against a categorical column is an error naming it.
    let wrong = vec![Column {
        name: "x".into(),
        values: Values::Categorical(vec![None]),
    }];
    let e = profile
        .compare(&wrong, None, &DriftOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("column x is numeric"), "{e}");
}
