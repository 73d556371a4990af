//! Gate conditions and aggregation trigger conditions, kept as text with their location.
//!
//! The expression language is compiled elsewhere; the loader only keeps each condition's
//! source and enough position information to turn an error offset reported by that
//! compiler into a file, line and column.

use super::error::Loc;
use super::yaml::{Node, Style};

/// A condition as written. `line`/`column` locate its value in the file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub source: String,
    pub line: usize,
    pub column: usize,
    /// Column of the first character of `source` when every character of `source` sits on
    /// the line `line` exactly as written (plain or quoted, no escapes, not expanded from
    /// the environment); then an offset maps to an exact column.
    content_column: Option<usize>,
}

impl Condition {
    pub fn new(source: impl Into<String>, line: usize, column: usize) -> Self {
        Condition {
            source: source.into(),
            line,
            column,
            content_column: None,
        }
    }

    /// The location of byte `offset` of `source`: exact when the condition was written on
    /// one line without escapes, otherwise the start of the value.
    pub fn location_of(&self, offset: usize) -> Loc {
        let Some(col) = self.content_column else {
            return Loc::new(self.line, self.column);
        };
        let mut end = offset.min(self.source.len());
        while !self.source.is_char_boundary(end) {
            end -= 1;
        }
        Loc::new(self.line, col + self.source[..end].chars().count())
    }

    pub(crate) fn from_node(source: String, node: &Node, text: &str) -> Self {
        let content_column = exact_column(&source, node, text);
        Condition {
            source,
            line: node.loc.line,
            column: node.loc.column,
            content_column,
        }
    }
}

/// Finds where the value's characters start on its line, if they appear there verbatim.
fn exact_column(value: &str, node: &Node, text: &str) -> Option<usize> {
    if node.loc.line != node.end.line || value.contains(['\n', '\r']) {
        return None;
    }
    let line: Vec<char> = text
        .lines()
        .nth(node.loc.line.checked_sub(1)?)?
        .chars()
        .collect();
    let end = node.end.column.checked_sub(1)?; // 0-based, exclusive
    let start = node.loc.column.checked_sub(1)?;
    let raw: String = line.get(start..end)?.iter().collect();
    let len = value.chars().count();
    let (quote, closing) = match node.style {
        Style::Plain => ("", 0),
        Style::SingleQuoted if !value.contains('\'') => ("'", 1),
        Style::DoubleQuoted if !value.contains(['\\', '"']) => ("\"", 1),
        _ => return None,
    };
    let written = format!("{quote}{value}{quote}");
    if !raw.ends_with(&written) {
        return None;
    }
    // +1: columns are 1-based.
    end.checked_sub(closing + len).map(|c| c + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Diagnostics;
    use crate::config::yaml::{parse, Kind};

    fn cond(text: &str) -> Condition {
        let mut d = Diagnostics::new("f");
        let root = parse(text, &mut d).unwrap();
        let Kind::Map(pairs) = root.kind else {
            panic!()
        };
        let node = &pairs[0].1;
        Condition::from_node(node.as_str().unwrap().to_string(), node, text)
    }

    #[test]
    fn offsets_map_to_columns() {
        let c = cond("condition: row['a'] > 1\n");
        assert_eq!((c.line, c.column), (1, 12));
        assert_eq!(c.location_of(0), Loc::new(1, 12));
        assert_eq!(c.location_of(9), Loc::new(1, 21));
        let c = cond("condition: \"row['a'] > 1\"\n");
        assert_eq!(c.location_of(0), Loc::new(1, 13));
        // Offsets are bytes; columns count characters (`é` is two bytes, one column).
        let c = cond("condition: 'row[\"é\"] > x'\n");
        assert_eq!(c.location_of(9), Loc::new(1, 21));
        // Escapes break the 1:1 mapping: fall back to the value's start.
        let c = cond("condition: \"a\\tb\"\n");
        assert_eq!(c.location_of(3), Loc::new(1, 12));
        let c = cond("condition: >\n  row['a']\n  > 1\n");
        assert_eq!(c.location_of(5), Loc::new(c.line, c.column));
        // Offsets past the end or inside a character are clamped.
        let c = cond("condition: é > 1\n");
        assert_eq!(c.location_of(1), Loc::new(1, 12));
        assert_eq!(c.location_of(100), Loc::new(1, 17));
    }
}
