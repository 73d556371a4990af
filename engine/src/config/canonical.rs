//! A node's configuration in one canonical form, hashed: what `NodeRegistered.config_hash`
//! records and what `attest resume` compares to decide whether a node changed.
//!
//! The form is the node's subtree of the settings file as written, **before** `${VAR}`
//! expansion (so a secret passed through the environment is never hashed), turned into
//! JSON and hashed canonically (sorted keys, one number form: `attest_ledger::canonical`).
//! It depends on what the file says, not on how this build of attest parses it: comments,
//! layout, quoting style and key order do not change it, and neither does a new version of
//! attest. (The parsed configuration's `Debug` form, used before, was stable only within
//! one build.)

use super::yaml::{Kind, Node};
use attest_ledger::Hash32;
use serde_json::{Map, Number, Value};

/// Canonical hashes of each node's configuration, by section, in file order (the same
/// order as the sections of [`PipelineConfig`](super::PipelineConfig)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeHashes {
    pub source: Hash32,
    pub transforms: Vec<Hash32>,
    pub gates: Vec<Hash32>,
    pub aggregations: Vec<Hash32>,
    pub coalesce: Vec<Hash32>,
    /// One per sink: the hash of `{name: options}` as written under `sinks`.
    pub sinks: Vec<Hash32>,
}

/// Hashes the nodes of a settings file's tree. `root` must be the tree as parsed, before
/// environment expansion. Sections that are missing or malformed hash as nothing here;
/// the configuration that parsing then rejects never reaches a run.
pub(crate) fn node_hashes(root: &Node) -> NodeHashes {
    let section = |key: &str| -> Option<&Node> {
        match &root.kind {
            Kind::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    };
    let list = |key: &str| -> Vec<Hash32> {
        match section(key).map(|n| &n.kind) {
            Some(Kind::Seq(items)) => items.iter().map(hash_node).collect(),
            _ => Vec::new(),
        }
    };
    let sinks = match section("sinks").map(|n| &n.kind) {
        Some(Kind::Map(pairs)) => pairs
            .iter()
            .map(|(k, v)| {
                let mut one = Map::new();
                one.insert(key_text(k), to_json(v));
                hash_json(&Value::Object(one))
            })
            .collect(),
        _ => Vec::new(),
    };
    NodeHashes {
        source: section("source").map(hash_node).unwrap_or_default(),
        transforms: list("transforms"),
        gates: list("gates"),
        aggregations: list("aggregations"),
        coalesce: list("coalesce"),
        sinks,
    }
}

fn hash_node(node: &Node) -> Hash32 {
    hash_json(&to_json(node))
}

fn hash_json(v: &Value) -> Hash32 {
    // `to_json` never produces a non-finite number, so this cannot fail; an empty hash
    // input would still be a stable value if it did.
    attest_ledger::canonical::hash_value(v).unwrap_or_else(|_| Hash32::of(b""))
}

/// Mapping keys as JSON object keys: a string as itself, any other scalar as the JSON text
/// of its value (YAML allows `1: x`).
fn key_text(node: &Node) -> String {
    match &node.kind {
        Kind::Str(s) => s.clone(),
        _ => to_json(node).to_string(),
    }
}

fn to_json(node: &Node) -> Value {
    match &node.kind {
        Kind::Null => Value::Null,
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Int(i) => Value::from(*i),
        // YAML's `.nan` and `.inf` have no JSON number: they are kept as their YAML spelling.
        Kind::Float(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None if f.is_nan() => Value::String(".nan".into()),
            None if *f > 0.0 => Value::String(".inf".into()),
            None => Value::String("-.inf".into()),
        },
        Kind::Str(s) => Value::String(s.clone()),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (key_text(k), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::error::Diagnostics;

    fn hashes(text: &str) -> NodeHashes {
        let mut d = Diagnostics::new("t.yaml");
        let root = super::super::yaml::parse(text, &mut d).unwrap_or_else(|| panic!("parse"));
        node_hashes(&root)
    }

    const BASE: &str = "source:\n  plugin: csv\n  options: {path: in.csv}\n\
        transforms:\n- name: a\n  plugin: passthrough\n  options: {x: 1}\n\
        sinks:\n  out: {plugin: csv, options: {path: \"${OUT}/o.csv\"}}\n";

    #[test]
    fn layout_comments_quoting_and_key_order_do_not_matter() {
        let same =
            "# a comment\nsinks:\n  out:\n    options: {path: '${OUT}/o.csv'}\n    plugin: csv\n\
            transforms:\n  - plugin: passthrough\n    name: a\n    options:\n      x: 1\n\
            source: {options: {path: in.csv}, plugin: csv}\n";
        assert_eq!(hashes(BASE), hashes(same));
    }

    #[test]
    fn a_changed_value_changes_only_its_node() {
        let base = hashes(BASE);
        let changed = hashes(&BASE.replace("{x: 1}", "{x: 2}"));
        assert_ne!(base.transforms, changed.transforms);
        assert_eq!(base.source, changed.source);
        assert_eq!(base.sinks, changed.sinks);
        // 1 and 1.0 and "1" are different settings.
        assert_ne!(
            hashes(&BASE.replace("{x: 1}", "{x: 1.0}")).transforms,
            base.transforms
        );
        assert_ne!(
            hashes(&BASE.replace("{x: 1}", "{x: '1'}")).transforms,
            base.transforms
        );
        let renamed = hashes(&BASE.replace("  out:", "  other:"));
        assert_ne!(renamed.sinks, base.sinks);
    }

    #[test]
    fn variables_are_hashed_as_written_not_expanded() {
        // Loaded under two environments, the sink's path differs but its hash does not:
        // the hash is taken before expansion, so it reveals nothing of what `${OUT}` held
        // (a secret, say).
        let text = "source:\n  plugin: csv\n  on_success: out\n  options:\n    path: in.csv\n    schema: {mode: observed}\n    on_validation_failure: discard\n\
            sinks:\n  out: {plugin: csv, options: {path: \"${OUT}/o.csv\", schema: {mode: observed}}}\n";
        let load = |value: &'static str| {
            crate::config::parse_str(text, "p.yaml", &move |k: &str| {
                (k == "OUT").then(|| value.to_string())
            })
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, b) = (load("/one"), load("/two"));
        assert_ne!(a.sinks[0].options.path.value, b.sinks[0].options.path.value);
        assert_eq!(a.node_hashes, b.node_hashes);
        assert_eq!(a.node_hashes, hashes(text));
        assert_ne!(
            a.node_hashes.sinks,
            hashes(&text.replace("${OUT}", "/one")).sinks
        );
    }

    #[test]
    fn non_finite_floats_hash() {
        let h = hashes("source: {x: .nan, y: .inf, z: -.inf}\n");
        assert_ne!(h.source, Hash32::default());
        assert_ne!(
            h.source,
            hashes("source: {x: .nan, y: .inf, z: .inf}\n").source
        );
    }
}
