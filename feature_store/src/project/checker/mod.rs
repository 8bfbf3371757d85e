//! Meaning checks of a parsed project file: every reference resolves,
//! durations, types and patterns parse, names are unique. Each error names
//! the file, the line and the field.

mod source;
mod view;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use super::raw::*;
use super::spec::*;
use crate::error::{Error, Result};
use crate::schema::Entity;

pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
}

impl Checker<'_> {
    /// A `quality_gate` table: shares between 0 and 1.
    pub(super) fn check_gate(
        &self,
        field: &str,
        gate: Option<&super::raw::RawGate>,
    ) -> Result<super::spec::QualityGate> {
        let Some(gate) = gate else {
            return Ok(super::spec::QualityGate::default());
        };
        for (name, value) in [
            ("min_score", &gate.min_score),
            ("max_quarantine_share", &gate.max_quarantine_share),
        ] {
            if let Some(value) = value
                && !(0.0..=1.0).contains(value.get_ref())
            {
                return self.fail(
                    value.span(),
                    format!("{field}.quality_gate.{name}"),
                    format!("{} is not a share between 0 and 1", value.get_ref()),
                );
            }
        }
        Ok(super::spec::QualityGate {
            min_score: gate.min_score.as_ref().map(|v| *v.get_ref()),
            max_quarantine_share: gate.max_quarantine_share.as_ref().map(|v| *v.get_ref()),
        })
    }

    pub(super) fn fail<T>(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: String,
    ) -> Result<T> {
        Err(Error::Project {
            path: self.path.to_path_buf(),
            line: line_of(self.text, &span),
            field: field.into(),
            message,
        })
    }

    pub(super) fn check(&self, raw: RawProject, root: &Path) -> Result<Project> {
        let entities = self.check_entities(&raw.entity)?;
        let sources = self.check_sources(&raw.source)?;
        let views = self.check_views(&raw.feature_view, &entities, &sources)?;
        let services = self.check_services(&raw.feature_service, &views)?;
        let models = self.check_models(raw.model)?;
        let storage = match &raw.storage {
            None => None,
            Some(storage) => {
                let spec = storage.get_ref();
                let uri = if std::path::Path::new(&spec.uri).is_relative()
                    && !delta::location::is_uri(&spec.uri)
                {
                    root.join(&spec.uri).display().to_string()
                } else {
                    spec.uri.clone()
                };
                if let Err(e) = delta::StorageLocation::check(&uri, &spec.options) {
                    return self.fail(storage.span(), "storage", e.to_string());
                }
                Some(crate::project::Storage {
                    uri,
                    options: spec.options.clone(),
                })
            }
        };
        // A Delta source on the project's own kind of store reaches it with
        // the project's options (its endpoint, say) unless it gives its own.
        let mut sources = sources;
        if let Some(storage) = &storage {
            let scheme = |uri: &str| uri.split_once("://").map(|(scheme, _)| scheme.to_string());
            for source in &mut sources {
                if source.format == Format::Delta
                    && source.options.is_empty()
                    && delta::location::is_uri(&source.path)
                    && scheme(&source.path) == scheme(&storage.uri)
                {
                    source.options = storage.options.clone();
                }
            }
        }
        let mut project = Project {
            root: root.to_path_buf(),
            name: raw.project.name,
            data_dir: root.join(&raw.project.data_dir),
            storage,
            entities,
            sources,
            feature_views: views,
            feature_services: services,
            models,
            online_store: raw.online_store.unwrap_or_default(),
            definition_hash: String::new(),
        };
        project.definition_hash = hash_json(
            "aurum-project-v1",
            &(&project.sources, &project.feature_views),
        );
        Ok(project)
    }

    fn check_entities(&self, raw: &[RawEntity]) -> Result<Vec<Entity>> {
        let mut entities: Vec<Entity> = Vec::new();
        for (i, e) in raw.iter().enumerate() {
            let field = format!("entity[{i}]");
            if entities.iter().any(|x| &x.name == e.name.get_ref()) {
                return self.fail(
                    e.name.span(),
                    format!("{field}.name"),
                    format!("entity {:?} is declared twice", e.name.get_ref()),
                );
            }
            if e.join_keys.get_ref().is_empty() {
                return self.fail(
                    e.join_keys.span(),
                    format!("{field}.join_keys"),
                    "an entity needs at least one join key".into(),
                );
            }
            entities.push(Entity {
                name: e.name.get_ref().clone(),
                join_keys: e.join_keys.get_ref().clone(),
            });
        }
        Ok(entities)
    }

    /// The sources, ordered so that each comes after those it is enriched
    /// from.
    fn check_sources(&self, raw: &[RawSource]) -> Result<Vec<Source>> {
        let mut sources: Vec<Source> = Vec::new();
        for (i, s) in raw.iter().enumerate() {
            let source = self.check_source(i, s, &sources)?;
            sources.push(source);
        }
        // Enrichment may refer to sources declared later: check and order.
        for (i, s) in raw.iter().enumerate() {
            self.check_enrichment(i, s, &sources)?;
        }
        order_sources(sources).map_err(|cycle| Error::Project {
            path: self.path.to_path_buf(),
            line: 0,
            field: "source.silver.enrich".into(),
            message: format!("enrichment forms a cycle through {cycle:?}"),
        })
    }

    /// Source `i`'s enrichments against all the `sources`: the dimension
    /// exists and is another source, the join keys are columns of both,
    /// the columns taken are the dimension's and new to the source.
    fn check_enrichment(&self, i: usize, s: &RawSource, sources: &[Source]) -> Result<()> {
        for (j, e) in s.silver.enrich.iter().enumerate() {
            let field = format!("source[{i}].silver.enrich[{j}]");
            let Some(dim) = sources.iter().find(|d| &d.name == e.source.get_ref()) else {
                let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                return self.fail(
                    e.source.span(),
                    format!("{field}.source"),
                    format!(
                        "no source named {:?} (declared: {})",
                        e.source.get_ref(),
                        names.join(", ")
                    ),
                );
            };
            if dim.name == *s.name.get_ref() {
                return self.fail(
                    e.source.span(),
                    format!("{field}.source"),
                    "a source cannot enrich itself".into(),
                );
            }
            for key in e.on.get_ref() {
                if sources[i].column(key).is_none() || dim.column(key).is_none() {
                    return self.fail(
                        e.on.span(),
                        format!("{field}.on"),
                        format!(
                            "join key {key:?} must be a declared column of both {:?} and {:?}",
                            s.name.get_ref(),
                            dim.name
                        ),
                    );
                }
            }
            for column in e.columns.get_ref() {
                if dim.column(column).is_none() {
                    return self.fail(
                        e.columns.span(),
                        format!("{field}.columns"),
                        format!("{:?} is not a column of source {:?}", column, dim.name),
                    );
                }
                if sources[i].column(column).is_some() {
                    return self.fail(
                        e.columns.span(),
                        format!("{field}.columns"),
                        format!("{column:?} is already a column of {:?}", s.name.get_ref()),
                    );
                }
            }
        }
        Ok(())
    }

    fn check_views(
        &self,
        raw: &[RawView],
        entities: &[Entity],
        sources: &[Source],
    ) -> Result<Vec<ViewSpec>> {
        let mut views: Vec<ViewSpec> = Vec::new();
        for (i, v) in raw.iter().enumerate() {
            let view = self.check_view(i, v, entities, sources)?;
            if views.iter().any(|x| x.name == view.name) {
                return self.fail(
                    v.name.span(),
                    format!("feature_view[{i}].name"),
                    format!("feature view {:?} is declared twice", view.name),
                );
            }
            views.push(view);
        }
        Ok(views)
    }

    fn check_services(
        &self,
        raw: &[RawService],
        views: &[ViewSpec],
    ) -> Result<Vec<crate::schema::FeatureService>> {
        let mut services: Vec<crate::schema::FeatureService> = Vec::new();
        for (i, raw_service) in raw.iter().enumerate() {
            let service = self.check_service(i, raw_service, views)?;
            if services.iter().any(|x| x.name == service.name) {
                return self.fail(
                    raw_service.name.span(),
                    format!("feature_service[{i}].name"),
                    format!("feature service {:?} is declared twice", service.name),
                );
            }
            services.push(service);
        }
        Ok(services)
    }

    /// The `[[model]]` sections, kept as tables for the crates that train
    /// and serve: each needs a unique name.
    fn check_models(&self, raw: Vec<toml::Spanned<toml::Table>>) -> Result<Vec<ModelSection>> {
        let mut models: Vec<ModelSection> = Vec::new();
        for (i, m) in raw.into_iter().enumerate() {
            let span = m.span();
            let mut table = m.into_inner();
            let name = match table.remove("name") {
                Some(toml::Value::String(name)) if !name.is_empty() => name,
                _ => {
                    return self.fail(
                        span,
                        format!("model[{i}].name"),
                        "a [[model]] section needs a name (the registered model's)".into(),
                    );
                }
            };
            if models.iter().any(|x| x.name == name) {
                return self.fail(
                    span,
                    format!("model[{i}].name"),
                    format!("model {name:?} is declared twice"),
                );
            }
            models.push(ModelSection {
                line: line_of(self.text, &span),
                name,
                table,
            });
        }
        Ok(models)
    }

    fn check_service(
        &self,
        i: usize,
        raw: &RawService,
        views: &[ViewSpec],
    ) -> Result<crate::schema::FeatureService> {
        let field = format!("feature_service[{i}].features");
        let span = raw.features.span();
        if raw.features.get_ref().is_empty() {
            return self.fail(
                span,
                field,
                "a feature service needs at least one feature".into(),
            );
        }
        let mut features: Vec<String> = Vec::new();
        for entry in raw.features.get_ref() {
            let (view_name, feature) = match entry.split_once(':') {
                Some((view, feature)) => (view, Some(feature)),
                None => (entry.as_str(), None),
            };
            let Some(view) = views.iter().find(|v| v.name == view_name) else {
                return self.fail(
                    span,
                    field,
                    format!("{entry:?}: no feature view named {view_name:?}"),
                );
            };
            let names = view.feature_names();
            let chosen: Vec<String> = match feature {
                None => names,
                Some(f) if names.iter().any(|n| n == f) => vec![f.to_string()],
                Some(f) => {
                    return self.fail(
                        span,
                        field,
                        format!("{entry:?}: feature view {view_name:?} has no feature {f:?}"),
                    );
                }
            };
            for name in chosen {
                let reference = format!("{view_name}:{name}");
                if features.contains(&reference) {
                    return self.fail(span, field, format!("{reference:?} is listed twice"));
                }
                features.push(reference);
            }
        }
        Ok(crate::schema::FeatureService {
            name: raw.name.get_ref().clone(),
            features,
        })
    }
}

pub(super) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

pub(super) fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The line of `text` a span starts on (from 1).
pub(super) fn line_of(text: &str, span: &Range<usize>) -> usize {
    let end = span.start.min(text.len());
    text[..end].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Orders sources so that every dimension comes before the sources it
/// enriches; returns a source on a cycle when there is one.
fn order_sources(sources: Vec<Source>) -> std::result::Result<Vec<Source>, String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(sources.len());
    let mut pending = sources;
    while !pending.is_empty() {
        let before = pending.len();
        let (ready, rest): (Vec<Source>, Vec<Source>) = pending
            .into_iter()
            .partition(|s| s.enrich.iter().all(|e| done.contains(&e.source)));
        for s in ready {
            done.insert(s.name.clone());
            ordered.push(s);
        }
        pending = rest;
        if pending.len() == before {
            return Err(pending[0].name.clone());
        }
    }
    Ok(ordered)
}
