//! Tests of the whole language through the public API.
//!
//! - `cases`: a table of conditions and their results (or error kinds) against one row,
//!   checked against CPython 3.11 when it was written;
//! - `parse_errors`: every kind of parse error, with its position;
//! - `api`: labels, truthiness, static booleanness, field references, error details;
//! - `limits`: hostile nesting and sizes give errors, not crashes;
//! - `reference`: property test of parse + eval against an independent evaluator;
//! - `fuzz`: property test that arbitrary text never panics.

mod api;
mod cases;
mod fuzz;
mod gen;
mod limits;
mod parse_errors;
mod reference;

use serde_json::json;

use super::{EvalErrorKind, Expr};
use crate::value::Row;

/// The row most unit tests evaluate against.
fn sample_row() -> Row {
    let value = json!({
        "a": 1,
        "b": 2.5,
        "s": "hello",
        "n": null,
        "t": true,
        "f": false,
        "z": 0,
        "e": "",
        "l": [1, 2, 3],
        "d": {"x": {"y": 7}},
        "empty": [],
        "nested": [[1, 2], {"k": "v"}],
        "big": i64::MAX,
        "u": u64::MAX,
        "neg": -7
    });
    match value {
        serde_json::Value::Object(map) => map,
        _ => Row::new(),
    }
}

fn parse(src: &str) -> Expr {
    Expr::parse(src).unwrap_or_else(|e| panic!("{src:?} failed to parse: {e}"))
}

/// The route label of `src` on the sample row, or the error kind.
fn label(src: &str) -> Result<String, EvalErrorKind> {
    parse(src)
        .eval_route_label(&sample_row())
        .map_err(|e| e.kind)
}
