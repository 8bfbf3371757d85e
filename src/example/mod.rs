//! The fraud-style example domain: its project file and its synthetic
//! bronze data.
//!
//! The data is deterministic for a seed and an end time: customers with a
//! spending level and activity, merchants with a country and a risk score,
//! card transactions over a window of days, and a fraud label whose odds
//! rise with the customer's risk, large amounts, risky categories and night
//! hours. The bronze files are deliberately messy — padded and mixed-case
//! categories, re-delivered duplicates, a few unparseable amounts and
//! timestamps, a few negative amounts — so that silver has real work to do
//! and quarantine has something to hold.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use feature_store::error::{Error, Result};

/// The example project file `aurum init` writes.
pub const EXAMPLE_PROJECT: &str = include_str!("project.toml");
/// The example's model name.
pub const MODEL: &str = "fraud";
/// The example's gold feature view.
pub const CUSTOMER_VIEW: &str = "customer_features";
/// The example's silver transactions table.
pub const SILVER_TABLE: &str = "silver_transactions";
/// The label column of the example's transactions.
pub const LABEL: &str = "is_fraud";
/// The event-time column of the example's transactions.
pub const EVENT_TIME: &str = "event_time";

const CATEGORIES: [&str; 6] = [
    "grocery",
    "fuel",
    "restaurant",
    "travel",
    "electronics",
    "online",
];
const COUNTRIES: [&str; 5] = ["DE", "FR", "NL", "US", "GB"];
const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// How much synthetic data to make.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of transactions (before re-delivered duplicates are added).
    pub rows: usize,
    /// The random seed; the same seed and end time give the same bytes.
    pub seed: u64,
    /// The end of the generated window, in microseconds since the epoch.
    pub end_micros: i64,
    /// The length of the window in days (fractions allowed).
    pub days: f64,
    /// Number of customers (`None`: one per 40 transactions, at least 20).
    pub customers: Option<usize>,
}

/// What `generate` wrote.
#[derive(Debug, Clone)]
pub struct BronzeFiles {
    /// The transactions CSV file.
    pub transactions: PathBuf,
    /// The merchants CSV file.
    pub merchants: PathBuf,
    /// Transaction rows written, including re-delivered duplicates.
    pub rows_written: usize,
    /// Number of distinct customers.
    pub customers: usize,
}

/// Writes the example project file into `dir`, refusing to overwrite one.
pub fn init(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(feature_store::project::PROJECT_FILE);
    if path.exists() {
        return Err(Error::Io {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a project file is already there; not overwriting it",
            ),
        });
    }
    std::fs::write(&path, EXAMPLE_PROJECT).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Writes deterministic synthetic bronze data under `bronze_dir`:
/// `transactions/part-<end>-s<seed>.csv` and `merchants/merchants.csv`.
pub fn generate(bronze_dir: &Path, options: &GenerateOptions) -> Result<BronzeFiles> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let n_customers = options
        .customers
        .unwrap_or((options.rows / 40).max(20))
        .max(1);
    let n_merchants = 60usize;

    // Merchants are a fixed dimension: the same for every seed, so
    // regenerating them does not change the file.
    let mut merchant_rng = ChaCha8Rng::seed_from_u64(0x6d65_7263);
    let merchant_category: Vec<usize> = (0..n_merchants)
        .map(|_| merchant_rng.random_range(0..CATEGORIES.len()))
        .collect();
    let merchant_risk: Vec<f64> = (0..n_merchants)
        .map(|_| (merchant_rng.random::<f64>().powi(3) * 1000.0).round() / 1000.0)
        .collect();
    let merchant_country: Vec<&str> = (0..n_merchants)
        .map(|_| COUNTRIES[merchant_rng.random_range(0..COUNTRIES.len())])
        .collect();

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

    let span = (options.days * MICROS_PER_DAY as f64) as i64;
    let start = options.end_micros - span;
    let total = options.rows + options.rows / 100;
    let mut ids = Vec::with_capacity(total);
    let mut customer_ids = Vec::with_capacity(total);
    let mut merchant_ids = Vec::with_capacity(total);
    let mut amounts = Vec::with_capacity(total);
    let mut categories: Vec<&str> = Vec::with_capacity(total);
    let mut event_times = Vec::with_capacity(total);
    let mut labels = Vec::with_capacity(total);
    let mut ingested = Vec::with_capacity(total);
    let mut bad_amount = Vec::with_capacity(total);
    let mut bad_time = Vec::with_capacity(total);
    for _ in 0..options.rows {
        let pick = rng.random::<f64>() * total_activity;
        let customer = cumulative
            .partition_point(|&c| c < pick)
            .min(n_customers - 1);
        let (level, _, risky) = customers[customer];
        let merchant = rng.random_range(0..n_merchants);
        let category = merchant_category[merchant];
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
            + 2.0 * merchant_risk[merchant]
            + 0.008 * level;
        let fraud = rng.random::<f64>() < 1.0 / (1.0 + (-logit).exp());
        // A few broken values: silver must quarantine them, not drop them.
        let defect = rng.random::<f64>();
        let negative = defect < 0.000_2;
        ids.push(ids.len() as i64);
        customer_ids.push(customer as i64 + 1);
        merchant_ids.push(merchant as i64 + 1);
        amounts.push(if negative { -amount } else { amount });
        categories.push(messy_category(category, &mut rng));
        event_times.push(ts);
        labels.push(i64::from(u8::from(fraud)));
        ingested.push(ts + rng.random_range(1..600) * MICROS_PER_SECOND);
        bad_amount.push((0.000_2..0.000_7).contains(&defect));
        bad_time.push((0.000_7..0.000_9).contains(&defect));
    }
    // Re-deliveries: about 1% of rows arrive again an hour later.
    for _ in 0..options.rows / 100 {
        let i = rng.random_range(0..options.rows);
        ids.push(ids[i]);
        customer_ids.push(customer_ids[i]);
        merchant_ids.push(merchant_ids[i]);
        amounts.push(amounts[i]);
        categories.push(categories[i]);
        event_times.push(event_times[i]);
        labels.push(labels[i]);
        ingested.push(ingested[i] + 3600 * MICROS_PER_SECOND);
        bad_amount.push(bad_amount[i]);
        bad_time.push(bad_time[i]);
    }
    let rows_written = ids.len();
    let datetime = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let prefix = format!("t{:x}-", options.seed);
    let mut transactions = df!(
        "id" => ids,
        "customer_id" => customer_ids,
        "merchant_id" => merchant_ids,
        "amount_value" => amounts,
        "category" => categories,
        "event" => event_times,
        "is_fraud" => labels,
        "ingested" => ingested,
        "bad_amount" => bad_amount,
        "bad_time" => bad_time,
    )
    .and_then(|df| {
        df.lazy()
            .select([
                (lit(prefix.clone()) + col("id").cast(DataType::String)).alias("transaction_id"),
                col("customer_id"),
                col("merchant_id"),
                when(col("bad_amount"))
                    .then(lit("N/A"))
                    .otherwise(
                        col("amount_value")
                            .round(2, RoundMode::HalfToEven)
                            .cast(DataType::String),
                    )
                    .alias("amount"),
                col("category"),
                when(col("bad_time"))
                    .then(lit("2026-13-45T25:61:00Z"))
                    .otherwise(
                        col("event")
                            .cast(datetime.clone())
                            .dt()
                            .to_string(TIMESTAMP_FORMAT),
                    )
                    .alias("event_time"),
                col("is_fraud"),
                col("ingested")
                    .cast(datetime.clone())
                    .dt()
                    .to_string(TIMESTAMP_FORMAT)
                    .alias("ingested_at"),
            ])
            .collect()
    })
    .map_err(Error::polars("building bronze transactions"))?;
    let end = chrono::DateTime::from_timestamp_micros(options.end_micros)
        .map(|t| t.format("%Y%m%dT%H%M%S").to_string())
        .unwrap_or_default();
    let transactions_path = bronze_dir
        .join("transactions")
        .join(format!("part-{end}-s{}.csv", options.seed));
    write_csv(&transactions_path, &mut transactions)?;

    let updated = MICROS_PER_SECOND * 1_700_000_000;
    let mut merchants = df!(
        "merchant_id" => (1..=n_merchants as i64).collect::<Vec<_>>(),
        "merchant_country" => merchant_country,
        "merchant_risk" => merchant_risk.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>(),
        "updated_at" => vec![updated; n_merchants],
    )
    .and_then(|df| {
        df.lazy()
            .with_column(
                col("updated_at")
                    .cast(datetime.clone())
                    .dt()
                    .to_string(TIMESTAMP_FORMAT),
            )
            .collect()
    })
    .map_err(Error::polars("building bronze merchants"))?;
    let merchants_path = bronze_dir.join("merchants").join("merchants.csv");
    write_csv(&merchants_path, &mut merchants)?;
    Ok(BronzeFiles {
        transactions: transactions_path,
        merchants: merchants_path,
        rows_written,
        customers: n_customers,
    })
}

fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // Write then rename, so a crash never leaves a half file for ingest.
    let partial = path.with_extension("csv.partial");
    let mut file = std::fs::File::create(&partial).map_err(|source| Error::Io {
        path: partial.clone(),
        source,
    })?;
    CsvWriter::new(&mut file)
        .finish(df)
        .map_err(Error::polars(format!("writing {}", path.display())))?;
    std::fs::rename(&partial, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn messy_category(category: usize, rng: &mut ChaCha8Rng) -> &'static str {
    const PADDED: [&str; 6] = [
        "  grocery ",
        "  fuel ",
        "  restaurant ",
        "  travel ",
        "  electronics ",
        "  online ",
    ];
    const UPPER: [&str; 6] = [
        "GROCERY",
        "FUEL",
        "RESTAURANT",
        "TRAVEL",
        "ELECTRONICS",
        "ONLINE",
    ];
    match rng.random_range(0..10) {
        0 => PADDED[category],
        1 => UPPER[category],
        _ => CATEGORIES[category],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feature_store::pipeline::bronze::file_sha256;

    fn options(rows: usize) -> GenerateOptions {
        GenerateOptions {
            rows,
            seed: 7,
            end_micros: 1_790_000_000 * MICROS_PER_SECOND,
            days: 30.0,
            customers: None,
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
        assert_eq!(
            file_sha256(&fa.merchants).unwrap(),
            file_sha256(&fb.merchants).unwrap()
        );
        assert_eq!(fa.rows_written, 505);
    }

    #[test]
    fn the_example_project_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = init(dir.path()).unwrap();
        let project = feature_store::project::Project::load(&path).unwrap();
        assert_eq!(project.sources[0].name, "merchants", "dimensions first");
        let view = project.view(CUSTOMER_VIEW).unwrap();
        assert!(view.feature_names().contains(&"amount_sum_7d".to_string()));
        assert!(init(dir.path()).is_err(), "init does not overwrite");
    }
}
