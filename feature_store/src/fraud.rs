//! The fraud-style example domain: synthetic bronze data, its silver step and
//! its gold feature view.
//!
//! This is what `aurum demo` runs. The data is deterministic for a seed:
//! customers with a spending level and activity, merchants with a category,
//! card transactions over a window of days, and a fraud label whose odds
//! rise with the customer's risk, large amounts, risky categories and night
//! hours. The bronze files are deliberately messy (string timestamps, padded
//! and mixed-case categories, re-delivered duplicates) so that the silver
//! step has real work to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::definitions::{Entity, FeatureView};
use crate::error::{Error, Result};

/// The bronze transactions file name.
pub const TRANSACTIONS_FILE: &str = "transactions.csv";
/// The silver table of cleaned transactions.
pub const SILVER_TABLE: &str = "silver_transactions";
/// The gold feature view (and table) of per-customer aggregates.
pub const CUSTOMER_VIEW: &str = "customer_features";

const CATEGORIES: [&str; 6] = [
    "grocery",
    "fuel",
    "restaurant",
    "travel",
    "electronics",
    "online",
];
const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// How much synthetic data to make.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of transactions (before re-delivered duplicates are added).
    pub rows: usize,
    /// The random seed; the same seed gives the same data.
    pub seed: u64,
    /// The end of the generated window, in microseconds since the epoch.
    pub end_micros: i64,
    /// The length of the window in days.
    pub days: i64,
}

/// What `generate` wrote.
#[derive(Debug, Clone)]
pub struct BronzeFiles {
    /// The transactions CSV file.
    pub transactions: PathBuf,
    /// Rows written, including re-delivered duplicates.
    pub rows_written: usize,
    /// Number of distinct customers.
    pub customers: usize,
}

/// The per-customer feature view of the example domain.
pub fn customer_view() -> FeatureView {
    FeatureView {
        name: CUSTOMER_VIEW.to_string(),
        entity: Entity {
            name: "customer".to_string(),
            join_keys: vec!["customer_id".to_string()],
        },
        features: vec![
            "txn_count_1d".to_string(),
            "amount_sum_1d".to_string(),
            "txn_count_7d".to_string(),
            "amount_mean_7d".to_string(),
            "amount_max_7d".to_string(),
        ],
        timestamp_column: "event_timestamp".to_string(),
        created_column: "created_timestamp".to_string(),
        ttl: Duration::from_secs(7 * 86_400),
    }
}

/// A stable hash of the view definition and the processing code's version,
/// recorded as lineage on every gold commit.
pub fn definition_hash(view: &FeatureView) -> String {
    let doc = serde_json::to_vec(view).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(b"aurum-fraud-gold-v1");
    hasher.update(&doc);
    hex::encode(hasher.finalize())
}

/// Writes deterministic synthetic bronze transactions to `dir`.
pub fn generate(dir: &Path, options: &GenerateOptions) -> Result<BronzeFiles> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let n_customers = (options.rows / 40).max(20);
    let n_merchants = 60;

    // Customer traits: a spending level, an activity weight, a risk flag.
    let customers: Vec<(f64, f64, bool)> = (0..n_customers)
        .map(|_| {
            let level = 15.0 + 120.0 * rng.random::<f64>().powi(2);
            let activity = 0.2 + rng.random::<f64>() * 1.8;
            let risky = rng.random::<f64>() < 0.08;
            (level, if risky { activity * 2.5 } else { activity }, risky)
        })
        .collect();
    // Cumulative activity: a customer is drawn by binary search, so drawing
    // costs O(log customers) per row.
    let cumulative: Vec<f64> = customers
        .iter()
        .scan(0.0, |sum, c| {
            *sum += c.1;
            Some(*sum)
        })
        .collect();
    let total_activity = cumulative.last().copied().unwrap_or(0.0);
    let merchants: Vec<usize> = (0..n_merchants)
        .map(|_| rng.random_range(0..CATEGORIES.len()))
        .collect();

    let start = options.end_micros - options.days * MICROS_PER_DAY;
    let span = options.days * MICROS_PER_DAY;
    let mut ids = Vec::with_capacity(options.rows);
    let mut customer_ids = Vec::with_capacity(options.rows);
    let mut merchant_ids = Vec::with_capacity(options.rows);
    let mut amounts = Vec::with_capacity(options.rows);
    let mut categories = Vec::with_capacity(options.rows);
    let mut event_times = Vec::with_capacity(options.rows);
    let mut labels = Vec::with_capacity(options.rows);
    let mut ingested = Vec::with_capacity(options.rows);
    for i in 0..options.rows {
        let pick = rng.random::<f64>() * total_activity;
        let customer = cumulative
            .partition_point(|&c| c < pick)
            .min(n_customers - 1);
        let (level, _, risky) = customers[customer];
        let merchant = rng.random_range(0..n_merchants);
        let category = merchants[merchant];
        let ts = start + (rng.random::<f64>() * span as f64) as i64;
        let hour = (ts.rem_euclid(MICROS_PER_DAY) / (3600 * MICROS_PER_SECOND)) as u32;
        let night = !(6..23).contains(&hour);
        let mut amount = level * (0.3 + rng.random::<f64>() * 1.4);
        let large = rng.random::<f64>() < 0.05;
        if large {
            amount *= 4.0 + rng.random::<f64>() * 6.0;
        }
        let risky_category = matches!(CATEGORIES[category], "electronics" | "online" | "travel");
        let logit = -5.2
            + 2.6 * f64::from(u8::from(risky))
            + 1.6 * f64::from(u8::from(large))
            + 0.8 * f64::from(u8::from(risky_category))
            + 0.7 * f64::from(u8::from(night))
            + 0.008 * level;
        let fraud = rng.random::<f64>() < 1.0 / (1.0 + (-logit).exp());
        ids.push(format!("t{i:08}"));
        customer_ids.push(customer as i64 + 1);
        merchant_ids.push(merchant as i64 + 1);
        amounts.push(format!("{amount:.2}"));
        categories.push(messy_category(CATEGORIES[category], &mut rng));
        event_times.push(iso(ts));
        labels.push(i64::from(u8::from(fraud)));
        ingested.push(ts + rng.random_range(1..600) * MICROS_PER_SECOND);
    }
    // Re-deliveries: about 1% of rows arrive again later, possibly corrected.
    let duplicates = options.rows / 100;
    for _ in 0..duplicates {
        let i = rng.random_range(0..options.rows);
        ids.push(ids[i].clone());
        customer_ids.push(customer_ids[i]);
        merchant_ids.push(merchant_ids[i]);
        amounts.push(amounts[i].clone());
        categories.push(categories[i].clone());
        event_times.push(event_times[i].clone());
        labels.push(labels[i]);
        ingested.push(ingested[i] + 3600 * MICROS_PER_SECOND);
    }
    let rows_written = ids.len();
    let mut df = df!(
        "transaction_id" => ids,
        "customer_id" => customer_ids,
        "merchant_id" => merchant_ids,
        "amount" => amounts,
        "category" => categories,
        "event_time" => event_times,
        "is_fraud" => labels,
        "ingested_at" => ingested.into_iter().map(iso).collect::<Vec<_>>(),
    )
    .map_err(Error::polars("building bronze transactions"))?;
    let path = dir.join(TRANSACTIONS_FILE);
    let mut file = std::fs::File::create(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    CsvWriter::new(&mut file)
        .finish(&mut df)
        .map_err(Error::polars(format!("writing {}", path.display())))?;
    Ok(BronzeFiles {
        transactions: path,
        rows_written,
        customers: n_customers,
    })
}

/// The silver step: reads the bronze CSV, standardizes types (UTC timestamps,
/// numeric amounts, trimmed lower-case categories) and resolves duplicates by
/// transaction id, keeping the latest delivery.
pub fn silver_transactions(bronze_csv: &Path) -> Result<DataFrame> {
    let schema = Schema::from_iter([
        Field::new("transaction_id".into(), DataType::String),
        Field::new("customer_id".into(), DataType::Int64),
        Field::new("merchant_id".into(), DataType::Int64),
        Field::new("amount".into(), DataType::String),
        Field::new("category".into(), DataType::String),
        Field::new("event_time".into(), DataType::String),
        Field::new("is_fraud".into(), DataType::Int64),
        Field::new("ingested_at".into(), DataType::String),
    ]);
    let raw = CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .try_into_reader_with_file_path(Some(bronze_csv.to_path_buf()))
        .and_then(|reader| reader.finish())
        .map_err(Error::polars(format!("reading {}", bronze_csv.display())))?;
    raw.lazy()
        .with_columns([
            utc_timestamp("event_time").alias("event_timestamp"),
            utc_timestamp("ingested_at").alias("created_timestamp"),
            col("amount").cast(DataType::Float64),
            col("category")
                .str()
                .strip_chars(lit(NULL))
                .str()
                .to_lowercase(),
        ])
        .sort(["created_timestamp"], SortMultipleOptions::default())
        .unique_stable_generic(Some(vec![col("transaction_id")]), UniqueKeepStrategy::Last)
        .select([
            col("transaction_id"),
            col("customer_id"),
            col("merchant_id"),
            col("amount"),
            col("category"),
            col("event_timestamp"),
            col("created_timestamp"),
            col("is_fraud"),
        ])
        .sort(
            ["event_timestamp", "transaction_id"],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(Error::polars("silver step over bronze transactions"))
}

/// The gold step: per customer and transaction time, windowed aggregates of
/// the customer's transactions up to and including that time.
pub fn gold_customer_features(silver: &DataFrame) -> Result<DataFrame> {
    let window = |days: i64| RollingOptionsDynamicWindow {
        window_size: polars::prelude::Duration::parse(&format!("{days}d")),
        min_periods: 1,
        closed_window: ClosedWindow::Right,
        fn_params: None,
    };
    let by = || col("event_timestamp");
    let per_customer = |e: Expr, name: &str| {
        e.over([col("customer_id")])
            .map(|e| e.alias(name))
            .map_err(Error::polars(format!("defining {name}")))
    };
    let features = [
        per_customer(col("one").rolling_sum_by(by(), window(1)), "txn_count_1d")?,
        per_customer(
            col("amount").rolling_sum_by(by(), window(1)),
            "amount_sum_1d",
        )?,
        per_customer(col("one").rolling_sum_by(by(), window(7)), "txn_count_7d")?,
        per_customer(
            col("amount").rolling_mean_by(by(), window(7)),
            "amount_mean_7d",
        )?,
        per_customer(
            col("amount").rolling_max_by(by(), window(7)),
            "amount_max_7d",
        )?,
    ];
    let mut columns = vec![
        col("customer_id"),
        col("event_timestamp"),
        col("created_timestamp"),
    ];
    columns.extend(features);
    silver
        .clone()
        .lazy()
        .sort(
            ["customer_id", "event_timestamp"],
            SortMultipleOptions::default(),
        )
        .with_column(lit(1.0f64).alias("one"))
        .select(columns)
        .collect()
        .map_err(Error::polars("gold step customer_features"))
}

/// The sha256 of a file, for bronze lineage.
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

fn utc_timestamp(column: &str) -> Expr {
    col(column).str().to_datetime(
        Some(TimeUnit::Microseconds),
        Some(TimeZone::UTC),
        StrptimeOptions {
            format: Some("%Y-%m-%dT%H:%M:%S%.fZ".into()),
            strict: true,
            exact: true,
            cache: true,
        },
        lit("raise"),
    )
}

fn messy_category(category: &str, rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..10) {
        0 => format!("  {category} "),
        1 => category.to_uppercase(),
        _ => category.to_string(),
    }
}

fn iso(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rows: usize) -> GenerateOptions {
        GenerateOptions {
            rows,
            seed: 7,
            end_micros: 1_790_000_000 * MICROS_PER_SECOND,
            days: 30,
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let fa = generate(a.path(), &options(500)).unwrap();
        let fb = generate(b.path(), &options(500)).unwrap();
        assert_eq!(
            file_sha256(&fa.transactions).unwrap(),
            file_sha256(&fb.transactions).unwrap()
        );
        assert_eq!(fa.rows_written, 505);
    }

    #[test]
    fn silver_removes_duplicates_and_types_columns() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), &options(2_000)).unwrap();
        let silver = silver_transactions(&files.transactions).unwrap();
        assert_eq!(silver.height(), 2_000);
        assert_eq!(
            silver.column("event_timestamp").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        );
        let categories = silver.column("category").unwrap().unique().unwrap();
        assert!(categories.len() <= CATEGORIES.len(), "{categories:?}");
    }

    #[test]
    fn gold_windows_count_the_customers_own_history() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path(), &options(1_000)).unwrap();
        let silver = silver_transactions(&files.transactions).unwrap();
        let gold = gold_customer_features(&silver).unwrap();
        assert_eq!(gold.height(), silver.height());
        // A reference computation for one customer: its transactions in the
        // 7 days up to and including each of its transactions.
        let customer = gold
            .column("customer_id")
            .unwrap()
            .i64()
            .unwrap()
            .get(0)
            .unwrap();
        let mine = gold
            .clone()
            .lazy()
            .filter(col("customer_id").eq(lit(customer)))
            .collect()
            .unwrap();
        let ts: Vec<i64> = mine
            .column("event_timestamp")
            .unwrap()
            .as_materialized_series()
            .to_physical_repr()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let counts: Vec<f64> = mine
            .column("txn_count_7d")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        for (i, &t) in ts.iter().enumerate() {
            let expected = ts
                .iter()
                .filter(|&&u| u <= t && u > t - 7 * MICROS_PER_DAY)
                .count() as f64;
            assert_eq!(counts[i], expected, "row {i} of customer {customer}");
        }
    }
}
