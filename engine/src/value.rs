//! The value model rows are made of.
//!
//! Rows are JSON objects whose field order is significant (it decides CSV column order and
//! JSON key order in outputs), so `serde_json` is built with `preserve_order` across the
//! workspace. Integers and floats stay distinct (`1` and `1.0` print differently in sinks).

pub use serde_json::{Map, Number, Value};

/// One row flowing through a pipeline: field name → value, in field order.
pub type Row = Map<String, Value>;
