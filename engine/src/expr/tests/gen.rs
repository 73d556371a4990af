//! Random expression trees and rows for the property tests, and the renderer that turns a
//! tree into condition text.
//!
//! The renderer inserts only the parentheses precedence requires (plus those of explicit
//! `Paren` nodes), so the round trip also checks that the parser's precedence and
//! associativity are Python's.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

use crate::value::Row;

/// Field names rows may have; `m` is never present, so it exercises missing keys.
pub const KEYS: &[&str] = &["a", "b", "c", "s", "l", "d", "m"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpKind {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

/// A generated expression.
#[derive(Debug, Clone)]
pub enum G {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<G>),
    Tuple(Vec<G>),
    Dict(Vec<(String, G)>),
    /// `row['k']`
    Field(String),
    /// `row.get('k')` / `row.get('k', default)`
    Get(String, Option<Box<G>>),
    /// `base[key]`, where `base` is `Field`, `Get` or `Index`.
    Index(Box<G>, Box<G>),
    Call(&'static str, Vec<G>),
    Neg(Box<G>),
    Pos(Box<G>),
    Not(Box<G>),
    Arith(ArOp, Box<G>, Box<G>),
    And(Box<G>, Box<G>),
    Or(Box<G>, Box<G>),
    Cmp(Box<G>, Vec<(CmpKind, G)>),
    IsNone(Box<G>, bool),
    /// `then if cond else otherwise`
    If(Box<G>, Box<G>, Box<G>),
    Paren(Box<G>),
}

/// Mostly fields rows usually have, so that fewer cases stop at the first missing key.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => proptest::sample::select(&KEYS[..KEYS.len() - 1]).prop_map(str::to_string),
        1 => Just("m".to_string()),
    ]
}

/// Strings from a small alphabet that still covers quoting, escapes, non-ASCII and
/// non-printable characters, plus strings `int()` and `float()` may or may not accept.
fn text() -> impl Strategy<Value = String> {
    let chars = proptest::sample::select(vec![
        "a", "b", "1", "0", " ", "'", "\"", "\\", "\n", "\t", "é", "\u{1}", "_", "-", ".", "e",
    ]);
    prop_oneof![
        3 => vec(chars, 0..6).prop_map(|parts| parts.concat()),
        1 => numeric_text(),
    ]
}

/// Text that `int()` or `float()` may or may not accept.
fn numeric_text() -> impl Strategy<Value = String> {
    let sign = proptest::sample::select(vec!["", "-", "+", "- "]);
    let body = proptest::sample::select(vec![
        "12", "1_0", "1.5", "inf", "nan", "1e3", "0x1f", "", "abc", "00", "1__0", "٣", "_1", "1_",
        ".5", "5.", "1e", "Infinity", "007",
    ]);
    let space = proptest::sample::select(vec!["", " ", "\n\t", "\u{1}"]);
    (space.clone(), sign, body, space).prop_map(|(a, s, b, c)| format!("{a}{s}{b}{c}"))
}

fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => -6i64..=6,
        1 => any::<i64>(),
        1 => proptest::sample::select(vec![
            i64::MIN,
            i64::MAX,
            1 << 53,
            (1 << 53) + 1,
            -(1 << 62),
            1000,
        ]),
    ]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            0.0, -0.0, 0.5, -1.5, 2.0, 0.1, 1e16, 1e15, 1e-5, 1e-4, 3.25, -7.0, 1e300,
        ]),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
}

fn leaf() -> impl Strategy<Value = G> {
    prop_oneof![
        1 => Just(G::Null),
        1 => any::<bool>().prop_map(G::Bool),
        3 => int().prop_map(G::Int),
        2 => float().prop_map(G::Float),
        2 => text().prop_map(G::Str),
        5 => key().prop_map(G::Field),
    ]
}

fn boxed(g: G) -> Box<G> {
    Box::new(g)
}

pub fn expr() -> impl Strategy<Value = G> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        let ar_op = proptest::sample::select(vec![
            ArOp::Add,
            ArOp::Sub,
            ArOp::Mul,
            ArOp::Div,
            ArOp::FloorDiv,
            ArOp::Mod,
        ]);
        let cmp_op = proptest::sample::select(vec![
            CmpKind::Eq,
            CmpKind::Ne,
            CmpKind::Lt,
            CmpKind::Le,
            CmpKind::Gt,
            CmpKind::Ge,
            CmpKind::In,
            CmpKind::NotIn,
        ]);
        let root = prop_oneof![
            key().prop_map(G::Field),
            (key(), proptest::option::of(inner.clone())).prop_map(|(k, d)| G::Get(k, d.map(boxed))),
        ];
        let index_chain = (root, vec(inner.clone(), 1..3)).prop_map(|(root, keys)| {
            keys.into_iter()
                .fold(root, |base, k| G::Index(boxed(base), boxed(k)))
        });
        let call = prop_oneof![
            (
                proptest::sample::select(vec!["int", "float"]),
                numeric_text()
            )
                .prop_map(|(name, text)| G::Call(name, vec![G::Str(text)])),
            inner.clone().prop_map(|x| G::Call("len", vec![x])),
            vec(inner.clone(), 0..2).prop_map(|xs| G::Call("str", xs)),
            vec(inner.clone(), 0..2).prop_map(|xs| G::Call("int", xs)),
            vec(inner.clone(), 0..2).prop_map(|xs| G::Call("float", xs)),
            vec(inner.clone(), 0..2).prop_map(|xs| G::Call("bool", xs)),
            inner.clone().prop_map(|x| G::Call("abs", vec![x])),
        ];
        prop_oneof![
            1 => vec(inner.clone(), 0..3).prop_map(G::List),
            1 => vec(inner.clone(), 0..3).prop_map(G::Tuple),
            1 => vec((key(), inner.clone()), 0..3).prop_map(G::Dict),
            3 => index_chain,
            2 => call,
            1 => inner.clone().prop_map(|x| G::Neg(boxed(x))),
            1 => inner.clone().prop_map(|x| G::Pos(boxed(x))),
            1 => inner.clone().prop_map(|x| G::Not(boxed(x))),
            4 => (ar_op, inner.clone(), inner.clone())
                .prop_map(|(op, l, r)| G::Arith(op, boxed(l), boxed(r))),
            1 => (inner.clone(), inner.clone()).prop_map(|(l, r)| G::And(boxed(l), boxed(r))),
            1 => (inner.clone(), inner.clone()).prop_map(|(l, r)| G::Or(boxed(l), boxed(r))),
            3 => (inner.clone(), vec((cmp_op, inner.clone()), 1..3))
                .prop_map(|(first, links)| G::Cmp(boxed(first), links)),
            1 => (inner.clone(), any::<bool>()).prop_map(|(x, neg)| G::IsNone(boxed(x), neg)),
            1 => (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, c, b)| G::If(boxed(a), boxed(c), boxed(b))),
            1 => inner.prop_map(|x| G::Paren(boxed(x))),
        ]
    })
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        int().prop_map(|i| Value::Number(i.into())),
        Just(Value::Number(u64::MAX.into())),
        float().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key(), inner), 0..3)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A row with each of the fields `KEYS` (except `m`) present or not.
pub fn row() -> impl Strategy<Value = Row> {
    vec(proptest::option::weighted(0.9, json()), KEYS.len() - 1).prop_map(|values| {
        KEYS.iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect()
    })
}

// Precedence levels, loosest first, as in Python's grammar.
const IF: u8 = 1;
const OR: u8 = 2;
const AND: u8 = 3;
const NOT: u8 = 4;
const CMP: u8 = 5;
const ADD: u8 = 6;
const MUL: u8 = 7;
const UNARY: u8 = 8;
const ATOM: u8 = 9;

/// Renders `g` as condition text.
pub fn render(g: &G) -> String {
    render_prec(g).0
}

/// Renders `g` where the context needs at least precedence `min`.
fn at_least(g: &G, min: u8) -> String {
    let (text, prec) = render_prec(g);
    if prec < min {
        format!("({text})")
    } else {
        text
    }
}

fn join(items: &[G]) -> String {
    items
        .iter()
        .map(|g| at_least(g, IF))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_prec(g: &G) -> (String, u8) {
    match g {
        G::Null => ("None".into(), ATOM),
        G::Bool(b) => ((if *b { "True" } else { "False" }).into(), ATOM),
        G::Int(i) if *i < 0 => (format!("-{}", i.unsigned_abs()), UNARY),
        G::Int(i) => (i.to_string(), ATOM),
        // Debug formatting prints a float literal Python reads back exactly.
        G::Float(f) if f.is_sign_negative() => (format!("-{:?}", f.abs()), UNARY),
        G::Float(f) => (format!("{f:?}"), ATOM),
        G::Str(s) => (string_literal(s), ATOM),
        G::List(items) => (format!("[{}]", join(items)), ATOM),
        G::Tuple(items) if items.len() == 1 => (format!("({},)", join(items)), ATOM),
        G::Tuple(items) => (format!("({})", join(items)), ATOM),
        G::Dict(entries) => {
            let body = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", string_literal(k), at_least(v, IF)))
                .collect::<Vec<_>>()
                .join(", ");
            (format!("{{{body}}}"), ATOM)
        }
        G::Field(k) => (format!("row[{}]", string_literal(k)), ATOM),
        G::Get(k, None) => (format!("row.get({})", string_literal(k)), ATOM),
        G::Get(k, Some(d)) => (
            format!("row.get({}, {})", string_literal(k), at_least(d, IF)),
            ATOM,
        ),
        G::Index(base, key) => (
            format!("{}[{}]", at_least(base, ATOM), at_least(key, IF)),
            ATOM,
        ),
        G::Call(name, args) => (format!("{name}({})", join(args)), ATOM),
        G::Neg(x) => (format!("-{}", at_least(x, UNARY)), UNARY),
        G::Pos(x) => (format!("+{}", at_least(x, UNARY)), UNARY),
        G::Not(x) => (format!("not {}", at_least(x, NOT)), NOT),
        G::Arith(op, l, r) => {
            let (symbol, prec) = match op {
                ArOp::Add => ("+", ADD),
                ArOp::Sub => ("-", ADD),
                ArOp::Mul => ("*", MUL),
                ArOp::Div => ("/", MUL),
                ArOp::FloorDiv => ("//", MUL),
                ArOp::Mod => ("%", MUL),
            };
            // Left-associative: the right operand needs strictly tighter binding.
            (
                format!("{} {symbol} {}", at_least(l, prec), at_least(r, prec + 1)),
                prec,
            )
        }
        G::And(l, r) => (
            format!("{} and {}", at_least(l, AND), at_least(r, NOT)),
            AND,
        ),
        G::Or(l, r) => (format!("{} or {}", at_least(l, OR), at_least(r, AND)), OR),
        G::Cmp(first, links) => {
            let mut text = at_least(first, ADD);
            for (op, operand) in links {
                let symbol = match op {
                    CmpKind::Eq => "==",
                    CmpKind::Ne => "!=",
                    CmpKind::Lt => "<",
                    CmpKind::Le => "<=",
                    CmpKind::Gt => ">",
                    CmpKind::Ge => ">=",
                    CmpKind::In => "in",
                    CmpKind::NotIn => "not in",
                };
                text = format!("{text} {symbol} {}", at_least(operand, ADD));
            }
            (text, CMP)
        }
        G::IsNone(x, negated) => (
            format!(
                "{} is {}None",
                at_least(x, ADD),
                if *negated { "not " } else { "" }
            ),
            CMP,
        ),
        G::If(then, cond, otherwise) => (
            format!(
                "{} if {} else {}",
                at_least(then, OR),
                at_least(cond, OR),
                at_least(otherwise, IF)
            ),
            IF,
        ),
        G::Paren(x) => (format!("({})", render(x)), ATOM),
    }
}

/// A Python string literal for `s`.
pub fn string_literal(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
