//! Static questions about a parsed condition, answered without a row: is its result always
//! a bool (which decides the allowed route labels), and which fields does it read (which
//! lets configuration check aggregation triggers).

use std::collections::BTreeSet;

use super::ast::{Builtin, Node, NodeKind, UnaryOp};
use super::pyvalue::PyValue;

/// ELSPETH's rule: comparisons, `not`, bool literals and `bool()` are boolean; `and`/`or`
/// are boolean when every operand is; a conditional expression is boolean when both
/// branches are (its condition does not matter).
pub(crate) fn is_statically_boolean(node: &Node) -> bool {
    match &node.kind {
        NodeKind::Compare { .. } => true,
        NodeKind::Unary {
            op: UnaryOp::Not, ..
        } => true,
        NodeKind::Const(PyValue::Bool(_)) => true,
        NodeKind::Call {
            func: Builtin::Bool,
            ..
        } => true,
        NodeKind::BoolOp { operands, .. } => operands.iter().all(is_statically_boolean),
        NodeKind::IfElse {
            then, otherwise, ..
        } => is_statically_boolean(then) && is_statically_boolean(otherwise),
        _ => false,
    }
}

/// The row fields a condition reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldRefs {
    /// Top-level fields read by a constant string key: `row['f']`, `row.get('f')`.
    pub fields: BTreeSet<String>,
    /// Whether the row is also read in a way that cannot be listed: a computed or
    /// non-string key (`row[row['k']]`), or the whole row (`len(row)`, `'f' in row`).
    pub dynamic: bool,
}

pub(crate) fn field_refs(node: &Node, refs: &mut FieldRefs) {
    match &node.kind {
        NodeKind::Row => refs.dynamic = true,
        NodeKind::Subscript { base, index } if base.kind == NodeKind::Row => {
            note_key(index, refs);
            field_refs(index, refs);
        }
        NodeKind::RowGet { key, default } => {
            note_key(key, refs);
            field_refs(key, refs);
            if let Some(d) = default {
                field_refs(d, refs);
            }
        }
        NodeKind::Const(_) => {}
        NodeKind::List(items) | NodeKind::Tuple(items) | NodeKind::Set(items) => {
            items.iter().for_each(|n| field_refs(n, refs));
        }
        NodeKind::Call { args, .. } => args.iter().for_each(|n| field_refs(n, refs)),
        NodeKind::Dict(pairs) => pairs.iter().for_each(|(k, v)| {
            field_refs(k, refs);
            field_refs(v, refs);
        }),
        NodeKind::Subscript { base, index } => {
            field_refs(base, refs);
            field_refs(index, refs);
        }
        NodeKind::Unary { operand, .. } => field_refs(operand, refs),
        NodeKind::Binary { left, right, .. } => {
            field_refs(left, refs);
            field_refs(right, refs);
        }
        NodeKind::BoolOp { operands, .. } => operands.iter().for_each(|n| field_refs(n, refs)),
        NodeKind::Compare { first, links } => {
            field_refs(first, refs);
            links.iter().for_each(|(_, n)| field_refs(n, refs));
        }
        NodeKind::IfElse {
            cond,
            then,
            otherwise,
        } => {
            field_refs(cond, refs);
            field_refs(then, refs);
            field_refs(otherwise, refs);
        }
    }
}

fn note_key(key: &Node, refs: &mut FieldRefs) {
    match &key.kind {
        NodeKind::Const(PyValue::Str(name)) => {
            refs.fields.insert(name.clone());
        }
        _ => refs.dynamic = true,
    }
}
