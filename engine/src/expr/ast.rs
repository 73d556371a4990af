//! The syntax tree of a condition.
//!
//! It only has nodes for what the language allows, so evaluation cannot meet a forbidden
//! construct: those are rejected while parsing.

use super::pyvalue::PyValue;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: NodeKind,
    /// Byte range of the node in the source, for error positions and snippets.
    pub start: usize,
    pub end: usize,
    /// Height of the subtree (a leaf is 1). The parser refuses trees above
    /// [`MAX_NESTING`](super::MAX_NESTING), which bounds every recursive walk (evaluation,
    /// analysis, and dropping the tree).
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeKind {
    /// A literal `None`, `True`, `False`, number or string.
    Const(PyValue),
    /// The name `row`: the whole row as a dict.
    Row,
    List(Vec<Node>),
    Tuple(Vec<Node>),
    Set(Vec<Node>),
    Dict(Vec<(Node, Node)>),
    /// `base[index]`; the parser guarantees `base` is row-derived (see [`Node::is_row_derived`]).
    Subscript {
        base: Box<Node>,
        index: Box<Node>,
    },
    /// `row.get(key)` or `row.get(key, default)`.
    RowGet {
        key: Box<Node>,
        default: Option<Box<Node>>,
    },
    Call {
        func: Builtin,
        args: Vec<Node>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Node>,
    },
    Binary {
        op: BinOp,
        left: Box<Node>,
        right: Box<Node>,
    },
    /// `a and b and c` / `a or b or c`, kept flat like Python's AST.
    BoolOp {
        op: BoolOpKind,
        operands: Vec<Node>,
    },
    /// `a < b <= c ...`: each link compares its left neighbour with its operand.
    Compare {
        first: Box<Node>,
        links: Vec<(CmpOp, Node)>,
    },
    /// `then if cond else otherwise`.
    IfElse {
        cond: Box<Node>,
        then: Box<Node>,
        otherwise: Box<Node>,
    },
}

impl Node {
    /// Whether subscripting this node is allowed: ELSPETH only subscripts values read from
    /// the row (`row`, `row[...]`, `row.get(...)` and chains of them).
    pub fn is_row_derived(&self) -> bool {
        matches!(
            self.kind,
            NodeKind::Row | NodeKind::Subscript { .. } | NodeKind::RowGet { .. }
        )
    }

    /// Whether the node is the literal `None` (the only thing `is` may compare with).
    pub fn is_none_literal(&self) -> bool {
        matches!(self.kind, NodeKind::Const(PyValue::None))
    }
}

/// The functions a condition may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Len,
    Str,
    Int,
    Float,
    Bool,
    Abs,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "len" => Builtin::Len,
            "str" => Builtin::Str,
            "int" => Builtin::Int,
            "float" => Builtin::Float,
            "bool" => Builtin::Bool,
            "abs" => Builtin::Abs,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Len => "len",
            Builtin::Str => "str",
            Builtin::Int => "int",
            Builtin::Float => "float",
            Builtin::Bool => "bool",
            Builtin::Abs => "abs",
        }
    }

    /// Accepted numbers of positional arguments. Python only finds a wrong count when the
    /// call runs; checking it while parsing reports it when the pipeline is validated.
    pub fn arity(self) -> (usize, usize) {
        match self {
            Builtin::Len | Builtin::Abs => (1, 1),
            Builtin::Str | Builtin::Float | Builtin::Bool => (0, 1),
            // int(x, base)
            Builtin::Int => (0, 2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    Neg,
    Pos,
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolOpKind {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Is,
    IsNot,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Is => "is",
            CmpOp::IsNot => "is not",
        }
    }
}
