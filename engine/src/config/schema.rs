//! `options.schema` (ELSPETH-CONFIG §2): the row contract a plugin declares.

use std::collections::HashSet;

use super::decode::{bool_of, choice_of, str_list_of, str_of, Fields};
use super::error::{Diagnostics, Loc, Located};
use super::names::is_identifier;
use super::yaml::{Kind, Node};

// The schema vocabulary is shared with the formats that apply it: one definition.
pub use crate::formats::schema::{FieldType, SchemaMode};

/// A field type as written in a spec. Case-sensitive, as in ELSPETH: `Int` is not a type.
fn parse_field_type(s: &str) -> Option<FieldType> {
    match s {
        "str" => Some(FieldType::Str),
        "int" => Some(FieldType::Int),
        "float" => Some(FieldType::Float),
        "bool" => Some(FieldType::Bool),
        "any" => Some(FieldType::Any),
        _ => None,
    }
}

/// One declared field. `optional` (`type?`) means the field may be missing or null.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub name: String,
    pub ty: FieldType,
    pub optional: bool,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub mode: SchemaMode,
    /// In declaration order; empty for observed schemas.
    pub fields: Vec<FieldSpec>,
    /// `[]` and absent both mean "unset", so these are plain lists.
    pub guaranteed_fields: Vec<String>,
    pub required_fields: Vec<String>,
    pub audit_fields: Vec<String>,
    /// Where the schema was written (its `schema` key); for defaults, the owner's location.
    pub loc: Loc,
}

impl Schema {
    /// `{mode: observed}`: the schema assumed where attest lets it be omitted.
    pub fn observed(loc: Loc) -> Schema {
        Schema {
            mode: SchemaMode::Observed,
            fields: Vec::new(),
            guaranteed_fields: Vec::new(),
            required_fields: Vec::new(),
            audit_fields: Vec::new(),
            loc,
        }
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

const TYPES: &str = "str, int, float, bool, any";

/// Reads a `schema` mapping; `key_loc` is the location of the `schema` key.
pub(crate) fn parse_schema(node: &Node, key_loc: Loc, d: &mut Diagnostics) -> Option<Schema> {
    let mut f = Fields::options(node, key_loc, "schema", d)?;
    let before = d.error_count();
    let mode = f
        .required("mode", d)
        .and_then(|n| choice_of(n, "`mode`", &["fixed", "flexible", "observed"], d))
        .map(|m| match m {
            "fixed" => SchemaMode::Fixed,
            "flexible" => SchemaMode::Flexible,
            _ => SchemaMode::Observed,
        });
    let fields_entry = f.entry("fields");
    let mut fields = Vec::new();
    if let Some((_, fields_node)) = fields_entry {
        fields = parse_fields(fields_node, d);
    }
    let mut lists = Vec::new();
    for key in ["guaranteed_fields", "required_fields", "audit_fields"] {
        let list = f
            .get(key)
            .and_then(|n| identifier_list(n, &format!("`{key}`"), d))
            .unwrap_or_default();
        lists.push((key, list));
    }
    f.finish(d);
    let mode = mode?;
    match mode {
        SchemaMode::Observed => {
            if let Some((_, n)) = fields_entry {
                if !fields.is_empty() {
                    d.error(
                        n.loc,
                        "an observed schema declares no `fields`; expected `fields` absent, null \
                         or [] (or mode fixed/flexible)",
                    );
                }
            }
        }
        SchemaMode::Fixed | SchemaMode::Flexible => {
            let empty_fields = fields_entry.is_none_or(|(_, n)| match &n.kind {
                Kind::Null => true,
                Kind::Seq(items) => items.is_empty(),
                Kind::Map(pairs) => pairs.is_empty(),
                _ => false,
            });
            if empty_fields {
                let at = fields_entry.map_or(key_loc, |(_, n)| n.loc);
                d.error(
                    at,
                    "a fixed or flexible schema needs a non-empty `fields` list, e.g. \
                     ['id: int', 'name: str?']",
                );
            }
            for (key, list) in &lists {
                for name in list {
                    if !fields.iter().any(|fs| fs.name == name.value) {
                        d.error(
                            name.loc,
                            format!(
                                "`{}` in `{key}` is not a declared field; expected one of: {}",
                                name.value,
                                fields
                                    .iter()
                                    .map(|fs| fs.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
    if d.error_count() > before {
        return None;
    }
    let mut lists = lists
        .into_iter()
        .map(|(_, l)| l.into_iter().map(|s| s.value).collect());
    Some(Schema {
        mode,
        fields,
        guaranteed_fields: lists.next().unwrap_or_default(),
        required_fields: lists.next().unwrap_or_default(),
        audit_fields: lists.next().unwrap_or_default(),
        loc: key_loc,
    })
}

fn parse_fields(node: &Node, d: &mut Diagnostics) -> Vec<FieldSpec> {
    let mut out: Vec<FieldSpec> = Vec::new();
    match &node.kind {
        Kind::Null => {}
        Kind::Seq(items) => {
            for item in items {
                if let Some(spec) = parse_field_entry(item, d) {
                    out.push(spec);
                }
            }
        }
        // A mapping `{id: int, name: str?}` reads like a list of one-key mappings.
        Kind::Map(pairs) => {
            for (k, v) in pairs {
                if let Some(spec) = short_mapping_field(k, v, d) {
                    out.push(spec);
                }
            }
        }
        _ => d.error(
            node.loc,
            format!(
                "`fields` must be a list such as ['id: int', 'name: str?']; found {}",
                node.describe()
            ),
        ),
    }
    let mut seen = HashSet::new();
    out.retain(|spec| {
        if seen.insert(spec.name.clone()) {
            true
        } else {
            d.error(
                spec.loc,
                format!(
                    "field `{}` is declared twice; expected each field once",
                    spec.name
                ),
            );
            false
        }
    });
    out
}

fn parse_field_entry(item: &Node, d: &mut Diagnostics) -> Option<FieldSpec> {
    match &item.kind {
        Kind::Str(s) => parse_field_string(s, item.loc, d),
        Kind::Map(pairs) => {
            let long_form = pairs.iter().any(|(k, _)| k.as_str() == Some("type"))
                && pairs.iter().any(|(k, _)| k.as_str() == Some("name"));
            if long_form {
                long_mapping_field(item, d)
            } else if let [(k, v)] = pairs.as_slice() {
                short_mapping_field(k, v, d)
            } else {
                d.error(
                    item.loc,
                    "a field given as a mapping must be `{name: type}` or `{name: ..., type: ..., \
                     required: ...}`",
                );
                None
            }
        }
        _ => {
            d.error(
                item.loc,
                format!(
                    "a field must be a string such as 'id: int'; found {}",
                    item.describe()
                ),
            );
            None
        }
    }
}

fn field_name(name: &str, loc: Loc, d: &mut Diagnostics) -> Option<String> {
    if is_identifier(name) {
        Some(name.to_string())
    } else {
        d.error(
            loc,
            format!(
                "field name `{name}` is not an identifier; expected letters, digits and `_`, \
                 not starting with a digit"
            ),
        );
        None
    }
}

/// `type` or `type?`.
fn field_type(text: &str, loc: Loc, d: &mut Diagnostics) -> Option<(FieldType, bool)> {
    let (base, optional) = match text.strip_suffix('?') {
        Some(b) => (b, true),
        None => (text, false),
    };
    match parse_field_type(base) {
        Some(t) => Some((t, optional)),
        None => {
            d.error(
                loc,
                format!("unknown field type `{text}`; expected one of {TYPES}, optionally followed by `?`"),
            );
            None
        }
    }
}

/// `"name: type"` / `"name: type?"`: trimmed, no space before the colon, any after.
fn parse_field_string(s: &str, loc: Loc, d: &mut Diagnostics) -> Option<FieldSpec> {
    let spec = s.trim();
    let Some((name, ty)) = spec.split_once(':') else {
        d.error(
            loc,
            format!("field `{s}` has no type; expected 'name: type' such as 'id: int'"),
        );
        return None;
    };
    if name != name.trim_end() {
        d.error(
            loc,
            format!("field `{s}` has a space before `:`; expected 'name: type' such as 'id: int'"),
        );
        return None;
    }
    let name = field_name(name, loc, d)?;
    let (ty, optional) = field_type(ty.trim_start(), loc, d)?;
    Some(FieldSpec {
        name,
        ty,
        optional,
        loc,
    })
}

fn short_mapping_field(k: &Node, v: &Node, d: &mut Diagnostics) -> Option<FieldSpec> {
    let name = str_of(k, "a field name", d)?;
    let name = field_name(&name, k.loc, d)?;
    let ty = str_of(v, &format!("the type of field `{name}`"), d)?;
    let (ty, optional) = field_type(ty.trim(), v.loc, d)?;
    Some(FieldSpec {
        name,
        ty,
        optional,
        loc: k.loc,
    })
}

fn long_mapping_field(item: &Node, d: &mut Diagnostics) -> Option<FieldSpec> {
    let mut f = Fields::options(item, item.loc, "field", d)?;
    let name = f.req_str("name", d);
    let ty = f.req_str("type", d);
    let required = f
        .get("required")
        .and_then(|n| bool_of(n, "`required`", d))
        .unwrap_or(true);
    f.finish(d);
    let name = name?;
    let field = field_name(&name.value, name.loc, d)?;
    let ty_text = ty?;
    let (ty, optional) = field_type(ty_text.value.trim(), ty_text.loc, d)?;
    Some(FieldSpec {
        name: field,
        ty,
        optional: optional || !required,
        loc: name.loc,
    })
}

/// An identifier list with no duplicates (`guaranteed_fields`, `required_input_fields`, ...).
pub(crate) fn identifier_list(
    node: &Node,
    what: &str,
    d: &mut Diagnostics,
) -> Option<Vec<Located<String>>> {
    let items = str_list_of(node, what, d)?;
    let mut seen = HashSet::new();
    let mut ok = true;
    for item in &items {
        if !is_identifier(&item.value) {
            d.error(
                item.loc,
                format!(
                    "`{}` in {what} is not an identifier; expected letters, digits and `_`, not \
                     starting with a digit",
                    item.value
                ),
            );
            ok = false;
        } else if !seen.insert(item.value.as_str()) {
            d.error(
                item.loc,
                format!(
                    "`{}` appears twice in {what}; expected each name once",
                    item.value
                ),
            );
            ok = false;
        }
    }
    ok.then_some(items)
}
