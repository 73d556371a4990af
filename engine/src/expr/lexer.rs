//! Turns condition text into tokens, following Python's lexical rules for the parts of the
//! language conditions use.
//!
//! The lexer is a flat loop (no recursion), so input of any length is safe here; nesting is
//! bounded later by the parser. Errors are reported as a byte offset plus message and turned
//! into a [`ParseError`](super::ParseError) by the parser, which knows the source.

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// An identifier or keyword; the parser decides which.
    Name(String),
    Int(i128),
    Float(f64),
    /// A string literal with escapes already processed.
    Str(String),
    /// Operators and punctuation, spelled as in the source.
    Punct(&'static str),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte offsets of the token in the source.
    pub start: usize,
    pub end: usize,
}

/// A lexical error: where and what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexError {
    pub offset: usize,
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, LexError> {
    Err(LexError {
        offset,
        message: message.into(),
    })
}

/// Punctuation, longest first so that `//` wins over `/`. Some of these exist only so that
/// the parser can name the forbidden construct precisely (`:=`, `**`, `<<`, ...).
const PUNCTS: &[&str] = &[
    "...", "**=", "//=", ">>=", "<<=", "**", "//", "==", "!=", "<=", ">=", ":=", "->", "<<", ">>",
    "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "@=", "+", "-", "*", "/", "%", "<", ">", "=",
    "(", ")", "[", "]", "{", "}", ",", ":", ".", "~", "&", "|", "^", "@", ";",
];

/// Python's `str.isspace()` for the characters that matter: Unicode `White_Space` plus the
/// four ASCII information separators Python also treats as whitespace. Used by `int()` and
/// `float()` when stripping their argument.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

pub(crate) fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

pub(crate) fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, LexError> {
    Lexer {
        src,
        pos: 0,
        depth: 0,
        tokens: Vec::new(),
        pending_newline: None,
    }
    .run()
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    /// Bracket nesting: Python allows line breaks only inside brackets.
    depth: usize,
    tokens: Vec<Token>,
    /// A line break seen outside brackets. It is an error only if another token follows,
    /// so that trailing newlines (common in YAML block scalars) are accepted.
    pending_newline: Option<usize>,
}

impl<'s> Lexer<'s> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn push(&mut self, tok: Tok, start: usize) -> Result<(), LexError> {
        if let Some(at) = self.pending_newline.take() {
            if !self.tokens.is_empty() {
                return err(
                    at,
                    "line break outside brackets; wrap a multi-line condition in parentheses",
                );
            }
        }
        self.tokens.push(Token {
            tok,
            start,
            end: self.pos,
        });
        Ok(())
    }

    fn run(mut self) -> Result<Vec<Token>, LexError> {
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                ' ' | '\t' | '\x0c' => {
                    self.bump();
                }
                '\n' | '\r' => {
                    self.bump();
                    if self.depth == 0 && self.pending_newline.is_none() {
                        self.pending_newline = Some(start);
                    }
                }
                '#' => {
                    while let Some(c) = self.peek() {
                        if c == '\n' || c == '\r' {
                            break;
                        }
                        self.bump();
                    }
                }
                '\\' => {
                    // Explicit line continuation is the only use of a bare backslash.
                    self.bump();
                    match self.peek() {
                        Some('\n') => {
                            self.bump();
                        }
                        Some('\r') => {
                            self.bump();
                            if self.peek() == Some('\n') {
                                self.bump();
                            }
                        }
                        _ => return err(start, "unexpected character '\\' outside a string"),
                    }
                }
                '\'' | '"' => {
                    let s = self.string(start, false)?;
                    self.push(Tok::Str(s), start)?;
                }
                '0'..='9' => {
                    let tok = self.number(start)?;
                    self.push(tok, start)?;
                }
                '.' if matches!(self.peek_at(1), Some('0'..='9')) => {
                    let tok = self.number(start)?;
                    self.push(tok, start)?;
                }
                c if is_ident_start(c) => {
                    while let Some(c) = self.peek() {
                        if !is_ident_continue(c) {
                            break;
                        }
                        self.bump();
                    }
                    let word = &self.src[start..self.pos];
                    let quoted = matches!(self.peek(), Some('\'' | '"'));
                    match string_prefix(word) {
                        Some(prefix) if quoted => {
                            let raw = prefix.check(start)?;
                            let s = self.string(start, raw)?;
                            self.push(Tok::Str(s), start)?;
                        }
                        // Any other word before a quote is a name and the string a separate
                        // token, as in Python (`x in'abc'` is valid).
                        _ => self.push(Tok::Name(word.to_string()), start)?,
                    }
                }
                _ => {
                    let rest = &self.src[self.pos..];
                    let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                        return Err(self.bad_char(c, start));
                    };
                    self.pos += p.len();
                    match *p {
                        "(" | "[" | "{" => self.depth += 1,
                        ")" | "]" | "}" => self.depth = self.depth.saturating_sub(1),
                        _ => {}
                    }
                    self.push(Tok::Punct(p), start)?;
                }
            }
        }
        let end = self.src.len();
        self.tokens.push(Token {
            tok: Tok::Eof,
            start: end,
            end,
        });
        Ok(self.tokens)
    }

    fn bad_char(&self, c: char, at: usize) -> LexError {
        let message = match c {
            '!' => "'!' is not an operator; use 'not' (or '!=' to compare)".to_string(),
            '$' | '?' | '`' => format!("unexpected character '{c}'"),
            c if c.is_control() || c.is_whitespace() => {
                format!("invalid non-printable character U+{:04X}", c as u32)
            }
            c => format!("unexpected character '{c}'"),
        };
        LexError {
            offset: at,
            message,
        }
    }

    /// Lexes a string literal whose opening quote is at `self.pos`; `start` is where the
    /// token (including any prefix) began.
    fn string(&mut self, start: usize, raw: bool) -> Result<String, LexError> {
        let quote = self.bump().unwrap_or('\'');
        let triple = self.peek() == Some(quote) && self.peek_at(1) == Some(quote);
        if triple {
            self.bump();
            self.bump();
        }
        let mut out = String::new();
        loop {
            let at = self.pos;
            let Some(c) = self.bump() else {
                return err(start, "unterminated string literal");
            };
            match c {
                c if c == quote => {
                    if !triple {
                        return Ok(out);
                    }
                    if self.peek() == Some(quote) && self.peek_at(1) == Some(quote) {
                        self.bump();
                        self.bump();
                        return Ok(out);
                    }
                    out.push(c);
                }
                '\n' | '\r' if !triple => {
                    return err(start, "unterminated string literal (line break inside it)")
                }
                '\\' if raw => {
                    // A raw string keeps the backslash, but it still stops the next
                    // character from closing the string.
                    out.push('\\');
                    match self.bump() {
                        Some(next) => out.push(next),
                        None => return err(start, "unterminated string literal"),
                    }
                }
                '\\' => self.escape(at, &mut out)?,
                c => out.push(c),
            }
        }
    }

    /// Processes one escape sequence; the backslash (at `at`) is already consumed.
    fn escape(&mut self, at: usize, out: &mut String) -> Result<(), LexError> {
        let Some(c) = self.bump() else {
            return err(at, "unterminated string literal");
        };
        match c {
            '\n' => {}
            '\r' => {
                if self.peek() == Some('\n') {
                    self.bump();
                }
            }
            '\\' => out.push('\\'),
            '\'' => out.push('\''),
            '"' => out.push('"'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut value = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            self.bump();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(value).unwrap_or('\u{fffd}'));
            }
            'x' => out.push(self.hex_escape(at, 2, "\\xXX")?),
            'u' => out.push(self.hex_escape(at, 4, "\\uXXXX")?),
            'U' => out.push(self.hex_escape(at, 8, "\\UXXXXXXXX")?),
            'N' => return err(at, "\\N{...} escapes are not supported in conditions"),
            // Python keeps unknown escapes as written (with a warning).
            other => {
                out.push('\\');
                out.push(other);
            }
        }
        Ok(())
    }

    fn hex_escape(&mut self, at: usize, digits: usize, form: &str) -> Result<char, LexError> {
        let mut value: u32 = 0;
        for _ in 0..digits {
            match self.peek().and_then(|d| d.to_digit(16)) {
                Some(d) => {
                    value = value * 16 + d;
                    self.bump();
                }
                None => return err(at, format!("truncated {form} escape")),
            }
        }
        match char::from_u32(value) {
            Some(c) => Ok(c),
            None if (0xD800..=0xDFFF).contains(&value) => err(
                at,
                format!("escape {form} names a surrogate code point, which is not supported"),
            ),
            None => err(at, format!("escape {form} is beyond the Unicode range")),
        }
    }

    /// Scans `digit (_? digit)*` in `radix`, returning the digits without underscores.
    /// Python allows an underscore only between two digits.
    fn digits(&mut self, radix: u32) -> Result<String, LexError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(c) if c.is_digit(radix) => {
                    out.push(c);
                    self.bump();
                }
                Some('_') if !out.is_empty() => {
                    if !self.peek_at(1).is_some_and(|c| c.is_digit(radix)) {
                        return err(self.pos, "invalid number: '_' must be between digits");
                    }
                    self.bump();
                }
                _ => return Ok(out),
            }
        }
    }

    fn number(&mut self, start: usize) -> Result<Tok, LexError> {
        let radix = match (self.peek(), self.peek_at(1)) {
            (Some('0'), Some('x' | 'X')) => 16,
            (Some('0'), Some('o' | 'O')) => 8,
            (Some('0'), Some('b' | 'B')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.bump();
            self.bump();
            // One underscore may separate the prefix from the digits: 0x_ff.
            if self.peek() == Some('_') {
                self.bump();
            }
            let digits = self.digits(radix)?;
            if digits.is_empty() {
                return err(start, "invalid number: no digits after the base prefix");
            }
            self.number_end(start)?;
            return int_from_digits(&digits, radix).ok_or_else(|| too_large(start));
        }

        let int_part = self.digits(10)?;
        let mut is_float = false;
        let mut text = int_part.clone();
        if self.peek() == Some('.') {
            is_float = true;
            self.bump();
            text.push('.');
            if matches!(self.peek(), Some('0'..='9')) {
                text.push_str(&self.digits(10)?);
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = self.peek_at(1);
            let has_sign = matches!(sign, Some('+' | '-'));
            let first = if has_sign { self.peek_at(2) } else { sign };
            if matches!(first, Some('0'..='9')) {
                is_float = true;
                self.bump();
                text.push('e');
                if has_sign {
                    if let Some(s) = self.bump() {
                        text.push(s);
                    }
                }
                text.push_str(&self.digits(10)?);
            }
        }
        self.number_end(start)?;
        if is_float {
            // The text is digits, '.', 'e', sign only: Rust's parser accepts it, and rounds
            // correctly like Python's (huge exponents give inf, as in Python).
            return text
                .parse::<f64>()
                .map(Tok::Float)
                .or_else(|_| err(start, "invalid float literal"));
        }
        if int_part.len() > 1 && int_part.starts_with('0') && int_part.bytes().any(|b| b != b'0') {
            return err(
                start,
                "leading zeros in decimal integer literals are not permitted; use 0o for octal",
            );
        }
        int_from_digits(&int_part, 10).ok_or_else(|| too_large(start))
    }

    /// Rejects a number glued to a following name (`1abc`) and complex literals (`1j`).
    fn number_end(&mut self, start: usize) -> Result<(), LexError> {
        match self.peek() {
            Some('j' | 'J') => err(start, "complex numbers are not supported"),
            Some(c) if is_ident_continue(c) => err(start, "invalid number literal"),
            _ => Ok(()),
        }
    }
}

/// The string prefixes Python knows, and what we do with each.
#[derive(Debug, Clone, Copy)]
enum Prefix {
    Plain,
    Raw,
    Format,
    Bytes,
}

impl Prefix {
    /// Returns whether the string is raw, or the error for a prefix we refuse.
    fn check(self, start: usize) -> Result<bool, LexError> {
        match self {
            Prefix::Plain => Ok(false),
            Prefix::Raw => Ok(true),
            Prefix::Format => err(start, "f-strings are not allowed in conditions"),
            Prefix::Bytes => err(start, "bytes literals are not supported in conditions"),
        }
    }
}

fn string_prefix(word: &str) -> Option<Prefix> {
    match word.to_ascii_lowercase().as_str() {
        "u" => Some(Prefix::Plain),
        "r" => Some(Prefix::Raw),
        "f" | "rf" | "fr" => Some(Prefix::Format),
        "b" | "rb" | "br" => Some(Prefix::Bytes),
        _ => None,
    }
}

fn too_large(at: usize) -> LexError {
    LexError {
        offset: at,
        message: "integer literal too large (integers are limited to ±2^127)".to_string(),
    }
}

fn int_from_digits(digits: &str, radix: u32) -> Option<Tok> {
    let mut value: i128 = 0;
    for c in digits.chars() {
        let d = i128::from(c.to_digit(radix)?);
        value = value.checked_mul(i128::from(radix))?.checked_add(d)?;
    }
    Some(Tok::Int(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src)
            .unwrap_or_else(|e| panic!("lexing {src:?}: {e:?}"))
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    fn lex_err(src: &str) -> LexError {
        match tokenize(src) {
            Ok(t) => panic!("{src:?} lexed to {t:?}"),
            Err(e) => e,
        }
    }

    fn one(src: &str) -> Tok {
        let t = toks(src);
        assert_eq!(t.len(), 2, "{src:?} gave {t:?}");
        t[0].clone()
    }

    #[test]
    fn integers_in_every_base() {
        assert_eq!(one("0"), Tok::Int(0));
        assert_eq!(one("00"), Tok::Int(0));
        assert_eq!(one("1_000"), Tok::Int(1000));
        assert_eq!(one("0x_fF"), Tok::Int(255));
        assert_eq!(one("0o17"), Tok::Int(15));
        assert_eq!(one("0B101"), Tok::Int(5));
        assert_eq!(
            one("170141183460469231731687303715884105727"),
            Tok::Int(i128::MAX)
        );
    }

    #[test]
    fn floats() {
        assert_eq!(one("1.5"), Tok::Float(1.5));
        assert_eq!(one(".5"), Tok::Float(0.5));
        assert_eq!(one("5."), Tok::Float(5.0));
        assert_eq!(one("1e3"), Tok::Float(1000.0));
        assert_eq!(one("1.e-3"), Tok::Float(0.001));
        assert_eq!(one("1_0.2_5E+0_1"), Tok::Float(102.5));
        assert_eq!(one("007.5"), Tok::Float(7.5));
        assert_eq!(one("1e400"), Tok::Float(f64::INFINITY));
    }

    #[test]
    fn bad_numbers() {
        assert!(lex_err("012").message.contains("leading zeros"));
        assert!(lex_err("1__0").message.contains("between digits"));
        assert!(lex_err("1_").message.contains("between digits"));
        assert!(lex_err("1j").message.contains("complex"));
        assert!(lex_err("1abc").message.contains("invalid number"));
        assert!(lex_err("0x").message.contains("no digits"));
        let e = lex_err("1 + 999999999999999999999999999999999999999999");
        assert_eq!(e.offset, 4);
        assert!(e.message.contains("too large"));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(one(r#"'a\'b'"#), Tok::Str("a'b".into()));
        assert_eq!(one(r#""a\"b""#), Tok::Str("a\"b".into()));
        assert_eq!(
            one(r"'\n\t\r\\\x41\u00e9\U0001F600\101\0'"),
            Tok::Str("\n\t\r\\Aé😀A\0".into())
        );
        assert_eq!(one(r"'\d'"), Tok::Str("\\d".into()));
        assert_eq!(one(r"r'\d\''"), Tok::Str("\\d\\'".into()));
        assert_eq!(one(r"u'x'"), Tok::Str("x".into()));
        assert_eq!(one("'''a'b\nc'''"), Tok::Str("a'b\nc".into()));
        assert_eq!(one("'a\\\nb'"), Tok::Str("ab".into()));
        assert_eq!(one("'é'"), Tok::Str("é".into()));
    }

    #[test]
    fn bad_strings() {
        assert!(lex_err("'abc").message.contains("unterminated"));
        assert!(lex_err("'a\nb'").message.contains("unterminated"));
        assert!(lex_err(r"'\x4'").message.contains("truncated"));
        assert!(lex_err(r"'\ud800'").message.contains("surrogate"));
        assert!(lex_err(r"'\U00110000'").message.contains("Unicode range"));
        assert!(lex_err(r"'\N{DASH}'").message.contains("\\N"));
        let e = lex_err("1 == f'x'");
        assert_eq!(e.offset, 5);
        assert!(e.message.contains("f-strings"));
        assert!(lex_err("b'x'").message.contains("bytes"));
        assert_eq!(
            toks("not'a'"),
            vec![Tok::Name("not".into()), Tok::Str("a".into()), Tok::Eof]
        );
    }

    #[test]
    fn punctuation_is_longest_match() {
        assert_eq!(
            toks("a//b**c<=d"),
            vec![
                Tok::Name("a".into()),
                Tok::Punct("//"),
                Tok::Name("b".into()),
                Tok::Punct("**"),
                Tok::Name("c".into()),
                Tok::Punct("<="),
                Tok::Name("d".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn line_breaks_only_inside_brackets() {
        assert_eq!(toks("(1 +\n 2)").len(), 6);
        assert_eq!(toks("\n 1 + 2 \n").len(), 4);
        assert_eq!(toks("1 + \\\n 2").len(), 4);
        assert_eq!(toks("1 + 2 # comment").len(), 4);
        let e = lex_err("1 +\n 2");
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("parentheses"));
    }

    #[test]
    fn stray_characters() {
        assert!(lex_err("!x").message.contains("'not'"));
        assert!(lex_err("a $ b").message.contains("'$'"));
        assert!(lex_err("a\u{a0}b").message.contains("U+00A0"));
        assert!(lex_err("a \\ b").message.contains("'\\'"));
    }

    #[test]
    fn token_offsets_are_bytes() {
        let t = tokenize("'é' + x").unwrap_or_default();
        assert_eq!((t[1].start, t[1].end), (5, 6));
        assert_eq!((t[2].start, t[2].end), (7, 8));
    }
}
