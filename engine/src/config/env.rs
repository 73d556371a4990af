//! `${NAME}` and `${NAME:-default}` expansion of string values.
//!
//! As in ELSPETH, expansion runs after the YAML is parsed, on every string *value* (keys are
//! left alone), including templates and gate conditions, and there is no escape syntax.
//! The environment is a lookup closure so that tests never touch the process environment.

use super::error::Diagnostics;
use super::yaml::{Kind, Node, Style};

/// Looks a variable up; `None` means unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every string value in the tree in place, recording an error at the value for
/// each reference that cannot be resolved.
pub(crate) fn expand_tree(node: &mut Node, env: EnvLookup<'_>, diag: &mut Diagnostics) {
    match &mut node.kind {
        Kind::Str(s) => {
            if !s.contains("${") {
                return;
            }
            match expand_str(s, env) {
                Ok(expanded) => {
                    *s = expanded;
                    node.expanded = true;
                    // Columns inside the value no longer match the file text.
                    node.style = Style::Other;
                }
                Err(message) => {
                    diag.error(node.loc, message);
                    node.reported = true;
                }
            }
        }
        Kind::Seq(items) => {
            for item in items {
                expand_tree(item, env, diag);
            }
        }
        Kind::Map(pairs) => {
            for (_, value) in pairs {
                expand_tree(value, env, diag);
            }
        }
        Kind::Null | Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {}
    }
}

/// Expands the references in one string. An empty variable counts as unset for
/// `${NAME:-default}`, as in the shell whose syntax this borrows.
pub fn expand_str(text: &str, env: EnvLookup<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "unterminated `${{` in \"{text}\"; expected `${{NAME}}` or `${{NAME:-default}}`"
            ));
        };
        let body = &after[..end];
        let (name, default) = match body.find(":-") {
            Some(i) => (&body[..i], Some(&body[i + 2..])),
            None => (body, None),
        };
        if !valid_name(name) {
            return Err(format!(
                "`${{{body}}}` is not a valid reference; expected `${{NAME}}` or \
                 `${{NAME:-default}}` with NAME made of letters, digits and `_`, not starting \
                 with a digit"
            ));
        }
        let value = env(name).filter(|v| default.is_none() || !v.is_empty());
        match (value, default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set; expected it to be set, or a \
                     default written as `${{{name}:-default}}`"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/a".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_unset_and_defaults() {
        assert_eq!(expand_str("${HOME_DIR}/x", &env).unwrap(), "/home/a/x");
        assert_eq!(expand_str("a${NOPE:-b}c", &env).unwrap(), "abc");
        assert_eq!(expand_str("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(expand_str("${HOME_DIR:-z}", &env).unwrap(), "/home/a");
        assert_eq!(expand_str("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand_str("${EMPTY}", &env).unwrap(), "");
        assert_eq!(
            expand_str("${HOME_DIR}${HOME_DIR}", &env).unwrap(),
            "/home/a/home/a"
        );
        // The default is taken verbatim, up to the first `}`.
        assert_eq!(expand_str("${NOPE:-a:-b}", &env).unwrap(), "a:-b");
        // No re-expansion of substituted text.
        assert_eq!(expand_str("$${NOPE:-{x}", &env).unwrap(), "${x");
    }

    #[test]
    fn reports_unset_and_malformed() {
        let e = expand_str("x ${NOPE} y", &env).unwrap_err();
        assert!(e.contains("`NOPE` is not set"), "{e}");
        assert!(expand_str("${1A}", &env)
            .unwrap_err()
            .contains("not a valid"));
        assert!(expand_str("${}", &env).unwrap_err().contains("not a valid"));
        assert!(expand_str("${A", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert_eq!(expand_str("$HOME_DIR {x}", &env).unwrap(), "$HOME_DIR {x}");
    }
}
