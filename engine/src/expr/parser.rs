//! Recursive-descent parser for the condition language, following Python's grammar and
//! operator precedence for the subset ELSPETH allows.
//!
//! Precedence, loosest first: `x if c else y`; `or`; `and`; `not`; comparisons (`==`, `!=`,
//! `<`, `<=`, `>`, `>=`, `in`, `not in`, `is`, `is not`, chained); `+ -`; `* / // %`; unary
//! `- +`; subscripts, calls and `row.get`; atoms. Python operators outside the subset (`**`,
//! bitwise, `@`) are recognised only to be refused with a message naming them.
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
        return Err(parser.error(0, "empty condition"));
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

    fn advance(&mut self) -> Token {
        let tok = self.peek().clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        tok
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

    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            position: Position::locate(self.src, offset),
            message: message.into(),
        }
    }

    /// Consumes the punctuation `p` or explains what was found instead.
    fn expect(&mut self, p: &'static str) -> PResult<Token> {
        if self.at_punct(p) {
            Ok(self.advance())
        } else {
            Err(self.unexpected(Some(p)))
        }
    }

    /// An error for the current token, which nothing in the grammar accepts here. Tokens
    /// that start a forbidden construct get a message naming the construct.
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
        if let Some(message) = special {
            return self.error(token.start, message);
        }
        let found = describe(&token.tok);
        let message = match expected {
            Some(p) => format!("expected '{p}', found {found}"),
            None if token.tok == Tok::Eof => "unexpected end of condition".to_string(),
            None => format!("unexpected {found}"),
        };
        self.error(token.start, message)
    }

    /// Runs `f` one recursion level deeper, refusing input nested beyond the limit.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.nesting >= MAX_NESTING {
            return Err(self.error(
                self.peek().start,
                format!("condition nested too deeply (more than {MAX_NESTING} levels)"),
            ));
        }
        self.nesting += 1;
        let result = f(self);
        self.nesting -= 1;
        result
    }

    /// Builds a node, refusing trees taller than the limit.
    fn node(&self, kind: NodeKind, start: usize, end: usize) -> PResult<Node> {
        let depth = 1 + child_depth(&kind);
        if depth > MAX_NESTING {
            return Err(self.error(
                start,
                format!("condition nested too deeply (more than {MAX_NESTING} levels)"),
            ));
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
        if !self.at_punct(",") {
            return Ok(first);
        }
        let start = first.start;
        let mut end = first.end;
        let mut items = vec![first];
        while self.at_punct(",") {
            end = self.advance().end;
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

    /// A full expression: the conditional expression `a if c else b`.
    fn expr(&mut self) -> PResult<Node> {
        self.nested(|p| {
            if p.at_keyword("lambda") {
                return Err(p.unexpected(None));
            }
            let then = p.or_test()?;
            if !p.at_keyword("if") {
                return Ok(then);
            }
            p.advance();
            let cond = p.or_test()?;
            if !p.at_keyword("else") {
                return Err(p.error(
                    p.peek().start,
                    format!(
                        "expected 'else' after 'if' expression, found {}",
                        describe(&p.peek().tok)
                    ),
                ));
            }
            p.advance();
            let otherwise = p.expr()?;
            let (start, end) = (then.start, otherwise.end);
            p.node(
                NodeKind::IfElse {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                },
                start,
                end,
            )
        })
    }

    fn or_test(&mut self) -> PResult<Node> {
        self.bool_chain("or", BoolOpKind::Or, Self::and_test)
    }

    fn and_test(&mut self) -> PResult<Node> {
        self.bool_chain("and", BoolOpKind::And, Self::not_test)
    }

    fn bool_chain(
        &mut self,
        keyword: &str,
        op: BoolOpKind,
        operand: fn(&mut Self) -> PResult<Node>,
    ) -> PResult<Node> {
        let first = operand(self)?;
        if !self.at_keyword(keyword) {
            return Ok(first);
        }
        let start = first.start;
        let mut operands = vec![first];
        while self.at_keyword(keyword) {
            self.advance();
            operands.push(operand(self)?);
        }
        let end = operands.last().map_or(start, |n| n.end);
        self.node(NodeKind::BoolOp { op, operands }, start, end)
    }

    fn not_test(&mut self) -> PResult<Node> {
        if !self.at_keyword("not") {
            return self.comparison();
        }
        let start = self.advance().start;
        let operand = self.nested(Self::not_test)?;
        let end = operand.end;
        self.node(
            NodeKind::Unary {
                op: UnaryOp::Not,
                operand: Box::new(operand),
            },
            start,
            end,
        )
    }

    /// The comparison operator at the current token, if any, without consuming it.
    fn comparison_op(&self) -> Option<(CmpOp, usize)> {
        let op = match &self.peek().tok {
            Tok::Punct("==") => CmpOp::Eq,
            Tok::Punct("!=") => CmpOp::Ne,
            Tok::Punct("<") => CmpOp::Lt,
            Tok::Punct("<=") => CmpOp::Le,
            Tok::Punct(">") => CmpOp::Gt,
            Tok::Punct(">=") => CmpOp::Ge,
            Tok::Name(n) if n == "in" => CmpOp::In,
            Tok::Name(n) if n == "is" => {
                if matches!(&self.peek_next().tok, Tok::Name(m) if m == "not") {
                    return Some((CmpOp::IsNot, 2));
                }
                CmpOp::Is
            }
            Tok::Name(n) if n == "not" => {
                if matches!(&self.peek_next().tok, Tok::Name(m) if m == "in") {
                    return Some((CmpOp::NotIn, 2));
                }
                return None;
            }
            _ => return None,
        };
        Some((op, 1))
    }

    fn comparison(&mut self) -> PResult<Node> {
        let first = self.arith()?;
        let mut links: Vec<(CmpOp, Node)> = Vec::new();
        while let Some((op, tokens)) = self.comparison_op() {
            let op_at = self.peek().start;
            for _ in 0..tokens {
                self.advance();
            }
            let operand = self.arith()?;
            if matches!(op, CmpOp::Is | CmpOp::IsNot) {
                let left = links.last().map_or(&first, |(_, n)| n);
                if !left.is_none_literal() && !operand.is_none_literal() {
                    return Err(self.error(
                        op_at,
                        format!(
                            "'{}' may only be used to compare with None; use '{}' for values",
                            op.symbol(),
                            if op == CmpOp::Is { "==" } else { "!=" }
                        ),
                    ));
                }
            }
            links.push((op, operand));
        }
        if links.is_empty() {
            return Ok(first);
        }
        let start = first.start;
        let end = links.last().map_or(first.end, |(_, n)| n.end);
        self.node(
            NodeKind::Compare {
                first: Box::new(first),
                links,
            },
            start,
            end,
        )
    }

    fn arith(&mut self) -> PResult<Node> {
        let mut left = self.term()?;
        loop {
            let op = match self.peek().tok {
                Tok::Punct("+") => BinOp::Add,
                Tok::Punct("-") => BinOp::Sub,
                Tok::Punct("|" | "&" | "^" | "<<" | ">>") => return Err(self.unexpected(None)),
                _ => return Ok(left),
            };
            self.advance();
            let right = self.term()?;
            left = self.binary(op, left, right)?;
        }
    }

    fn term(&mut self) -> PResult<Node> {
        let mut left = self.factor()?;
        loop {
            let op = match self.peek().tok {
                Tok::Punct("*") => BinOp::Mul,
                Tok::Punct("/") => BinOp::Div,
                Tok::Punct("//") => BinOp::FloorDiv,
                Tok::Punct("%") => BinOp::Mod,
                Tok::Punct("@") => return Err(self.unexpected(None)),
                _ => return Ok(left),
            };
            self.advance();
            let right = self.factor()?;
            left = self.binary(op, left, right)?;
        }
    }

    fn binary(&self, op: BinOp, left: Node, right: Node) -> PResult<Node> {
        let (start, end) = (left.start, right.end);
        self.node(
            NodeKind::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            },
            start,
            end,
        )
    }

    fn factor(&mut self) -> PResult<Node> {
        let token = self.peek().clone();
        let op = match token.tok {
            Tok::Punct("-") => UnaryOp::Neg,
            Tok::Punct("+") => UnaryOp::Pos,
            Tok::Punct("~") => {
                return Err(self.error(
                    token.start,
                    "the bitwise operator '~' is not supported in conditions",
                ))
            }
            Tok::Punct("*") => {
                return Err(self.error(token.start, "starred expressions (*x) are not allowed"))
            }
            Tok::Punct("**") => {
                return Err(self.error(token.start, "unpacking with ** is not allowed"))
            }
            _ => return self.power(),
        };
        self.advance();
        let operand = self.nested(Self::factor)?;
        let end = operand.end;
        self.node(
            NodeKind::Unary {
                op,
                operand: Box::new(operand),
            },
            token.start,
            end,
        )
    }

    /// Python's `**` binds tighter than unary minus; it is not in the language, but it is
    /// caught here so that the message names it.
    fn power(&mut self) -> PResult<Node> {
        let base = self.postfix()?;
        if self.at_punct("**") {
            return Err(self.unexpected(None));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> PResult<Node> {
        let mut node = self.atom()?;
        loop {
            let token = self.peek().clone();
            match token.tok {
                Tok::Punct("[") => {
                    if !node.is_row_derived() {
                        return Err(self.error(
                            token.start,
                            "subscripts are only allowed on values read from the row \
                             (row[...], row.get(...))",
                        ));
                    }
                    self.advance();
                    if self.at_punct(":") {
                        return Err(self.error(self.peek().start, "slices are not allowed"));
                    }
                    let index = self.nested(Self::expr_list)?;
                    if self.at_punct(":") {
                        return Err(self.error(self.peek().start, "slices are not allowed"));
                    }
                    let end = self.expect("]")?.end;
                    let start = node.start;
                    node = self.node(
                        NodeKind::Subscript {
                            base: Box::new(node),
                            index: Box::new(index),
                        },
                        start,
                        end,
                    )?;
                }
                Tok::Punct("(") => {
                    return Err(self.error(
                        token.start,
                        "only the functions len, str, int, float, bool and abs (and row.get) \
                         can be called",
                    ))
                }
                Tok::Punct(".") => {
                    self.advance();
                    let is_get = matches!(&self.peek().tok, Tok::Name(n) if n == "get");
                    if !(is_get && node.kind == NodeKind::Row) {
                        return Err(self.error(
                            token.start,
                            "attribute access is not allowed (the only method is row.get)",
                        ));
                    }
                    self.advance();
                    if !self.at_punct("(") {
                        return Err(self.error(
                            token.start,
                            "row.get must be called: row.get('field') or row.get('field', default)",
                        ));
                    }
                    let (mut args, end) = self.call_args()?;
                    if args.is_empty() || args.len() > 2 {
                        return Err(self.error(
                            token.start,
                            format!("row.get() takes 1 or 2 arguments ({} given)", args.len()),
                        ));
                    }
                    let default = if args.len() == 2 { args.pop() } else { None };
                    let key = args
                        .pop()
                        .ok_or_else(|| self.error(token.start, "missing key"))?;
                    node = self.node(
                        NodeKind::RowGet {
                            key: Box::new(key),
                            default: default.map(Box::new),
                        },
                        node.start,
                        end,
                    )?;
                }
                _ => return Ok(node),
            }
        }
    }

    /// Parses `(arg, ...)` with the current token at `(`; returns the arguments and the end
    /// offset of the closing parenthesis. Only positional arguments are allowed.
    fn call_args(&mut self) -> PResult<(Vec<Node>, usize)> {
        self.expect("(")?;
        let mut args = Vec::new();
        loop {
            if self.at_punct(")") {
                break;
            }
            let keyword = matches!(self.peek().tok, Tok::Name(_))
                && matches!(self.peek_next().tok, Tok::Punct("="));
            if keyword {
                return Err(self.error(self.peek().start, "keyword arguments are not allowed"));
            }
            args.push(self.expr()?);
            if !self.eat_punct(",") {
                break;
            }
        }
        let end = self.expect(")")?.end;
        Ok((args, end))
    }

    fn atom(&mut self) -> PResult<Node> {
        let token = self.peek().clone();
        let start = token.start;
        match token.tok {
            Tok::Int(i) => {
                self.advance();
                self.node(NodeKind::Const(PyValue::Int(i)), start, token.end)
            }
            Tok::Float(f) => {
                self.advance();
                self.node(NodeKind::Const(PyValue::Float(f)), start, token.end)
            }
            Tok::Str(_) => {
                // Adjacent literals concatenate, as in Python: 'a' "b" == 'ab'.
                let mut text = String::new();
                let mut end = start;
                while let Tok::Str(s) = &self.peek().tok {
                    text.push_str(s);
                    end = self.advance().end;
                }
                self.node(NodeKind::Const(PyValue::Str(text)), start, end)
            }
            Tok::Name(name) => self.name(&name, start, token.end),
            Tok::Punct("(") => self.parenthesized(start),
            Tok::Punct("[") => self.list(start),
            Tok::Punct("{") => self.brace(start),
            Tok::Punct("...") => Err(self.error(start, "'...' (Ellipsis) is not allowed")),
            _ => Err(self.unexpected(None)),
        }
    }

    fn name(&mut self, name: &str, start: usize, end: usize) -> PResult<Node> {
        let constant = match name {
            "True" => Some(PyValue::Bool(true)),
            "False" => Some(PyValue::Bool(false)),
            "None" => Some(PyValue::None),
            _ => None,
        };
        if let Some(value) = constant {
            self.advance();
            return self.node(NodeKind::Const(value), start, end);
        }
        if name == "row" {
            self.advance();
            return self.node(NodeKind::Row, start, end);
        }
        if let Some(func) = Builtin::from_name(name) {
            self.advance();
            if !self.at_punct("(") {
                return Err(self.error(start, format!("'{name}' must be called, e.g. {name}(x)")));
            }
            let (args, end) = self.call_args()?;
            let (min, max) = func.arity();
            if args.len() < min || args.len() > max {
                let takes = match (min, max) {
                    (a, b) if a == b => {
                        format!("exactly {a} argument{}", if a == 1 { "" } else { "s" })
                    }
                    (a, b) => format!("{a} to {b} arguments"),
                };
                return Err(self.error(
                    start,
                    format!("{name}() takes {takes} ({} given)", args.len()),
                ));
            }
            return self.node(NodeKind::Call { func, args }, start, end);
        }
        if KEYWORDS.contains(&name) {
            let message = match name {
                "lambda" | "for" | "async" => return Err(self.unexpected(None)),
                "not" => "'not x' must be in parentheses here, e.g. 1 + (not x)".to_string(),
                "and" | "or" | "in" | "is" | "if" | "else" => {
                    format!("expected an expression before '{name}'")
                }
                _ => format!("the keyword '{name}' is not allowed in conditions"),
            };
            return Err(self.error(start, message));
        }
        let hint = match name {
            "true" => " (did you mean True?)",
            "false" => " (did you mean False?)",
            "null" | "none" | "nil" => " (did you mean None?)",
            _ => "",
        };
        Err(self.error(
            start,
            format!("unknown name '{name}'{hint}: {ALLOWED_NAMES}"),
        ))
    }

    /// `()`, `(expr)`, or a tuple `(a, b)` / `(a,)`.
    fn parenthesized(&mut self, start: usize) -> PResult<Node> {
        self.advance();
        if self.at_punct(")") {
            let end = self.advance().end;
            return self.node(NodeKind::Tuple(Vec::new()), start, end);
        }
        let inner = self.nested(Self::expr_list)?;
        let end = self.expect(")")?.end;
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

    fn list(&mut self, start: usize) -> PResult<Node> {
        self.advance();
        let items = self.nested(|p| p.items("]"))?;
        let end = self.expect("]")?.end;
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
    fn brace(&mut self, start: usize) -> PResult<Node> {
        self.advance();
        if self.at_punct("}") {
            let end = self.advance().end;
            return self.node(NodeKind::Dict(Vec::new()), start, end);
        }
        let kind = self.nested(|p| {
            let first = p.expr()?;
            if !p.at_punct(":") {
                let mut items = vec![first];
                if p.eat_punct(",") {
                    items.extend(p.items("}")?);
                }
                return Ok(NodeKind::Set(items));
            }
            p.advance();
            let mut pairs = vec![(first, p.expr()?)];
            while p.eat_punct(",") {
                if p.at_punct("}") {
                    break;
                }
                let key = p.expr()?;
                p.expect(":")?;
                pairs.push((key, p.expr()?));
            }
            Ok(NodeKind::Dict(pairs))
        })?;
        let end = self.expect("}")?.end;
        self.node(kind, start, end)
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
