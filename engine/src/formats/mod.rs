//! Data formats: source readers with schema validation and coercion, and sink writers that
//! produce ELSPETH's exact bytes (ELSPETH-CONFIG §0, §2, §3, §8).
//!
//! Sources are iterators of [`SourceRecord`]s and stream (JSON array mode excepted, which
//! like ELSPETH parses the whole document first). Sinks take rows one at a time, report
//! [`DurablePoint`]s after `fsync`, and can resume from one. Values are `serde_json::Value`
//! (see [`crate::value`]); Python's text forms of them live in [`python`].
//!
//! Only utf-8 is supported as an encoding.

pub mod coerce;
pub mod csv_parse;
pub mod csv_sink;
pub mod csv_source;
pub mod headers;
pub mod json_encode;
pub mod json_parse;
pub mod json_sink;
pub mod json_source;
mod lines;
pub mod python;
pub mod record;
pub mod schema;
pub mod sink;

pub use coerce::{Rejection, Validator};
pub use csv_sink::{CsvSink, CsvSinkOptions};
pub use csv_source::{CsvSource, CsvSourceOptions};
pub use headers::{normalize_header, HeaderResolution, ResolvedField};
pub use json_encode::py_json_dumps;
pub use json_sink::{JsonSink, JsonSinkOptions};
pub use json_source::{JsonFormat, JsonSource, JsonSourceOptions};
pub use python::{py_float_repr, py_repr, py_str};
pub use record::{Outcome, RawRecord, SourceError, SourceRecord};
pub use schema::{FieldSpec, FieldType, Schema, SchemaMode};
pub use sink::{ArtifactInfo, DurablePoint, HeaderMode, SinkError, WriteMode};
