//! Errors and warnings of the configuration loader, and the collector that gathers them.
//!
//! Loading never stops at the first problem: `attest validate` prints every error found, so
//! each decoding step records what is wrong and carries on with what it could read.

use std::fmt;

/// A position in the settings file: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Loc {
    pub line: usize,
    pub column: usize,
}

impl Loc {
    pub fn new(line: usize, column: usize) -> Self {
        Loc { line, column }
    }
}

/// A value together with where it was written, so that checks made long after parsing
/// (graph wiring, condition compilation) can still point at the offending text.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> Located<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        Located { value, loc }
    }
}

impl Located<String> {
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// One configuration error. `line` and `column` are 1-based; both are 0 only when the
/// problem has no position in the file (it could not be read at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// A setting that was accepted but has no effect in attest (an ELSPETH-only section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every error found in one settings file, in file order. Never empty when returned as `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Collects errors and warnings for one file while it is decoded.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    file: String,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl Diagnostics {
    pub(crate) fn new(file: impl Into<String>) -> Self {
        Diagnostics {
            file: file.into(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn error(&mut self, loc: Loc, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        });
    }

    pub(crate) fn warn(&mut self, loc: Loc, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        });
    }

    /// An error about another file (e.g. a `lookup_file`), kept as it is.
    pub(crate) fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub(crate) fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Errors sorted by position (stable, so errors at one spot keep the order they were
    /// found in), and the warnings likewise.
    pub(crate) fn finish(self) -> (Vec<ConfigError>, Vec<ConfigWarning>) {
        let mut errors = self.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        let mut warnings = self.warnings;
        warnings.sort_by_key(|w| (w.line, w.column));
        (errors, warnings)
    }
}
