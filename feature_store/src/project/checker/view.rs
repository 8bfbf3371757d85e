//! Checks of a `[[feature_view]]`: its entity, source, windows and
//! derived features.

use std::time::Duration;

use toml::Spanned;

use super::{Checker, is_identifier};
use crate::error::Result;
use crate::project::raw::*;
use crate::project::*;
use crate::schema::Entity;

impl Checker<'_> {
    pub(super) fn check_view(
        &self,
        i: usize,
        v: &RawView,
        entities: &[Entity],
        sources: &[Source],
    ) -> Result<ViewSpec> {
        let field = format!("feature_view[{i}]");
        let name = v.name.get_ref().clone();
        if !is_identifier(&name) {
            return self.fail(
                v.name.span(),
                format!("{field}.name"),
                format!("{name:?} is not a valid name (letters, digits, underscore)"),
            );
        }
        let Some(entity) = entities.iter().find(|e| &e.name == v.entity.get_ref()) else {
            let known: Vec<&str> = entities.iter().map(|e| e.name.as_str()).collect();
            return self.fail(
                v.entity.span(),
                format!("{field}.entity"),
                format!(
                    "no entity named {:?} (declared: {})",
                    v.entity.get_ref(),
                    known.join(", ")
                ),
            );
        };
        let Some(source) = sources.iter().find(|s| &s.name == v.source.get_ref()) else {
            let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            return self.fail(
                v.source.span(),
                format!("{field}.source"),
                format!(
                    "no source named {:?} (declared: {})",
                    v.source.get_ref(),
                    known.join(", ")
                ),
            );
        };
        let available: Vec<String> = source
            .columns
            .iter()
            .map(|c| c.name.clone())
            .chain(source.enrich.iter().flat_map(|e| e.columns.iter().cloned()))
            .collect();
        for key in &entity.join_keys {
            if !available.contains(key) {
                return self.fail(
                    v.entity.span(),
                    format!("{field}.entity"),
                    format!(
                        "join key {key:?} of entity {:?} is not a column of source {:?}",
                        entity.name, source.name
                    ),
                );
            }
        }
        let Some(ttl) = parse_duration(v.ttl.get_ref()) else {
            return self.fail(
                v.ttl.span(),
                format!("{field}.ttl"),
                format!(
                    "{:?} is not a duration (e.g. 90s, 30m, 1h, 7d, 2w)",
                    v.ttl.get_ref()
                ),
            );
        };
        let parse_windows = |list: &Spanned<Vec<String>>, what: &str| -> Result<Vec<Duration>> {
            list.get_ref()
                .iter()
                .map(|w| match parse_duration(w) {
                    Some(d) => Ok(d),
                    None => self.fail(
                        list.span(),
                        format!("{field}.{what}"),
                        format!("{w:?} is not a duration (e.g. 90s, 30m, 1h, 7d, 2w)"),
                    ),
                })
                .collect()
        };
        let default_windows = match &v.windows {
            Some(w) => parse_windows(w, "windows")?,
            None => Vec::new(),
        };
        let mut windowed: Vec<WindowFeature> = Vec::new();
        for (j, a) in v.aggregation.iter().enumerate() {
            let afield = format!("aggregation[{j}]");
            let column = a.column.get_ref().clone();
            if !available.contains(&column) {
                return self.fail(
                    a.column.span(),
                    format!("{field}.{afield}.column"),
                    format!("{column:?} is not a column of source {:?}", source.name),
                );
            }
            let windows = match &a.windows {
                Some(w) => parse_windows(w, &format!("{afield}.windows"))?,
                None => default_windows.clone(),
            };
            let numeric = source.column(&column).is_none_or(|c| c.ty.is_numeric());
            for f in a.functions.get_ref() {
                let Some(function) = Aggregation::parse(f) else {
                    return self.fail(
                        a.functions.span(),
                        format!("{field}.{afield}.functions"),
                        format!(
                            "unknown aggregation {f:?} (count, sum, mean, min, max, stddev, distinct_count, last)"
                        ),
                    );
                };
                let needs_number = matches!(
                    function,
                    Aggregation::Sum
                        | Aggregation::Mean
                        | Aggregation::Min
                        | Aggregation::Max
                        | Aggregation::Stddev
                );
                if needs_number && !numeric {
                    return self.fail(
                        a.functions.span(),
                        format!("{field}.{afield}.functions"),
                        format!("{f:?} needs a numeric column; {column:?} is not"),
                    );
                }
                if function == Aggregation::Last {
                    let value_type = sources
                        .iter()
                        .find_map(|s| s.column(&column))
                        .map(|c| c.ty.label())
                        .unwrap_or_else(|| "string".into());
                    windowed.push(WindowFeature {
                        name: format!("{column}_last"),
                        column: column.clone(),
                        function,
                        window: None,
                        value_type,
                    });
                    continue;
                }
                if windows.is_empty() {
                    return self.fail(
                        a.functions.span(),
                        format!("{field}.{afield}.windows"),
                        "no windows: set `windows` on the view or the aggregation".into(),
                    );
                }
                for w in &windows {
                    windowed.push(WindowFeature {
                        name: format!("{column}_{}_{}", function.label(), format_duration(*w)),
                        column: column.clone(),
                        function,
                        window: Some(*w),
                        value_type: "float64".into(),
                    });
                }
            }
        }
        let mut names: Vec<String> = Vec::new();
        for f in &windowed {
            if names.contains(&f.name) {
                return self.fail(
                    v.name.span(),
                    format!("{field}.aggregation"),
                    format!("feature {:?} is defined twice", f.name),
                );
            }
            names.push(f.name.clone());
        }
        let mut derived = Vec::new();
        for (j, d) in v.derived.iter().enumerate() {
            let dname = d.name.get_ref().clone();
            if !is_identifier(&dname) || names.contains(&dname) {
                return self.fail(
                    d.name.span(),
                    format!("{field}.derived[{j}].name"),
                    format!("{dname:?} is not a valid, unused feature name"),
                );
            }
            let mut known = names.clone();
            known.extend(available.iter().cloned());
            if let Err(message) = crate::pipeline::expr::parse(d.expr.get_ref(), &known) {
                return self.fail(d.expr.span(), format!("{field}.derived[{j}].expr"), message);
            }
            names.push(dname.clone());
            derived.push(DerivedFeature {
                name: dname,
                expr: d.expr.get_ref().clone(),
            });
        }
        if names.is_empty() {
            return self.fail(
                v.name.span(),
                field.to_string(),
                "a feature view needs at least one aggregation".into(),
            );
        }
        for key in &entity.join_keys {
            if names.contains(key) || key == crate::pipeline::gold::EVENT_TIMESTAMP {
                return self.fail(
                    v.name.span(),
                    field.to_string(),
                    format!("feature name {key:?} collides with a key column"),
                );
            }
        }
        Ok(ViewSpec {
            name,
            entity: entity.clone(),
            source: source.name.clone(),
            ttl,
            windowed,
            derived,
        })
    }
}
