//! Property tests that no input text makes parsing or evaluation panic.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::gen;
use crate::expr::Expr;

/// Text biased towards the language's own tokens, so that random strings get past the
/// lexer and deep into the parser and evaluator.
fn condition_like() -> impl Strategy<Value = String> {
    let tokens = proptest::sample::select(vec![
        "row",
        "['a']",
        "['l']",
        "[0]",
        "[-1]",
        ".get(",
        "row.get('s', ",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        " + ",
        " - ",
        " * ",
        " / ",
        " // ",
        " % ",
        " == ",
        " != ",
        " < ",
        " <= ",
        " > ",
        " >= ",
        " in ",
        " not in ",
        " is ",
        " is not ",
        " and ",
        " or ",
        "not ",
        " if ",
        " else ",
        "-",
        "+",
        "None",
        "True",
        "False",
        "0",
        "1",
        "-1",
        "2.5",
        "1e308",
        "'a'",
        "\"b\"",
        "''",
        "len(",
        "str(",
        "int(",
        "float(",
        "bool(",
        "abs(",
        "lambda",
        " for ",
        ":=",
        "*",
        "**",
        ".",
        "'",
        "\"",
        "\\",
        "\n",
        "#",
        "f'",
        "1_0",
        "0x",
        "é",
        " ",
        "9223372036854775807",
        "18446744073709551615",
        "170141183460469231731687303715884105727",
    ]);
    proptest::collection::vec(tokens, 0..40).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        // Keep regression seeds beside this file rather than in a crate-level folder.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(src in any::<String>()) {
        let _ = Expr::parse(&src);
    }

    #[test]
    fn condition_like_text_never_panics(src in condition_like(), row in gen::row()) {
        if let Ok(expr) = Expr::parse(&src) {
            let _ = expr.eval(&row);
            let _ = expr.eval_truthy(&row);
            let _ = expr.eval_route_label(&row);
            let _ = expr.is_statically_boolean();
            let _ = expr.field_refs();
        }
    }

    #[test]
    fn parse_errors_point_inside_the_text(src in condition_like()) {
        if let Err(e) = Expr::parse(&src) {
            prop_assert!(e.position.offset <= src.len());
            prop_assert!(src.is_char_boundary(e.position.offset));
            prop_assert!(!e.message.is_empty());
        }
    }
}
