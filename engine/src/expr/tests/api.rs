//! The public API beyond labels: JSON results, `route_label`, `truthy`, static
//! booleanness, field references and the contents of evaluation errors.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{parse, sample_row};
use crate::expr::{route_label, truthy, EvalErrorKind, Expr, FieldRefs, Position};
use crate::value::Row;

fn row_of(value: Value) -> Row {
    match value {
        Value::Object(map) => map,
        _ => Row::new(),
    }
}

fn eval(src: &str) -> Result<Value, EvalErrorKind> {
    parse(src).eval(&sample_row()).map_err(|e| e.kind)
}

#[test]
fn eval_returns_row_values() {
    assert_eq!(eval("row['a'] + 1"), Ok(json!(2)));
    assert_eq!(eval("row['a'] + 1.0"), Ok(json!(2.0)));
    assert!(matches!(eval("1.0"), Ok(Value::Number(n)) if n.is_f64()));
    assert!(matches!(eval("1"), Ok(Value::Number(n)) if n.is_i64()));
    assert_eq!(eval("row['u']"), Ok(json!(u64::MAX)));
    assert_eq!(eval("-row['big'] - 1"), Ok(json!(i64::MIN)));
    assert_eq!(eval("row['l'] + [None]"), Ok(json!([1, 2, 3, null])));
    assert_eq!(eval("(1, 'a')"), Ok(json!([1, "a"])));
    assert_eq!(eval("{'k': {1, 2}}"), Ok(json!({"k": [1, 2]})));
    assert_eq!(eval("row['d']"), Ok(json!({"x": {"y": 7}})));
    assert_eq!(eval("row.get('zz')"), Ok(Value::Null));
    assert_eq!(eval("row['t'] and 'yes'"), Ok(json!("yes")));
}

#[test]
fn results_json_cannot_hold_are_errors() {
    for src in [
        "float('nan')",
        "1e308 * 10",
        "row['u'] + 1",
        "-row['big'] - 2",
        "{1: 'a'}",
        "[float('inf')]",
    ] {
        assert_eq!(eval(src), Err(EvalErrorKind::Unrepresentable), "{src}");
    }
    // Where the result is only tested or labelled, such values are fine.
    let row = sample_row();
    assert_eq!(parse("float('nan')").eval_truthy(&row), Ok(true));
    assert_eq!(
        parse("row['u'] + 1").eval_route_label(&row).as_deref(),
        Ok("18446744073709551616")
    );
}

#[test]
fn route_label_is_python_str_with_lowercase_bools() {
    let cases = [
        (json!(true), "true"),
        (json!(false), "false"),
        (json!("Flagged"), "Flagged"),
        (json!(""), ""),
        (json!(1), "1"),
        (json!(-12), "-12"),
        (json!(u64::MAX), "18446744073709551615"),
        (json!(i64::MIN), "-9223372036854775808"),
        (json!(1.0), "1.0"),
        (json!(0.5), "0.5"),
        (json!(1e16), "1e+16"),
        (json!(1e-5), "1e-05"),
        (json!(-0.0), "-0.0"),
        (Value::Null, "None"),
        (
            json!([1, "a", null, true, 2.5]),
            "[1, 'a', None, True, 2.5]",
        ),
        (json!({"k": "it's"}), "{'k': \"it's\"}"),
        (json!([]), "[]"),
        (json!({}), "{}"),
    ];
    for (value, want) in cases {
        assert_eq!(route_label(&value), want, "{value}");
    }
}

#[test]
fn route_label_of_tuple_results_follows_python_through_eval_route_label() {
    let row = sample_row();
    let e = parse("(row['a'], 'x')");
    assert_eq!(e.eval_route_label(&row).as_deref(), Ok("(1, 'x')"));
    // Through JSON the tuple has become a list.
    assert_eq!(
        e.eval(&row).map(|v| route_label(&v)).as_deref(),
        Ok("[1, 'x']")
    );
}

#[test]
fn truthiness_of_row_values() {
    for falsy in [
        json!(null),
        json!(false),
        json!(0),
        json!(0.0),
        json!(-0.0),
        json!(""),
        json!([]),
        json!({}),
    ] {
        assert!(!truthy(&falsy), "{falsy}");
    }
    for truthy_value in [
        json!(true),
        json!(1),
        json!(-1),
        json!(u64::MAX),
        json!(0.1),
        json!(" "),
        json!("0"),
        json!([0]),
        json!({"a": null}),
    ] {
        assert!(truthy(&truthy_value), "{truthy_value}");
    }
}

#[test]
fn static_booleanness_follows_elspeth() {
    for src in [
        "row['a'] > 1",
        "row['a'] in [1, 2]",
        "row['n'] is None",
        "not row['a']",
        "True",
        "False",
        "bool(row['a'])",
        "row['a'] > 1 and row['b'] < 2",
        "(row['a'] > 1) or not row['x'] or False",
        "True if row['a'] else False",
        "(row['a'] == 1) if row['s'] else bool(row['l'])",
        "((row['a'] > 1))",
    ] {
        assert!(
            parse(src).is_statically_boolean(),
            "{src} should be boolean"
        );
    }
    for src in [
        "row['a']",
        "row['a'] and True",
        "True or row['a']",
        "'x' if row['a'] else False",
        "1",
        "None",
        "len(row['s'])",
        "row['a'] + 1",
        "-True",
        "row.get('flag')",
        "(True, False)",
    ] {
        assert!(
            !parse(src).is_statically_boolean(),
            "{src} should not be boolean"
        );
    }
}

#[test]
fn field_refs_list_what_a_trigger_reads() {
    let fields = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    let e = parse("row['batch_count'] >= 10 or row.get('batch_age_seconds', 0) > 5.5");
    assert_eq!(
        e.field_refs(),
        FieldRefs {
            fields: fields(&["batch_age_seconds", "batch_count"]),
            dynamic: false
        }
    );
    let e = parse("row['a']['b'] + len(row['c'][0])");
    assert_eq!(e.field_refs().fields, fields(&["a", "c"]));
    assert!(!e.field_refs().dynamic);
    assert!(parse("row[row['k']]").field_refs().dynamic);
    assert_eq!(parse("row[row['k']]").field_refs().fields, fields(&["k"]));
    assert!(parse("len(row) > 2").field_refs().dynamic);
    assert!(parse("'a' in row").field_refs().dynamic);
    assert!(parse("row[0]").field_refs().dynamic);
    assert_eq!(parse("1 + 1").field_refs(), FieldRefs::default());
}

#[test]
fn trigger_condition_over_an_arbitrary_row() {
    let e = parse("row['batch_count'] >= 3 or row['batch_age_seconds'] > 30.0");
    let row =
        |count: u64, age: f64| row_of(json!({"batch_count": count, "batch_age_seconds": age}));
    assert_eq!(e.eval_truthy(&row(3, 0.0)), Ok(true));
    assert_eq!(e.eval_truthy(&row(1, 30.5)), Ok(true));
    assert_eq!(e.eval_truthy(&row(2, 12.0)), Ok(false));
    assert_eq!(e.eval(&row(2, 12.0)), Ok(json!(false)));
    assert_eq!(
        e.eval_truthy(&Row::new()).map_err(|err| err.kind),
        Err(EvalErrorKind::MissingKey)
    );
}

#[test]
fn eval_errors_point_at_the_failing_part() {
    let row = sample_row();
    let err = |src: &str| match parse(src).eval(&row) {
        Ok(v) => panic!("{src} gave {v}"),
        Err(e) => e,
    };

    let e = err("row['a'] > 0 and row['a'] + row['s'] > 1");
    assert_eq!(e.kind, EvalErrorKind::Type);
    assert_eq!(e.snippet, "row['a'] + row['s']");
    assert_eq!(e.position.column, 18);
    assert!(e.message.contains("'int' and 'str'"), "{}", e.message);
    assert_eq!(
        e.to_string(),
        "TypeError: unsupported operand type(s) for +: 'int' and 'str' \
         (in `row['a'] + row['s']` at column 18)"
    );

    let e = err("1 + row['missing']");
    assert_eq!(e.kind, EvalErrorKind::MissingKey);
    assert_eq!(e.message, "row has no field 'missing'");
    assert_eq!(
        e.position,
        Position {
            offset: 4,
            line: 1,
            column: 5
        }
    );

    let e = err("row['d']['x']['zz']");
    assert_eq!(e.message, "key 'zz' not found in row['d']['x']");

    let e = err("row['l'][7]");
    assert_eq!(e.kind, EvalErrorKind::IndexOutOfRange);
    assert_eq!(
        e.message,
        "list index 7 out of range for row['l'] (length 3)"
    );

    let e = err("'a' < 1");
    assert_eq!(
        e.message,
        "'<' not supported between instances of 'str' and 'int'"
    );

    let e = err("int(row['s'])");
    assert_eq!(e.kind, EvalErrorKind::Value);
    assert_eq!(e.message, "invalid literal for int() with base 10: 'hello'");

    let e = err("row['a'] // row['z']");
    assert_eq!(e.kind, EvalErrorKind::ZeroDivision);

    let e = err(&format!("len([{}]) + 'x'", "1, ".repeat(40)));
    assert!(e.snippet.ends_with('…') && e.snippet.chars().count() == 81);
}

#[test]
fn expr_is_shareable_and_displays_its_source() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expr>();
    let e: Expr = "row['a']  >  1".parse().unwrap_or_else(|_| parse("None"));
    assert_eq!(e.to_string(), "row['a']  >  1");
    assert_eq!(e.source(), "row['a']  >  1");
    assert_eq!(e.clone(), e);
}
