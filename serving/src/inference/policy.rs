//! How each model is served: its A/B split between aliases, its shadow, what
//! to do with missing features, and optional micro-batching — read from the
//! `[model.serving]` table of the project file.
//!
//! ```toml
//! [[model]]
//! name = "fraud"
//! [model.serving]
//! split = { champion = 90, challenger = 10 }   # weights, any scale
//! shadow = "candidate"                         # runs on a copy of traffic
//! missing_features = "impute"                  # or "reject"
//! batch = { max_rows = 32, max_delay_us = 500 }
//! ```
//!
//! A model without a section is served at the server's default alias
//! (`champion`), imputing missing features, without batching.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use feature_store::project::ModelSection;
use serde::Deserialize;

/// The header that sends a request to one arm, whatever its entities hash
/// to.
pub const ARM_HEADER: &str = "x-aurum-arm";

/// What `/predict` does when a feature is missing, null or stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingFeatures {
    /// Use the training mean recorded with the version (the default).
    Impute,
    /// Refuse the request with a 422 naming the rows and features.
    Reject,
}

/// Dynamic micro-batching: concurrent requests for one model are run as one
/// inference of up to `max_rows` rows, waiting at most `max_delay` for
/// company.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// The most rows one batched inference runs.
    pub max_rows: usize,
    /// The longest the first request of a batch waits for others.
    pub max_delay: Duration,
}

/// One arm of an A/B split: the alias it serves and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arm {
    /// The registry alias this arm serves.
    pub alias: String,
    /// Its weight (its share is weight / sum of weights).
    pub weight: u32,
}

/// How one model is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingPolicy {
    /// The live arms; never empty, weights sum to more than zero.
    pub arms: Vec<Arm>,
    /// An alias run on a copy of the traffic, off the response path.
    pub shadow: Option<String>,
    /// The missing-feature policy.
    pub missing: MissingFeatures,
    /// Micro-batching, when on.
    pub batch: Option<BatchOptions>,
}

impl ServingPolicy {
    /// All traffic to `alias`, imputing, no shadow, no batching.
    pub fn single(alias: &str) -> Self {
        ServingPolicy {
            arms: vec![Arm {
                alias: alias.to_string(),
                weight: 1,
            }],
            shadow: None,
            missing: MissingFeatures::Impute,
            batch: None,
        }
    }

    /// The arm a request row with sticky hash `hash` goes to: the same
    /// hash always picks the same arm, and hashes spread over the arms in
    /// proportion to their weights.
    pub fn arm_for(&self, hash: u64) -> &str {
        let total: u64 = self.arms.iter().map(|a| u64::from(a.weight)).sum();
        let mut point = hash % total.max(1);
        for arm in &self.arms {
            let weight = u64::from(arm.weight);
            if point < weight {
                return &arm.alias;
            }
            point -= weight;
        }
        &self.arms[0].alias
    }

    /// Every alias this policy needs loaded (arms, then the shadow).
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.arms
            .iter()
            .map(|a| a.alias.as_str())
            .chain(self.shadow.as_deref())
    }
}

/// The serving policies of every model, with the default for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingConfig {
    /// The alias a model without a policy is served at (`champion`); a
    /// model without that alias serves its newest `READY` version.
    pub default_alias: String,
    policies: HashMap<String, ServingPolicy>,
    default: ServingPolicy,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self::new(registry::CHAMPION)
    }
}

impl ServingConfig {
    /// Every model served at `default_alias`.
    pub fn new(default_alias: &str) -> Self {
        ServingConfig {
            default_alias: default_alias.to_string(),
            policies: HashMap::new(),
            default: ServingPolicy::single(default_alias),
        }
    }

    /// Reads the `serving` table of each `[[model]]` section.
    pub fn from_sections(
        default_alias: &str,
        sections: &[ModelSection],
    ) -> Result<Self, PolicyError> {
        let mut config = Self::new(default_alias);
        for section in sections {
            let Some(table) = section.table.get("serving") else {
                continue;
            };
            let policy = parse(default_alias, table).map_err(|message| PolicyError {
                model: section.name.clone(),
                line: section.line,
                message,
            })?;
            config.policies.insert(section.name.clone(), policy);
        }
        Ok(config)
    }

    /// Sets the policy of `model`.
    pub fn set(&mut self, model: &str, policy: ServingPolicy) {
        self.policies.insert(model.to_string(), policy);
    }

    /// The policy `model` is served under.
    pub fn policy(&self, model: &str) -> &ServingPolicy {
        self.policies.get(model).unwrap_or(&self.default)
    }
}

/// A `[model.serving]` table that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The model's name.
    pub model: String,
    /// The line of its `[[model]]` section.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[[model]] {:?} (line {}): serving: {}",
            self.model, self.line, self.message
        )
    }
}

impl std::error::Error for PolicyError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    split: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    shadow: Option<String>,
    #[serde(default)]
    missing_features: Option<MissingFeatures>,
    #[serde(default)]
    batch: Option<RawBatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    max_rows: usize,
    max_delay_us: u64,
}

/// The largest batch and wait accepted (beyond them batching only adds
/// latency).
const MAX_BATCH_ROWS: usize = 4096;
const MAX_BATCH_DELAY_US: u64 = 100_000;

fn parse(default_alias: &str, table: &toml::Value) -> Result<ServingPolicy, String> {
    let raw: RawPolicy = table
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())?;
    let arms = match raw.split {
        None => ServingPolicy::single(default_alias).arms,
        Some(split) => {
            if split.is_empty() {
                return Err("split names no alias".into());
            }
            let mut arms = Vec::new();
            for (alias, weight) in split {
                registry::manage::validate_alias(&alias)
                    .map_err(|e| format!("split alias {alias:?}: {e}"))?;
                arms.push(Arm { alias, weight });
            }
            if arms.iter().all(|a| a.weight == 0) {
                return Err("every split weight is 0".into());
            }
            arms
        }
    };
    if let Some(shadow) = &raw.shadow {
        registry::manage::validate_alias(shadow)
            .map_err(|e| format!("shadow alias {shadow:?}: {e}"))?;
        if arms.iter().any(|a| &a.alias == shadow) {
            return Err(format!(
                "shadow alias {shadow:?} also takes live traffic in the split; \
                 a shadow only sees copies"
            ));
        }
    }
    let batch = match raw.batch {
        None => None,
        Some(b) => {
            if b.max_rows < 2 || b.max_rows > MAX_BATCH_ROWS {
                return Err(format!(
                    "batch.max_rows is {}; it must be between 2 and {MAX_BATCH_ROWS}",
                    b.max_rows
                ));
            }
            if b.max_delay_us == 0 || b.max_delay_us > MAX_BATCH_DELAY_US {
                return Err(format!(
                    "batch.max_delay_us is {}; it must be between 1 and {MAX_BATCH_DELAY_US}",
                    b.max_delay_us
                ));
            }
            Some(BatchOptions {
                max_rows: b.max_rows,
                max_delay: Duration::from_micros(b.max_delay_us),
            })
        }
    };
    Ok(ServingPolicy {
        arms,
        shadow: raw.shadow,
        missing: raw.missing_features.unwrap_or(MissingFeatures::Impute),
        batch,
    })
}

/// A stable 64-bit hash (FNV-1a, then a finalizer that spreads the bits),
/// the same on every replica and release, for sticky arm assignment.
pub fn sticky_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> ModelSection {
        let table: toml::Table = toml::from_str(text).unwrap();
        ModelSection {
            name: "fraud".into(),
            line: 3,
            table,
        }
    }

    #[test]
    fn split_is_sticky_and_proportional() {
        let config = ServingConfig::from_sections(
            "champion",
            &[section(
                "[serving]\nsplit = { champion = 90, challenger = 10 }\nshadow = \"next\"",
            )],
        )
        .unwrap();
        let policy = config.policy("fraud");
        assert_eq!(policy.shadow.as_deref(), Some("next"));
        let aliases: Vec<&str> = policy.aliases().collect();
        assert!(
            aliases.contains(&"next") && aliases.contains(&"champion") && !aliases.contains(&"x")
        );
        let mut challenger = 0;
        for entity in 0..100_000u32 {
            let key = entity.to_string();
            let hash = sticky_hash(&[b"fraud", key.as_bytes()]);
            let arm = policy.arm_for(hash);
            assert_eq!(arm, policy.arm_for(hash));
            challenger += usize::from(arm == "challenger");
        }
        // 10% ± 0.5 percentage points over 100k entities.
        assert!((9_500..10_500).contains(&challenger), "{challenger}");
        // Models without a section get the default.
        assert_eq!(config.policy("other"), &ServingPolicy::single("champion"));
    }

    #[test]
    fn bad_tables_are_refused_naming_the_problem() {
        for (text, needle) in [
            ("[serving]\nsplit = {}", "no alias"),
            ("[serving]\nsplit = { a = 0 }", "every split weight is 0"),
            (
                "[serving]\nsplit = { a = 1 }\nshadow = \"a\"",
                "also takes live traffic",
            ),
            ("[serving]\nmissing_features = \"guess\"", "unknown variant"),
            (
                "[serving]\nbatch = { max_rows = 1, max_delay_us = 10 }",
                "max_rows is 1",
            ),
            (
                "[serving]\nbatch = { max_rows = 8, max_delay_us = 0 }",
                "max_delay_us is 0",
            ),
            ("[serving]\nspilt = { a = 1 }", "spilt"),
            ("[serving]\nsplit = { \"a b\" = 1 }", "\"a b\""),
        ] {
            let error = ServingConfig::from_sections("champion", &[section(text)]).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(needle), "{text}: {message}");
            assert!(message.contains("\"fraud\" (line 3)"), "{message}");
        }
    }
}
