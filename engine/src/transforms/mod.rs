//! Row transforms that need no external service (ELSPETH-CONFIG §4), and the batch
//! plugins of aggregations (§7).

mod batch_replicate;
mod batch_stats;
mod field_mapper;
mod json_explode;
mod keyword_filter;
mod passthrough;
mod truncate;

pub use batch_replicate::BatchReplicate;
pub use batch_stats::BatchStats;
pub use field_mapper::FieldMapper;
pub use json_explode::JsonExplode;
pub use keyword_filter::{Fields as KeywordFields, KeywordFilter};
pub use passthrough::Passthrough;
pub use truncate::Truncate;
