//! Lineage: from a table version back to the bronze files it came from,
//! following the lineage aurum records in every Delta commit.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use delta::{Commit, DeltaStore};

/// One table version and what it was made from.
#[derive(Debug, Clone, Serialize)]
pub struct LineageNode {
    /// The table.
    pub table: String,
    /// The version asked for.
    pub version: u64,
    /// The version whose commit produced the data (compaction commits are
    /// skipped: they change no data).
    pub produced_by: u64,
    /// The operation, e.g. `gold`.
    pub operation: String,
    /// The run that wrote it.
    pub run_id: String,
    /// The definition hash.
    pub definition_hash: String,
    /// The aurum version that wrote it.
    pub aurum_version: String,
    /// For bronze tables: every file ingested up to this version, with its
    /// sha256.
    pub files: BTreeMap<String, String>,
    /// The input table versions, traced in turn.
    pub inputs: Vec<LineageNode>,
}

/// Traces `table` at `version` (latest when `None`).
pub async fn trace(store: &DeltaStore, table: &str, version: Option<u64>) -> Result<LineageNode> {
    let history = store.history(table).await?;
    let version = match version {
        Some(v) => v,
        None => history
            .first()
            .map(|c| c.version)
            .ok_or_else(|| Error::from(delta::Error::TableMissing(table.to_string())))?,
    };
    let upto: Vec<&Commit> = history.iter().filter(|c| c.version <= version).collect();
    if upto.is_empty() {
        return Err(Error::Schema {
            view: table.to_string(),
            message: format!("the table has no version {version}"),
        });
    }
    let producer = upto.iter().find(|c| {
        c.lineage
            .as_ref()
            .is_some_and(|l| l.operation != "optimize")
    });
    let Some(commit) = producer else {
        return Ok(LineageNode {
            table: table.to_string(),
            version,
            produced_by: version,
            operation: "unknown (not written by aurum)".into(),
            run_id: String::new(),
            definition_hash: String::new(),
            aurum_version: String::new(),
            files: BTreeMap::new(),
            inputs: Vec::new(),
        });
    };
    let lineage = commit.lineage.clone().unwrap_or_default();
    let mut files = BTreeMap::new();
    if lineage.operation == "bronze" {
        for c in &upto {
            if let Some(l) = &c.lineage {
                files.extend(l.input_files.clone());
            }
        }
    }
    let mut inputs = Vec::new();
    for (input, v) in &lineage.input_tables {
        if input != table {
            inputs.push(Box::pin(trace(store, input, Some(*v))).await?);
        }
    }
    Ok(LineageNode {
        table: table.to_string(),
        version,
        produced_by: commit.version,
        operation: lineage.operation,
        run_id: lineage.run_id,
        definition_hash: lineage.definition_hash,
        aurum_version: lineage.aurum_version,
        files,
        inputs,
    })
}

/// Renders a lineage tree as indented text.
pub fn render(node: &LineageNode) -> String {
    let mut out = String::new();
    render_into(node, "", true, true, &mut out);
    out
}

fn render_into(node: &LineageNode, prefix: &str, last: bool, root: bool, out: &mut String) {
    let (branch, next) = match (root, last) {
        (true, _) => ("", String::new()),
        (false, true) => ("└─ ", format!("{prefix}   ")),
        (false, false) => ("├─ ", format!("{prefix}│  ")),
    };
    let hash: String = node.definition_hash.chars().take(12).collect();
    out.push_str(&format!(
        "{prefix}{branch}{} v{} ({}{}, run {}, definition {hash}, aurum {})\n",
        node.table,
        node.version,
        node.operation,
        if node.produced_by != node.version {
            format!(" at v{}", node.produced_by)
        } else {
            String::new()
        },
        node.run_id,
        node.aurum_version,
    ));
    let children = node.inputs.len() + node.files.len();
    let mut i = 0;
    for input in &node.inputs {
        i += 1;
        render_into(input, &next, i == children, false, out);
    }
    for (file, sha) in &node.files {
        i += 1;
        let branch = if i == children { "└─ " } else { "├─ " };
        let short: String = sha.chars().take(12).collect();
        out.push_str(&format!("{next}{branch}{file} (sha256 {short}…)\n"));
    }
}
