//! Typed reading of the marked YAML tree: mappings with a fixed set of keys, and scalars of
//! an expected type. Every failure is recorded where it happened and reading goes on, so
//! one pass reports every problem.

use super::error::{Diagnostics, Loc, Located};
use super::yaml::{key_text, Kind, Node};

struct Entry<'n> {
    key: String,
    /// The key as matched: lower-cased for schema-level mappings (ELSPETH matches those
    /// case-insensitively), as written for plugin options, routes and branches.
    matched: String,
    loc: Loc,
    value: &'n Node,
    used: bool,
}

/// A mapping whose keys are known in advance. Keys are taken one by one; `finish` reports
/// every key nobody took as unknown, listing the ones that were asked for.
pub(crate) struct Fields<'n> {
    what: String,
    owner: Loc,
    fold_case: bool,
    entries: Vec<Entry<'n>>,
    known: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    /// Options mappings: keys are case-sensitive. `owner` is where a missing key is
    /// reported (the key that holds this mapping, or the list item).
    pub(crate) fn options(
        node: &'n Node,
        owner: Loc,
        what: impl Into<String>,
        d: &mut Diagnostics,
    ) -> Option<Self> {
        Self::build(node, owner, what.into(), false, d)
    }

    /// Schema-level mappings (top level, node entries, retry, ...): case-insensitive keys.
    pub(crate) fn settings(
        node: &'n Node,
        owner: Loc,
        what: impl Into<String>,
        d: &mut Diagnostics,
    ) -> Option<Self> {
        Self::build(node, owner, what.into(), true, d)
    }

    fn build(
        node: &'n Node,
        owner: Loc,
        what: String,
        fold_case: bool,
        d: &mut Diagnostics,
    ) -> Option<Self> {
        let Kind::Map(pairs) = &node.kind else {
            d.error(
                node.loc,
                format!("{what} must be a mapping; found {}", node.describe()),
            );
            return None;
        };
        let mut entries: Vec<Entry<'n>> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let Some(key) = k.as_str() else {
                d.error(
                    k.loc,
                    format!(
                        "key `{}` in {what} is not a string; expected one of the keys listed in \
                         the configuration reference",
                        key_text(k)
                    ),
                );
                continue;
            };
            let matched = if fold_case {
                key.to_lowercase()
            } else {
                key.to_string()
            };
            if fold_case && entries.iter().any(|e| e.matched == matched) {
                d.error(
                    k.loc,
                    format!("duplicate key `{key}` in {what} (keys here ignore case)"),
                );
                continue;
            }
            entries.push(Entry {
                key: key.to_string(),
                matched,
                loc: k.loc,
                value: v,
                used: false,
            });
        }
        Some(Fields {
            what,
            owner,
            fold_case,
            entries,
            known: Vec::new(),
        })
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    pub(crate) fn owner(&self) -> Loc {
        self.owner
    }

    /// The value of `key` (null included) and the key's location, if present.
    pub(crate) fn entry(&mut self, key: &'static str) -> Option<(Loc, &'n Node)> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let fold = self.fold_case;
        let e = self
            .entries
            .iter_mut()
            .find(|e| if fold { e.matched == key } else { e.key == key })?;
        e.used = true;
        Some((e.loc, e.value))
    }

    /// The value of `key`, or None when absent or null (Pydantic's `Optional` fields take
    /// null as "not given").
    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.entry(key).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    /// Marks `key` as accepted without reading it.
    pub(crate) fn allow(&mut self, key: &'static str) {
        let _ = self.entry(key);
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        let fold = self.fold_case;
        self.entries
            .iter()
            .any(|e| if fold { e.matched == key } else { e.key == key })
    }

    pub(crate) fn key_loc(&self, key: &str) -> Option<Loc> {
        let fold = self.fold_case;
        self.entries
            .iter()
            .find(|e| if fold { e.matched == key } else { e.key == key })
            .map(|e| e.loc)
    }

    /// Like `get`, but a missing (or null) key is an error at the owner.
    pub(crate) fn required(&mut self, key: &'static str, d: &mut Diagnostics) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            d.error(
                self.owner,
                format!("{} is missing required key `{key}`", self.what),
            );
        }
        found
    }

    pub(crate) fn req_str(
        &mut self,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<Located<String>> {
        let node = self.required(key, d)?;
        located_str(node, &format!("`{key}`"), d)
    }

    pub(crate) fn opt_str(
        &mut self,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<Located<String>> {
        let node = self.get(key)?;
        located_str(node, &format!("`{key}`"), d)
    }

    pub(crate) fn str_or(
        &mut self,
        key: &'static str,
        default: &str,
        d: &mut Diagnostics,
    ) -> String {
        match self.entry(key) {
            None => default.to_string(),
            Some((_, node)) => str_of(node, &format!("`{key}`"), d).unwrap_or_default(),
        }
    }

    pub(crate) fn bool_or(
        &mut self,
        key: &'static str,
        default: bool,
        d: &mut Diagnostics,
    ) -> bool {
        match self.entry(key) {
            None => default,
            Some((_, node)) => bool_of(node, &format!("`{key}`"), d).unwrap_or(default),
        }
    }

    pub(crate) fn opt_int(
        &mut self,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<Located<i64>> {
        let node = self.get(key)?;
        int_of(node, &format!("`{key}`"), d).map(|v| Located::new(v, node.loc))
    }

    pub(crate) fn opt_float(
        &mut self,
        key: &'static str,
        d: &mut Diagnostics,
    ) -> Option<Located<f64>> {
        let node = self.get(key)?;
        float_of(node, &format!("`{key}`"), d).map(|v| Located::new(v, node.loc))
    }

    /// A key whose value must be one of `choices`; `None` when absent or invalid.
    pub(crate) fn opt_choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
        d: &mut Diagnostics,
    ) -> Option<Located<&'static str>> {
        let node = self.get(key)?;
        choice_of(node, &format!("`{key}`"), choices, d).map(|c| Located::new(c, node.loc))
    }

    /// Reports every key that no reader asked for.
    pub(crate) fn finish(self, d: &mut Diagnostics) {
        for e in self.entries.iter().filter(|e| !e.used) {
            let mut message = format!(
                "unknown key `{}` in {}; expected one of: {}",
                e.key,
                self.what,
                self.known.join(", ")
            );
            let probe = if self.fold_case {
                e.matched.as_str()
            } else {
                e.key.as_str()
            };
            if let Some(near) = closest(probe, &self.known) {
                message.push_str(&format!(" (did you mean `{near}`?)"));
            }
            d.error(e.loc, message);
        }
    }
}

/// The nearest known key, when close enough to be a likely typo.
fn closest<'k>(probe: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = (probe.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(probe, k), *k))
        .filter(|(dist, _)| *dist <= limit)
        .min_by_key(|(dist, _)| *dist)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev_diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev_diag + cost);
            prev_diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

pub(crate) fn str_of(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    match &node.kind {
        Kind::Str(s) => Some(s.clone()),
        _ => {
            d.error(
                node.loc,
                format!("{what} must be a string; found {}", node.describe()),
            );
            None
        }
    }
}

pub(crate) fn located_str(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Located<String>> {
    str_of(node, what, d).map(|s| Located::new(s, node.loc))
}

/// Integers (and floats with no fractional part); a string produced by `${...}` expansion
/// is read as one when it spells one
/// (ELSPETH expands after parsing and lets Pydantic convert, so `${N:-4}` is usable).
pub(crate) fn int_of(node: &Node, what: &str, d: &mut Diagnostics) -> Option<i64> {
    match &node.kind {
        Kind::Int(i) => return Some(*i),
        // `100.0` is a whole number, as Pydantic's int fields accept; `1.5` is not.
        Kind::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => return Some(*f as i64),
        Kind::Str(s) if node.expanded => {
            if let Ok(i) = s.trim().parse::<i64>() {
                return Some(i);
            }
        }
        _ => {}
    }
    if node.reported {
        return None;
    }
    d.error(
        node.loc,
        format!("{what} must be an integer; found {}", node.describe()),
    );
    None
}

/// Numbers (integers are accepted as floats); non-finite values are refused since no
/// setting means anything with them.
pub(crate) fn float_of(node: &Node, what: &str, d: &mut Diagnostics) -> Option<f64> {
    let value = match &node.kind {
        Kind::Int(i) => Some(*i as f64),
        Kind::Float(f) => Some(*f),
        Kind::Str(s) if node.expanded => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match value {
        Some(v) if v.is_finite() => Some(v),
        Some(_) => {
            d.error(
                node.loc,
                format!("{what} must be a finite number; found {}", node.describe()),
            );
            None
        }
        None if node.reported => None,
        None => {
            d.error(
                node.loc,
                format!("{what} must be a number; found {}", node.describe()),
            );
            None
        }
    }
}

pub(crate) fn bool_of(node: &Node, what: &str, d: &mut Diagnostics) -> Option<bool> {
    match &node.kind {
        Kind::Bool(b) => return Some(*b),
        Kind::Str(s) if node.expanded => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => return Some(true),
            "false" | "f" | "no" | "n" | "off" | "0" => return Some(false),
            _ => {}
        },
        _ => {}
    }
    if node.reported {
        return None;
    }
    d.error(
        node.loc,
        format!(
            "{what} must be a boolean (true or false); found {}",
            node.describe()
        ),
    );
    None
}

pub(crate) fn choice_of(
    node: &Node,
    what: &str,
    choices: &[&'static str],
    d: &mut Diagnostics,
) -> Option<&'static str> {
    let s = str_of(node, what, d)?;
    match choices.iter().find(|c| **c == s) {
        Some(c) => Some(c),
        None if node.reported => None,
        None => {
            d.error(
                node.loc,
                format!("{what} is \"{s}\"; expected one of: {}", choices.join(", ")),
            );
            None
        }
    }
}

/// A list of strings, each with its location.
pub(crate) fn str_list_of(
    node: &Node,
    what: &str,
    d: &mut Diagnostics,
) -> Option<Vec<Located<String>>> {
    let Kind::Seq(items) = &node.kind else {
        d.error(
            node.loc,
            format!(
                "{what} must be a list of strings; found {}",
                node.describe()
            ),
        );
        return None;
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match located_str(item, &format!("each entry of {what}"), d) {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A mapping whose keys are user-chosen strings (routes, field mappings, ...).
pub(crate) fn string_keyed<'n>(
    node: &'n Node,
    what: &str,
    d: &mut Diagnostics,
) -> Option<Vec<(Located<String>, &'n Node)>> {
    let Kind::Map(pairs) = &node.kind else {
        d.error(
            node.loc,
            format!("{what} must be a mapping; found {}", node.describe()),
        );
        return None;
    };
    let mut out = Vec::with_capacity(pairs.len());
    let mut ok = true;
    for (k, v) in pairs {
        match k.as_str() {
            Some(key) => out.push((Located::new(key.to_string(), k.loc), v)),
            None => {
                d.error(
                    k.loc,
                    format!(
                        "key `{}` in {what} is {}; expected a string (quote it: '{}')",
                        key_text(k),
                        k.describe(),
                        key_text(k)
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A mapping from user-chosen string keys to string values.
pub(crate) fn string_map(
    node: &Node,
    what: &str,
    d: &mut Diagnostics,
) -> Option<Vec<(Located<String>, Located<String>)>> {
    let pairs = string_keyed(node, what, d)?;
    let mut out = Vec::with_capacity(pairs.len());
    let mut ok = true;
    for (k, v) in pairs {
        match located_str(v, &format!("the value of `{}` in {what}", k.value), d) {
            Some(s) => out.push((k, s)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Any YAML value as JSON (for free-form data such as an LLM `lookup` table). Keys become
/// strings; non-finite numbers have no JSON form and are refused.
pub(crate) fn to_json(node: &Node, d: &mut Diagnostics) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match &node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Int(i) => Value::from(*i),
        Kind::Float(f) => match serde_json::Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => {
                d.error(
                    node.loc,
                    format!(
                        "{} has no JSON form; expected a finite number",
                        node.describe()
                    ),
                );
                return None;
            }
        },
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(to_json(item, d)?);
            }
            Value::Array(out)
        }
        Kind::Map(pairs) => {
            let mut out = serde_json::Map::new();
            for (k, v) in pairs {
                out.insert(key_text(k), to_json(v, d)?);
            }
            Value::Object(out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(
            closest("delimter", &["path", "delimiter", "schema"]),
            Some("delimiter")
        );
        assert_eq!(closest("zzz", &["path", "schema"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
