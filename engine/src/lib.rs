//! attest-engine: turns a pipeline configuration into audited execution on the ledger.
//!
//! The engine writes to the audit trail only through `attest_ledger`'s API.

pub mod build;
pub mod calls;
pub mod config;
pub mod expr;
pub mod formats;
pub mod open;
pub mod plan;
pub mod pool;
pub mod replay;
pub mod run;
pub mod template;
pub mod transforms;
pub mod value;
