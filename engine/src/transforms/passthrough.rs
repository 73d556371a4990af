//! `passthrough`: the row, unchanged.

use crate::plan::{CallContext, Transform, TransformError};
use crate::value::Row;

pub struct Passthrough;

impl Transform for Passthrough {
    fn process(&self, row: &Row, _ctx: CallContext) -> Result<Row, TransformError> {
        Ok(row.clone())
    }
}
