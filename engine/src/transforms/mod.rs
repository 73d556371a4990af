//! Row transforms that need no external service (ELSPETH-CONFIG §4).

mod field_mapper;
mod keyword_filter;
mod passthrough;
mod truncate;

pub use field_mapper::FieldMapper;
pub use keyword_filter::{Fields as KeywordFields, KeywordFilter};
pub use passthrough::Passthrough;
pub use truncate::Truncate;
