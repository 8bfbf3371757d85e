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
    let merchants = Merchants::fixed(60);
    let customers = Customers::draw(n_customers, &mut rng);

    let span = (options.days * MICROS_PER_DAY as f64) as i64;
    let start = options.end_micros - span;
    let total = options.rows + options.rows / 100;
    let mut rows = Transactions::with_capacity(total);
    for _ in 0..options.rows {
        rows.push_new(&mut rng, &customers, &merchants, start, span);
    }
    // Re-deliveries: about 1% of rows arrive again an hour later.
    for _ in 0..options.rows / 100 {
        let i = rng.random_range(0..options.rows);
        rows.redeliver(i);
    }
    let rows_written = rows.ids.len();
    let mut transactions = rows.into_frame(options.seed)?;
    let end = chrono::DateTime::from_timestamp_micros(options.end_micros)
        .map(|t| t.format("%Y%m%dT%H%M%S").to_string())
        .unwrap_or_default();
    let transactions_path = bronze_dir
        .join("transactions")
        .join(format!("part-{end}-s{}.csv", options.seed));
    write_csv(&transactions_path, &mut transactions)?;

    let mut merchants = merchants.into_frame()?;
    let merchants_path = bronze_dir.join("merchants").join("merchants.csv");
    write_csv(&merchants_path, &mut merchants)?;
    Ok(BronzeFiles {
        transactions: transactions_path,
        merchants: merchants_path,
        rows_written,
        customers: n_customers,
    })
}

/// The merchants: a fixed dimension, the same for every seed, so
/// regenerating them does not change the file.
struct Merchants {
    category: Vec<usize>,
    risk: Vec<f64>,
    country: Vec<&'static str>,
}

impl Merchants {
    fn fixed(n: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(0x6d65_7263);
        let category: Vec<usize> = (0..n)
            .map(|_| rng.random_range(0..CATEGORIES.len()))
            .collect();
        let risk: Vec<f64> = (0..n)
            .map(|_| (rng.random::<f64>().powi(3) * 1000.0).round() / 1000.0)
            .collect();
        let country: Vec<&str> = (0..n)
            .map(|_| COUNTRIES[rng.random_range(0..COUNTRIES.len())])
            .collect();
        Merchants {
            category,
            risk,
            country,
        }
    }

    /// The bronze merchants file's rows, all updated at one time.
    fn into_frame(self) -> Result<DataFrame> {
        let n = self.category.len();
        let updated = MICROS_PER_SECOND * 1_700_000_000;
        df!(
            "merchant_id" => (1..=n as i64).collect::<Vec<_>>(),
            "merchant_country" => self.country,
            "merchant_risk" => self.risk.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>(),
            "updated_at" => vec![updated; n],
        )
        .and_then(|df| {
            df.lazy()
                .with_column(
                    col("updated_at")
                        .cast(utc_datetime())
                        .dt()
                        .to_string(TIMESTAMP_FORMAT),
                )
                .collect()
        })
        .map_err(Error::polars("building bronze merchants"))
    }
}

/// The customers: each a spending level, an activity weight and a risk
/// flag.
struct Customers {
    traits: Vec<(f64, f64, bool)>,
    /// Cumulative activity: a customer is drawn by binary search, so
    /// drawing costs O(log customers) per row.
    cumulative: Vec<f64>,
    total_activity: f64,
}

impl Customers {
    fn draw(n: usize, rng: &mut ChaCha8Rng) -> Self {
        let traits: Vec<(f64, f64, bool)> = (0..n)
            .map(|_| {
                let level = 15.0 + 120.0 * rng.random::<f64>().powi(2);
                let activity = 0.2 + rng.random::<f64>() * 1.8;
                let risky = rng.random::<f64>() < 0.08;
                (level, if risky { activity * 2.5 } else { activity }, risky)
            })
            .collect();
        let cumulative: Vec<f64> = traits
            .iter()
            .scan(0.0, |sum, c| {
                *sum += c.1;
                Some(*sum)
            })
            .collect();
        let total_activity = cumulative.last().copied().unwrap_or(0.0);
        Customers {
            traits,
            cumulative,
            total_activity,
        }
    }
}

/// The transactions generated so far, column by column.
struct Transactions {
    ids: Vec<i64>,
    customer_ids: Vec<i64>,
    merchant_ids: Vec<i64>,
    amounts: Vec<f64>,
    categories: Vec<&'static str>,
    event_times: Vec<i64>,
    labels: Vec<i64>,
    ingested: Vec<i64>,
    /// Rows whose amount is written unparseable.
    bad_amount: Vec<bool>,
    /// Rows whose event time is written unparseable.
    bad_time: Vec<bool>,
}

impl Transactions {
    fn with_capacity(rows: usize) -> Self {
        Transactions {
            ids: Vec::with_capacity(rows),
            customer_ids: Vec::with_capacity(rows),
            merchant_ids: Vec::with_capacity(rows),
            amounts: Vec::with_capacity(rows),
            categories: Vec::with_capacity(rows),
            event_times: Vec::with_capacity(rows),
            labels: Vec::with_capacity(rows),
            ingested: Vec::with_capacity(rows),
            bad_amount: Vec::with_capacity(rows),
            bad_time: Vec::with_capacity(rows),
        }
    }

    /// Draws one new transaction in `[start, start + span)`.
    fn push_new(
        &mut self,
        rng: &mut ChaCha8Rng,
        customers: &Customers,
        merchants: &Merchants,
        start: i64,
        span: i64,
    ) {
        let pick = rng.random::<f64>() * customers.total_activity;
        let customer = customers
            .cumulative
            .partition_point(|&c| c < pick)
            .min(customers.traits.len() - 1);
        let (level, _, risky) = customers.traits[customer];
        let merchant = rng.random_range(0..merchants.category.len());
        let category = merchants.category[merchant];
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
            + 2.0 * merchants.risk[merchant]
            + 0.008 * level;
        let fraud = rng.random::<f64>() < 1.0 / (1.0 + (-logit).exp());
        // A few broken values: silver must quarantine them, not drop them.
        let defect = rng.random::<f64>();
        let negative = defect < 0.000_2;
        self.ids.push(self.ids.len() as i64);
        self.customer_ids.push(customer as i64 + 1);
        self.merchant_ids.push(merchant as i64 + 1);
        self.amounts.push(if negative { -amount } else { amount });
        self.categories.push(messy_category(category, rng));
        self.event_times.push(ts);
        self.labels.push(i64::from(u8::from(fraud)));
        self.ingested
            .push(ts + rng.random_range(1..600) * MICROS_PER_SECOND);
        self.bad_amount.push((0.000_2..0.000_7).contains(&defect));
        self.bad_time.push((0.000_7..0.000_9).contains(&defect));
    }

    /// Row `i` delivered again, an hour later.
    fn redeliver(&mut self, i: usize) {
        self.ids.push(self.ids[i]);
        self.customer_ids.push(self.customer_ids[i]);
        self.merchant_ids.push(self.merchant_ids[i]);
        self.amounts.push(self.amounts[i]);
        self.categories.push(self.categories[i]);
        self.event_times.push(self.event_times[i]);
        self.labels.push(self.labels[i]);
        self.ingested
            .push(self.ingested[i] + 3600 * MICROS_PER_SECOND);
        self.bad_amount.push(self.bad_amount[i]);
        self.bad_time.push(self.bad_time[i]);
    }

    /// The bronze transactions file's rows: ids prefixed by the seed,
    /// amounts and times as text, the planted defects written broken.
    fn into_frame(self, seed: u64) -> Result<DataFrame> {
        let datetime = utc_datetime();
        let prefix = format!("t{seed:x}-");
        df!(
            "id" => self.ids,
            "customer_id" => self.customer_ids,
            "merchant_id" => self.merchant_ids,
            "amount_value" => self.amounts,
            "category" => self.categories,
            "event" => self.event_times,
            "is_fraud" => self.labels,
            "ingested" => self.ingested,
            "bad_amount" => self.bad_amount,
            "bad_time" => self.bad_time,
        )
        .and_then(|df| {
            df.lazy()
                .select([
                    (lit(prefix.clone()) + col("id").cast(DataType::String))
                        .alias("transaction_id"),
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
        .map_err(Error::polars("building bronze transactions"))
    }
}

/// Bronze times are written as text from UTC microseconds.
fn utc_datetime() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
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
