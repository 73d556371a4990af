//! Row transforms (ELSPETH-CONFIG §4), the calling transforms `llm` (§9.2) and `http`,
//! and the batch plugins of aggregations (§7).

mod batch_replicate;
mod batch_stats;
pub mod calling;
mod field_mapper;
mod http;
mod json_explode;
mod keyword_filter;
pub mod llm;
mod passthrough;
pub mod pooled;
mod truncate;

pub use batch_replicate::BatchReplicate;
pub use batch_stats::BatchStats;
pub use field_mapper::FieldMapper;
pub use http::Http;
pub use json_explode::JsonExplode;
pub use keyword_filter::{Fields as KeywordFields, KeywordFilter};
pub use llm::{Llm, LlmBatch};
pub use passthrough::Passthrough;
pub use truncate::Truncate;
