//! Conditions on playbook actions (`when = "annotations.confidence < 0.5"`): a tiny expression
//! language over an incident's labels and annotations, parsed once when the config is loaded
//! and evaluated when an incident opens. Hand-written: the grammar is a dozen lines, and its
//! error messages (with a column) are part of the config's user interface.
//!
//! ```text
//! condition  := or
//! or         := and ( "or" and )*
//! and        := unary ( "and" unary )*
//! unary      := "not" unary | primary
//! primary    := "(" condition ")"
//!             | "exists" "(" value ")"
//!             | operand op operand
//! operand    := value | "string" | number
//! value      := ( "labels" | "annotations" ) "." name     name: [A-Za-z0-9_-]+
//! op         := "<" | "<=" | ">" | ">=" | "==" | "!="
//! number     := -?digits ( "." digits )?
//! ```
//!
//! A comparison with a number on either side is numeric: the other side's value is read as a
//! number. A comparison without one compares text (byte-wise for `<` and friends). A missing
//! label or annotation, or a value that is not a number in a numeric comparison, makes the
//! comparison false — whatever the operator, `!=` included — never an error at run time.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed condition, with the text it came from (which is how it is shown and serialized).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    source: String,
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Exists(Value),
    Cmp(Operand, Op, Operand),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Value {
    annotation: bool,
    name: String,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = if self.annotation {
            "annotations"
        } else {
            "labels"
        };
        write!(f, "{map}.{}", self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Value(Value),
    Text(String),
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
            Op::Eq => o == Equal,
            Op::Ne => o != Equal,
        }
    }
}

/// What a condition is evaluated against: the incident's labels and annotations.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

impl Facts<'_> {
    fn get(&self, v: &Value) -> Option<&str> {
        let map = if v.annotation {
            self.annotations
        } else {
            self.labels
        };
        map.get(&v.name).map(String::as_str)
    }
}

/// A malformed condition: what was expected and at which column (1-based, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.message, self.column)
    }
}

impl std::error::Error for ParseError {}

impl Condition {
    pub fn parse(source: &str) -> Result<Condition, ParseError> {
        let tokens = lex(source)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            end: source.chars().count() + 1,
        };
        if p.tokens.is_empty() {
            return Err(ParseError {
                column: 1,
                message: "empty condition".into(),
            });
        }
        let expr = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(t, format!("unexpected {}", t.tok.describe())));
        }
        Ok(Condition {
            source: source.to_string(),
            expr,
        })
    }

    /// The text as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn eval(&self, facts: Facts<'_>) -> bool {
        eval(&self.expr, facts)
    }

    /// Whether it holds, and the values it read (`annotations.confidence = "0.82"`,
    /// `labels.team is missing`), for `simulate` and timeline notes.
    pub fn explain(&self, facts: Facts<'_>) -> (bool, String) {
        let mut values = Vec::new();
        collect(&self.expr, &mut values);
        let mut seen = Vec::new();
        let shown: Vec<String> = values
            .into_iter()
            .filter(|v| {
                let new = !seen.contains(*v);
                if new {
                    seen.push((*v).clone());
                }
                new
            })
            .map(|v| match facts.get(v) {
                Some(x) => format!("{v} = {x:?}"),
                None => format!("{v} is missing"),
            })
            .collect();
        (self.eval(facts), shown.join(", "))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Condition::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn collect<'a>(e: &'a Expr, out: &mut Vec<&'a Value>) {
    match e {
        Expr::Or(a, b) | Expr::And(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        Expr::Not(a) => collect(a, out),
        Expr::Exists(v) => out.push(v),
        Expr::Cmp(a, _, b) => {
            for o in [a, b] {
                if let Operand::Value(v) = o {
                    out.push(v);
                }
            }
        }
    }
}

fn eval(e: &Expr, facts: Facts<'_>) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, facts) || eval(b, facts),
        Expr::And(a, b) => eval(a, facts) && eval(b, facts),
        Expr::Not(a) => !eval(a, facts),
        Expr::Exists(v) => facts.get(v).is_some(),
        Expr::Cmp(a, op, b) => compare(a, *op, b, facts).unwrap_or(false),
    }
}

/// `None` when a value is missing or not a number where one is needed: the comparison is false.
fn compare(a: &Operand, op: Op, b: &Operand, facts: Facts<'_>) -> Option<bool> {
    let numeric = matches!(a, Operand::Number(_)) || matches!(b, Operand::Number(_));
    let text = |o: &Operand| -> Option<String> {
        match o {
            Operand::Value(v) => facts.get(v).map(str::to_string),
            Operand::Text(s) => Some(s.clone()),
            Operand::Number(n) => Some(n.to_string()),
        }
    };
    if numeric {
        let num = |o: &Operand| -> Option<f64> {
            match o {
                Operand::Number(n) => Some(*n),
                _ => text(o)?
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite()),
            }
        };
        let (x, y) = (num(a)?, num(b)?);
        Some(op.holds(x.partial_cmp(&y)?))
    } else {
        let (x, y) = (text(a)?, text(b)?);
        Some(op.holds(x.cmp(&y)))
    }
}

// ── lexer ──

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Op(Op),
    Word(String),
    Text(String),
    Number(f64),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Op(op) => format!("'{}'", op.symbol()),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Text(s) => format!("string {s:?}"),
            Tok::Number(n) => format!("number {n}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column: usize, message: String| Err(ParseError { column, message });
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let push = |out: &mut Vec<Token>, tok| out.push(Token { tok, column });
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                push(&mut out, Tok::LParen);
                i += 1;
            }
            ')' => {
                push(&mut out, Tok::RParen);
                i += 1;
            }
            '<' | '>' | '=' | '!' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    ('=', true) => Op::Eq,
                    ('!', true) => Op::Ne,
                    ('=', false) => return err(column, "'=' is not an operator (use '==')".into()),
                    _ => return err(column, "'!' is not an operator (use 'not' or '!=')".into()),
                };
                push(&mut out, Tok::Op(op));
                i += if eq { 2 } else { 1 };
            }
            '"' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return err(column, "unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => match chars.get(j + 1) {
                            Some(&e @ ('"' | '\\')) => {
                                s.push(e);
                                j += 2;
                            }
                            _ => {
                                return err(
                                    j + 1,
                                    "unknown escape in string (only \\\" and \\\\)".into(),
                                )
                            }
                        },
                        Some(&c) => {
                            s.push(c);
                            j += 1;
                        }
                    }
                }
                push(&mut out, Tok::Text(s));
                i = j + 1;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let mut j = i + 1;
                while chars.get(j).is_some_and(|d| d.is_ascii_digit()) {
                    j += 1;
                }
                if chars.get(j) == Some(&'.') {
                    j += 1;
                    if !chars.get(j).is_some_and(|d| d.is_ascii_digit()) {
                        return err(j + 1, "expected digits after '.' in a number".into());
                    }
                    while chars.get(j).is_some_and(|d| d.is_ascii_digit()) {
                        j += 1;
                    }
                }
                if chars.get(j).is_some_and(|d| is_word(*d)) {
                    return err(column, "malformed number".into());
                }
                let text: String = chars[i..j].iter().collect();
                let n = text
                    .parse::<f64>()
                    .expect("digits with an optional fraction");
                push(&mut out, Tok::Number(n));
                i = j;
            }
            c if is_word(c) => {
                let mut j = i;
                while chars.get(j).is_some_and(|d| is_word(*d) || *d == '.') {
                    j += 1;
                }
                push(&mut out, Tok::Word(chars[i..j].iter().collect()));
                i = j;
            }
            c => return err(column, format!("unexpected character {c:?}")),
        }
    }
    Ok(out)
}

const KEYWORDS: &[&str] = &["and", "or", "not", "exists"];

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

// ── parser ──

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// The column just after the text, for "expected … at the end".
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(x), .. }) if x == w)
    }

    fn error_at(&self, t: &Token, message: String) -> ParseError {
        ParseError {
            column: t.column,
            message,
        }
    }

    /// "expected X" at the next token, or at the end of the text.
    fn expected(&self, what: &str) -> ParseError {
        match self.peek() {
            Some(t) => self.error_at(t, format!("expected {what}, found {}", t.tok.describe())),
            None => ParseError {
                column: self.end,
                message: format!("expected {what} at the end"),
            },
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.and()?;
        while self.is_word("or") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        while self.is_word("and") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::LParen) => {
                let open = self.next().expect("peeked");
                let e = self.or()?;
                match self.next() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => Ok(e),
                    _ => {
                        self.pos -= 1;
                        let mut err = self.expected("')'");
                        err.message += &format!(" (to close '(' at column {})", open.column);
                        Err(err)
                    }
                }
            }
            Some(Tok::Word(w)) if w == "exists" => {
                self.pos += 1;
                if !matches!(
                    self.peek(),
                    Some(Token {
                        tok: Tok::LParen,
                        ..
                    })
                ) {
                    return Err(self.expected("'(' after exists"));
                }
                self.pos += 1;
                let v = match self.operand()? {
                    (Operand::Value(v), _) => v,
                    (_, t) => {
                        return Err(self.error_at(
                            &t,
                            "exists(…) takes labels.NAME or annotations.NAME".into(),
                        ))
                    }
                };
                match self.next() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => Ok(Expr::Exists(v)),
                    _ => {
                        self.pos -= 1;
                        Err(self.expected("')'"))
                    }
                }
            }
            _ => {
                let (a, at) = self.operand()?;
                let op = match self.next() {
                    Some(Token {
                        tok: Tok::Op(op), ..
                    }) => op,
                    _ => {
                        self.pos -= 1;
                        return Err(self.expected(&format!(
                            "a comparison (<, <=, >, >=, ==, !=) after {}",
                            at.tok.describe()
                        )));
                    }
                };
                let b = match self.peek() {
                    Some(Token {
                        tok: Tok::Word(w), ..
                    }) if !KEYWORDS.contains(&w.as_str()) => self.operand()?.0,
                    Some(Token {
                        tok: Tok::Text(_) | Tok::Number(_),
                        ..
                    }) => self.operand()?.0,
                    _ => {
                        let mut err = self.expected(&format!("a value after '{}'", op.symbol()));
                        if self.peek().is_none() {
                            // "expected a value after '<' at column 24" reads better than
                            // "… at the end at column 24".
                            err.message = format!("expected a value after '{}'", op.symbol());
                        }
                        return Err(err);
                    }
                };
                Ok(Expr::Cmp(a, op, b))
            }
        }
    }

    /// A value, a string or a number, with its token (for messages).
    fn operand(&mut self) -> Result<(Operand, Token), ParseError> {
        let Some(t) = self.next() else {
            return Err(ParseError {
                column: self.end,
                message: "expected a condition at the end".into(),
            });
        };
        let o = match &t.tok {
            Tok::Text(s) => Operand::Text(s.clone()),
            Tok::Number(n) => Operand::Number(*n),
            Tok::Word(w) => {
                let (map, name) = w.split_once('.').unwrap_or((w, ""));
                let annotation = match map {
                    "labels" => false,
                    "annotations" => true,
                    _ => {
                        return Err(self.error_at(
                            &t,
                            format!(
                                "unknown name `{w}`: values are labels.NAME or annotations.NAME, text is in double quotes"
                            ),
                        ))
                    }
                };
                if name.is_empty() || name.contains('.') {
                    return Err(self.error_at(
                        &t,
                        format!("`{w}`: expected {map}.NAME (letters, digits, _ and -)"),
                    ));
                }
                Operand::Value(Value {
                    annotation,
                    name: name.to_string(),
                })
            }
            other => {
                self.pos -= 1;
                let _ = other;
                return Err(self.expected("a condition"));
            }
        };
        Ok((o, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_of<'a>(
        labels: &'a BTreeMap<String, String>,
        annotations: &'a BTreeMap<String, String>,
    ) -> Facts<'a> {
        Facts {
            labels,
            annotations,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grammar_table() {
        let labels = map(&[
            ("service", "checkout"),
            ("env", "prod"),
            ("count", "12"),
            ("tier", "b"),
        ]);
        let ann = map(&[("confidence", "0.82"), ("note", "n/a"), ("low", " 0.1 ")]);
        let f = facts_of(&labels, &ann);
        // (condition, expected value)
        let table: &[(&str, bool)] = &[
            ("annotations.confidence < 0.5", false),
            ("annotations.confidence >= 0.5", true),
            ("annotations.confidence > 0.82", false),
            ("annotations.confidence >= 0.82", true),
            ("annotations.confidence <= 0.82", true),
            ("annotations.confidence == 0.82", true),
            ("annotations.confidence != 0.82", false),
            ("0.5 < annotations.confidence", true),
            ("annotations.low < 0.5", true), // surrounding spaces are ignored for numbers
            ("labels.count > 9", true),      // numeric, not text ("12" < "9" as text)
            ("labels.count > -1.5", true),
            ("labels.service == \"checkout\"", true),
            ("labels.service != \"checkout\"", false),
            ("labels.service == \"Checkout\"", false), // exact text
            ("labels.tier < \"c\"", true),             // text order
            ("labels.tier >= \"c\"", false),
            ("labels.service == labels.service", true),
            ("labels.service == labels.env", false),
            (
                "\"a \\\"quoted\\\" \\\\ text\" == \"a \\\"quoted\\\" \\\\ text\"",
                true,
            ),
            // Missing values and non-numbers make a comparison false, whatever the operator.
            ("annotations.missing < 0.5", false),
            ("annotations.missing >= 0.5", false),
            ("annotations.missing != 0.5", false),
            ("labels.missing != \"x\"", false),
            ("annotations.note < 0.5", false),
            ("annotations.note != 0.5", false),
            ("not annotations.note < 0.5", true),
            ("exists(annotations.confidence)", true),
            ("exists( labels.missing )", false),
            ("not exists(labels.missing)", true),
            // and binds tighter than or; not tighter than and.
            (
                "labels.env == \"dev\" and labels.env == \"prod\" or exists(labels.env)",
                true,
            ),
            (
                "labels.env == \"dev\" and (labels.env == \"prod\" or exists(labels.env))",
                false,
            ),
            ("not labels.env == \"dev\" and labels.env == \"prod\"", true),
            ("not (labels.env == \"prod\" and labels.count > 100)", true),
            ("((annotations.confidence < 0.5))", false),
            (
                "annotations.confidence < 0.5 or not exists(annotations.confidence)",
                false,
            ),
            ("labels.app-name == \"x\"", false),
        ];
        for (src, want) in table {
            let c = Condition::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(c.eval(f), *want, "{src}");
            assert_eq!(c.source(), *src);
        }
    }

    #[test]
    fn malformed_conditions_say_what_and_where() {
        let table: &[(&str, &str)] = &[
            ("", "empty condition at column 1"),
            ("   ", "empty condition at column 1"),
            (
                "annotations.confidence <",
                "expected a value after '<' at column 25",
            ),
            (
                "annotations.confidence < and",
                "expected a value after '<', found `and` at column 26",
            ),
            (
                "annotations.confidence = 0.5",
                "'=' is not an operator (use '==') at column 24",
            ),
            (
                "annotations.confidence",
                "expected a comparison (<, <=, >, >=, ==, !=) after `annotations.confidence` at the end at column 23",
            ),
            (
                "confidence < 0.5",
                "unknown name `confidence`: values are labels.NAME or annotations.NAME, text is in double quotes at column 1",
            ),
            (
                "labels.service == checkout",
                "unknown name `checkout`: values are labels.NAME or annotations.NAME, text is in double quotes at column 19",
            ),
            (
                "labels. == \"x\"",
                "`labels.`: expected labels.NAME (letters, digits, _ and -) at column 1",
            ),
            (
                "labels.service == \"checkout",
                "unterminated string at column 19",
            ),
            (
                "labels.a == \"\\n\"",
                "unknown escape in string (only \\\" and \\\\) at column 14",
            ),
            (
                "(labels.a == \"x\"",
                "expected ')' at the end (to close '(' at column 1) at column 17",
            ),
            (
                "labels.a == \"x\")",
                "unexpected ')' at column 16",
            ),
            (
                "labels.a == \"x\" labels.b == \"y\"",
                "unexpected `labels.b` at column 17",
            ),
            (
                "labels.a == \"x\" and",
                "expected a condition at the end at column 20",
            ),
            ("not", "expected a condition at the end at column 4"),
            (
                "exists(0.5)",
                "exists(…) takes labels.NAME or annotations.NAME at column 8",
            ),
            (
                "exists labels.a",
                "expected '(' after exists, found `labels.a` at column 8",
            ),
            ("labels.a < 0.", "expected digits after '.' in a number at column 14"),
            ("labels.a < 5x", "malformed number at column 12"),
            ("labels.a ! 5", "'!' is not an operator (use 'not' or '!=') at column 10"),
            ("labels.a == 'x'", "unexpected character '\\'' at column 13"),
            ("< 0.5", "expected a condition, found '<' at column 1"),
        ];
        for (src, want) in table {
            let e = Condition::parse(src).expect_err(src);
            assert_eq!(e.to_string(), *want, "{src:?}");
        }
    }

    #[test]
    fn explain_shows_the_values_read() {
        let labels = map(&[("env", "prod")]);
        let ann = map(&[("confidence", "0.82")]);
        let f = facts_of(&labels, &ann);
        let c = Condition::parse(
            "annotations.confidence < 0.5 or not exists(annotations.confidence) or labels.team == labels.env",
        )
        .unwrap();
        assert_eq!(
            c.explain(f),
            (
                false,
                "annotations.confidence = \"0.82\", labels.team is missing, labels.env = \"prod\""
                    .to_string()
            )
        );
    }

    #[test]
    fn serde_round_trip_is_the_source_text() {
        #[derive(Serialize, Deserialize)]
        struct S {
            when: Condition,
        }
        let s: S = toml::from_str("when = 'labels.a == \"x\"'").unwrap();
        assert_eq!(
            toml::to_string(&s).unwrap().trim(),
            "when = 'labels.a == \"x\"'"
        );
        let e = toml::from_str::<S>("when = 'labels.a =='").err().unwrap();
        assert!(
            e.to_string()
                .contains("expected a value after '==' at column 12"),
            "{e}"
        );
    }
}
