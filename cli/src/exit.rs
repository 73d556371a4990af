//! Exit codes, as DESIGN.md's command-line contract gives them.

use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Success (quarantined rows are a success).
    Ok = 0,
    /// The run failed.
    RunFailed = 1,
    /// Bad usage, configuration or input.
    BadInput = 2,
    /// Interrupted, resumable.
    Interrupted = 3,
    /// An audit-integrity violation.
    Integrity = 4,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// A failure with the exit code it maps to and a message that says what and where.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    pub fn bad_input(message: impl Into<String>) -> Failure {
        Failure {
            code: Code::BadInput,
            message: message.into(),
        }
    }
    pub fn run_failed(message: impl Into<String>) -> Failure {
        Failure {
            code: Code::RunFailed,
            message: message.into(),
        }
    }
}

impl From<attest_ledger::LedgerError> for Failure {
    fn from(e: attest_ledger::LedgerError) -> Failure {
        use attest_ledger::LedgerError as E;
        let code = match &e {
            E::Locked { .. } | E::UnknownRun(_) | E::Id(_) => Code::BadInput,
            E::Corrupt(_) | E::Codec(_) | E::Rule(_) => Code::Integrity,
            _ => Code::RunFailed,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}
