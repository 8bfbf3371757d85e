//! Checks of a `[[source]]`: columns, silver rules, enrichments.

use toml::Spanned;

use super::{Checker, is_identifier, value_text};
use crate::error::Result;
use crate::project::duration::parse_duration;
use crate::project::raw::*;
use crate::project::spec::*;

impl Checker<'_> {
    pub(super) fn check_source(
        &self,
        i: usize,
        s: &RawSource,
        earlier: &[Source],
    ) -> Result<Source> {
        let field = format!("source[{i}]");
        let name = s.name.get_ref().clone();
        if !is_identifier(&name) {
            return self.fail(
                s.name.span(),
                format!("{field}.name"),
                format!("{name:?} is not a valid name (letters, digits, underscore)"),
            );
        }
        if earlier.iter().any(|x| x.name == name) {
            return self.fail(
                s.name.span(),
                format!("{field}.name"),
                format!("source {name:?} is declared twice"),
            );
        }
        let format = *s.format.get_ref();
        let kafka = match (&s.kafka, format) {
            (Some(k), Format::Kafka) => {
                let columns: Vec<String> = s.columns.iter().map(|c| c.name.clone()).collect();
                Some(self.check_kafka(&field, k.get_ref(), &columns)?)
            }
            (None, Format::Kafka) => {
                return self.fail(
                    s.format.span(),
                    format!("{field}.kafka"),
                    "a Kafka source needs a [source.kafka] table (bootstrap_servers, topic)".into(),
                );
            }
            (Some(k), _) => {
                return self.fail(
                    k.span(),
                    format!("{field}.kafka"),
                    "[source.kafka] is only for a Kafka source (format = \"kafka\")".into(),
                );
            }
            (None, _) => None,
        };
        let path = match (&s.path, &kafka) {
            (Some(_), Some(_)) => {
                return self.fail(
                    s.format.span(),
                    format!("{field}.path"),
                    "a Kafka source has no path: its events come from [source.kafka]".into(),
                );
            }
            (None, Some(k)) => format!("kafka:{}", k.topic),
            (Some(path), None) => path.clone(),
            (None, None) => {
                return self.fail(
                    s.name.span(),
                    format!("{field}.path"),
                    "a file or Delta source needs a path".into(),
                );
            }
        };
        if let Some(version) = &s.version
            && format != Format::Delta
        {
            return self.fail(
                version.span(),
                format!("{field}.version"),
                "a version can only be pinned for a Delta source (format = \"delta\")".to_string(),
            );
        }
        if let Some(options) = &s.options {
            if format != Format::Delta {
                return self.fail(
                    options.span(),
                    format!("{field}.options"),
                    "store options are only for a Delta source (format = \"delta\")".to_string(),
                );
            }
            if let Err(e) = delta::StorageLocation::check(&path, options.get_ref()) {
                return self.fail(options.span(), format!("{field}.options"), e.to_string());
            }
        }
        let columns = self.check_columns(&field, s)?;
        self.check_column_ref(&field, &columns, &s.timestamp, "timestamp", true)?;
        if let Some(created) = &s.created {
            self.check_column_ref(&field, &columns, created, "created", true)?;
        }
        let dedup_key = self.check_dedup_key(&field, s, &columns)?;
        let nulls = self.check_nulls(&field, s, &columns)?;
        let mut enrich = Vec::new();
        let mut enriched_columns: Vec<String> = Vec::new();
        for e in &s.silver.enrich {
            enriched_columns.extend(e.columns.get_ref().iter().cloned());
            enrich.push(Enrichment {
                source: e.source.get_ref().clone(),
                on: e.on.get_ref().clone(),
                columns: e.columns.get_ref().clone(),
            });
        }
        let rules = self.check_rules(&field, s, &columns, &enriched_columns)?;
        Ok(Source {
            silver_table: s
                .silver
                .table
                .clone()
                .unwrap_or_else(|| format!("silver_{name}")),
            name,
            format,
            path,
            version: s.version.as_ref().map(|v| *v.get_ref()),
            options: s
                .options
                .as_ref()
                .map(|o| o.get_ref().clone())
                .unwrap_or_default(),
            timestamp: s.timestamp.get_ref().clone(),
            created: s.created.as_ref().map(|c| c.get_ref().clone()),
            columns,
            dedup_key,
            nulls,
            enrich,
            rules,
            quality_gate: self.check_gate(&field, s.quality_gate.as_ref())?,
            kafka,
        })
    }

    /// The source's declared columns: known types and time zones, unique
    /// names, none reserved.
    fn check_columns(&self, field: &str, s: &RawSource) -> Result<Vec<Column>> {
        let mut columns: Vec<Column> = Vec::new();
        for (j, c) in s.columns.iter().enumerate() {
            let cfield = format!("{field}.columns[{j}]");
            let Some(ty) = ColumnType::parse(c.ty.get_ref()) else {
                return self.fail(
                    c.ty.span(),
                    format!("{cfield}.type"),
                    format!(
                        "unknown type {:?} (string, int64, float64, bool, date, timestamp, categorical, decimal(p,s))",
                        c.ty.get_ref()
                    ),
                );
            };
            if columns.iter().any(|x| x.name == c.name) || c.name.starts_with('_') {
                return self.fail(
                    c.ty.span(),
                    format!("{cfield}.name"),
                    format!(
                        "column {:?} is declared twice or starts with '_' (reserved for ingest metadata)",
                        c.name
                    ),
                );
            }
            let timezone = match &c.timezone {
                Some(tz) => {
                    if tz.get_ref().parse::<chrono_tz::Tz>().is_err() {
                        return self.fail(
                            tz.span(),
                            format!("{cfield}.timezone"),
                            format!("unknown time zone {:?}", tz.get_ref()),
                        );
                    }
                    tz.get_ref().clone()
                }
                None => "UTC".to_string(),
            };
            let text = matches!(ty, ColumnType::String | ColumnType::Categorical);
            columns.push(Column {
                name: c.name.clone(),
                trim: c.trim.unwrap_or(text),
                lowercase: c.lowercase,
                format: c.format.clone(),
                timezone,
                ty,
            });
        }
        Ok(columns)
    }

    /// `col` (the source's field `what`) names one of `columns`, a
    /// timestamp when `want_ts`.
    fn check_column_ref(
        &self,
        field: &str,
        columns: &[Column],
        col: &Spanned<String>,
        what: &str,
        want_ts: bool,
    ) -> Result<()> {
        match columns.iter().find(|c| &c.name == col.get_ref()) {
            None => self.fail(
                col.span(),
                format!("{field}.{what}"),
                format!("{:?} is not a declared column", col.get_ref()),
            ),
            Some(c) if want_ts && c.ty != ColumnType::Timestamp => self.fail(
                col.span(),
                format!("{field}.{what}"),
                format!("{:?} must have type timestamp", col.get_ref()),
            ),
            Some(_) => Ok(()),
        }
    }

    /// The silver dedup key: declared columns only.
    fn check_dedup_key(
        &self,
        field: &str,
        s: &RawSource,
        columns: &[Column],
    ) -> Result<Vec<String>> {
        let dedup_key: Vec<String> = s
            .silver
            .dedup_key
            .as_ref()
            .map(|k| k.get_ref().clone())
            .unwrap_or_default();
        for key in &dedup_key {
            if !columns.iter().any(|c| &c.name == key) {
                return self.fail(
                    s.silver
                        .dedup_key
                        .as_ref()
                        .map(|k| k.span())
                        .unwrap_or_default(),
                    format!("{field}.silver.dedup_key"),
                    format!("{key:?} is not a declared column"),
                );
            }
        }
        Ok(dedup_key)
    }

    /// The silver null strategies, by declared column.
    fn check_nulls(
        &self,
        field: &str,
        s: &RawSource,
        columns: &[Column],
    ) -> Result<Vec<(String, NullStrategy)>> {
        let mut nulls = Vec::new();
        for (j, n) in s.silver.nulls.iter().enumerate() {
            self.check_column_ref(
                field,
                columns,
                &n.column,
                &format!("silver.nulls[{j}].column"),
                false,
            )?;
            let strategy = self.null_strategy(&format!("{field}.silver.nulls[{j}]"), n, columns)?;
            nulls.push((n.column.get_ref().clone(), strategy));
        }
        Ok(nulls)
    }

    /// Null strategy `n` (field `nfield`) of a declared column: known, with
    /// what it needs (a value, a numeric column, entity columns).
    fn null_strategy(&self, nfield: &str, n: &RawNull, columns: &[Column]) -> Result<NullStrategy> {
        let column = columns.iter().find(|c| &c.name == n.column.get_ref());
        let numeric = column.is_some_and(|c| c.ty.is_numeric());
        Ok(match n.strategy.get_ref().as_str() {
            "drop" => NullStrategy::Drop,
            "constant" => match &n.value {
                Some(v) => NullStrategy::Constant(value_text(v)),
                None => {
                    return self.fail(
                        n.strategy.span(),
                        format!("{nfield}.value"),
                        "strategy \"constant\" needs a value".into(),
                    );
                }
            },
            "mean" | "median" if !numeric => {
                return self.fail(
                    n.strategy.span(),
                    format!("{nfield}.strategy"),
                    format!(
                        "{:?} needs a numeric column; {:?} is not",
                        n.strategy.get_ref(),
                        n.column.get_ref()
                    ),
                );
            }
            "mean" => NullStrategy::Mean,
            "median" => NullStrategy::Median,
            "forward_fill" => {
                if n.by.is_empty() || n.by.iter().any(|b| !columns.iter().any(|c| &c.name == b)) {
                    return self.fail(
                        n.strategy.span(),
                        format!("{nfield}.by"),
                        "forward_fill needs `by`, the declared entity key columns".into(),
                    );
                }
                NullStrategy::ForwardFill { by: n.by.clone() }
            }
            other => {
                return self.fail(
                    n.strategy.span(),
                    format!("{nfield}.strategy"),
                    format!(
                        "unknown null strategy {other:?} (drop, constant, mean, median, forward_fill)"
                    ),
                );
            }
        })
    }

    /// The silver rules, each on a declared or an enriched column.
    fn check_rules(
        &self,
        field: &str,
        s: &RawSource,
        columns: &[Column],
        enriched_columns: &[String],
    ) -> Result<Vec<Rule>> {
        let mut rules = Vec::new();
        for (j, r) in s.silver.rules.iter().enumerate() {
            let rfield = format!("{field}.silver.rules[{j}]");
            let column = r.column.get_ref().clone();
            let declared = columns.iter().find(|c| c.name == column);
            if declared.is_none() && !enriched_columns.contains(&column) {
                return self.fail(
                    r.column.span(),
                    format!("{rfield}.column"),
                    format!("{column:?} is neither a declared nor an enriched column"),
                );
            }
            let check = self.rule_check(&rfield, r, declared, columns)?;
            rules.push(Rule {
                column,
                check,
                severity: r.severity,
            });
        }
        Ok(rules)
    }

    /// The check of rule `r` (field `rfield`) on its column (`declared`
    /// when it is a declared one): known, with what it needs.
    fn rule_check(
        &self,
        rfield: &str,
        r: &RawRule,
        declared: Option<&Column>,
        columns: &[Column],
    ) -> Result<Check> {
        let column = r.column.get_ref();
        Ok(match r.check.get_ref().as_str() {
            "not_null" => Check::NotNull,
            "range" => {
                if r.min.is_none() && r.max.is_none() {
                    return self.fail(
                        r.check.span(),
                        format!("{rfield}.min"),
                        "a range rule needs min, max or both".into(),
                    );
                }
                if declared.is_some_and(|c| !c.ty.is_numeric()) {
                    return self.fail(
                        r.column.span(),
                        format!("{rfield}.column"),
                        format!("a range rule needs a numeric column; {column:?} is not"),
                    );
                }
                Check::Range {
                    min: r.min,
                    max: r.max,
                }
            }
            "regex" => match &r.pattern {
                Some(p) => {
                    if let Err(e) = regex::Regex::new(p.get_ref()) {
                        return self.fail(
                            p.span(),
                            format!("{rfield}.pattern"),
                            format!("invalid regular expression: {e}"),
                        );
                    }
                    Check::Regex(p.get_ref().clone())
                }
                None => {
                    return self.fail(
                        r.check.span(),
                        format!("{rfield}.pattern"),
                        "a regex rule needs a pattern".into(),
                    );
                }
            },
            "allowed" => match &r.values {
                Some(v) if !v.is_empty() => Check::Allowed(v.iter().map(value_text).collect()),
                _ => {
                    return self.fail(
                        r.check.span(),
                        format!("{rfield}.values"),
                        "an allowed rule needs a non-empty list of values".into(),
                    );
                }
            },
            "unique" => {
                let cols = r.columns.clone().unwrap_or_else(|| vec![column.clone()]);
                if let Some(bad) = cols.iter().find(|c| !columns.iter().any(|x| &x.name == *c)) {
                    return self.fail(
                        r.check.span(),
                        format!("{rfield}.columns"),
                        format!("{bad:?} is not a declared column"),
                    );
                }
                Check::Unique(cols)
            }
            "freshness" => {
                let parsed = r
                    .max_delay
                    .as_ref()
                    .and_then(|d| parse_duration(d.get_ref()));
                match parsed {
                    Some(d) => Check::Freshness(d),
                    None => {
                        return self.fail(
                            r.check.span(),
                            format!("{rfield}.max_delay"),
                            "a freshness rule needs max_delay, e.g. \"2d\"".into(),
                        );
                    }
                }
            }
            other => {
                return self.fail(
                    r.check.span(),
                    format!("{rfield}.check"),
                    format!(
                        "unknown check {other:?} (not_null, range, regex, allowed, unique, freshness)"
                    ),
                );
            }
        })
    }
}
