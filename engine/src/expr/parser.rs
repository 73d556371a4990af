//! Parser for the condition language, following Python's grammar and operator precedence
//! for the subset ELSPETH allows.
//!
//! Precedence, loosest first: `x if c else y`; `or`; `and`; `not`; comparisons (`==`, `!=`,
//! `<`, `<=`, `>`, `>=`, `in`, `not in`, `is`, `is not`, chained); `+ -`; `* / // %`; unary
//! `- +`; subscripts, calls and `row.get`; atoms. Python operators outside the subset (`**`,
//! bitwise, `@`) are recognised only to be refused with a message naming them.
//!
//! The binary and prefix operators are parsed by precedence climbing (one function for all
//! levels) rather than one function per level, so each level of bracket nesting costs only
//! a few small stack frames; error messages are built in separate cold functions for the
//! same reason (debug builds give every local of a function its own stack slot).
//!
//! Two limits keep hostile input from overflowing the stack: the recursion counter
//! (`nesting`) bounds how deep the parser itself descends, and every node's `depth` bounds
//! the tree that left-associative loops (`1+1+1+...`) build without recursing.

use super::ast::{BinOp, BoolOpKind, Builtin, CmpOp, Node, NodeKind, UnaryOp};
use super::error::{ParseError, Position};
use super::lexer::{tokenize, Tok, Token};
use super::pyvalue::PyValue;
use super::MAX_NESTING;

type PResult<T> = Result<T, ParseError>;

pub(crate) fn parse(src: &str) -> PResult<Node> {
    let tokens = tokenize(src).map_err(|e| ParseError {
        position: Position::locate(src, e.offset),
        message: e.message,
    })?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        nesting: 0,
    };
    if parser.peek().tok == Tok::Eof {
        return parser.fail(0, Problem::Empty);
    }
    let root = parser.expr_list()?;
    if parser.peek().tok != Tok::Eof {
        return Err(parser.unexpected(None));
    }
    Ok(root)
}

/// Python's reserved words. Any that the language does not use is refused by name.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

const ALLOWED_NAMES: &str =
    "conditions may only use row, True, False, None and the functions len, str, int, float, bool, abs";

// Binding strength of operators, loosest first (the conditional expression is above them).
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const COMPARE: u8 = 4;
const ADD: u8 = 5;
const MUL: u8 = 6;
const UNARY: u8 = 7;

/// An infix operator at the current token.
#[derive(Clone, Copy)]
enum Infix {
    Bool(BoolOpKind),
    Compare,
    Arith(BinOp),
}

impl Infix {
    fn precedence(self) -> u8 {
        match self {
            Infix::Bool(BoolOpKind::Or) => OR,
            Infix::Bool(BoolOpKind::And) => AND,
            Infix::Compare => COMPARE,
            Infix::Arith(BinOp::Add | BinOp::Sub) => ADD,
            Infix::Arith(_) => MUL,
        }
    }
}

/// Everything the parser can complain about. Messages are built only when an error is
/// reported, in [`Parser::fail`].
enum Problem<'a> {
    Empty,
    TooDeep,
    Lambda,
    ExpectedElse,
    NotNeedsParens,
    IsNeedsNone(CmpOp),
    Tilde,
    Starred,
    DoubleStarUnpacking,
    SubscriptNotRow,
    Slice,
    NotCallable,
    Attribute,
    GetNotCalled,
    GetArity(usize),
    KeywordArgument,
    MustBeCalled(&'a str),
    Arity(Builtin, usize),
    Keyword(&'a str),
    UnknownName(&'a str),
    Ellipsis,
}

struct Parser<'s> {
    src: &'s str,
    /// Always ends with `Tok::Eof`; `pos` never moves past it.
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.pos.min(last)]
    }

    fn peek_next(&self) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.pos + 1).min(last)]
    }

    /// Moves past the current token and returns its byte range.
    fn advance(&mut self) -> (usize, usize) {
        let token = self.peek();
        let range = (token.start, token.end);
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        range
    }

    fn start(&self) -> usize {
        self.peek().start
    }

    fn at_punct(&self, p: &str) -> bool {
        matches!(self.peek().tok, Tok::Punct(q) if q == p)
    }

    fn at_keyword(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Name(n) if n == kw)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let found = self.at_punct(p);
        if found {
            self.advance();
        }
        found
    }

    /// Consumes the punctuation `p` (returning its end offset) or explains what was found.
    fn expect(&mut self, p: &'static str) -> PResult<usize> {
        if self.at_punct(p) {
            Ok(self.advance().1)
        } else {
            Err(self.unexpected(Some(p)))
        }
    }

    /// Enters one level of nesting, refusing input nested beyond the limit.
    fn enter(&mut self) -> PResult<()> {
        if self.nesting >= MAX_NESTING {
            return self.fail(self.start(), Problem::TooDeep);
        }
        self.nesting += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    /// Builds a node, refusing trees taller than the limit.
    fn node(&self, kind: NodeKind, start: usize, end: usize) -> PResult<Node> {
        let depth = 1 + child_depth(&kind);
        if depth > MAX_NESTING {
            return self.fail(start, Problem::TooDeep);
        }
        Ok(Node {
            kind,
            start,
            end,
            depth,
        })
    }

    /// `expr (',' expr)* [',']`: a bare tuple where Python allows one (the whole
    /// condition, parentheses, subscripts).
    fn expr_list(&mut self) -> PResult<Node> {
        let first = self.expr()?;
        if self.at_punct(",") {
            self.tuple_rest(first)
        } else {
            Ok(first)
        }
    }

    fn tuple_rest(&mut self, first: Node) -> PResult<Node> {
        let start = first.start;
        let mut end = first.end;
        let mut items = vec![first];
        while self.at_punct(",") {
            end = self.advance().1;
            if matches!(
                self.peek().tok,
                Tok::Eof | Tok::Punct(")" | "]" | "}" | ":")
            ) {
                break;
            }
            let item = self.expr()?;
            end = item.end;
            items.push(item);
        }
        self.node(NodeKind::Tuple(items), start, end)
    }

    /// A full expression, including the conditional `then if cond else otherwise`.
    fn expr(&mut self) -> PResult<Node> {
        self.enter()?;
        let result = self.conditional();
        self.leave();
        result
    }

    fn conditional(&mut self) -> PResult<Node> {
        if self.at_keyword("lambda") {
            return self.fail(self.start(), Problem::Lambda);
        }
        let then = self.operators(OR)?;
        if self.at_keyword("if") {
            self.conditional_rest(then)
        } else {
            Ok(then)
        }
    }

    /// `if cond else otherwise` after `then`.
    fn conditional_rest(&mut self, then: Node) -> PResult<Node> {
        self.advance();
        let cond = self.operators(OR)?;
        if !self.at_keyword("else") {
            return self.fail(self.start(), Problem::ExpectedElse);
        }
        self.advance();
        let otherwise = self.expr()?;
        let (start, end) = (then.start, otherwise.end);
        let kind = NodeKind::IfElse {
            cond: Box::new(cond),
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        };
        self.node(kind, start, end)
    }

    /// The infix operator at the current token, if any. Python operators outside the
    /// language are refused here, where they would otherwise be taken as the end of the
    /// expression.
    fn infix(&self) -> PResult<Option<Infix>> {
        Ok(Some(match &self.peek().tok {
            Tok::Name(n) if n == "or" => Infix::Bool(BoolOpKind::Or),
            Tok::Name(n) if n == "and" => Infix::Bool(BoolOpKind::And),
            Tok::Punct("+") => Infix::Arith(BinOp::Add),
            Tok::Punct("-") => Infix::Arith(BinOp::Sub),
            Tok::Punct("*") => Infix::Arith(BinOp::Mul),
            Tok::Punct("/") => Infix::Arith(BinOp::Div),
            Tok::Punct("//") => Infix::Arith(BinOp::FloorDiv),
            Tok::Punct("%") => Infix::Arith(BinOp::Mod),
            Tok::Punct("**" | "@" | "|" | "&" | "^" | "<<" | ">>") => {
                return Err(self.unexpected(None))
            }
            _ if self.comparison_op().is_some() => Infix::Compare,
            _ => return Ok(None),
        }))
    }

    /// Parses operators binding at least as tightly as `min` (precedence climbing).
    fn operators(&mut self, min: u8) -> PResult<Node> {
        let mut left = self.prefix(min)?;
        while let Some(op) = self.infix()? {
            if op.precedence() < min {
                break;
            }
            left = self.apply_infix(op, left)?;
        }
        Ok(left)
    }

    fn apply_infix(&mut self, op: Infix, left: Node) -> PResult<Node> {
        match op {
            Infix::Bool(kind) => self.bool_chain(kind, left),
            Infix::Compare => self.comparison_chain(left),
            Infix::Arith(op) => self.arith(op, left),
        }
    }

    /// `left or b or c`: one node, as in Python's AST.
    fn bool_chain(&mut self, kind: BoolOpKind, left: Node) -> PResult<Node> {
        let keyword = if matches!(kind, BoolOpKind::Or) {
            "or"
        } else {
            "and"
        };
        let operand_min = Infix::Bool(kind).precedence() + 1;
        let start = left.start;
        let mut operands = vec![left];
        while self.at_keyword(keyword) {
            self.advance();
            operands.push(self.operators(operand_min)?);
        }
        let end = operands.last().map_or(start, |n| n.end);
        self.node(NodeKind::BoolOp { op: kind, operands }, start, end)
    }

    /// `left op right` for a left-associative arithmetic operator.
    fn arith(&mut self, op: BinOp, left: Node) -> PResult<Node> {
        self.advance();
        let right = self.operators(Infix::Arith(op).precedence() + 1)?;
        let (start, end) = (left.start, right.end);
        let kind = NodeKind::Binary {
            op,
            left: Box::new(left),
            right: Box::new(right),
        };
        self.node(kind, start, end)
    }

    /// The comparison operator at the current token and how many tokens it spans.
    fn comparison_op(&self) -> Option<(CmpOp, usize)> {
        let next_is = |word: &str| matches!(&self.peek_next().tok, Tok::Name(m) if m == word);
        let op = match &self.peek().tok {
            Tok::Punct("==") => CmpOp::Eq,
            Tok::Punct("!=") => CmpOp::Ne,
            Tok::Punct("<") => CmpOp::Lt,
            Tok::Punct("<=") => CmpOp::Le,
            Tok::Punct(">") => CmpOp::Gt,
            Tok::Punct(">=") => CmpOp::Ge,
            Tok::Name(n) if n == "in" => CmpOp::In,
            Tok::Name(n) if n == "is" && next_is("not") => return Some((CmpOp::IsNot, 2)),
            Tok::Name(n) if n == "is" => CmpOp::Is,
            Tok::Name(n) if n == "not" && next_is("in") => return Some((CmpOp::NotIn, 2)),
            _ => return None,
        };
        Some((op, 1))
    }

    /// `first op operand op operand ...`, with the current token at the first operator.
    fn comparison_chain(&mut self, first: Node) -> PResult<Node> {
        let mut links: Vec<(CmpOp, Node)> = Vec::new();
        while let Some((op, tokens)) = self.comparison_op() {
            let op_at = self.start();
            for _ in 0..tokens {
                self.advance();
            }
            let operand = self.operators(COMPARE + 1)?;
            if matches!(op, CmpOp::Is | CmpOp::IsNot) {
                let left = links.last().map_or(&first, |(_, n)| n);
                if !left.is_none_literal() && !operand.is_none_literal() {
                    return self.fail(op_at, Problem::IsNeedsNone(op));
                }
            }
            links.push((op, operand));
        }
        let start = first.start;
        let end = links.last().map_or(first.end, |(_, n)| n.end);
        let kind = NodeKind::Compare {
            first: Box::new(first),
            links,
        };
        self.node(kind, start, end)
    }

    /// Prefix operators (`not`, `-`, `+`) or a primary expression.
    fn prefix(&mut self, min: u8) -> PResult<Node> {
        let start = self.start();
        let (op, operand_min) = match &self.peek().tok {
            // `not` binds looser than comparisons and arithmetic: `1 + not x` is invalid.
            Tok::Name(n) if n == "not" && min > NOT => {
                return self.fail(start, Problem::NotNeedsParens)
            }
            Tok::Name(n) if n == "not" => (UnaryOp::Not, NOT),
            Tok::Punct("-") => (UnaryOp::Neg, UNARY),
            Tok::Punct("+") => (UnaryOp::Pos, UNARY),
            Tok::Punct("~") => return self.fail(start, Problem::Tilde),
            Tok::Punct("*") => return self.fail(start, Problem::Starred),
            Tok::Punct("**") => return self.fail(start, Problem::DoubleStarUnpacking),
            _ => return self.postfix(),
        };
        self.unary(op, operand_min, start)
    }

    fn unary(&mut self, op: UnaryOp, operand_min: u8, start: usize) -> PResult<Node> {
        self.advance();
        self.enter()?;
        let operand = self.operators(operand_min);
        self.leave();
        let operand = operand?;
        let end = operand.end;
        let kind = NodeKind::Unary {
            op,
            operand: Box::new(operand),
        };
        self.node(kind, start, end)
    }

    /// An atom followed by subscripts and `.get(...)`.
    fn postfix(&mut self) -> PResult<Node> {
        let node = self.atom()?;
        self.trailers(node)
    }

    fn trailers(&mut self, mut node: Node) -> PResult<Node> {
        loop {
            let at = self.start();
            match self.peek().tok {
                Tok::Punct("[") => node = self.subscript(node)?,
                Tok::Punct(".") => node = self.row_get(node)?,
                Tok::Punct("(") => return self.fail(at, Problem::NotCallable),
                // Python's `**` binds tighter than unary minus; it is not in the language,
                // but caught here so the message names it.
                Tok::Punct("**") => return Err(self.unexpected(None)),
                _ => return Ok(node),
            }
        }
    }

    fn subscript(&mut self, base: Node) -> PResult<Node> {
        let at = self.start();
        if !base.is_row_derived() {
            return self.fail(at, Problem::SubscriptNotRow);
        }
        self.advance();
        if self.at_punct(":") {
            return self.fail(self.start(), Problem::Slice);
        }
        let index = self.expr_list()?;
        if self.at_punct(":") {
            return self.fail(self.start(), Problem::Slice);
        }
        let end = self.expect("]")?;
        let start = base.start;
        let kind = NodeKind::Subscript {
            base: Box::new(base),
            index: Box::new(index),
        };
        self.node(kind, start, end)
    }

    /// `.get(key[, default])` after `row`: the only attribute the language has.
    fn row_get(&mut self, base: Node) -> PResult<Node> {
        let dot = self.advance().0;
        let is_get = matches!(&self.peek().tok, Tok::Name(n) if n == "get");
        if !(is_get && base.kind == NodeKind::Row) {
            return self.fail(dot, Problem::Attribute);
        }
        self.advance();
        if !self.at_punct("(") {
            return self.fail(dot, Problem::GetNotCalled);
        }
        let (mut args, end) = self.call_args()?;
        if args.is_empty() || args.len() > 2 {
            return self.fail(dot, Problem::GetArity(args.len()));
        }
        let default = if args.len() == 2 { args.pop() } else { None };
        let Some(key) = args.pop() else {
            return self.fail(dot, Problem::GetArity(0));
        };
        let kind = NodeKind::RowGet {
            key: Box::new(key),
            default: default.map(Box::new),
        };
        self.node(kind, base.start, end)
    }

    /// Parses `(arg, ...)` with the current token at `(`; returns the arguments and the end
    /// offset of the closing parenthesis. Only positional arguments are allowed.
    fn call_args(&mut self) -> PResult<(Vec<Node>, usize)> {
        self.expect("(")?;
        let mut args = Vec::new();
        while !self.at_punct(")") {
            let keyword = matches!(self.peek().tok, Tok::Name(_))
                && matches!(self.peek_next().tok, Tok::Punct("="));
            if keyword {
                return self.fail(self.start(), Problem::KeywordArgument);
            }
            args.push(self.expr()?);
            if !self.eat_punct(",") {
                break;
            }
        }
        let end = self.expect(")")?;
        Ok((args, end))
    }

    fn atom(&mut self) -> PResult<Node> {
        let Token { start, end, .. } = *self.peek();
        let value = match &self.peek().tok {
            Tok::Int(i) => PyValue::Int(*i),
            Tok::Float(f) => PyValue::Float(*f),
            Tok::Str(_) => return self.strings(),
            Tok::Name(_) => return self.name(),
            Tok::Punct("(") => return self.parenthesized(),
            Tok::Punct("[") => return self.list(),
            Tok::Punct("{") => return self.brace(),
            Tok::Punct("...") => return self.fail(start, Problem::Ellipsis),
            _ => return Err(self.unexpected(None)),
        };
        self.advance();
        self.node(NodeKind::Const(value), start, end)
    }

    /// One or more adjacent string literals, which concatenate as in Python.
    fn strings(&mut self) -> PResult<Node> {
        let start = self.start();
        let mut text = String::new();
        let mut end = start;
        while let Tok::Str(s) = &self.peek().tok {
            text.push_str(s);
            end = self.advance().1;
        }
        self.node(NodeKind::Const(PyValue::Str(text)), start, end)
    }

    fn name(&mut self) -> PResult<Node> {
        let Token { start, end, .. } = *self.peek();
        let Tok::Name(name) = &self.peek().tok else {
            return Err(self.unexpected(None));
        };
        let kind = match name.as_str() {
            "True" => NodeKind::Const(PyValue::Bool(true)),
            "False" => NodeKind::Const(PyValue::Bool(false)),
            "None" => NodeKind::Const(PyValue::None),
            "row" => NodeKind::Row,
            other => match Builtin::from_name(other) {
                Some(func) => return self.call(func),
                None if matches!(other, "for" | "async") => return Err(self.unexpected(None)),
                None if other == "lambda" => return self.fail(start, Problem::Lambda),
                None if KEYWORDS.contains(&other) => {
                    return self.fail(start, Problem::Keyword(other))
                }
                None => return self.fail(start, Problem::UnknownName(other)),
            },
        };
        self.advance();
        self.node(kind, start, end)
    }

    /// A call of a builtin, with the current token at its name.
    fn call(&mut self, func: Builtin) -> PResult<Node> {
        let start = self.advance().0;
        if !self.at_punct("(") {
            return self.fail(start, Problem::MustBeCalled(func.name()));
        }
        let (args, end) = self.call_args()?;
        let (min, max) = func.arity();
        if args.len() < min || args.len() > max {
            return self.fail(start, Problem::Arity(func, args.len()));
        }
        self.node(NodeKind::Call { func, args }, start, end)
    }

    /// `()`, `(expr)`, or a tuple `(a, b)` / `(a,)`.
    fn parenthesized(&mut self) -> PResult<Node> {
        let start = self.advance().0;
        if self.at_punct(")") {
            let end = self.advance().1;
            return self.node(NodeKind::Tuple(Vec::new()), start, end);
        }
        let inner = self.expr_list()?;
        self.close_parenthesized(inner, start)
    }

    fn close_parenthesized(&mut self, inner: Node, start: usize) -> PResult<Node> {
        let end = self.expect(")")?;
        Ok(match inner.kind {
            // The parentheses belong to the tuple's text.
            NodeKind::Tuple(_) => Node {
                start,
                end,
                ..inner
            },
            _ => inner,
        })
    }

    fn list(&mut self) -> PResult<Node> {
        let start = self.advance().0;
        let items = self.items("]")?;
        let end = self.expect("]")?;
        self.node(NodeKind::List(items), start, end)
    }

    /// Comma-separated expressions up to (not including) `close`, trailing comma allowed.
    fn items(&mut self, close: &str) -> PResult<Vec<Node>> {
        let mut items = Vec::new();
        while !self.at_punct(close) {
            items.push(self.expr()?);
            if !self.eat_punct(",") {
                break;
            }
        }
        Ok(items)
    }

    /// `{}` (empty dict), `{k: v, ...}` or `{a, b, ...}` (set).
    fn brace(&mut self) -> PResult<Node> {
        let start = self.advance().0;
        if self.at_punct("}") {
            let end = self.advance().1;
            return self.node(NodeKind::Dict(Vec::new()), start, end);
        }
        let kind = self.brace_contents()?;
        let end = self.expect("}")?;
        self.node(kind, start, end)
    }

    fn brace_contents(&mut self) -> PResult<NodeKind> {
        let first = self.expr()?;
        if self.at_punct(":") {
            self.dict_rest(first)
        } else {
            self.set_rest(first)
        }
    }

    fn set_rest(&mut self, first: Node) -> PResult<NodeKind> {
        let mut items = vec![first];
        if self.eat_punct(",") {
            items.extend(self.items("}")?);
        }
        Ok(NodeKind::Set(items))
    }

    /// The rest of a dict display, with the current token at the first `:`.
    fn dict_rest(&mut self, first: Node) -> PResult<NodeKind> {
        self.advance();
        let value = self.expr()?;
        let mut pairs = vec![(first, value)];
        while self.eat_punct(",") {
            if self.at_punct("}") {
                break;
            }
            let key = self.expr()?;
            self.expect(":")?;
            let value = self.expr()?;
            pairs.push((key, value));
        }
        Ok(NodeKind::Dict(pairs))
    }

    #[cold]
    #[inline(never)]
    fn fail<T>(&self, offset: usize, problem: Problem<'_>) -> PResult<T> {
        let message = match problem {
            Problem::Empty => "empty condition".to_string(),
            Problem::TooDeep => {
                format!("condition nested too deeply (more than {MAX_NESTING} levels)")
            }
            Problem::Lambda => "lambda expressions are not allowed".to_string(),
            Problem::ExpectedElse => format!(
                "expected 'else' after 'if' expression, found {}",
                describe(&self.peek().tok)
            ),
            Problem::NotNeedsParens => {
                "'not x' must be in parentheses here, e.g. 1 + (not x)".to_string()
            }
            Problem::IsNeedsNone(op) => format!(
                "'{}' may only be used to compare with None; use '{}' for values",
                op.symbol(),
                if op == CmpOp::Is { "==" } else { "!=" }
            ),
            Problem::Tilde => "the bitwise operator '~' is not supported in conditions".to_string(),
            Problem::Starred => "starred expressions (*x) are not allowed".to_string(),
            Problem::DoubleStarUnpacking => "unpacking with ** is not allowed".to_string(),
            Problem::SubscriptNotRow => "subscripts are only allowed on values read from the \
                                         row (row[...], row.get(...))"
                .to_string(),
            Problem::Slice => "slices are not allowed".to_string(),
            Problem::NotCallable => "only the functions len, str, int, float, bool and abs \
                                     (and row.get) can be called"
                .to_string(),
            Problem::Attribute => {
                "attribute access is not allowed (the only method is row.get)".to_string()
            }
            Problem::GetNotCalled => {
                "row.get must be called: row.get('field') or row.get('field', default)".to_string()
            }
            Problem::GetArity(given) => {
                format!("row.get() takes 1 or 2 arguments ({given} given)")
            }
            Problem::KeywordArgument => "keyword arguments are not allowed".to_string(),
            Problem::MustBeCalled(name) => format!("'{name}' must be called, e.g. {name}(x)"),
            Problem::Arity(func, given) => {
                let takes = match func.arity() {
                    (1, 1) => "exactly 1 argument".to_string(),
                    (a, b) => format!("{a} to {b} arguments"),
                };
                format!("{}() takes {takes} ({given} given)", func.name())
            }
            Problem::Keyword(word) => match word {
                "not" => "'not x' must be in parentheses here, e.g. 1 + (not x)".to_string(),
                "and" | "or" | "in" | "is" | "if" | "else" => {
                    format!("expected an expression before '{word}'")
                }
                _ => format!("the keyword '{word}' is not allowed in conditions"),
            },
            Problem::UnknownName(name) => {
                let hint = match name {
                    "true" => " (did you mean True?)",
                    "false" => " (did you mean False?)",
                    "null" | "none" | "nil" => " (did you mean None?)",
                    _ => "",
                };
                format!("unknown name '{name}'{hint}: {ALLOWED_NAMES}")
            }
            Problem::Ellipsis => "'...' (Ellipsis) is not allowed".to_string(),
        };
        Err(ParseError {
            position: Position::locate(self.src, offset),
            message,
        })
    }

    /// An error for the current token, which nothing in the grammar accepts here. Tokens
    /// that start a forbidden construct get a message naming the construct.
    #[cold]
    #[inline(never)]
    fn unexpected(&self, expected: Option<&str>) -> ParseError {
        let token = self.peek();
        let special = match &token.tok {
            Tok::Punct("=") => Some("'=' is assignment, which is not allowed; use '==' to compare"),
            Tok::Punct(":=") => Some("assignment expressions (:=) are not allowed"),
            Tok::Punct(p)
                if p.len() >= 2 && p.ends_with('=') && !matches!(*p, "==" | "!=" | "<=" | ">=") =>
            {
                Some("augmented assignment is not allowed")
            }
            Tok::Punct(";") => Some("';' is not allowed: a condition is a single expression"),
            Tok::Punct("**") => Some("the ** operator is not supported in conditions"),
            Tok::Punct("@") => Some("the @ operator is not supported in conditions"),
            Tok::Punct("|" | "&" | "^" | "<<" | ">>") => {
                Some("bitwise operators (| & ^ << >>) are not supported in conditions")
            }
            Tok::Name(n) if n == "for" || n == "async" => {
                Some("comprehensions and generator expressions are not allowed")
            }
            Tok::Name(n) if n == "lambda" => Some("lambda expressions are not allowed"),
            _ => None,
        };
        let message = match (special, expected) {
            (Some(message), _) => message.to_string(),
            (None, Some(p)) => format!("expected '{p}', found {}", describe(&token.tok)),
            (None, None) if token.tok == Tok::Eof => "unexpected end of condition".to_string(),
            (None, None) => format!("unexpected {}", describe(&token.tok)),
        };
        ParseError {
            position: Position::locate(self.src, token.start),
            message,
        }
    }
}

fn child_depth(kind: &NodeKind) -> usize {
    let max = |nodes: &mut dyn Iterator<Item = &Node>| nodes.map(|n| n.depth).max().unwrap_or(0);
    match kind {
        NodeKind::Const(_) | NodeKind::Row => 0,
        NodeKind::List(items) | NodeKind::Tuple(items) | NodeKind::Set(items) => {
            max(&mut items.iter())
        }
        NodeKind::Call { args, .. } => max(&mut args.iter()),
        NodeKind::Dict(pairs) => max(&mut pairs.iter().flat_map(|(k, v)| [k, v])),
        NodeKind::Subscript { base, index } => base.depth.max(index.depth),
        NodeKind::RowGet { key, default } => key.depth.max(default.as_ref().map_or(0, |d| d.depth)),
        NodeKind::Unary { operand, .. } => operand.depth,
        NodeKind::Binary { left, right, .. } => left.depth.max(right.depth),
        NodeKind::BoolOp { operands, .. } => max(&mut operands.iter()),
        NodeKind::Compare { first, links } => {
            first.depth.max(max(&mut links.iter().map(|(_, n)| n)))
        }
        NodeKind::IfElse {
            cond,
            then,
            otherwise,
        } => cond.depth.max(then.depth).max(otherwise.depth),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Name(n) if KEYWORDS.contains(&n.as_str()) => format!("keyword '{n}'"),
        Tok::Name(n) => format!("name '{n}' (missing operator or comma?)"),
        Tok::Int(_) | Tok::Float(_) => "a number (missing operator or comma?)".to_string(),
        Tok::Str(_) => "a string (missing operator or comma?)".to_string(),
        Tok::Punct(p) => format!("'{p}'"),
        Tok::Eof => "the end of the condition".to_string(),
    }
}
