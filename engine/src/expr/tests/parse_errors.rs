//! Every kind of parse error, with the column it must point at and a phrase its message
//! must contain.

use crate::expr::{Expr, ParseError, Position};

fn parse_err(src: &str) -> ParseError {
    match Expr::parse(src) {
        Ok(e) => panic!("{src:?} parsed, but should not: {e:?}"),
        Err(e) => e,
    }
}

/// (condition, 1-based column of the error, phrase in the message)
const CASES: &[(&str, usize, &str)] = &[
    // Nothing to parse.
    ("", 1, "empty condition"),
    ("   ", 1, "empty condition"),
    ("# just a comment", 1, "empty condition"),
    // Forbidden constructs.
    ("lambda: 1", 1, "lambda"),
    ("row['a'] if lambda: 1 else 2", 13, "lambda"),
    ("[row for r in row]", 6, "comprehensions"),
    ("(row for r in row)", 6, "comprehensions"),
    ("{row: 1 for r in row}", 9, "comprehensions"),
    ("{row for r in row}", 6, "comprehensions"),
    ("len(row for r in row)", 9, "comprehensions"),
    ("f'{row}'", 1, "f-strings"),
    ("row['a'] == F\"x\"", 13, "f-strings"),
    ("rb'x'", 1, "bytes"),
    ("(row := 1)", 6, ":="),
    ("[*row]", 2, "starred"),
    ("len(*row)", 5, "starred"),
    ("{**row}", 2, "unpacking"),
    ("row.keys()", 4, "attribute access"),
    ("row['a'].get('x')", 9, "attribute access"),
    ("row['s'].upper()", 9, "attribute access"),
    ("len(row).real", 9, "attribute access"),
    ("row.get", 4, "must be called"),
    ("row.get()", 4, "1 or 2 arguments (0 given)"),
    ("row.get('a', 1, 2)", 4, "1 or 2 arguments (3 given)"),
    ("row['a'][1:2]", 11, "slices"),
    ("row[:]", 5, "slices"),
    ("'abc'[0]", 6, "only allowed on values read from the row"),
    ("[1, 2][0]", 7, "only allowed on values read from the row"),
    ("len(row)[0]", 9, "only allowed on values read from the row"),
    ("row['f'](1)", 9, "can be called"),
    ("row(1)", 4, "can be called"),
    // Names and calls.
    ("foo", 1, "unknown name 'foo'"),
    ("row['a'] > x", 12, "unknown name 'x'"),
    ("true", 1, "did you mean True?"),
    ("null", 1, "did you mean None?"),
    ("print(1)", 1, "unknown name 'print'"),
    ("__import__('os')", 1, "unknown name '__import__'"),
    ("len", 1, "'len' must be called"),
    ("(len)(row)", 2, "'len' must be called"),
    ("len()", 1, "exactly 1 argument (0 given)"),
    ("abs(1, 2)", 1, "exactly 1 argument (2 given)"),
    ("str(1, 2)", 1, "0 to 1 arguments (2 given)"),
    ("int(1, 2, 3)", 1, "0 to 2 arguments (3 given)"),
    ("int(x=1)", 5, "keyword arguments"),
    ("row.get('a', default=1)", 14, "keyword arguments"),
    ("yield 1", 1, "'yield' is not allowed"),
    ("await row", 1, "'await' is not allowed"),
    ("import os", 1, "'import' is not allowed"),
    // Operators outside the language.
    ("row['a'] is 1", 10, "only be used to compare with None"),
    (
        "row['a'] is not 'x'",
        10,
        "only be used to compare with None",
    ),
    ("2 ** 3", 3, "**"),
    ("-2 ** 3", 4, "**"),
    ("1 | 2", 3, "bitwise"),
    ("1 & 2 == 2", 3, "bitwise"),
    ("1 << 2", 3, "bitwise"),
    ("~1", 1, "'~'"),
    ("1 @ 2", 3, "@"),
    ("!row['a']", 1, "use 'not'"),
    ("row['a'] = 1", 10, "use '=='"),
    ("row['a'] += 1", 10, "augmented assignment"),
    ("1; 2", 2, "single expression"),
    ("...", 1, "Ellipsis"),
    // Plain syntax errors.
    ("(1", 3, "expected ')'"),
    ("[1, 2", 6, "expected ']'"),
    ("{'a': 1", 8, "expected '}'"),
    ("{'a': 1, 'b'}", 13, "expected ':'"),
    ("row['a'", 8, "expected ']'"),
    ("len(1", 6, "expected ')'"),
    ("1 +", 4, "unexpected end"),
    ("not", 4, "unexpected end"),
    ("row['a'] and", 13, "unexpected end"),
    ("1 if 2", 7, "expected 'else'"),
    ("1 if 2 else", 12, "unexpected end"),
    ("1 2", 3, "a number"),
    ("row row", 5, "name 'row'"),
    ("'a' 1", 5, "a number"),
    ("1 + not 2", 5, "in parentheses"),
    ("and 1", 1, "expression before 'and'"),
    ("1 not 2", 3, "keyword 'not'"),
    (")", 1, "unexpected ')'"),
    ("row.", 4, "attribute access"),
    // Lexical errors.
    ("'abc", 1, "unterminated string"),
    ("row['a\nb']", 5, "unterminated string"),
    ("'\\x4'", 2, "truncated"),
    ("'\\N{BULLET}'", 2, "\\N{"),
    ("012", 1, "leading zeros"),
    ("1__0", 2, "between digits"),
    ("1j", 1, "complex"),
    ("1abc", 1, "invalid number"),
    ("99999999999999999999999999999999999999999", 1, "too large"),
    ("row $ 1", 5, "'$'"),
    ("1 +\n 2", 4, "line break outside brackets"),
];

#[test]
fn each_error_names_the_problem_and_its_column() {
    let mut failures = Vec::new();
    for &(src, column, phrase) in CASES {
        let e = parse_err(src);
        if e.position.column != column || !e.message.contains(phrase) {
            failures.push(format!(
                "{src:?}: got column {} {:?}, want column {column} containing {phrase:?}",
                e.position.column, e.message
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn positions_count_bytes_lines_and_characters() {
    // 'é' is two bytes but one column.
    let e = parse_err("'é' + foo");
    assert_eq!(
        e.position,
        Position {
            offset: 7,
            line: 1,
            column: 7
        }
    );
    let e = parse_err("(row['a'] +\n   foo)");
    assert_eq!(
        e.position,
        Position {
            offset: 15,
            line: 2,
            column: 4
        }
    );
    assert_eq!(e.to_string(), format!("line 2, column 4: {}", e.message));
    let e = parse_err("1 +");
    assert_eq!(e.to_string(), "column 4: unexpected end of condition");
}

#[test]
fn valid_python_forms_parse() {
    for src in [
        "row['a'] if row['b'] else row['c'] if row['d'] else None",
        "(1, 2)",
        "()",
        "1,",
        "row[1, 2]",
        "[1, 2,]",
        "{1: 2,}",
        "{1, 2,}",
        "len(row,)",
        "row.get('a', 1,)",
        "(row).get('a')",
        "((row['a']))['b']",
        "not not row['a']",
        "- + - row['a']",
        "row['a'] not in row['b']",
        "row['a'] is not None is not None",
        "1 < 2 <= 3 > 0 >= 0 != 1 == 1 in [True] not in []",
        "r'\\d' + R\"x\" + u'y' + U'z'",
        "'''a\nb''' + \"\"\"c\"\"\"",
        "row if False else 1",
    ] {
        if let Err(e) = Expr::parse(src) {
            panic!("{src:?} should parse: {e}");
        }
    }
}
