//! Derived-feature expressions: `+ - * /`, parentheses, numbers and column
//! names, e.g. `amount_sum_1d / amount_sum_7d`.
//!
//! The grammar is deliberately small: derived features are ratios and
//! differences of other features of the same row, and a closed grammar can
//! be checked when the project file loads, before any data moves. Division
//! by zero yields null, not infinity, so a model never sees `inf`.

use polars::prelude::{DataType, Expr, col, lit, when};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A number.
    Number(f64),
    /// A column or feature.
    Column(String),
    /// Negation.
    Neg(Box<Node>),
    /// A binary operation: `+`, `-`, `*` or `/`.
    Binary(char, Box<Node>, Box<Node>),
}

/// Parses `text`, checking that every name is one of `known`.
pub fn parse(text: &str, known: &[String]) -> Result<Node, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens: &tokens,
        at: 0,
        known,
        depth: 0,
    };
    let node = parser.sum()?;
    match parser.tokens.get(parser.at) {
        None => Ok(node),
        Some(t) => Err(format!("unexpected {t:?} in expression {text:?}")),
    }
}

/// The polars expression of a parsed node, as Float64.
pub fn to_polars(node: &Node) -> Expr {
    match node {
        Node::Number(n) => lit(*n),
        Node::Column(name) => col(name.as_str()).cast(DataType::Float64),
        Node::Neg(inner) => lit(0.0) - to_polars(inner),
        Node::Binary(op, a, b) => {
            let (a, b) = (to_polars(a), to_polars(b));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => when(b.clone().eq(lit(0.0)))
                    .then(lit(polars::prelude::NULL).cast(DataType::Float64))
                    .otherwise(a / b),
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if "+-*/()".contains(c) {
            tokens.push(Token::Op(c));
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            let n = s
                .parse()
                .map_err(|_| format!("{s:?} is not a number in expression {text:?}"))?;
            tokens.push(Token::Number(n));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Name(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected character {c:?} in expression {text:?}"));
        }
    }
    if tokens.is_empty() {
        return Err("the expression is empty".into());
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    known: &'a [String],
    depth: usize,
}

/// Parentheses nest at most this deep (the parser recurses).
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn sum(&mut self) -> Result<Node, String> {
        let mut node = self.product()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.tokens.get(self.at) {
            self.at += 1;
            node = Node::Binary(*op, Box::new(node), Box::new(self.product()?));
        }
        Ok(node)
    }

    fn product(&mut self) -> Result<Node, String> {
        let mut node = self.factor()?;
        while let Some(Token::Op(op @ ('*' | '/'))) = self.tokens.get(self.at) {
            self.at += 1;
            node = Node::Binary(*op, Box::new(node), Box::new(self.factor()?));
        }
        Ok(node)
    }

    fn factor(&mut self) -> Result<Node, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the expression nests deeper than {MAX_DEPTH} levels"
            ));
        }
        let node = self.factor_inner();
        self.depth -= 1;
        node
    }

    fn factor_inner(&mut self) -> Result<Node, String> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Number(n)) => Ok(Node::Number(n)),
            Some(Token::Name(name)) => {
                if self.known.contains(&name) {
                    Ok(Node::Column(name))
                } else {
                    Err(format!(
                        "{name:?} is not a feature defined before it or a source column"
                    ))
                }
            }
            Some(Token::Op('-')) => Ok(Node::Neg(Box::new(self.factor()?))),
            Some(Token::Op('(')) => {
                let inner = self.sum()?;
                match self.tokens.get(self.at) {
                    Some(Token::Op(')')) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    _ => Err("missing ')'".into()),
                }
            }
            Some(t) => Err(format!("unexpected {t:?}")),
            None => Err("the expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        vec!["a".into(), "b_1d".into()]
    }

    #[test]
    fn precedence_and_parentheses() {
        let n = parse("a + b_1d * 2", &known()).unwrap();
        assert_eq!(
            n,
            Node::Binary(
                '+',
                Box::new(Node::Column("a".into())),
                Box::new(Node::Binary(
                    '*',
                    Box::new(Node::Column("b_1d".into())),
                    Box::new(Node::Number(2.0))
                ))
            )
        );
        assert!(parse("(a - b_1d) / -a", &known()).is_ok());
    }

    #[test]
    fn errors_name_the_problem() {
        let deep_parentheses = "(".repeat(1000);
        let deep_negation = "-".repeat(1000);
        for (text, needle) in [
            ("a / c", "\"c\""),
            ("a +", "ends too early"),
            ("(a", "missing ')'"),
            ("a $ b_1d", "'$'"),
            ("", "empty"),
            ("a b_1d", "unexpected"),
            (deep_parentheses.as_str(), "deeper than 64"),
            (deep_negation.as_str(), "deeper than 64"),
        ] {
            let e = parse(text, &known()).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
