//! What a commit was produced from, recorded in the Delta commit info.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The key under which aurum's lineage is stored in Delta commit info.
pub const LINEAGE_KEY: &str = "aurum";

/// What a commit was produced from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitLineage {
    /// The operation, e.g. `bronze`, `silver`, `gold`, `quarantine`.
    pub operation: String,
    /// Input Delta tables and the versions read.
    pub input_tables: BTreeMap<String, u64>,
    /// Input files (for bronze data) and their sha256.
    pub input_files: BTreeMap<String, String>,
    /// Input files and their `size:modified` fingerprint, which lets a later
    /// run skip an unchanged file without reading it.
    #[serde(default)]
    pub input_fingerprints: BTreeMap<String, String>,
    /// For stream commits: each partition landed (`topic/partition`) and
    /// the offsets `[first, next)` of its events in the commit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_offsets: BTreeMap<String, [i64; 2]>,
    /// For compaction commits: the data files written, which hold only rows
    /// the table already had.
    #[serde(default)]
    pub compacted_files: Vec<String>,
    /// A hash of the definition (view, rules) that produced the data.
    pub definition_hash: String,
    /// The aurum version that wrote the commit.
    #[serde(default)]
    pub aurum_version: String,
    /// The pipeline run that wrote the commit.
    #[serde(default)]
    pub run_id: String,
}
