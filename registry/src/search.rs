//! Searching models and versions with MLflow's filter syntax, in pages.
//!
//! Filters are clauses joined by `AND`: `name = 'fraud'`, `name != 'x'`,
//! `name LIKE 'fr%'`, `name ILIKE '%FR%'` (`%` any run of characters, `_`
//! one character), `tags.team = 'risk'` (or `tag.`, or ``tags.`key with
//! spaces` ``),
//! and for versions also `run_id`, `source_path` and `version_number`.
//! Values are quoted with `'` or `"`; `version_number` takes a number.

use crate::error::{Error, Result};
use crate::model::{ModelVersion, RegisteredModel};
use crate::store::Registry;

/// One page of search results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The results on this page.
    pub items: Vec<T>,
    /// The token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// The most models one page may hold (MLflow's limit).
pub const MAX_MODELS_PAGE: usize = 1000;

/// The most versions one page may hold (MLflow's limit).
pub const MAX_VERSIONS_PAGE: usize = 200_000;

impl Registry {
    /// Registered models matching `filter` (empty: all), by name.
    pub fn search_models(
        &self,
        filter: &str,
        max_results: usize,
        page_token: Option<&str>,
    ) -> Result<Page<RegisteredModel>> {
        let filter = Filter::parse(filter, &["name"])?;
        let mut found = Vec::new();
        for name in self.models()? {
            let model = self.model(&name)?;
            if filter.matches(&|field| match field {
                Field::Name => Some(model.name.clone()),
                Field::Tag(key) => model.tags.get(key).cloned(),
                _ => None,
            }) {
                found.push(model);
            }
        }
        page(found, max_results, MAX_MODELS_PAGE, page_token)
    }

    /// Model versions matching `filter` (empty: all), by model name, then
    /// newest version first.
    pub fn search_versions(
        &self,
        filter: &str,
        max_results: usize,
        page_token: Option<&str>,
    ) -> Result<Page<ModelVersion>> {
        let filter = Filter::parse(filter, &["name", "run_id", "source_path", "version_number"])?;
        let names = match filter.exact_name() {
            Some(name) if self.models()?.iter().any(|m| m == name) => vec![name.to_string()],
            Some(_) => Vec::new(),
            None => self.models()?,
        };
        let mut found = Vec::new();
        for name in names {
            for version in self.versions(&name)?.into_iter().rev() {
                if filter.matches(&|field| match field {
                    Field::Name => Some(version.name.clone()),
                    Field::RunId => Some(version.lineage.run_id.clone()),
                    Field::Source => Some(version.source.clone()),
                    Field::Version => Some(version.version.to_string()),
                    Field::Tag(key) => version.tags.get(key).cloned(),
                }) {
                    found.push(version);
                }
            }
        }
        page(found, max_results, MAX_VERSIONS_PAGE, page_token)
    }
}

fn page<T>(
    items: Vec<T>,
    max_results: usize,
    limit: usize,
    page_token: Option<&str>,
) -> Result<Page<T>> {
    if max_results == 0 || max_results > limit {
        return Err(Error::InvalidParameter(format!(
            "max_results must be between 1 and {limit}, not {max_results}"
        )));
    }
    let offset = match page_token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| Error::InvalidParameter(format!("invalid page_token {token:?}")))?,
    };
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(max_results).collect();
    let next = offset + items.len();
    Ok(Page {
        items,
        next_page_token: (next < total).then(|| next.to_string()),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Name,
    RunId,
    Source,
    Version,
    Tag(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    Like,
    ILike,
}

#[derive(Debug, Clone)]
struct Clause {
    field: Field,
    op: Op,
    value: String,
}

/// A parsed filter: every clause must hold.
#[derive(Debug, Clone, Default)]
struct Filter {
    clauses: Vec<Clause>,
}

impl Filter {
    fn parse(text: &str, fields: &[&str]) -> Result<Self> {
        let bad = |why: String| Error::InvalidParameter(format!("invalid filter {text:?}: {why}"));
        let mut tokens = tokenize(text).map_err(bad)?.into_iter().peekable();
        let mut clauses = Vec::new();
        while tokens.peek().is_some() {
            if !clauses.is_empty() {
                match tokens.next() {
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("and") => {}
                    other => return Err(bad(format!("expected AND, found {other:?}"))),
                }
            }
            let field = match tokens.next() {
                Some(Token::Word(w)) => {
                    if let Some(key) = w.strip_prefix("tags.").or_else(|| w.strip_prefix("tag.")) {
                        Field::Tag(key.trim_matches('`').to_string())
                    } else if fields.contains(&w.as_str()) {
                        match w.as_str() {
                            "name" => Field::Name,
                            "run_id" => Field::RunId,
                            "source_path" => Field::Source,
                            _ => Field::Version,
                        }
                    } else {
                        return Err(bad(format!(
                            "unknown field {w:?}; use {} or tags.<key>",
                            fields.join(", ")
                        )));
                    }
                }
                other => return Err(bad(format!("expected a field, found {other:?}"))),
            };
            let op = match tokens.next() {
                Some(Token::Op(op)) if op == "=" => Op::Eq,
                Some(Token::Op(op)) if op == "!=" => Op::NotEq,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("like") => Op::Like,
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("ilike") => Op::ILike,
                other => {
                    return Err(bad(format!(
                        "expected =, !=, LIKE or ILIKE, found {other:?}"
                    )));
                }
            };
            let value = match tokens.next() {
                Some(Token::Quoted(v)) => v,
                Some(Token::Word(v))
                    if field == Field::Version && v.chars().all(|c| c.is_ascii_digit()) =>
                {
                    v
                }
                other => return Err(bad(format!("expected a quoted value, found {other:?}"))),
            };
            clauses.push(Clause { field, op, value });
        }
        Ok(Filter { clauses })
    }

    /// The model name when a clause pins it exactly.
    fn exact_name(&self) -> Option<&str> {
        self.clauses
            .iter()
            .find(|c| c.field == Field::Name && c.op == Op::Eq)
            .map(|c| c.value.as_str())
    }

    fn matches(&self, value_of: &dyn Fn(&Field) -> Option<String>) -> bool {
        self.clauses.iter().all(|clause| {
            let Some(value) = value_of(&clause.field) else {
                return clause.op == Op::NotEq;
            };
            match clause.op {
                Op::Eq => value == clause.value,
                Op::NotEq => value != clause.value,
                Op::Like => like(&value, &clause.value),
                Op::ILike => like(&value.to_lowercase(), &clause.value.to_lowercase()),
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(String),
}

fn tokenize(text: &str) -> std::result::Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some(q) if q == c => break,
                    Some(other) => value.push(other),
                    None => return Err(format!("unterminated {c}quote")),
                }
            }
            tokens.push(Token::Quoted(value));
        } else if c == '=' {
            chars.next();
            tokens.push(Token::Op("=".into()));
        } else if c == '!' {
            chars.next();
            if chars.next() != Some('=') {
                return Err("'!' must be followed by '='".into());
            }
            tokens.push(Token::Op("!=".into()));
        } else {
            let mut word = String::new();
            let mut in_backticks = false;
            while let Some(&c) = chars.peek() {
                if c == '`' {
                    in_backticks = !in_backticks;
                } else if !in_backticks
                    && (c.is_whitespace() || matches!(c, '=' | '!' | '\'' | '"'))
                {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

/// SQL `LIKE`: `%` matches any run of characters, `_` exactly one.
fn like(value: &str, pattern: &str) -> bool {
    let value: Vec<char> = value.chars().collect();
    let pattern: Vec<char> = pattern.chars().collect();
    // Classic two-pointer wildcard match with backtracking to the last `%`.
    let (mut v, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == value[v]) {
            v += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, v));
            p += 1;
        } else if let Some((sp, sv)) = star {
            p = sp + 1;
            v = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_sql() {
        for (value, pattern, want) in [
            ("fraud", "fr%", true),
            ("fraud", "%au%", true),
            ("fraud", "f_aud", true),
            ("fraud", "f_ud", false),
            ("fraud", "%", true),
            ("", "%", true),
            ("fraud", "fraud%", true),
            ("fraud", "%d", true),
            ("fraud", "%x%", false),
            ("aab", "%ab", true),
        ] {
            assert_eq!(like(value, pattern), want, "{value:?} LIKE {pattern:?}");
        }
    }

    #[test]
    fn filters_parse_or_name_the_problem() {
        let f = Filter::parse("name = 'fraud' AND tags.`team x` LIKE 'ri%'", &["name"]).unwrap();
        assert_eq!(f.exact_name(), Some("fraud"));
        assert!(f.matches(&|field| match field {
            Field::Name => Some("fraud".into()),
            Field::Tag(k) if k == "team x" => Some("risk".into()),
            _ => None,
        }));
        for bad in [
            "name = ",
            "colour = 'x'",
            "name ~ 'x'",
            "name = 'x' OR name = 'y'",
            "name = 'x",
        ] {
            let err = Filter::parse(bad, &["name"]).unwrap_err();
            assert!(matches!(err, Error::InvalidParameter(_)), "{bad}: {err}");
            assert!(err.to_string().contains("invalid filter"), "{err}");
        }
        assert!(Filter::parse("", &["name"]).unwrap().clauses.is_empty());
        let v = Filter::parse("version_number = 3", &["name", "version_number"]).unwrap();
        assert_eq!(v.clauses[0].value, "3");
    }

    #[test]
    fn pages_carry_on_where_they_stopped() {
        let items: Vec<u32> = (0..5).collect();
        let first = page(items.clone(), 2, 10, None).unwrap();
        assert_eq!(first.items, [0, 1]);
        let second = page(items.clone(), 2, 10, first.next_page_token.as_deref()).unwrap();
        assert_eq!(second.items, [2, 3]);
        let last = page(items.clone(), 2, 10, second.next_page_token.as_deref()).unwrap();
        assert_eq!((last.items, last.next_page_token), (vec![4], None));
        assert!(page(items.clone(), 2, 10, Some("x")).is_err());
        assert!(page(items, 0, 10, None).is_err());
    }
}
