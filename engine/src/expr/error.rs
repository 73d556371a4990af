//! Errors of the expression language: one for parsing, one for evaluation.
//!
//! Both carry a [`Position`] inside the expression text so that the configuration layer can
//! point at the exact spot (it knows where the expression starts in the YAML file and adds
//! our offset to it).

use std::fmt;

/// A place inside an expression's source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Byte offset from the start of the expression.
    pub offset: usize,
    /// 1-based line within the expression (conditions may span lines inside brackets).
    pub line: usize,
    /// 1-based column within that line, counted in characters, not bytes.
    pub column: usize,
}

impl Position {
    /// Locates `offset` in `source`. An offset past the end (or inside a multi-byte
    /// character) is clamped rather than trusted, so a bug elsewhere cannot make this panic.
    pub(crate) fn locate(source: &str, offset: usize) -> Position {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 1 {
            write!(f, "column {}", self.column)
        } else {
            write!(f, "line {}, column {}", self.line, self.column)
        }
    }
}

/// The expression text is not a valid condition: a syntax error or a construct the
/// language forbids (lambda, comprehension, unknown name, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub position: Position,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.message)
    }
}

impl std::error::Error for ParseError {}

/// What went wrong during evaluation, named after the Python exception ELSPETH would have
/// raised, so that users bringing pipelines across recognise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvalErrorKind {
    /// A subscript or `row[...]` named a key that is not there (`KeyError`).
    MissingKey,
    /// A list or string index outside its length (`IndexError`).
    IndexOutOfRange,
    /// An operation applied to values of the wrong type, e.g. `'a' < 1` (`TypeError`).
    Type,
    /// Division or modulo by zero (`ZeroDivisionError`).
    ZeroDivision,
    /// A conversion given a value it cannot convert, e.g. `int('x')` (`ValueError`).
    Value,
    /// Integer arithmetic left the supported range. Python has unbounded integers; we work
    /// in i128 and refuse rather than silently switching to floats.
    Overflow,
    /// The result cannot be expressed as a row value (a NaN or infinite float, a dict
    /// whose keys are not strings, an integer beyond i64/u64).
    Unrepresentable,
    /// An operation would build a string or list beyond the size limit
    /// ([`MAX_VALUE_SIZE`](super::MAX_VALUE_SIZE)); Python would try and exhaust memory.
    TooLarge,
    /// A row value nested deeper than [`MAX_VALUE_DEPTH`](super::MAX_VALUE_DEPTH).
    TooDeep,
    /// Valid Python that this engine deliberately does not implement (`'%s' % x`).
    Unsupported,
}

impl EvalErrorKind {
    /// The Python exception name, used as the prefix of messages.
    pub fn python_name(self) -> &'static str {
        match self {
            EvalErrorKind::MissingKey => "KeyError",
            EvalErrorKind::IndexOutOfRange => "IndexError",
            EvalErrorKind::Type => "TypeError",
            EvalErrorKind::ZeroDivision => "ZeroDivisionError",
            EvalErrorKind::Value => "ValueError",
            EvalErrorKind::Overflow => "OverflowError",
            EvalErrorKind::Unrepresentable => "UnrepresentableResult",
            EvalErrorKind::TooLarge => "MemoryLimit",
            EvalErrorKind::TooDeep => "RecursionLimit",
            EvalErrorKind::Unsupported => "Unsupported",
        }
    }
}

/// Evaluating a condition against a row failed. In ELSPETH this crashes the run (there is
/// no per-row routing of condition failures); the caller decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    pub kind: EvalErrorKind,
    pub message: String,
    /// Start of the sub-expression whose evaluation failed.
    pub position: Position,
    /// The text of that sub-expression, shortened if long, for the message.
    pub snippet: String,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (in `{}` at {})",
            self.kind.python_name(),
            self.message,
            self.snippet,
            self.position
        )
    }
}

impl std::error::Error for EvalError {}

/// An evaluation failure before it is tied to a place in the source. The semantic helpers
/// (arithmetic, comparisons, builtins) know nothing about the AST; the evaluator attaches
/// the position of the node being evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub kind: EvalErrorKind,
    pub message: String,
}

impl Fail {
    pub fn new(kind: EvalErrorKind, message: impl Into<String>) -> Fail {
        Fail {
            kind,
            message: message.into(),
        }
    }

    pub fn type_error(message: impl Into<String>) -> Fail {
        Fail::new(EvalErrorKind::Type, message)
    }

    pub fn value_error(message: impl Into<String>) -> Fail {
        Fail::new(EvalErrorKind::Value, message)
    }

    pub fn overflow(message: impl Into<String>) -> Fail {
        Fail::new(EvalErrorKind::Overflow, message)
    }
}
