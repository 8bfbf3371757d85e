//! Comparing a dataset with a reference profile: per-column tests, the
//! dataset verdict, and what a report draws.
//!
//! Default tests follow Evidently's: for a reference of at most
//! [`DriftOptions::small_reference_rows`] rows, Kolmogorov–Smirnov for
//! numeric columns and chi-squared for categorical ones (drift when p <
//! 0.05); for larger references, the normalized Wasserstein distance for
//! numeric columns and the Jensen–Shannon distance for categorical ones
//! (drift when ≥ 0.1). A numeric column with at most
//! [`crate::DISCRETE_LIMIT`] distinct reference values is tested as a
//! categorical one. The dataset drifts when at least
//! [`DriftOptions::drift_share`] of the tested columns drift.
//!
//! Defined results for awkward data (never NaN, never a panic):
//! - a column with no values on either side (empty window, all missing) is
//!   `skipped` with the reason, and does not count toward the share;
//! - categories the reference never saw are counted as their own categories
//!   (or in the reference's "(other)" bucket when it has one), so they raise
//!   the statistic rather than disappear;
//! - a constant reference column is a one-category column: any other
//!   current value is an unseen category;
//! - a numeric reference against a categorical current column (or the
//!   reverse) is an error naming the column.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::{
    Column, ColumnProfile, NumericSummary, Profile, Summary, Values, bin_counts_sorted,
    category_table, count_categories,
};
use crate::sort::sorted_finite;
use crate::stats::{self, KsMethod, shares};

/// A drift test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov (p-value).
    Ks,
    /// Chi-squared test of homogeneity (p-value).
    ChiSquared,
    /// Population stability index (distance).
    Psi,
    /// Jensen–Shannon distance, natural log (distance).
    JensenShannon,
    /// Wasserstein distance divided by the reference's standard deviation
    /// (distance).
    Wasserstein,
}

impl Method {
    /// Whether the test gives a p-value (drift when below the threshold)
    /// rather than a distance (drift when at or above it).
    pub fn is_hypothesis_test(self) -> bool {
        matches!(self, Method::Ks | Method::ChiSquared)
    }

    /// The default threshold: 0.05 for p-values, 0.1 for distances.
    pub fn default_threshold(self) -> f64 {
        if self.is_hypothesis_test() { 0.05 } else { 0.1 }
    }

    /// The method's name, as in reports and options.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ks => "ks",
            Method::ChiSquared => "chi_squared",
            Method::Psi => "psi",
            Method::JensenShannon => "jensen_shannon",
            Method::Wasserstein => "wasserstein",
        }
    }

    /// Parses a method name.
    pub fn parse(name: &str) -> Result<Method> {
        Ok(match name {
            "ks" => Method::Ks,
            "chi_squared" | "chisquare" | "chi2" => Method::ChiSquared,
            "psi" => Method::Psi,
            "jensen_shannon" | "js" => Method::JensenShannon,
            "wasserstein" => Method::Wasserstein,
            other => {
                return Err(Error::InvalidOption(format!(
                    "unknown drift test {other:?}: use ks, chi_squared, psi, jensen_shannon or wasserstein"
                )));
            }
        })
    }
}

/// A column's test and threshold, overriding the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColumnTest {
    /// The test.
    pub method: Method,
    /// Its threshold; the method's default when absent.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// How drift is decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftOptions {
    /// The dataset drifts when at least this share of tested columns drift.
    pub drift_share: f64,
    /// References of at most this many rows get the hypothesis tests.
    pub small_reference_rows: u64,
    /// One test for every column (unless `columns` names it).
    pub all_columns: Option<ColumnTest>,
    /// Per-column tests.
    pub columns: BTreeMap<String, ColumnTest>,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            drift_share: 0.5,
            small_reference_rows: 1000,
            all_columns: None,
            columns: BTreeMap::new(),
        }
    }
}

impl DriftOptions {
    /// Checks the options' values.
    pub fn validate(&self) -> Result<()> {
        if !(self.drift_share > 0.0 && self.drift_share <= 1.0) {
            return Err(Error::InvalidOption(format!(
                "drift_share must be in (0, 1], got {}",
                self.drift_share
            )));
        }
        for (name, test) in self
            .columns
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .chain(self.all_columns.iter().map(|t| ("every column", t)))
        {
            if let Some(t) = test.threshold
                && !(t.is_finite() && t >= 0.0)
            {
                return Err(Error::InvalidOption(format!(
                    "the threshold of {name} must be a finite number ≥ 0, got {t}"
                )));
            }
            if test.method.is_hypothesis_test() && test.threshold.is_some_and(|t| t > 1.0) {
                return Err(Error::InvalidOption(format!(
                    "the threshold of {name} is a p-value and must be at most 1"
                )));
            }
        }
        Ok(())
    }
}

/// Whether a column was tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Tested; `drifted` holds the verdict.
    Tested,
    /// Not tested (see `note`); not counted toward the dataset's share.
    Skipped,
}

/// What a report draws for a column: shares per bin or category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// Bin ranges or category names.
    pub labels: Vec<String>,
    /// Bin edges for a numeric column (`labels.len() + 1`), else empty.
    pub edges: Vec<f64>,
    /// The reference's share per bin.
    pub reference: Vec<f64>,
    /// The current data's share per bin.
    pub current: Vec<f64>,
}

/// One column's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDrift {
    /// The column.
    pub column: String,
    /// `numeric` or `categorical` (how it was tested).
    pub kind: String,
    /// Tested or skipped.
    pub status: Status,
    /// The test.
    pub method: Option<Method>,
    /// The statistic (the distance, for distance tests).
    pub statistic: Option<f64>,
    /// The p-value, for hypothesis tests.
    pub p_value: Option<f64>,
    /// The threshold applied.
    pub threshold: Option<f64>,
    /// Whether the column drifted.
    pub drifted: bool,
    /// Why the column was skipped, or a remark on the result.
    pub note: Option<String>,
    /// Non-missing reference values.
    pub reference_values: u64,
    /// Non-missing current values.
    pub current_values: u64,
    /// The share of missing values in the reference.
    pub reference_null_share: f64,
    /// The share of missing values in the current data.
    pub current_null_share: f64,
    /// The reference's mean (numeric columns).
    pub reference_mean: Option<f64>,
    /// The current data's mean (numeric columns).
    pub current_mean: Option<f64>,
    /// The overlaid distributions.
    pub chart: Chart,
}

/// A dataset's drift against a reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Rows in the reference.
    pub reference_rows: u64,
    /// Rows in the current data.
    pub current_rows: u64,
    /// Per feature column, in the reference's order (then columns only the
    /// current data has).
    pub columns: Vec<ColumnDrift>,
    /// The predictions' drift, when both sides have predictions.
    pub prediction: Option<ColumnDrift>,
    /// Columns tested.
    pub tested_columns: usize,
    /// Columns that drifted.
    pub drifted_columns: usize,
    /// drifted / tested (0 when nothing was tested).
    pub drift_share: f64,
    /// The share at which the dataset drifts.
    pub drift_share_threshold: f64,
    /// Whether the dataset drifted.
    pub dataset_drift: bool,
    /// A remark on the whole report (an empty current dataset).
    pub note: Option<String>,
}

impl DriftReport {
    /// The result for column `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnDrift> {
        self.columns.iter().find(|c| c.column == name)
    }
}

/// Chart bins for numeric columns.
const CHART_BINS: usize = 30;

impl Profile {
    /// Compares `current` (and optionally predictions on it) with this
    /// reference. Columns are matched by name and tested in parallel.
    pub fn compare(
        &self,
        current: &[Column],
        prediction: Option<&Column>,
        options: &DriftOptions,
    ) -> Result<DriftReport> {
        options.validate()?;
        let rows = crate::profile::check_shape(current, prediction)?;
        let by_name: BTreeMap<&str, &Column> =
            current.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut columns: Vec<ColumnDrift> = self
            .columns
            .par_iter()
            .map(|reference| {
                compare_column(
                    reference,
                    by_name.get(reference.name.as_str()).copied(),
                    self.rows,
                    options,
                )
            })
            .collect::<Result<_>>()?;
        for c in current {
            if self.column(&c.name).is_none() {
                columns.push(skipped_only_current(c));
            }
        }
        let prediction = match (&self.prediction, prediction) {
            (Some(reference), Some(current)) => Some(compare_column(
                reference,
                Some(current),
                self.rows,
                options,
            )?),
            _ => None,
        };
        let tested = columns
            .iter()
            .filter(|c| c.status == Status::Tested)
            .count();
        let drifted = columns.iter().filter(|c| c.drifted).count();
        let share = if tested == 0 {
            0.0
        } else {
            drifted as f64 / tested as f64
        };
        Ok(DriftReport {
            reference_rows: self.rows,
            current_rows: rows as u64,
            columns,
            prediction,
            tested_columns: tested,
            drifted_columns: drifted,
            drift_share: share,
            drift_share_threshold: options.drift_share,
            dataset_drift: tested > 0 && share >= options.drift_share,
            note: (rows == 0).then(|| "the current data has no rows: nothing was tested".into()),
        })
    }
}

/// Profiles `reference` and compares `current` with it.
pub fn compare_datasets(
    reference: &[Column],
    current: &[Column],
    options: &DriftOptions,
) -> Result<DriftReport> {
    Profile::build(reference, None)?.compare(current, None, options)
}

fn skipped_only_current(c: &Column) -> ColumnDrift {
    let kind = match c.values {
        Values::Numeric(_) => "numeric",
        Values::Categorical(_) => "categorical",
    };
    ColumnDrift {
        note: Some("not in the reference: not tested".into()),
        current_values: c.values.len() as u64,
        ..blank(&c.name, kind)
    }
}

fn blank(name: &str, kind: &str) -> ColumnDrift {
    ColumnDrift {
        column: name.to_string(),
        kind: kind.to_string(),
        status: Status::Skipped,
        method: None,
        statistic: None,
        p_value: None,
        threshold: None,
        drifted: false,
        note: None,
        reference_values: 0,
        current_values: 0,
        reference_null_share: 0.0,
        current_null_share: 0.0,
        reference_mean: None,
        current_mean: None,
        chart: Chart {
            labels: Vec::new(),
            edges: Vec::new(),
            reference: Vec::new(),
            current: Vec::new(),
        },
    }
}

fn compare_column(
    reference: &ColumnProfile,
    current: Option<&Column>,
    reference_rows: u64,
    options: &DriftOptions,
) -> Result<ColumnDrift> {
    let name = reference.name.as_str();
    let Some(current) = current else {
        let mut out = blank(name, kind_name(&reference.summary));
        out.note = Some("not in the current data: not tested".into());
        out.reference_null_share = reference.null_share();
        return Ok(out);
    };
    let configured = options.columns.get(name).copied().or(options.all_columns);
    let small = reference_rows <= options.small_reference_rows;
    match (&reference.summary, &current.values) {
        (Summary::Numeric(r), Values::Numeric(values)) => {
            Ok(compare_numeric(reference, r, values, configured, small))
        }
        (Summary::Categorical(r), Values::Categorical(values)) => {
            let (counts, nulls) = count_categories(values);
            let (labels, rc, cc) = category_table(r, &counts);
            let mut out = compare_counts(
                name,
                labels,
                rc,
                cc,
                configured,
                small,
                reference.null_share(),
                null_share(nulls, values.len()),
            );
            out.reference_values = reference.rows - reference.nulls;
            Ok(out)
        }
        (Summary::Numeric(_), Values::Categorical(_)) => Err(Error::TypeMismatch {
            column: name.to_string(),
            reference: "numeric",
            current: "categorical",
        }),
        (Summary::Categorical(_), Values::Numeric(_)) => Err(Error::TypeMismatch {
            column: name.to_string(),
            reference: "categorical",
            current: "numeric",
        }),
    }
}

fn kind_name(summary: &Summary) -> &'static str {
    match summary {
        Summary::Numeric(_) => "numeric",
        Summary::Categorical(_) => "categorical",
    }
}

fn null_share(nulls: u64, rows: usize) -> f64 {
    if rows == 0 {
        0.0
    } else {
        nulls as f64 / rows as f64
    }
}

fn compare_numeric(
    profile: &ColumnProfile,
    reference: &NumericSummary,
    values: &[f64],
    configured: Option<ColumnTest>,
    small: bool,
) -> ColumnDrift {
    let sorted = sorted_finite(values);
    let current_nulls = (values.len() - sorted.len()) as u64;
    let current_null_share = null_share(current_nulls, values.len());
    // Few distinct reference values: a categorical column in disguise,
    // unless a numeric test is asked for.
    let method_is_numeric =
        configured.is_some_and(|t| matches!(t.method, Method::Ks | Method::Wasserstein));
    if let Some(discrete) = reference.discrete.as_deref().filter(|_| !method_is_numeric) {
        let (labels, rc, cc) = discrete_counts(discrete, &sorted);
        let mut out = compare_counts(
            &profile.name,
            labels,
            rc,
            cc,
            configured,
            small,
            profile.null_share(),
            current_null_share,
        );
        out.reference_values = reference.count;
        out.reference_mean = Some(reference.mean).filter(|_| reference.count > 0);
        out.current_mean = mean(&sorted);
        return out;
    }
    let mut out = blank(&profile.name, "numeric");
    out.reference_values = reference.count;
    out.current_values = sorted.len() as u64;
    out.reference_null_share = profile.null_share();
    out.current_null_share = current_null_share;
    out.reference_mean = Some(reference.mean).filter(|_| reference.count > 0);
    out.current_mean = mean(&sorted);
    if reference.count == 0 {
        out.note = Some("every reference value is missing: not tested".into());
        return out;
    }
    if sorted.is_empty() {
        out.note = Some(if values.is_empty() {
            "no current values: not tested".into()
        } else {
            "every current value is missing: not tested".into()
        });
        return out;
    }
    out.chart = numeric_chart(reference, &sorted);
    let test = configured.unwrap_or(ColumnTest {
        method: if small {
            Method::Ks
        } else {
            Method::Wasserstein
        },
        threshold: None,
    });
    let threshold = test.threshold.unwrap_or(test.method.default_threshold());
    match numeric_statistic(test.method, reference, &sorted) {
        Ok((statistic, p_value)) => finish(&mut out, test.method, statistic, p_value, threshold),
        Err(note) => out.note = Some(note.into()),
    }
    out
}

/// The current values counted on the reference's distinct values: labels,
/// reference counts, current counts; values the reference never had are
/// counted together as `(unseen values)`.
fn discrete_counts(discrete: &[(f64, u64)], sorted: &[f64]) -> (Vec<String>, Vec<u64>, Vec<u64>) {
    let mut labels: Vec<String> = discrete.iter().map(|(v, _)| format_value(*v)).collect();
    let mut rc: Vec<u64> = discrete.iter().map(|(_, c)| *c).collect();
    let mut cc = vec![0u64; discrete.len()];
    let mut unseen = 0u64;
    for &x in sorted {
        match discrete.iter().position(|(v, _)| *v == x) {
            Some(i) => cc[i] += 1,
            None => unseen += 1,
        }
    }
    if unseen > 0 {
        labels.push("(unseen values)".into());
        rc.push(0);
        cc.push(unseen);
    }
    (labels, rc, cc)
}

/// The statistic (and p-value, for tests that have one) of `method` on a
/// numeric column's `sorted` current values; or why it cannot be computed.
fn numeric_statistic(
    method: Method,
    reference: &NumericSummary,
    sorted: &[f64],
) -> std::result::Result<(f64, Option<f64>), &'static str> {
    Ok(match method {
        Method::Ks => {
            let r = stats::ks_test(
                &reference.sketch,
                sorted,
                reference.count,
                sorted.len() as u64,
                KsMethod::Auto,
            );
            (r.statistic, r.p_value)
        }
        Method::Wasserstein => {
            if reference.std <= 0.0 {
                return Err(
                    "the reference is constant: the normalized Wasserstein distance is undefined",
                );
            }
            (
                stats::wasserstein(&reference.sketch, sorted) / reference.std,
                None,
            )
        }
        Method::Psi | Method::JensenShannon | Method::ChiSquared => {
            let cc = bin_counts_sorted(&reference.bin_edges, sorted);
            let rc = &reference.bin_counts;
            match method {
                Method::Psi => (stats::psi(rc, &cc), None),
                Method::JensenShannon => (stats::jensen_shannon(rc, &cc), None),
                _ => {
                    let r = stats::chi_squared(rc, &cc);
                    (r.statistic, r.p_value)
                }
            }
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn compare_counts(
    name: &str,
    labels: Vec<String>,
    reference: Vec<u64>,
    current: Vec<u64>,
    configured: Option<ColumnTest>,
    small: bool,
    reference_null_share: f64,
    current_null_share: f64,
) -> ColumnDrift {
    let mut out = blank(name, "categorical");
    let (nr, nc): (u64, u64) = (reference.iter().sum(), current.iter().sum());
    out.reference_values = nr;
    out.current_values = nc;
    out.reference_null_share = reference_null_share;
    out.current_null_share = current_null_share;
    out.chart = Chart {
        labels,
        edges: Vec::new(),
        reference: shares(&reference),
        current: shares(&current),
    };
    if nr == 0 {
        out.note = Some("every reference value is missing: not tested".into());
        return out;
    }
    if nc == 0 {
        out.note = Some("no current values (or every one missing): not tested".into());
        return out;
    }
    let method = match configured.map(|t| t.method) {
        Some(m @ (Method::ChiSquared | Method::Psi | Method::JensenShannon)) => m,
        // Numeric tests do not apply to categories: the size rule decides.
        _ if small => Method::ChiSquared,
        _ => Method::JensenShannon,
    };
    let threshold = configured
        .filter(|t| t.method == method)
        .and_then(|t| t.threshold)
        .unwrap_or(method.default_threshold());
    let (statistic, p_value) = match method {
        Method::ChiSquared => {
            let r = stats::chi_squared(&reference, &current);
            (r.statistic, r.p_value)
        }
        Method::Psi => (stats::psi(&reference, &current), None),
        _ => (stats::jensen_shannon(&reference, &current), None),
    };
    finish(&mut out, method, statistic, p_value, threshold);
    out
}

fn finish(out: &mut ColumnDrift, method: Method, statistic: f64, p: Option<f64>, threshold: f64) {
    out.method = Some(method);
    out.threshold = Some(threshold);
    if !statistic.is_finite() || p.is_some_and(|p| !p.is_finite()) {
        out.note = Some(format!(
            "the {} statistic is not a finite number for these values: not tested",
            method.as_str()
        ));
        return;
    }
    out.status = Status::Tested;
    out.statistic = Some(statistic);
    out.p_value = p;
    out.drifted = match p {
        Some(p) => p < threshold,
        None => statistic >= threshold,
    };
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Equal-width bins over both samples' range; the reference's shares come
/// from its sketch (each point standing for an equal share of its values).
fn numeric_chart(reference: &NumericSummary, current: &[f64]) -> Chart {
    let lo = reference.min.min(current[0]);
    let hi = reference.max.max(current[current.len() - 1]);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let width = (hi - lo) / CHART_BINS as f64;
    let edges: Vec<f64> = (0..=CHART_BINS).map(|k| lo + width * k as f64).collect();
    let inner = &edges[1..CHART_BINS];
    let r = bin_counts_sorted(inner, &reference.sketch);
    let c = bin_counts_sorted(inner, current);
    let labels = edges
        .windows(2)
        .map(|w| format!("{}–{}", format_value(w[0]), format_value(w[1])))
        .collect();
    Chart {
        labels,
        edges,
        reference: shares(&r),
        current: shares(&c),
    }
}

/// A number for a label: few significant digits.
pub fn format_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() >= 1e4 || v.abs() < 1e-3 {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}
