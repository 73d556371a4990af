//! `passthrough`: the row, unchanged.

use crate::plan::{Transform, TransformError};
use crate::value::Row;

pub struct Passthrough;

impl Transform for Passthrough {
    fn process(&self, row: &Row) -> Result<Row, TransformError> {
        Ok(row.clone())
    }
}
