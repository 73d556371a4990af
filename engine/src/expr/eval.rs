//! Evaluates a parsed condition against a row.
//!
//! Evaluation order is Python's (left to right, operands before the operation, every
//! argument before the call, short-circuiting `and`/`or`/`if`/comparison chains), because
//! it decides which error is reported when several would occur.
//!
//! Row access is resolved as a [`Place`] borrowing from the row, so `row['a']['b']` copies
//! only the value it finally reads, not the whole row or `row['a']`.

use serde_json::Value;

use super::ast::{BinOp, BoolOpKind, Builtin, CmpOp, Node, NodeKind, UnaryOp};
use super::builtins;
use super::error::{EvalError, EvalErrorKind, Fail, Position};
use super::python::{self, dict_get, py_eq, truthy};
use super::pyvalue::PyValue;
use super::repr::py_repr;
use crate::value::Row;

/// Where a row-derived value lives: still inside the row, or computed.
enum Place<'r> {
    Row,
    Json(&'r Value),
    Owned(PyValue),
}

pub(crate) struct Evaluator<'a> {
    pub source: &'a str,
    pub row: &'a Row,
}

impl<'a> Evaluator<'a> {
    /// Ties a failure to the node being evaluated.
    pub fn fail(&self, node: &Node, fail: Fail) -> EvalError {
        EvalError {
            kind: fail.kind,
            message: fail.message,
            position: Position::locate(self.source, node.start),
            snippet: self.snippet(node),
        }
    }

    fn snippet(&self, node: &Node) -> String {
        const MAX_CHARS: usize = 80;
        let text = self.source.get(node.start..node.end).unwrap_or(self.source);
        if text.chars().count() <= MAX_CHARS {
            text.to_string()
        } else {
            let mut short: String = text.chars().take(MAX_CHARS).collect();
            short.push('…');
            short
        }
    }

    /// Evaluates `node`. This function only dispatches: each kind of node has its own
    /// method, so that the frames on the recursion path stay small (in debug builds a
    /// function's frame holds the locals of all its branches).
    pub fn eval(&self, node: &Node) -> Result<PyValue, EvalError> {
        match &node.kind {
            NodeKind::Const(v) => Ok(v.clone()),
            NodeKind::Row | NodeKind::Subscript { .. } | NodeKind::RowGet { .. } => self.read(node),
            NodeKind::List(items) => Ok(PyValue::List(self.eval_all(items)?)),
            NodeKind::Tuple(items) => Ok(PyValue::Tuple(self.eval_all(items)?)),
            NodeKind::Set(items) => self.set(node, items),
            NodeKind::Dict(pairs) => self.dict(node, pairs),
            NodeKind::Call { func, args } => self.call(node, *func, args),
            NodeKind::Unary { op, operand } => self.unary(node, *op, operand),
            NodeKind::Binary { op, left, right } => self.binary(node, *op, left, right),
            NodeKind::BoolOp { op, operands } => self.bool_op(*op, operands),
            NodeKind::Compare { first, links } => self.compare(node, first, links),
            NodeKind::IfElse {
                cond,
                then,
                otherwise,
            } => self.if_else(cond, then, otherwise),
        }
    }

    /// The value of a row-derived node, copied out of the row.
    fn read(&self, node: &Node) -> Result<PyValue, EvalError> {
        match self.place(node)? {
            Place::Row => PyValue::from_row(self.row).map_err(|f| self.fail(node, f)),
            Place::Json(v) => PyValue::from_json(v).map_err(|f| self.fail(node, f)),
            Place::Owned(v) => Ok(v),
        }
    }

    fn set(&self, node: &Node, items: &[Node]) -> Result<PyValue, EvalError> {
        // Python evaluates every element, then builds the set (which is when an unhashable
        // element is refused).
        let values = self.eval_all(items)?;
        let mut set: Vec<PyValue> = Vec::with_capacity(values.len());
        for v in values {
            v.require_hashable().map_err(|f| self.fail(node, f))?;
            if !set.iter().any(|e| py_eq(e, &v)) {
                set.push(v);
            }
        }
        Ok(PyValue::Set(set))
    }

    fn dict(&self, node: &Node, pairs: &[(Node, Node)]) -> Result<PyValue, EvalError> {
        let mut values = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            values.push((self.eval(k)?, self.eval(v)?));
        }
        let mut dict: Vec<(PyValue, PyValue)> = Vec::with_capacity(values.len());
        for (k, v) in values {
            k.require_hashable().map_err(|f| self.fail(node, f))?;
            // A repeated key keeps its first position and takes the last value.
            match dict.iter_mut().find(|(e, _)| py_eq(e, &k)) {
                Some(entry) => entry.1 = v,
                None => dict.push((k, v)),
            }
        }
        Ok(PyValue::Dict(dict))
    }

    fn call(&self, node: &Node, func: Builtin, args: &[Node]) -> Result<PyValue, EvalError> {
        let args = self.eval_all(args)?;
        builtins::call(func, args).map_err(|f| self.fail(node, f))
    }

    fn unary(&self, node: &Node, op: UnaryOp, operand: &Node) -> Result<PyValue, EvalError> {
        let v = self.eval(operand)?;
        let result = match op {
            UnaryOp::Not => Ok(PyValue::Bool(!truthy(&v))),
            UnaryOp::Neg => python::unary_number(true, &v),
            UnaryOp::Pos => python::unary_number(false, &v),
        };
        result.map_err(|f| self.fail(node, f))
    }

    fn binary(
        &self,
        node: &Node,
        op: BinOp,
        left: &Node,
        right: &Node,
    ) -> Result<PyValue, EvalError> {
        let a = self.eval(left)?;
        let b = self.eval(right)?;
        python::binary(op, a, b).map_err(|f| self.fail(node, f))
    }

    /// `and`/`or` return the operand that decided, not a bool.
    fn bool_op(&self, op: BoolOpKind, operands: &[Node]) -> Result<PyValue, EvalError> {
        let Some((last, rest)) = operands.split_last() else {
            return Ok(PyValue::None);
        };
        for operand in rest {
            let v = self.eval(operand)?;
            let decided = match op {
                BoolOpKind::And => !truthy(&v),
                BoolOpKind::Or => truthy(&v),
            };
            if decided {
                return Ok(v);
            }
        }
        self.eval(last)
    }

    /// `a < b < c` is `a < b and b < c` with `b` evaluated once.
    fn compare(
        &self,
        node: &Node,
        first: &Node,
        links: &[(CmpOp, Node)],
    ) -> Result<PyValue, EvalError> {
        let mut left = self.eval(first)?;
        for (op, operand) in links {
            let right = self.eval(operand)?;
            if !python::compare(*op, &left, &right).map_err(|f| self.fail(node, f))? {
                return Ok(PyValue::Bool(false));
            }
            left = right;
        }
        Ok(PyValue::Bool(true))
    }

    fn if_else(&self, cond: &Node, then: &Node, otherwise: &Node) -> Result<PyValue, EvalError> {
        if truthy(&self.eval(cond)?) {
            self.eval(then)
        } else {
            self.eval(otherwise)
        }
    }

    fn eval_all(&self, nodes: &[Node]) -> Result<Vec<PyValue>, EvalError> {
        nodes.iter().map(|n| self.eval(n)).collect()
    }

    /// Resolves a row-derived node without copying what it does not need.
    fn place(&self, node: &Node) -> Result<Place<'a>, EvalError> {
        match &node.kind {
            NodeKind::Row => Ok(Place::Row),
            NodeKind::Subscript { base, index } => self.subscript(node, base, index),
            NodeKind::RowGet { key, default } => self.row_get(node, key, default.as_deref()),
            _ => Ok(Place::Owned(self.eval(node)?)),
        }
    }

    fn subscript(&self, node: &Node, base: &Node, index: &Node) -> Result<Place<'a>, EvalError> {
        let container = self.place(base)?;
        let key = self.eval(index)?;
        self.index(container, &key, base)
            .map_err(|f| self.fail(node, f))
    }

    fn row_get(
        &self,
        node: &Node,
        key: &Node,
        default: Option<&Node>,
    ) -> Result<Place<'a>, EvalError> {
        // Both arguments are evaluated before the call, even if the default is not needed
        // (so `row.get('a', 1/0)` fails even when 'a' exists, as in Python).
        let key = self.eval(key)?;
        let default = match default {
            Some(d) => Some(self.eval(d)?),
            None => None,
        };
        key.require_hashable().map_err(|f| self.fail(node, f))?;
        let found = match &key {
            PyValue::Str(k) => self.row.get(k.as_str()),
            _ => None,
        };
        Ok(match found {
            Some(v) => Place::Json(v),
            None => Place::Owned(default.unwrap_or(PyValue::None)),
        })
    }

    /// `container[key]`; `base` is the container's node, named in messages.
    fn index(&self, container: Place<'a>, key: &PyValue, base: &Node) -> Result<Place<'a>, Fail> {
        // The container's source text, for messages; borrowed, so the success path does
        // not allocate.
        let name = self.source.get(base.start..base.end).unwrap_or("the value");
        match container {
            Place::Row => object_get(self.row, key, name),
            Place::Json(Value::Object(map)) => object_get(map, key, name),
            Place::Json(Value::Array(items)) => {
                let i = list_index(key, items.len(), name, "list")?;
                items
                    .get(i)
                    .map(Place::Json)
                    .ok_or_else(|| out_of_range(key, name))
            }
            Place::Json(Value::String(s)) => char_at(s, key, name),
            Place::Json(scalar) => {
                let value = match scalar {
                    Value::Number(n) => super::pyvalue::number_to_py(n),
                    Value::Bool(b) => PyValue::Bool(*b),
                    _ => PyValue::None,
                };
                Err(not_subscriptable(&value))
            }
            Place::Owned(value) => owned_index(value, key, name),
        }
    }
}

fn object_get<'r>(
    map: &'r serde_json::Map<String, Value>,
    key: &PyValue,
    name: &str,
) -> Result<Place<'r>, Fail> {
    key.require_hashable()?;
    // Row keys are strings; a key of another type is simply absent, as in Python.
    let found = match key {
        PyValue::Str(k) => map.get(k.as_str()),
        _ => None,
    };
    found.map(Place::Json).ok_or_else(|| missing_key(key, name))
}

fn missing_key(key: &PyValue, name: &str) -> Fail {
    let message = if name == "row" {
        format!("row has no field {}", py_repr(key))
    } else {
        format!("key {} not found in {name}", py_repr(key))
    };
    Fail::new(EvalErrorKind::MissingKey, message)
}

/// Resolves a Python index (negative counts from the end) against a length.
fn list_index(key: &PyValue, len: usize, name: &str, type_name: &str) -> Result<usize, Fail> {
    let i = match key {
        PyValue::Int(i) => *i,
        PyValue::Bool(b) => i128::from(*b),
        other => {
            return Err(Fail::type_error(format!(
                "{type_name} indices must be integers, not '{}'",
                other.type_name()
            )))
        }
    };
    let n = len as i128;
    let j = if i < 0 { i + n } else { i };
    if (0..n).contains(&j) {
        Ok(j as usize)
    } else {
        Err(Fail::new(
            EvalErrorKind::IndexOutOfRange,
            format!("{type_name} index {i} out of range for {name} (length {len})"),
        ))
    }
}

/// Only reachable if [`list_index`] were wrong; kept so that indexing needs no panic path.
fn out_of_range(key: &PyValue, name: &str) -> Fail {
    Fail::new(
        EvalErrorKind::IndexOutOfRange,
        format!("index {} out of range for {name}", py_repr(key)),
    )
}

fn char_at<'r>(s: &str, key: &PyValue, name: &str) -> Result<Place<'r>, Fail> {
    let len = s.chars().count();
    let i = match key {
        PyValue::Int(_) | PyValue::Bool(_) => list_index(key, len, name, "string")?,
        other => {
            return Err(Fail::type_error(format!(
                "string indices must be integers, not '{}'",
                other.type_name()
            )))
        }
    };
    let c = s.chars().nth(i).map(String::from).unwrap_or_default();
    Ok(Place::Owned(PyValue::Str(c)))
}

fn owned_index<'r>(value: PyValue, key: &PyValue, name: &str) -> Result<Place<'r>, Fail> {
    match value {
        PyValue::Dict(entries) => {
            key.require_hashable()?;
            dict_get(&entries, key)
                .cloned()
                .map(Place::Owned)
                .ok_or_else(|| missing_key(key, name))
        }
        PyValue::List(items) => {
            let i = list_index(key, items.len(), name, "list")?;
            items
                .into_iter()
                .nth(i)
                .map(Place::Owned)
                .ok_or_else(|| out_of_range(key, name))
        }
        PyValue::Tuple(items) => {
            let i = list_index(key, items.len(), name, "tuple")?;
            items
                .into_iter()
                .nth(i)
                .map(Place::Owned)
                .ok_or_else(|| out_of_range(key, name))
        }
        PyValue::Str(s) => char_at(&s, key, name),
        other => Err(not_subscriptable(&other)),
    }
}

fn not_subscriptable(value: &PyValue) -> Fail {
    Fail::type_error(format!(
        "'{}' object is not subscriptable",
        value.type_name()
    ))
}
