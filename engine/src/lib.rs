//! attest-engine: turns a pipeline configuration into audited execution on the ledger.
//!
//! The engine writes to the audit trail only through `attest_ledger`'s API.

pub mod formats;
pub mod value;
