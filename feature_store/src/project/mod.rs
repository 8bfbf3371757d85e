//! The project file, `aurum.toml`: entities, bronze sources with their
//! silver rules, and feature views.
//!
//! Loading is two steps. `toml` + serde check the file's shape (unknown
//! fields, wrong types and missing fields are errors that carry the line),
//! then [`Project::load`] checks meaning: that every name a view or rule
//! refers to exists, that durations, types and patterns parse. Every error
//! names the file, the line and the field.

mod checker;
mod raw;
mod spec;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::schema::Entity;
use checker::Checker;
use raw::RawProject;

pub use spec::*;

/// The project file's name.
pub const PROJECT_FILE: &str = "aurum.toml";

/// A loaded and checked project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding `aurum.toml`; relative paths start here.
    pub root: PathBuf,
    /// The project name.
    pub name: String,
    /// Where Delta tables, bronze files and the registry live.
    pub data_dir: PathBuf,
    /// Entities by name.
    pub entities: Vec<Entity>,
    /// Bronze sources with their silver rules, in dependency order
    /// (dimension sources used for enrichment come first).
    pub sources: Vec<Source>,
    /// Feature views.
    pub feature_views: Vec<ViewSpec>,
    /// Feature services: named feature lists.
    pub feature_services: Vec<crate::schema::FeatureService>,
    /// The `[[model]]` sections, by model name. Their keys belong to the
    /// crates that train and serve models (the feature store knows nothing
    /// of models): each reads its own sub-table and reports its own errors.
    pub models: Vec<ModelSection>,
    /// A hash of the file's checked content.
    pub definition_hash: String,
}

/// A `[[model]]` section of the project file: a model's name and the
/// tables other crates read (`[model.serving]`, `[model.training]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSection {
    /// The registered model's name.
    pub name: String,
    /// The line the section's name is on, for error messages.
    pub line: usize,
    /// Every key of the section but `name`.
    pub table: toml::Table,
}

/// The file format of a bronze source.
impl Project {
    /// Finds `aurum.toml` in `start` or a directory above it.
    pub fn find(start: &Path) -> Result<PathBuf> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let candidate = d.join(PROJECT_FILE);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = d.parent();
        }
        Err(Error::ProjectMissing(start.to_path_buf()))
    }

    /// Loads and checks a project file.
    pub fn load(path: &Path) -> Result<Project> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Project::parse(&text, path, &root)
    }

    /// Parses and checks project text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path, root: &Path) -> Result<Project> {
        let raw: RawProject = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, &s)).unwrap_or(0);
            Error::Project {
                path: path.to_path_buf(),
                line,
                field: String::new(),
                message: e.message().trim().to_string(),
            }
        })?;
        Checker { text, path }.check(raw, root)
    }

    /// The directory of the Delta tables.
    pub fn delta_dir(&self) -> PathBuf {
        self.data_dir.join("delta")
    }

    /// The registry directory.
    pub fn registry_dir(&self) -> PathBuf {
        self.data_dir.join("registry")
    }

    /// A source by name.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// A feature view by name.
    pub fn view(&self, name: &str) -> Option<&ViewSpec> {
        self.feature_views.iter().find(|v| v.name == name)
    }
}

/// A stable sha256 of a serializable definition, salted with the version
/// of the code that interprets it.
pub fn hash_json<T: Serialize>(salt: &str, value: &T) -> String {
    use sha2::{Digest, Sha256};
    let doc = serde_json::to_vec(value).unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(&doc);
    hex::encode(hasher.finalize())
}

/// Parses a duration such as `90s`, `30m`, `1h`, `7d` or `2w`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit_seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    // Ten years at most: windows and TTLs longer than that are mistakes,
    // and the bound keeps every microsecond computation far from overflow.
    let seconds = n.checked_mul(unit_seconds)?;
    (n > 0 && seconds <= 3_650 * 86_400).then(|| Duration::from_secs(seconds))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest
/// whole unit up to days (feature names say `7d`, not `1w`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(size) && s >= size {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text[..end].bytes().filter(|&b| b == b'\n').count() + 1
}
