//! Checks of a `[[feature_view]]`: its entity, source, windows and
//! derived features.

use std::time::Duration;

use toml::Spanned;

use super::{Checker, is_identifier};
use crate::error::Result;
use crate::project::duration::{format_duration, parse_duration};
use crate::project::raw::*;
use crate::project::spec::*;
use crate::schema::{EVENT_TIMESTAMP, Entity};

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
        let entity = self.view_entity(&field, v, entities)?;
        let source = self.view_source(&field, v, sources)?;
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
        let windowed = self.check_aggregations(&field, v, source, sources, &available)?;
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
        let derived = self.check_derived(&field, v, &mut names, &available)?;
        if names.is_empty() {
            return self.fail(
                v.name.span(),
                field.to_string(),
                "a feature view needs at least one aggregation".into(),
            );
        }
        for key in &entity.join_keys {
            if names.contains(key) || key == EVENT_TIMESTAMP {
                return self.fail(
                    v.name.span(),
                    field.to_string(),
                    format!("feature name {key:?} collides with a key column"),
                );
            }
        }
        let windows_at = match v.windows_at.as_ref().map(|w| (w, w.get_ref().as_str())) {
            None | Some((_, "event")) => WindowsAt::Event,
            Some((_, "request")) => WindowsAt::Request,
            Some((w, other)) => {
                return self.fail(
                    w.span(),
                    format!("{field}.windows_at"),
                    format!(
                        "{other:?} is not when windows are valued: \"request\" (the window ending at the read) or \"event\" (the window ending at the entity's last event)"
                    ),
                );
            }
        };
        if windows_at == WindowsAt::Request {
            // A read values derived features from the windows it values
            // (and earlier derived features) only: the source row's own
            // columns are not kept online.
            let features: Vec<String> = windowed
                .iter()
                .filter(|f| f.window.is_some() && f.function != Aggregation::Last)
                .map(|f| f.name.clone())
                .chain(derived.iter().map(|d| d.name.clone()))
                .collect();
            for (d, raw) in derived.iter().zip(&v.derived) {
                if let Err(message) = crate::expr::parse(&d.expr, &features) {
                    return self.fail(
                        raw.expr.span(),
                        format!("{field}.derived.expr"),
                        format!(
                            "{message}: with windows_at = \"request\" a derived feature is recomputed at each read from the view's windowed features, so it cannot use the source's columns or `last` values"
                        ),
                    );
                }
            }
        }
        Ok(ViewSpec {
            name,
            entity: entity.clone(),
            source: source.name.clone(),
            ttl,
            windowed,
            derived,
            windows_at,
            silver_table: source.silver_table.clone(),
            source_timestamp: source.timestamp.clone(),
            quality_gate: self.check_gate(&field, v.quality_gate.as_ref())?,
        })
    }

    /// The declared entity view `v` names.
    fn view_entity<'e>(
        &self,
        field: &str,
        v: &RawView,
        entities: &'e [Entity],
    ) -> Result<&'e Entity> {
        match entities.iter().find(|e| &e.name == v.entity.get_ref()) {
            Some(entity) => Ok(entity),
            None => {
                let known: Vec<&str> = entities.iter().map(|e| e.name.as_str()).collect();
                self.fail(
                    v.entity.span(),
                    format!("{field}.entity"),
                    format!(
                        "no entity named {:?} (declared: {})",
                        v.entity.get_ref(),
                        known.join(", ")
                    ),
                )
            }
        }
    }

    /// The declared source view `v` names.
    fn view_source<'s>(
        &self,
        field: &str,
        v: &RawView,
        sources: &'s [Source],
    ) -> Result<&'s Source> {
        match sources.iter().find(|s| &s.name == v.source.get_ref()) {
            Some(source) => Ok(source),
            None => {
                let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                self.fail(
                    v.source.span(),
                    format!("{field}.source"),
                    format!(
                        "no source named {:?} (declared: {})",
                        v.source.get_ref(),
                        known.join(", ")
                    ),
                )
            }
        }
    }

    /// The durations of a window list (`field` names it in errors).
    fn parse_windows(&self, list: &Spanned<Vec<String>>, field: &str) -> Result<Vec<Duration>> {
        list.get_ref()
            .iter()
            .map(|w| match parse_duration(w) {
                Some(d) => Ok(d),
                None => self.fail(
                    list.span(),
                    field,
                    format!("{w:?} is not a duration (e.g. 90s, 30m, 1h, 7d, 2w)"),
                ),
            })
            .collect()
    }

    /// The windowed features of view `v`'s aggregations over `source`
    /// (whose `available` columns include the enriched ones): one per
    /// function and window, `last` once.
    fn check_aggregations(
        &self,
        field: &str,
        v: &RawView,
        source: &Source,
        sources: &[Source],
        available: &[String],
    ) -> Result<Vec<WindowFeature>> {
        let default_windows = match &v.windows {
            Some(w) => self.parse_windows(w, &format!("{field}.windows"))?,
            None => Vec::new(),
        };
        let mut windowed: Vec<WindowFeature> = Vec::new();
        for (j, a) in v.aggregation.iter().enumerate() {
            let afield = format!("{field}.aggregation[{j}]");
            let column = a.column.get_ref().clone();
            if !available.contains(&column) {
                return self.fail(
                    a.column.span(),
                    format!("{afield}.column"),
                    format!("{column:?} is not a column of source {:?}", source.name),
                );
            }
            let windows = match &a.windows {
                Some(w) => self.parse_windows(w, &format!("{afield}.windows"))?,
                None => default_windows.clone(),
            };
            let numeric = source.column(&column).is_none_or(|c| c.ty.is_numeric());
            for f in a.functions.get_ref() {
                let function = self.aggregation(a, &afield, f, &column, numeric)?;
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
                        format!("{afield}.windows"),
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
        Ok(windowed)
    }

    /// Aggregation function `f` of aggregation `a` (field `afield`) over
    /// `column`, which must be `numeric` for the functions that add up.
    fn aggregation(
        &self,
        a: &RawAggregation,
        afield: &str,
        f: &str,
        column: &str,
        numeric: bool,
    ) -> Result<Aggregation> {
        let Some(function) = Aggregation::parse(f) else {
            return self.fail(
                a.functions.span(),
                format!("{afield}.functions"),
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
                format!("{afield}.functions"),
                format!("{f:?} needs a numeric column; {column:?} is not"),
            );
        }
        Ok(function)
    }

    /// View `v`'s derived features, each a valid expression over the
    /// features before it (`names`, which it joins) and the `available`
    /// columns.
    fn check_derived(
        &self,
        field: &str,
        v: &RawView,
        names: &mut Vec<String>,
        available: &[String],
    ) -> Result<Vec<DerivedFeature>> {
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
            if let Err(message) = crate::expr::parse(d.expr.get_ref(), &known) {
                return self.fail(d.expr.span(), format!("{field}.derived[{j}].expr"), message);
            }
            names.push(dname.clone());
            derived.push(DerivedFeature {
                name: dname,
                expr: d.expr.get_ref().clone(),
            });
        }
        Ok(derived)
    }
}
