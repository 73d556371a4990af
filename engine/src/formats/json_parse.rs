//! A JSON reader with Python `json.loads` semantics, as ELSPETH's JSON source uses it.
//!
//! serde_json's reader is not used for source data because it silently turns an integer too
//! large for 64 bits into a float and reads `-0` as the float `-0.0`; Python keeps both as
//! ints. An audit tool must not change a value without saying so, so this reader keeps
//! integers as integers and reports one it cannot hold. Other rules follow Python: duplicate
//! keys keep the first key's position with the last value; `NaN`, `Infinity` and
//! `-Infinity` are rejected (ELSPETH's `parse_constant` hook); control characters inside
//! strings are errors; whitespace is space, tab, CR and LF only (so a BOM is an error).

use serde_json::{Map, Number, Value};

/// Deeper nesting than this is refused instead of risking the stack (Python's own limit is
/// about 1000 levels, reached through its recursion limit).
const MAX_DEPTH: usize = 512;

/// Where and why a document failed to parse. `line` counts `\n` like Python's
/// `JSONDecodeError.lineno`; `column` is 1-based in characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonSyntaxError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl std::fmt::Display for JsonSyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// A parsed document plus the line on which each item of the array rows come from starts,
/// so source records can name their line.
#[derive(Debug)]
pub struct ParsedDocument {
    pub value: Value,
    /// Start line of each item when the root is an array.
    pub root_item_lines: Vec<u64>,
    /// Start line of each item of arrays stored directly under a root object key (last
    /// occurrence of a duplicated key, matching the value kept).
    pub keyed_item_lines: Vec<(String, Vec<u64>)>,
}

/// Parse one complete JSON document.
pub fn parse_json(text: &str) -> Result<Value, JsonSyntaxError> {
    parse_document(text).map(|d| d.value)
}

/// Parse one complete JSON document, remembering the start line of array items at the root
/// and directly under root keys (where `data_key` can point).
pub fn parse_document(text: &str) -> Result<ParsedDocument, JsonSyntaxError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        line: 1,
        line_start: 0,
        depth: 0,
        root_item_lines: Vec::new(),
        keyed_item_lines: Vec::new(),
        current_key: None,
    };
    p.skip_ws();
    let value = p.value()?;
    p.skip_ws();
    if p.pos < p.bytes.len() {
        return Err(p.error("Extra data"));
    }
    Ok(ParsedDocument {
        value,
        root_item_lines: p.root_item_lines,
        keyed_item_lines: p.keyed_item_lines,
    })
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: u64,
    line_start: usize,
    depth: usize,
    root_item_lines: Vec<u64>,
    keyed_item_lines: Vec<(String, Vec<u64>)>,
    /// The root object key whose value is being parsed (depth 1 only).
    current_key: Option<String>,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> JsonSyntaxError {
        let column = self
            .text
            .get(self.line_start..self.pos)
            .map_or(0, |s| s.chars().count()) as u64
            + 1;
        JsonSyntaxError {
            line: self.line,
            column,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                }
                _ => break,
            }
        }
    }

    fn starts_with(&self, lit: &str) -> bool {
        self.bytes[self.pos..].starts_with(lit.as_bytes())
    }

    fn value(&mut self) -> Result<Value, JsonSyntaxError> {
        match self.peek() {
            None => Err(self.error("Expecting value")),
            Some(b'{') => self.nested(|p| p.object()),
            Some(b'[') => self.nested(|p| p.array()),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') if self.starts_with("true") => {
                self.pos += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.starts_with("false") => {
                self.pos += 5;
                Ok(Value::Bool(false))
            }
            Some(b'n') if self.starts_with("null") => {
                self.pos += 4;
                Ok(Value::Null)
            }
            Some(b'N') if self.starts_with("NaN") => Err(self.constant_error("NaN")),
            Some(b'I') if self.starts_with("Infinity") => Err(self.constant_error("Infinity")),
            Some(b'-') if self.starts_with("-Infinity") => Err(self.constant_error("-Infinity")),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("Expecting value")),
        }
    }

    fn constant_error(&self, name: &str) -> JsonSyntaxError {
        self.error(format!(
            "non-standard JSON constant '{name}' is not allowed (use null for missing values)"
        ))
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Value, JsonSyntaxError>,
    ) -> Result<Value, JsonSyntaxError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn object(&mut self) -> Result<Value, JsonSyntaxError> {
        self.pos += 1; // '{'
        let mut map = Map::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("Expecting property name enclosed in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("Expecting ':' delimiter"));
            }
            self.pos += 1;
            self.skip_ws();
            if self.depth == 1 {
                self.current_key = Some(key.clone());
            }
            let value = self.value()?;
            if self.depth == 1 {
                self.current_key = None;
            }
            // Python's dict: a repeated key keeps its first position and takes the last
            // value; IndexMap's insert does the same.
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(map));
                }
                _ => return Err(self.error("Expecting ',' delimiter")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, JsonSyntaxError> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        // Item lines are kept for the root array and for arrays directly under a root key.
        let track_root = self.depth == 1;
        let track_key = if self.depth == 2 {
            self.current_key.clone()
        } else {
            None
        };
        let mut lines = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                if track_root || track_key.is_some() {
                    lines.push(self.line);
                }
                items.push(self.value()?);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.skip_ws();
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.error("Expecting ',' delimiter")),
                }
            }
        }
        if track_root {
            self.root_item_lines = lines;
        } else if let Some(key) = track_key {
            self.keyed_item_lines.retain(|(k, _)| *k != key);
            self.keyed_item_lines.push((key, lines));
        }
        Ok(Value::Array(items))
    }

    fn string(&mut self) -> Result<String, JsonSyntaxError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of ordinary characters in one go (the text is valid UTF-8 and the
            // stop bytes are ASCII, so the slice is on character boundaries).
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.error("Unterminated string starting here")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.error("Invalid control character in string")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), JsonSyntaxError> {
        let Some(b) = self.peek() else {
            return Err(self.error("Unterminated string"));
        };
        self.pos += 1;
        match b {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let first = self.hex4()?;
                let code = if (0xd800..0xdc00).contains(&first) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    if self.starts_with("\\u") {
                        self.pos += 2;
                        let second = self.hex4()?;
                        if (0xdc00..0xe000).contains(&second) {
                            0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
                        } else {
                            return Err(self.error(format!(
                                "lone surrogate \\u{first:04x} cannot be represented"
                            )));
                        }
                    } else {
                        return Err(self.error(format!(
                            "lone surrogate \\u{first:04x} cannot be represented"
                        )));
                    }
                } else {
                    first
                };
                match char::from_u32(code) {
                    Some(c) => out.push(c),
                    None => {
                        return Err(self.error(format!(
                            "lone surrogate \\u{code:04x} cannot be represented"
                        )))
                    }
                }
            }
            _ => return Err(self.error("Invalid \\escape")),
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonSyntaxError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| self.error("Invalid \\uXXXX escape"))?;
        let mut code = 0u32;
        for d in digits {
            code = code * 16 + (*d as char).to_digit(16).unwrap_or(0);
        }
        self.pos += 4;
        Ok(code)
    }

    fn number(&mut self) -> Result<Value, JsonSyntaxError> {
        // Python's number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.skip_digits(),
            _ => {
                self.pos = start;
                return Err(self.error("Expecting value"));
            }
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') && self.bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit)
        {
            self.pos += 1;
            self.skip_digits();
            is_float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.skip_digits();
                is_float = true;
            } else {
                // Not an exponent after all; the 'e' is left for the caller to reject.
                self.pos = mark;
            }
        }
        let text = &self.text[start..self.pos];
        if is_float {
            let x: f64 = text
                .parse()
                .map_err(|_| self.error(format!("invalid number {text}")))?;
            Number::from_f64(x).map(Value::Number).ok_or_else(|| {
                self.error(format!("number {text} is out of range for a 64-bit float"))
            })
        } else if let Ok(i) = text.parse::<i64>() {
            Ok(Value::Number(i.into()))
        } else if let Ok(u) = text.parse::<u64>() {
            Ok(Value::Number(u.into()))
        } else {
            Err(self.error(format!(
                "integer {} does not fit in 64 bits",
                abbreviate(text)
            )))
        }
    }

    fn skip_digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

fn abbreviate(text: &str) -> String {
    if text.len() > 40 {
        format!("{}...({} digits)", &text[..20], text.len())
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Value {
        match parse_json(text) {
            Ok(v) => v,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn err(text: &str) -> JsonSyntaxError {
        match parse_json(text) {
            Ok(v) => panic!("{text} parsed as {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn scalars_and_containers() {
        assert_eq!(ok(" null "), json!(null));
        assert_eq!(
            ok("[1, -2, 3.5, 1e2, true, false, \"x\"]"),
            json!([1, -2, 3.5, 100.0, true, false, "x"])
        );
        assert_eq!(ok("{\"a\": {\"b\": []}}"), json!({"a": {"b": []}}));
    }

    #[test]
    fn ints_stay_ints() {
        let v = ok("-0");
        assert!(v.is_i64(), "{v:?}");
        assert_eq!(v, json!(0));
        assert_eq!(ok("18446744073709551615"), json!(u64::MAX));
        assert!(ok("1.0").is_f64());
        let e = err("123456789012345678901234567890");
        assert!(e.message.contains("does not fit"), "{e}");
    }

    #[test]
    fn duplicate_keys_last_wins_first_position() {
        let v = ok(r#"{"a": 1, "b": 2, "a": 3}"#);
        assert_eq!(
            serde_json::to_string(&v).ok(),
            Some(r#"{"a":3,"b":2}"#.to_string())
        );
    }

    #[test]
    fn non_finite_constants_rejected() {
        for t in ["NaN", "[Infinity]", "{\"a\": -Infinity}"] {
            assert!(err(t).message.contains("non-standard JSON constant"), "{t}");
        }
        assert!(err("1e400").message.contains("out of range"));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = err("[1,\n 2,\n ]");
        assert_eq!((e.line, e.column), (3, 2));
        assert_eq!(err("[1] x").message, "Extra data");
        assert_eq!(err("\u{feff}[]").message, "Expecting value");
        assert!(err("\"a\u{1}\"").message.contains("control character"));
        assert!(err("01").message.contains("Extra data"));
        assert!(err("1.").message.contains("Extra data"));
        assert!(err("\"\\ud800\"").message.contains("surrogate"));
        assert!(err("{\"a\" 1}").message.contains("':'"));
    }

    #[test]
    fn surrogate_pairs_and_escapes() {
        assert_eq!(ok(r#""\ud83d\ude00\u00e9\n\/""#), json!("😀é\n/"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let text = "[".repeat(100_000);
        assert!(err(&text).message.contains("nesting"));
    }

    #[test]
    fn item_lines_are_recorded() {
        let d = match parse_document("[\n{\"a\": 1},\n\n{\"a\": 2}]") {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(d.root_item_lines, vec![2, 4]);
        let d = match parse_document("{\"rows\": [1,\n2], \"x\": [[5]]}") {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            d.keyed_item_lines,
            vec![("rows".to_string(), vec![1, 2]), ("x".to_string(), vec![2])]
        );
    }
}
