//! attest-ledger
