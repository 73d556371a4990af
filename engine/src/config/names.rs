//! Name rules (ELSPETH-CONFIG §1.3) and identifier rules (§2), shared by every section.

use super::error::{Diagnostics, Located};

const RESERVED: [&str; 3] = ["continue", "fork", "on_success"];

/// Python's keywords: CSV column names may not be one (ELSPETH appends `_` to headers that
/// are), so `columns` entries that are keywords are refused.
pub(crate) const PYTHON_KEYWORDS: [&str; 32] = [
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Names with a meaning in `on_error`, `on_write_failure` and `on_validation_failure`.
pub const DISCARD: &str = "discard";

fn common_checks(name: &str, kind: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} is empty; expected a name"));
    }
    if name.chars().count() > max {
        return Err(format!(
            "{kind} `{name}` is {} characters long; expected at most {max}",
            name.chars().count()
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "{kind} `{name}` is a reserved word; expected a name other than {}",
            RESERVED.join(", ")
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "{kind} `{name}` starts with `__`, which is reserved; expected another name"
        ));
    }
    Ok(())
}

fn tail_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Transform, gate, aggregation and coalesce names: an ASCII letter, then letters, digits,
/// `_` or `-`; at most 38 characters.
pub(crate) fn node_name(raw: &Located<String>, d: &mut Diagnostics) -> Option<Located<String>> {
    let name = raw.value.trim();
    let checked = common_checks(name, "node name", 38).and_then(|()| {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if first_ok && chars.all(tail_ok) {
            Ok(())
        } else {
            Err(format!(
                "node name `{name}` is not allowed; expected an ASCII letter followed by \
                 letters, digits, `_` or `-`"
            ))
        }
    });
    match checked {
        Ok(()) => Some(Located::new(name.to_string(), raw.loc)),
        Err(message) => {
            d.error(raw.loc, message);
            None
        }
    }
}

fn sink_like(name: &str, kind: &str, max: usize) -> Result<(), String> {
    common_checks(name, kind, max)?;
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && chars.all(tail_ok) {
        Ok(())
    } else {
        Err(format!(
            "{kind} `{name}` is not allowed; expected a letter, digit or `_` followed by \
             letters, digits, `_` or `-`"
        ))
    }
}

/// Sink names: lower case (an all-upper-case name is lower-cased, as ELSPETH does; a
/// mixed-case one is an error), then the connection charset, at most 38 characters.
pub(crate) fn sink_name(raw: &Located<String>, d: &mut Diagnostics) -> Option<Located<String>> {
    let name = raw.value.as_str();
    let has_upper = name.chars().any(|c| c.is_uppercase());
    let has_lower = name.chars().any(|c| c.is_lowercase());
    let name = if has_upper && !has_lower {
        name.to_lowercase()
    } else if has_upper {
        d.error(
            raw.loc,
            format!("sink name `{name}` mixes upper and lower case; expected lower case"),
        );
        return None;
    } else {
        name.to_string()
    };
    match sink_like(&name, "sink name", 38) {
        Ok(()) => Some(Located::new(name, raw.loc)),
        Err(message) => {
            d.error(raw.loc, message);
            None
        }
    }
}

/// Connection names (`input`, `on_success`, `on_error`, route labels and destinations,
/// `fork_to`, coalesce branches): trimmed, sink charset, at most 64 characters.
pub(crate) fn connection_name(
    raw: &Located<String>,
    kind: &str,
    d: &mut Diagnostics,
) -> Option<Located<String>> {
    let name = raw.value.trim();
    match sink_like(name, kind, 64) {
        Ok(()) => Some(Located::new(name.to_string(), raw.loc)),
        Err(message) => {
            d.error(raw.loc, message);
            None
        }
    }
}

/// Field identifiers (§2): Unicode letters, digits and `_`, not starting with a digit.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Loc;

    fn l(s: &str) -> Located<String> {
        Located::new(s.to_string(), Loc::new(1, 1))
    }

    #[test]
    fn node_names() {
        let mut d = Diagnostics::new("f");
        assert_eq!(node_name(&l(" rename "), &mut d).unwrap().value, "rename");
        assert!(node_name(&l("a-b_C9"), &mut d).is_some());
        assert_eq!(d.error_count(), 0);
        assert!(node_name(&l("9a"), &mut d).is_none());
        assert!(node_name(&l("_a"), &mut d).is_none());
        assert!(node_name(&l("fork"), &mut d).is_none());
        assert!(node_name(&l(&"a".repeat(39)), &mut d).is_none());
        assert!(node_name(&l("a b"), &mut d).is_none());
        assert!(node_name(&l("é"), &mut d).is_none());
        assert_eq!(d.error_count(), 6);
    }

    #[test]
    fn sink_and_connection_names() {
        let mut d = Diagnostics::new("f");
        assert_eq!(sink_name(&l("OUT"), &mut d).unwrap().value, "out");
        assert!(sink_name(&l("9_out"), &mut d).is_some());
        assert_eq!(d.error_count(), 0);
        assert!(sink_name(&l("Out"), &mut d).is_none());
        assert!(sink_name(&l("__x"), &mut d).is_none());
        assert!(sink_name(&l("-x"), &mut d).is_none());
        assert!(connection_name(&l(&"a".repeat(65)), "connection", &mut d).is_none());
        assert!(connection_name(&l(&"a".repeat(64)), "connection", &mut d).is_some());
        assert!(connection_name(&l("continue"), "connection", &mut d).is_none());
        assert_eq!(d.error_count(), 5);
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("naïve_1"));
        assert!(is_identifier("_x"));
        assert!(!is_identifier("1x"));
        assert!(!is_identifier("a-b"));
        assert!(!is_identifier(""));
    }
}
