//! A YAML 1.2 document as a tree of nodes that remember where they were written.
//!
//! The tree is built from saphyr-parser's events rather than through a generic
//! deserializer so that every key and value keeps its line and column, duplicate keys are
//! caught (ruamel, which ELSPETH uses, rejects them too), and plain scalars are resolved by
//! the YAML 1.2 core schema: `yes`/`no`/`on`/`off` stay strings. Like ruamel, `010` is the
//! integer 10, `0o17` is 15 and `1_000` is 1000.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::error::{Diagnostics, Loc};

/// Nesting deeper than this is refused: no real settings file comes near it, and it keeps
/// every recursive walk over the tree far from the thread's stack limit.
const MAX_DEPTH: usize = 128;

/// Aliases are expanded by copying; this bounds the copies so that a "billion laughs"
/// document is an error instead of exhausting memory.
const MAX_ALIAS_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// How a scalar was written; kept so that condition offsets can be mapped back to columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Block,
    /// A collection, or a value produced by environment expansion.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Where the node starts (for an anchored or tagged scalar: where its anchor/tag starts).
    pub loc: Loc,
    /// Where the node ends (exclusive).
    pub end: Loc,
    pub style: Style,
    /// True when `${...}` expansion produced this string; such strings may stand for numbers
    /// and booleans, as they would after ELSPETH's lax validation.
    pub expanded: bool,
    /// An error about this value was already recorded (e.g. an unset variable): type
    /// checks stay quiet about it rather than repeat the problem in other words.
    pub reported: bool,
}

impl Node {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// A short description for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".to_string(),
            Kind::Bool(b) => format!("the boolean `{b}`"),
            Kind::Int(i) => format!("the integer `{i}`"),
            Kind::Float(f) => format!("the number `{f}`"),
            Kind::Str(s) => {
                let shown: String = s.chars().take(40).collect();
                let ellipsis = if s.chars().count() > 40 { "..." } else { "" };
                format!("the string \"{shown}{ellipsis}\"")
            }
            Kind::Seq(_) => "a list".to_string(),
            Kind::Map(_) => "a mapping".to_string(),
        }
    }
}

fn loc_of(mark: saphyr_parser::Marker) -> Loc {
    Loc::new(mark.line(), mark.col() + 1)
}

enum Frame {
    Seq {
        items: Vec<Node>,
        start: Span,
        anchor: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        seen: HashSet<String>,
        merges: Vec<Node>,
        start: Span,
        anchor: usize,
    },
}

/// Parses `text` into one document. Returns `None` (with errors recorded) when the text is
/// not well-formed YAML, holds more than one document, or uses a feature refused here.
/// An empty document is `Some` null node.
pub(crate) fn parse(text: &str, diag: &mut Diagnostics) -> Option<Node> {
    let mut builder = Builder {
        diag,
        anchors: HashMap::new(),
        alias_nodes: 0,
        stack: Vec::new(),
        root: None,
        documents: 0,
        failed: false,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        match next {
            Ok((event, span)) => {
                if !builder.event(event, span) {
                    return None;
                }
            }
            Err(e) => {
                let loc = loc_of(*e.marker());
                builder.diag.error(
                    loc,
                    format!("invalid YAML: {}; expected well-formed YAML 1.2", e.info()),
                );
                return None;
            }
        }
    }
    if builder.failed {
        return None;
    }
    Some(builder.root.unwrap_or(Node {
        kind: Kind::Null,
        loc: Loc::new(1, 1),
        end: Loc::new(1, 1),
        style: Style::Other,
        expanded: false,
        reported: false,
    }))
}

struct Builder<'d> {
    diag: &'d mut Diagnostics,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    /// Set by recoverable errors (duplicate keys, bad scalars): parsing goes on so that
    /// later problems are reported too, but the tree is not used.
    failed: bool,
}

impl Builder<'_> {
    /// Handles one event; false aborts the parse (the error is already recorded).
    fn event(&mut self, event: Event<'_>, span: Span) -> bool {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => true,
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    self.diag.error(
                        loc_of(span.start),
                        "a second YAML document starts here; expected exactly one document",
                    );
                    return false;
                }
                true
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    // Keep every node within MAX_DEPTH even when aliases nest inside aliases.
                    if self.stack.len() + depth(node) > MAX_DEPTH {
                        self.diag.error(
                            loc_of(span.start),
                            format!(
                                "nesting is deeper than {MAX_DEPTH} levels; expected a flatter document"
                            ),
                        );
                        return false;
                    }
                    let count = count_nodes(node);
                    self.alias_nodes = self.alias_nodes.saturating_add(count);
                    if self.alias_nodes > MAX_ALIAS_NODES {
                        self.diag.error(
                            loc_of(span.start),
                            format!(
                                "aliases expand to more than {MAX_ALIAS_NODES} nodes; expected a \
                                 settings file of reasonable size"
                            ),
                        );
                        return false;
                    }
                    let node = node.clone();
                    self.push_node(node)
                }
                None => {
                    self.diag.error(
                        loc_of(span.start),
                        "alias refers to an unknown anchor; expected an anchor defined before it",
                    );
                    false
                }
            },
            Event::Scalar(value, style, anchor, tag) => {
                let kind = match self.resolve_scalar(&value, style, tag.as_deref(), span) {
                    Some(kind) => kind,
                    None => {
                        self.failed = true;
                        Kind::Null
                    }
                };
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted => Style::SingleQuoted,
                    ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
                    _ => Style::Block,
                };
                let node = Node {
                    kind,
                    loc: loc_of(span.start),
                    end: loc_of(span.end),
                    style,
                    expanded: false,
                    reported: false,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node)
            }
            Event::SequenceStart(anchor, tag) => {
                if !self.check_collection_tag(tag.as_deref(), "seq", span) {
                    self.failed = true;
                }
                self.open(Frame::Seq {
                    items: Vec::new(),
                    start: span,
                    anchor,
                })
            }
            Event::MappingStart(anchor, tag) => {
                if !self.check_collection_tag(tag.as_deref(), "map", span) {
                    self.failed = true;
                }
                self.open(Frame::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    seen: HashSet::new(),
                    merges: Vec::new(),
                    start: span,
                    anchor,
                })
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    items,
                    start,
                    anchor,
                }) => {
                    let node = Node {
                        kind: Kind::Seq(items),
                        loc: loc_of(start.start),
                        end: loc_of(span.end),
                        style: Style::Other,
                        expanded: false,
                        reported: false,
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_node(node)
                }
                _ => self.internal(span),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    mut entries,
                    seen,
                    merges,
                    start,
                    anchor,
                    ..
                }) => {
                    apply_merges(&mut entries, seen, merges);
                    let node = Node {
                        kind: Kind::Map(entries),
                        loc: loc_of(start.start),
                        end: loc_of(span.end),
                        style: Style::Other,
                        expanded: false,
                        reported: false,
                    };
                    if anchor > 0 {
                        self.anchors.insert(anchor, node.clone());
                    }
                    self.push_node(node)
                }
                _ => self.internal(span),
            },
        }
    }

    fn internal(&mut self, span: Span) -> bool {
        self.diag.error(
            loc_of(span.start),
            "unbalanced YAML structure; expected well-formed YAML 1.2",
        );
        false
    }

    fn open(&mut self, frame: Frame) -> bool {
        if self.stack.len() >= MAX_DEPTH {
            let start = match &frame {
                Frame::Seq { start, .. } | Frame::Map { start, .. } => start.start,
            };
            self.diag.error(
                loc_of(start),
                format!("nesting is deeper than {MAX_DEPTH} levels; expected a flatter document"),
            );
            return false;
        }
        self.stack.push(frame);
        true
    }

    /// Attaches a finished node to the collection being built (or makes it the root).
    fn push_node(&mut self, node: Node) -> bool {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                true
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                true
            }
            Some(Frame::Map {
                entries,
                pending_key,
                seen,
                merges,
                ..
            }) => {
                match pending_key.take() {
                    None => {
                        if matches!(node.kind, Kind::Seq(_) | Kind::Map(_)) {
                            self.diag.error(
                                node.loc,
                                "a list or mapping used as a key; expected a plain key such as `name`",
                            );
                            self.failed = true;
                        }
                        *pending_key = Some(node);
                    }
                    Some(key) => {
                        if key.style == Style::Plain && key.as_str() == Some("<<") {
                            // A YAML merge key (ruamel honours them): its mappings are folded in
                            // when this mapping ends, explicit keys winning.
                            merges.push(node);
                            return true;
                        }
                        let identity = key_identity(&key);
                        if !seen.insert(identity) {
                            self.diag.error(
                                key.loc,
                                format!(
                                    "duplicate key `{}`; expected each key once per mapping",
                                    key_text(&key)
                                ),
                            );
                            self.failed = true;
                        }
                        entries.push((key, node));
                    }
                }
                true
            }
        }
    }

    fn check_collection_tag(&mut self, tag: Option<&Tag>, expected: &str, span: Span) -> bool {
        match tag {
            None => true,
            Some(t) if t.is_yaml_core_schema() && t.suffix == expected => true,
            Some(t) => {
                self.diag.error(
                    loc_of(span.start),
                    format!(
                        "unsupported tag `{}{}`; expected untagged YAML",
                        t.handle, t.suffix
                    ),
                );
                false
            }
        }
    }

    fn resolve_scalar(
        &mut self,
        value: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        span: Span,
    ) -> Option<Kind> {
        let loc = loc_of(span.start);
        if let Some(t) = tag {
            if !t.is_yaml_core_schema() {
                self.diag.error(
                    loc,
                    format!(
                        "unsupported tag `{}{}`; expected untagged YAML",
                        t.handle, t.suffix
                    ),
                );
                return None;
            }
            let resolved = match t.suffix.as_str() {
                "str" => Some(Kind::Str(value.to_string())),
                "null" => match resolve_plain(value) {
                    k @ Kind::Null => Some(k),
                    _ => None,
                },
                "bool" => match resolve_plain(value) {
                    k @ Kind::Bool(_) => Some(k),
                    _ => None,
                },
                "int" => match resolve_plain(value) {
                    k @ Kind::Int(_) => Some(k),
                    _ => None,
                },
                "float" => match resolve_plain(value) {
                    Kind::Int(i) => Some(Kind::Float(i as f64)),
                    k @ Kind::Float(_) => Some(k),
                    _ => None,
                },
                _ => None,
            };
            if resolved.is_none() {
                self.diag.error(
                    loc,
                    format!(
                        "`{value}` cannot be read as `!!{}`; expected a value of that type or no tag",
                        t.suffix
                    ),
                );
            }
            return resolved;
        }
        if style != ScalarStyle::Plain {
            return Some(Kind::Str(value.to_string()));
        }
        if looks_like_int(value) && parse_int(value).is_none() {
            self.diag.error(
                loc,
                format!(
                    "integer `{value}` is out of range; expected a value between {} and {}",
                    i64::MIN,
                    i64::MAX
                ),
            );
            return None;
        }
        Some(resolve_plain(value))
    }
}

/// Folds `<<` merge mappings into `entries` without overriding explicit keys; earlier
/// merge sources win over later ones, as in the YAML merge-key convention.
fn apply_merges(entries: &mut Vec<(Node, Node)>, mut seen: HashSet<String>, merges: Vec<Node>) {
    for merge in merges {
        let sources: Vec<Node> = match merge.kind {
            Kind::Seq(items) => items,
            other => vec![Node {
                kind: other,
                ..merge
            }],
        };
        for source in sources {
            if let Kind::Map(pairs) = source.kind {
                for (k, v) in pairs {
                    if seen.insert(key_identity(&k)) {
                        entries.push((k, v));
                    }
                }
            }
        }
    }
}

fn depth(node: &Node) -> usize {
    match &node.kind {
        Kind::Seq(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Kind::Map(pairs) => 1 + pairs.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        Kind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Kind::Map(pairs) => {
            1 + pairs
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// Keys are compared by resolved value: `1` and `"1"` are different keys, as in YAML.
fn key_identity(key: &Node) -> String {
    match &key.kind {
        Kind::Null => "n".to_string(),
        Kind::Bool(b) => format!("b{b}"),
        Kind::Int(i) => format!("i{i}"),
        Kind::Float(f) => format!("f{f}"),
        Kind::Str(s) => format!("s{s}"),
        Kind::Seq(_) | Kind::Map(_) => format!("c{}:{}", key.loc.line, key.loc.column),
    }
}

pub(crate) fn key_text(key: &Node) -> String {
    match &key.kind {
        Kind::Null => "null".to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::Str(s) => s.clone(),
        Kind::Seq(_) => "[...]".to_string(),
        Kind::Map(_) => "{...}".to_string(),
    }
}

/// YAML 1.2 core-schema resolution of a plain scalar, with ruamel's extras (leading zeros
/// are decimal, `_` separators between digits).
pub(crate) fn resolve_plain(s: &str) -> Kind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Kind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(s) {
        return Kind::Int(i);
    }
    if let Some(f) = parse_float(s) {
        return Kind::Float(f);
    }
    Kind::Str(s.to_string())
}

/// Digits with single `_` separators between them (`1_000`), none leading or trailing.
fn digits_ok(s: &str, radix: u32) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let prev_digit = i > 0 && (b[i - 1] as char).is_digit(radix);
            let next_digit = b.get(i + 1).is_some_and(|&n| (n as char).is_digit(radix));
            if !(prev_digit && next_digit) {
                return false;
            }
        } else if !(c as char).is_digit(radix) {
            return false;
        }
    }
    true
}

fn looks_like_int(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if let Some(hex) = body.strip_prefix("0x") {
        return digits_ok(hex, 16);
    }
    if let Some(oct) = body.strip_prefix("0o") {
        return digits_ok(oct, 8);
    }
    digits_ok(body, 10)
}

fn parse_int(s: &str) -> Option<i64> {
    if !looks_like_int(s) {
        return None;
    }
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = body.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = body.strip_prefix("0o") {
        (8, o)
    } else {
        (10, body)
    };
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    // Parse with the sign attached so that i64::MIN is representable.
    let signed = if negative { format!("-{clean}") } else { clean };
    i64::from_str_radix(&signed, radix).ok()
}

fn parse_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let int_ok = int_part.is_empty() || digits_ok(int_part, 10);
    let frac_ok = match frac_part {
        None => true,
        Some(f) => f.is_empty() || digits_ok(f, 10),
    };
    // `.` alone, `.e5` and `e5` are not numbers: some digit must be present.
    let has_digit = !int_part.is_empty() || frac_part.is_some_and(|f| !f.is_empty());
    let exp_ok = match exponent {
        None => true,
        Some(e) => digits_ok(e.strip_prefix(['-', '+']).unwrap_or(e), 10) && !e.contains('_'),
    };
    // A plain integer is handled by parse_int; here a `.` or an exponent is required.
    if !(int_ok && frac_ok && has_digit && exp_ok) || (frac_part.is_none() && exponent.is_none()) {
        return None;
    }
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    clean.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let mut d = Diagnostics::new("t.yaml");
        let node = parse(text, &mut d);
        let (errors, _) = d.finish();
        assert!(errors.is_empty(), "{errors:?}");
        node.expect("parsed")
    }

    fn value_of(text: &str) -> Kind {
        match one(&format!("k: {text}")).kind {
            Kind::Map(mut pairs) => pairs.remove(0).1.kind,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn yaml_1_2_scalars() {
        assert_eq!(value_of("yes"), Kind::Str("yes".into()));
        assert_eq!(value_of("no"), Kind::Str("no".into()));
        assert_eq!(value_of("on"), Kind::Str("on".into()));
        assert_eq!(value_of("off"), Kind::Str("off".into()));
        assert_eq!(value_of("True"), Kind::Bool(true));
        assert_eq!(value_of("false"), Kind::Bool(false));
        assert_eq!(value_of("010"), Kind::Int(10));
        assert_eq!(value_of("0o17"), Kind::Int(15));
        assert_eq!(value_of("0x1f"), Kind::Int(31));
        assert_eq!(value_of("1_000"), Kind::Int(1000));
        assert_eq!(value_of("-5"), Kind::Int(-5));
        assert_eq!(value_of("1e3"), Kind::Float(1000.0));
        assert_eq!(value_of(".5"), Kind::Float(0.5));
        assert_eq!(value_of("5."), Kind::Float(5.0));
        assert_eq!(value_of("-.inf"), Kind::Float(f64::NEG_INFINITY));
        assert_eq!(value_of("~"), Kind::Null);
        assert_eq!(value_of(""), Kind::Null);
        assert_eq!(value_of("'1'"), Kind::Str("1".into()));
        assert_eq!(value_of("1_"), Kind::Str("1_".into()));
        assert_eq!(value_of("1__0"), Kind::Str("1__0".into()));
        assert_eq!(value_of("e5"), Kind::Str("e5".into()));
        assert_eq!(value_of("."), Kind::Str(".".into()));
        assert_eq!(value_of("!!str 5"), Kind::Str("5".into()));
        assert_eq!(value_of("-9223372036854775808"), Kind::Int(i64::MIN));
    }

    #[test]
    fn locations_are_one_based() {
        let root = one("a:\n  b: [1, 'x']\n");
        let Kind::Map(pairs) = root.kind else {
            panic!()
        };
        let (_, inner) = &pairs[0];
        let Kind::Map(inner) = &inner.kind else {
            panic!()
        };
        assert_eq!(inner[0].0.loc, Loc::new(2, 3));
        let Kind::Seq(items) = &inner[0].1.kind else {
            panic!()
        };
        assert_eq!(items[0].loc, Loc::new(2, 7));
        assert_eq!(items[1].loc, Loc::new(2, 10));
    }

    #[test]
    fn aliases_and_merge_keys() {
        let root = one("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n");
        let Kind::Map(pairs) = root.kind else {
            panic!()
        };
        let Kind::Map(used) = &pairs[1].1.kind else {
            panic!()
        };
        let keys: Vec<String> = used.iter().map(|(k, _)| key_text(k)).collect();
        assert_eq!(keys, vec!["y", "x"]);
        assert_eq!(used[0].1.kind, Kind::Int(3));
    }

    fn errors_of(text: &str) -> Vec<String> {
        let mut d = Diagnostics::new("t.yaml");
        let _ = parse(text, &mut d);
        d.finish().0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn duplicate_keys_are_errors() {
        assert_eq!(
            errors_of("a: 1\nb: 2\na: 3\n"),
            vec!["t.yaml:3:1: duplicate key `a`; expected each key once per mapping"]
        );
    }

    #[test]
    fn malformed_yaml_is_located() {
        let errs = errors_of("a: [1, 2\nb: 3\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.yaml:"), "{errs:?}");
        assert!(errs[0].contains("invalid YAML"), "{errs:?}");
    }

    #[test]
    fn second_document_and_big_ints_and_tags() {
        assert_eq!(
            errors_of("a: 1\n---\nb: 2\n"),
            vec!["t.yaml:2:1: a second YAML document starts here; expected exactly one document"]
        );
        assert_eq!(errors_of("a: 99999999999999999999\n").len(), 1);
        assert_eq!(
            errors_of("a: !env X\n"),
            vec!["t.yaml:1:4: unsupported tag `!env`; expected untagged YAML"]
        );
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let errs = errors_of(&text);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("aliases expand"), "{errs:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let errs = errors_of(&text);
        assert_eq!(
            errs,
            vec!["t.yaml:1:129: nesting is deeper than 128 levels; expected a flatter document"]
        );
        // Deeper still, the parser's own limit answers first; either way, an error, no crash.
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(errors_of(&text).len(), 1);
    }
}
