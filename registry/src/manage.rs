//! Changing a registered model: its own metadata, its versions' mutable
//! fields, deletion, renaming, and aliases with their history.
//!
//! Every change takes the model's lock (`locks/<name>.lock`: an OS file
//! lock, or a lease object on an object store), reads, and replaces whole
//! documents atomically.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{AliasChange, ModelVersion, RegisteredModel};
use crate::objects::Lock;
use crate::store::{Registry, model_key, now, validate_name, version_key};

/// The alias that `rollback` moves back by default.
pub const CHAMPION: &str = "champion";

impl Registry {
    /// Creates a registered model with no versions.
    pub fn create_model(
        &self,
        name: &str,
        description: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<RegisteredModel> {
        validate_name(name)?;
        for key in tags.keys() {
            validate_tag_key(key)?;
        }
        let now = now();
        let model = RegisteredModel {
            name: name.to_string(),
            created_at: now.clone(),
            updated_at: now,
            description: description.to_string(),
            tags,
        };
        if self.create_model_record(&model)? {
            Ok(model)
        } else {
            Err(Error::ModelExists(name.to_string()))
        }
    }

    /// Creates the model's record unless it exists; `true` when created.
    fn create_model_record(&self, model: &RegisteredModel) -> Result<bool> {
        let key = model_key(&model.name);
        if self.objects.exists(&key)? {
            return Ok(false);
        }
        // Of two creators, one wins.
        self.objects.create(&key, &self.to_json(&key, model)?)
    }

    /// Makes sure `name` has a model record (registering a version creates
    /// the model).
    pub(crate) fn ensure_model(&self, name: &str) -> Result<()> {
        let now = now();
        self.create_model_record(&RegisteredModel {
            name: name.to_string(),
            created_at: now.clone(),
            updated_at: now,
            description: String::new(),
            tags: BTreeMap::new(),
        })?;
        Ok(())
    }

    /// A registered model.
    pub fn model(&self, name: &str) -> Result<RegisteredModel> {
        validate_name(name)?;
        let key = model_key(name);
        match self.objects.read(&key)? {
            Some(bytes) => {
                let mut model: RegisteredModel =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Metadata {
                        path: self.objects.show(&key),
                        source,
                    })?;
                model.name = name.to_string();
                Ok(model)
            }
            None => {
                // Registries written before models had records.
                let first = self
                    .versions(name)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::ModelNotFound(name.to_string()))?;
                Ok(RegisteredModel {
                    name: name.to_string(),
                    created_at: first.created_at.clone(),
                    updated_at: first.created_at,
                    description: String::new(),
                    tags: BTreeMap::new(),
                })
            }
        }
    }

    /// Changes a model's description.
    pub fn set_model_description(&self, name: &str, description: &str) -> Result<RegisteredModel> {
        self.change_model(name, |model| {
            model.description = description.to_string();
            Ok(())
        })
    }

    /// Sets a tag on a model.
    pub fn set_model_tag(&self, name: &str, key: &str, value: &str) -> Result<RegisteredModel> {
        validate_tag_key(key)?;
        self.change_model(name, |model| {
            model.tags.insert(key.to_string(), value.to_string());
            Ok(())
        })
    }

    /// Removes a tag from a model (no error if it was not set).
    pub fn delete_model_tag(&self, name: &str, key: &str) -> Result<RegisteredModel> {
        self.change_model(name, |model| {
            model.tags.remove(key);
            Ok(())
        })
    }

    fn change_model(
        &self,
        name: &str,
        change: impl FnOnce(&mut RegisteredModel) -> Result<()>,
    ) -> Result<RegisteredModel> {
        self.model(name)?;
        let _lock = self.lock(name)?;
        let mut model = self.model(name)?;
        change(&mut model)?;
        model.updated_at = now();
        let key = model_key(name);
        self.objects.replace(&key, &self.to_json(&key, &model)?)?;
        Ok(model)
    }

    /// Renames a model with all its versions, aliases and history.
    pub fn rename_model(&self, name: &str, new_name: &str) -> Result<RegisteredModel> {
        validate_name(new_name)?;
        self.model(name)?;
        // Both names' locks, in a fixed order so two renames cannot deadlock.
        let (first, second) = if name <= new_name {
            (name, new_name)
        } else {
            (new_name, name)
        };
        let _first = self.lock(first)?;
        let _second = if first == second {
            None
        } else {
            Some(self.lock(second)?)
        };
        self.model(name)?;
        if !self.objects.list(&format!("models/{new_name}"))?.is_empty() {
            return Err(Error::ModelExists(new_name.to_string()));
        }
        self.objects
            .move_tree(&format!("models/{name}"), &format!("models/{new_name}"))?;
        // Both locks are held: update in place rather than through
        // `change_model`, which would take one a second time.
        let mut model = self.model(new_name)?;
        model.updated_at = now();
        let key = model_key(new_name);
        self.objects.replace(&key, &self.to_json(&key, &model)?)?;
        Ok(model)
    }

    /// Deletes a model and its versions; refused while it has aliases.
    /// Stored files stay (other versions may share them).
    pub fn delete_model(&self, name: &str) -> Result<()> {
        self.model(name)?;
        let _lock = self.lock(name)?;
        self.model(name)?;
        let aliases = self.aliases(name)?;
        if !aliases.is_empty() {
            return Err(Error::ModelAliased {
                model: name.to_string(),
                aliases: aliases.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        // The model's record first, so the model stops being listed as soon
        // as it has no versions left either.
        self.objects.delete(&model_key(name))?;
        self.objects.delete_tree(&format!("models/{name}"))?;
        tracing::info!(model = name, "deleted model");
        Ok(())
    }

    /// Changes a version's description.
    pub fn set_version_description(
        &self,
        name: &str,
        version: u64,
        description: &str,
    ) -> Result<ModelVersion> {
        self.change_version(name, version, |v| {
            v.description = description.to_string();
            Ok(())
        })
    }

    /// Sets a tag on a version.
    pub fn set_version_tag(
        &self,
        name: &str,
        version: u64,
        key: &str,
        value: &str,
    ) -> Result<ModelVersion> {
        validate_tag_key(key)?;
        self.change_version(name, version, |v| {
            v.tags.insert(key.to_string(), value.to_string());
            Ok(())
        })
    }

    /// Removes a tag from a version (no error if it was not set).
    pub fn delete_version_tag(&self, name: &str, version: u64, key: &str) -> Result<ModelVersion> {
        self.change_version(name, version, |v| {
            v.tags.remove(key);
            Ok(())
        })
    }

    fn change_version(
        &self,
        name: &str,
        version: u64,
        change: impl FnOnce(&mut ModelVersion) -> Result<()>,
    ) -> Result<ModelVersion> {
        self.version(name, version)?;
        let _lock = self.lock(name)?;
        let mut current = self.version(name, version)?;
        change(&mut current)?;
        current.updated_at = now();
        let key = version_key(name, version);
        self.objects.replace(&key, &self.to_json(&key, &current)?)?;
        Ok(current)
    }

    /// Deletes a version; refused while an alias points at it. Its number
    /// is never reused.
    pub fn delete_version(&self, name: &str, version: u64) -> Result<()> {
        self.version(name, version)?;
        let _lock = self.lock(name)?;
        self.version(name, version)?;
        let pointing: Vec<String> = self
            .aliases(name)?
            .into_iter()
            .filter(|(_, v)| *v == version)
            .map(|(alias, _)| alias)
            .collect();
        if !pointing.is_empty() {
            return Err(Error::VersionAliased {
                model: name.to_string(),
                version,
                aliases: pointing.join(", "),
            });
        }
        // A tombstone keeps the number taken, so a later registration does
        // not reuse it.
        self.objects.replace(
            &format!("{}/{version}.deleted", crate::store::versions_dir(name)),
            b"",
        )?;
        self.objects.delete(&version_key(name, version))?;
        // Its attachments go with it (a later version never reuses the number).
        if let Err(e) = self
            .objects
            .delete_tree(&crate::store::attachments_dir(name, version))
        {
            tracing::warn!(model = name, version, error = %e, "could not delete a deleted version's attachments");
        }
        tracing::info!(model = name, version, "deleted model version");
        Ok(())
    }

    /// The model's aliases: alias → version.
    pub fn aliases(&self, name: &str) -> Result<BTreeMap<String, u64>> {
        validate_name(name)?;
        let key = aliases_key(name);
        match self.objects.read(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::Metadata {
                path: self.objects.show(&key),
                source,
            }),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The version an alias points at.
    pub fn by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let aliases = self.aliases(name)?;
        let Some(&version) = aliases.get(alias) else {
            self.model(name)?;
            return Err(Error::AliasNotFound {
                model: name.to_string(),
                alias: alias.to_string(),
            });
        };
        self.version(name, version)
    }

    /// Points `alias` at `version` (which must be `READY`), recording who
    /// moved it. Returns the change recorded.
    pub fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: u64,
        who: &str,
    ) -> Result<AliasChange> {
        validate_alias(alias)?;
        self.version(name, version)?;
        let _lock = self.lock(name)?;
        // Checked under the lock, so a concurrent deletion cannot slip in.
        let target = self.version(name, version)?;
        if !target.is_ready() {
            return Err(Error::InvalidParameter(format!(
                "version {version} of {name} cannot take alias {alias:?}: its registration failed"
            )));
        }
        self.move_alias(name, alias, Some(version), who, false)
    }

    /// Deletes an alias, recording who did.
    pub fn delete_alias(&self, name: &str, alias: &str, who: &str) -> Result<AliasChange> {
        self.model(name)?;
        let _lock = self.lock(name)?;
        if !self.aliases(name)?.contains_key(alias) {
            return Err(Error::AliasNotFound {
                model: name.to_string(),
                alias: alias.to_string(),
            });
        }
        self.move_alias(name, alias, None, who, false)
    }

    /// Moves `alias` (usually [`CHAMPION`]) back to the version it pointed
    /// at before its current one: each rollback undoes one earlier move,
    /// so repeated rollbacks walk back through the history.
    pub fn rollback(&self, name: &str, alias: &str, who: &str) -> Result<AliasChange> {
        self.model(name)?;
        let _lock = self.lock(name)?;
        let cannot = |reason: &str| Error::NothingToRollBack {
            model: name.to_string(),
            alias: alias.to_string(),
            reason: reason.to_string(),
        };
        // Replay the alias's history as a stack: a move pushes; a rollback
        // cuts the stack back to the version it moved to; a deletion clears.
        let mut stack: Vec<u64> = Vec::new();
        for change in self.alias_history(name)? {
            if change.alias != alias {
                continue;
            }
            match (change.rollback, change.to) {
                (true, Some(to)) => match stack.iter().rposition(|&v| v == to) {
                    Some(at) => stack.truncate(at + 1),
                    None => stack = vec![to],
                },
                (false, Some(to)) => stack.push(to),
                (_, None) => stack.clear(),
            }
        }
        // The alias document is the truth about where the alias is now.
        let current = *self
            .aliases(name)?
            .get(alias)
            .ok_or_else(|| cannot("it points at no version"))?;
        let before = match stack.iter().rposition(|&v| v == current) {
            Some(at) => &stack[..at],
            None => &stack[..],
        };
        let previous = before
            .iter()
            .rev()
            .copied()
            .find(|&v| v != current && self.version(name, v).is_ok_and(|v| v.is_ready()))
            .ok_or_else(|| cannot(&format!("version {current} is the first it pointed at")))?;
        self.move_alias(name, alias, Some(previous), who, true)
    }

    /// Every alias move of the model, oldest first.
    pub fn alias_history(&self, name: &str) -> Result<Vec<AliasChange>> {
        validate_name(name)?;
        self.objects
            .entries(&history_key(name))?
            .into_iter()
            .map(|(path, entry)| {
                serde_json::from_slice(&entry).map_err(|source| Error::Metadata { path, source })
            })
            .collect()
    }

    /// Moves an alias (the caller holds the lock): the history entry is
    /// written durably before the alias document changes, so every alias
    /// state has its history.
    fn move_alias(
        &self,
        name: &str,
        alias: &str,
        to: Option<u64>,
        who: &str,
        rollback: bool,
    ) -> Result<AliasChange> {
        let mut aliases = self.aliases(name)?;
        let change = AliasChange {
            at: now(),
            who: who.to_string(),
            alias: alias.to_string(),
            from: aliases.get(alias).copied(),
            to,
            rollback,
        };
        let history = history_key(name);
        let entry = serde_json::to_vec(&change).map_err(|source| Error::Metadata {
            path: self.objects.show(&history),
            source,
        })?;
        self.objects.append_entry(&history, &entry)?;
        crate::store::crash_point("alias-before-replace");
        match to {
            Some(version) => aliases.insert(alias.to_string(), version),
            None => aliases.remove(alias),
        };
        let key = aliases_key(name);
        self.objects.replace(&key, &self.to_json(&key, &aliases)?)?;
        tracing::info!(model = name, alias, from = ?change.from, to = ?to, who, rollback, "moved alias");
        Ok(change)
    }

    /// Takes the model's lock (released when the returned guard drops).
    /// Locks live in `locks/`, outside the model's directory, so a rename or
    /// deletion never leaves a waiter holding a lock on a moved file.
    pub(crate) fn lock(&self, name: &str) -> Result<Lock> {
        self.objects.lock(&format!("locks/{name}.lock"))
    }

    fn to_json(&self, key: &str, value: &impl serde::Serialize) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(value).map_err(|source| Error::Metadata {
            path: self.objects.show(key),
            source,
        })
    }
}

fn aliases_key(name: &str) -> String {
    format!("models/{name}/aliases.json")
}

/// The alias history: `alias-history.jsonl` locally, one object per entry
/// under `alias-history/` on an object store.
fn history_key(name: &str) -> String {
    format!("models/{name}/alias-history")
}

/// Alias names: 1-64 letters, digits, `_` or `-`, not `latest` and not
/// `v<number>` (MLflow reserves those for version references).
pub fn validate_alias(alias: &str) -> Result<()> {
    let shaped = !alias.is_empty()
        && alias.len() <= 64
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    let reserved = alias.eq_ignore_ascii_case("latest")
        || alias
            .strip_prefix(['v', 'V'])
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if shaped && !reserved {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "invalid alias {alias:?}: use 1-64 letters, digits, '_' or '-', not \"latest\" or v<number>"
        )))
    }
}

/// Tag keys: 1-250 characters, no control characters.
fn validate_tag_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 250 || key.chars().any(char::is_control) {
        return Err(Error::InvalidParameter(format!(
            "invalid tag key {key:?}: use 1-250 characters without control characters"
        )));
    }
    Ok(())
}
