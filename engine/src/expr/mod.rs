//! The safe expression language of gate conditions and aggregation trigger conditions.
//!
//! It is the Python-like subset ELSPETH accepts (see `ELSPETH-CONFIG.md` §5), parsed by a
//! hand-written recursive-descent parser (precedence climbing for operators) and evaluated by a tree walker with Python's
//! semantics. Nothing is ever executed as code; the only things a condition can touch are
//! the row it is given and six pure builtins.
//!
//! ```
//! use attest_engine::expr::{route_label, Expr};
//! use attest_engine::value::Row;
//!
//! let gate = Expr::parse("'high' if row['score'] >= 0.8 else 'low'").unwrap();
//! let mut row = Row::new();
//! row.insert("score".into(), serde_json::json!(0.93));
//! assert_eq!(route_label(&gate.eval(&row).unwrap()), "high");
//! assert!(!gate.is_statically_boolean());
//! ```
//!
//! Deliberate differences from Python, each of which fails loudly rather than give a
//! different answer: integers are limited to ±2^127 (Python's are unbounded); `eval`
//! results must fit a row value (64-bit ints, finite floats, string dict keys);
//! printf-style `%` formatting, `\N{...}` escapes and non-ASCII digits in `int()` and
//! `float()` are not supported; repetition (`'x' * n`) is capped at [`MAX_VALUE_SIZE`];
//! input nested deeper than [`MAX_NESTING`] is refused. Indentation before the condition
//! is accepted (Python's parser refuses it), and a wrong number of arguments to a builtin
//! is a parse error (Python fails only when the call runs). Sets keep insertion order, so `str()` of a set may list its elements in another order
//! than Python (whose order depends on hashing).

mod analysis;
mod ast;
mod builtins;
mod error;
mod eval;
mod lexer;
mod parser;
mod python;
mod pyvalue;
mod repr;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use analysis::FieldRefs;
pub use error::{EvalError, EvalErrorKind, ParseError, Position};

use crate::value::{Row, Value};
use ast::Node;
use eval::Evaluator;

/// Deepest nesting a condition may have (brackets, operators, unary chains, subscript
/// chains all count). Real conditions stay far below it; it exists so that hostile or
/// generated input gets a [`ParseError`] instead of overflowing the stack.
pub const MAX_NESTING: usize = 100;

/// Deepest nesting of a row value a condition will read.
pub const MAX_VALUE_DEPTH: usize = 200;

/// Largest value, in bytes (a string's bytes; for other values the memory each element
/// takes), that repetition (`'x' * n`, `[0] * n`) may build.
pub const MAX_VALUE_SIZE: usize = 1 << 26;

/// A parsed condition, ready to evaluate against any number of rows (and threads: it is
/// immutable, `Send` and `Sync`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    source: String,
    root: Node,
}

impl Expr {
    /// Parses a condition. Syntax errors and forbidden constructs (lambda, comprehensions,
    /// f-strings, `:=`, `*x`, attributes other than `row.get`, slices, unknown names,
    /// calls to anything but `len str int float bool abs`) are reported with their
    /// position.
    pub fn parse(source: &str) -> Result<Expr, ParseError> {
        Ok(Expr {
            source: source.to_string(),
            root: parser::parse(source)?,
        })
    }

    /// The text the condition was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition with `row` bound to the name `row`. Any row works: a gate
    /// passes the token's row, an aggregation trigger a row of `batch_count` and
    /// `batch_age_seconds`. Tuples and sets in the result become arrays.
    pub fn eval(&self, row: &Row) -> Result<Value, EvalError> {
        let value = self.evaluator(row).eval(&self.root)?;
        value
            .to_json()
            .map_err(|f| self.evaluator(row).fail(&self.root, f))
    }

    /// Evaluates and applies Python truthiness, as a trigger condition is used. Unlike
    /// `truthy(&expr.eval(row)?)` it also accepts results that are not row values (a NaN).
    pub fn eval_truthy(&self, row: &Row) -> Result<bool, EvalError> {
        Ok(python::truthy(&self.evaluator(row).eval(&self.root)?))
    }

    /// Evaluates and returns the route label of the result (see [`route_label`]). Unlike
    /// `route_label(&expr.eval(row)?)` it sees Python's own types, so a tuple result is
    /// labelled `(1, 2)` as in ELSPETH, not `[1, 2]`.
    pub fn eval_route_label(&self, row: &Row) -> Result<String, EvalError> {
        Ok(repr::label(&self.evaluator(row).eval(&self.root)?))
    }

    /// Whether the result is a bool for every row, by ELSPETH's syntactic rule; if so the
    /// gate's routes must be exactly `"true"` and `"false"`.
    pub fn is_statically_boolean(&self) -> bool {
        analysis::is_statically_boolean(&self.root)
    }

    /// The row fields the condition reads.
    pub fn field_refs(&self) -> FieldRefs {
        let mut refs = FieldRefs::default();
        analysis::field_refs(&self.root, &mut refs);
        refs
    }

    fn evaluator<'a>(&'a self, row: &'a Row) -> Evaluator<'a> {
        Evaluator {
            source: &self.source,
            row,
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Expr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Expr, ParseError> {
        Expr::parse(s)
    }
}

/// The route label of a condition's result: `true`/`false` for bools, a string as itself,
/// anything else as Python `str()` would print it (`1`, `1.0`, `1e+16`, `None`,
/// `['a', 1]`).
pub fn route_label(value: &Value) -> String {
    repr::json_label(value)
}

/// Python truthiness of a row value: `null`, `false`, `0`, `0.0`, `""`, `[]` and `{}` are
/// false, everything else true.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => python::truthy(&pyvalue::number_to_py(n)),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}
