//! The statistics against scipy's values for fixed vectors
//! (`fixtures/scipy_reference.json`, made by `fixtures/make_scipy_fixtures.py`).

use drift::sort::sorted_finite;
use drift::stats::{self, KsMethod};
use serde_json::Value;

fn fixtures() -> Value {
    let text = include_str!("fixtures/scipy_reference.json");
    serde_json::from_str(text).expect("the fixture file is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("a count"))
        .collect()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-300) + 1e-14;
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got:e}, scipy {want:e}"
    );
}

#[test]
fn two_sample_statistics_match_scipy() {
    let f = fixtures();
    let cases = f["two_sample"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let a = sorted_finite(&floats(&case["reference"]));
        let b = sorted_finite(&floats(&case["current"]));
        let (n, m) = (a.len() as u64, b.len() as u64);
        close(
            stats::ks_statistic(&a, &b),
            case["ks_statistic"].as_f64().unwrap(),
            1e-12,
            &format!("{name} KS D"),
        );
        let asymp = stats::ks_test(&a, &b, n, m, KsMethod::Asymptotic);
        close(
            asymp.p_value.unwrap(),
            case["ks_pvalue_kolmogorov"].as_f64().unwrap(),
            1e-9,
            &format!("{name} KS asymptotic p"),
        );
        if let Some(exact) = case["ks_pvalue_exact"].as_f64() {
            let ours = stats::ks_test(&a, &b, n, m, KsMethod::Exact);
            close(
                ours.p_value.unwrap(),
                exact,
                1e-7,
                &format!("{name} KS exact p"),
            );
        }
        let w = stats::wasserstein(&a, &b);
        close(
            w,
            case["wasserstein"].as_f64().unwrap(),
            1e-10,
            &format!("{name} W"),
        );
        let std = {
            let mean = a.iter().sum::<f64>() / a.len() as f64;
            (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
        };
        close(
            w / std,
            case["wasserstein_normalized"].as_f64().unwrap(),
            1e-10,
            &format!("{name} normalized W"),
        );
    }
}

#[test]
fn categorical_statistics_match_scipy() {
    let f = fixtures();
    for case in f["categorical"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let r = counts(&case["reference_counts"]);
        let c = counts(&case["current_counts"]);
        let chi = stats::chi_squared(&r, &c);
        close(
            chi.statistic,
            case["chi2"].as_f64().unwrap(),
            1e-10,
            &format!("{name} chi2"),
        );
        close(
            chi.p_value.unwrap(),
            case["p_value"].as_f64().unwrap(),
            1e-8,
            &format!("{name} chi2 p"),
        );
        close(
            stats::jensen_shannon(&r, &c),
            case["jensenshannon"].as_f64().unwrap(),
            1e-10,
            &format!("{name} JS"),
        );
        close(
            stats::psi(&r, &c),
            case["psi"].as_f64().unwrap(),
            1e-10,
            &format!("{name} PSI"),
        );
    }
}

#[test]
fn welch_and_proportion_tests_match_scipy() {
    let f = fixtures();
    for case in f["welch"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (a, b) = (floats(&case["a"]), floats(&case["b"]));
        let (ta, tb) = (
            drift::ab::Tally::of(a.iter().copied()),
            drift::ab::Tally::of(b.iter().copied()),
        );
        let r = stats::welch(
            ta.mean(),
            ta.variance(),
            ta.n,
            tb.mean(),
            tb.variance(),
            tb.n,
        );
        close(r.t, case["t"].as_f64().unwrap(), 1e-9, &format!("{name} t"));
        close(
            r.df,
            case["df"].as_f64().unwrap(),
            1e-9,
            &format!("{name} df"),
        );
        close(
            r.p_value,
            case["p_value"].as_f64().unwrap(),
            1e-7,
            &format!("{name} p"),
        );
    }
    for case in f["two_proportion"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let get = |k: &str| case[k].as_u64().unwrap();
        let (z, p) = stats::two_proportion_z(
            get("successes_a"),
            get("n_a"),
            get("successes_b"),
            get("n_b"),
        );
        close(z, case["z"].as_f64().unwrap(), 1e-10, &format!("{name} z"));
        close(
            p,
            case["p_value"].as_f64().unwrap(),
            1e-8,
            &format!("{name} p"),
        );
    }
    for case in f["sample_size"].as_array().unwrap() {
        let get = |k: &str| case[k].as_f64().unwrap();
        assert_eq!(
            stats::sample_size_proportions(get("baseline"), get("mde"), get("alpha"), get("power")),
            case["n_per_arm"].as_u64().unwrap(),
            "{case}"
        );
    }
    for case in f["kolmogorov_sf"].as_array().unwrap() {
        let x = case["x"].as_f64().unwrap();
        close(
            stats::kolmogorov_sf(x),
            case["sf"].as_f64().unwrap(),
            1e-10,
            &format!("Q({x})"),
        );
    }
}
