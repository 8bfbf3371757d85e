//! The project file, `aurum.toml`: entities, bronze sources with their
//! silver rules, and feature views.
//!
//! Loading is two steps. `toml` + serde check the file's shape (unknown
//! fields, wrong types and missing fields are errors that carry the line),
//! then [`Project::load`] checks meaning: that every name a view or rule
//! refers to exists, that durations, types and patterns parse. Every error
//! names the file, the line and the field.

mod checker;
mod duration;
mod kafka;
mod raw;
mod spec;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use checker::{Checker, line_of};
use raw::RawProject;

pub use duration::{format_duration, parse_duration};
pub use kafka::{
    Assignment, DEFAULT_COMMIT_INTERVAL, DEFAULT_MAX_BATCH_EVENTS, KafkaSpec, SecurityProtocol,
    StartAt, ValueFormat,
};
pub use spec::*;

/// The project file's name.
pub const PROJECT_FILE: &str = "aurum.toml";

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

    /// The directory of the Delta tables when they are local (see
    /// [`Project::store_under`] for where they are).
    pub fn delta_dir(&self) -> PathBuf {
        self.data_dir.join("delta")
    }

    /// The Delta tables: under `[storage]` when the project has one,
    /// under the data directory otherwise.
    pub fn delta_store(&self) -> Result<delta::DeltaStore> {
        self.store_under("delta")
    }

    /// The Delta store in sub-directory `dir` (`delta`, `logs`) of the
    /// project's table location.
    pub fn store_under(&self, dir: &str) -> Result<delta::DeltaStore> {
        match &self.storage {
            None => Ok(delta::DeltaStore::new(self.data_dir.join(dir))),
            Some(storage) => {
                let location = delta::StorageLocation::parse(&storage.uri, &storage.options)?;
                Ok(delta::DeltaStore::at(location.child(dir)?))
            }
        }
    }

    /// The registry directory when the registry is local (see
    /// [`Project::registry_location`] for where it is).
    pub fn registry_dir(&self) -> PathBuf {
        self.data_dir.join("registry")
    }

    /// Where the registry is when the project has `[storage]`: its
    /// `registry/` prefix, with an object store of its own (`None`: the
    /// local [`Project::registry_dir`]).
    pub fn registry_location(&self) -> Result<Option<delta::StorageLocation>> {
        let Some(storage) = &self.storage else {
            return Ok(None);
        };
        let root = delta::StorageLocation::parse(&storage.uri, &storage.options)?;
        let registry = root.child("registry")?;
        // Parsed afresh so the registry's store (and its connection pool)
        // is its own: the registry runs its calls on a runtime of its own.
        Ok(Some(delta::StorageLocation::parse(
            registry.url().as_str(),
            &storage.options,
        )?))
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
