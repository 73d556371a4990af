//! Hostile input: deep nesting must give a ParseError (not a stack overflow), huge values
//! an EvalError (not an abort), and the limits must leave room for real conditions.

use serde_json::Value;

use super::sample_row;
use crate::expr::{EvalErrorKind, Expr, MAX_NESTING, MAX_VALUE_DEPTH};
use crate::value::Row;

/// Runs `f` on a thread with half the stack Rust gives spawned threads by default (1 MiB),
/// so that these tests fail if the nesting limit stops protecting the stack rather than
/// pass thanks to a generous stack. The worst case at the limit measured about 700 KiB in
/// a debug build (which gives every local its own stack slot); release builds need far
/// less.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(f)
        .unwrap_or_else(|e| panic!("cannot spawn test thread: {e}"));
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn hostile_inputs(n: usize) -> Vec<String> {
    vec![
        format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        format!("{}1{}", "[".repeat(n), "]".repeat(n)),
        format!("{}1{}", "{".repeat(n), "}".repeat(n)),
        format!("{}1{}", "{1: ".repeat(n), "}".repeat(n)),
        format!("{}True", "not ".repeat(n)),
        format!("{}1", "-".repeat(n)),
        format!("{}1", "- +".repeat(n / 2)),
        format!("1{}", "+1".repeat(n)),
        format!("1{}", " if 1 else 1".repeat(n)),
        format!("1{}", " or 1".repeat(n)),
        format!("1{}", " < 1".repeat(n)),
        format!("row{}", "['a']".repeat(n)),
        format!("{}1{}", "abs(".repeat(n), ")".repeat(n)),
        format!("{}'a'{}", "row.get(".repeat(n), ")".repeat(n)),
        format!("row[{}0{}", "row[".repeat(n), "]".repeat(n + 1)),
    ]
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    on_small_stack(|| {
        for n in [MAX_NESTING + 1, 10_000, 200_000] {
            for src in hostile_inputs(n) {
                let flat = src.contains(" or ") || src.contains(" < ");
                match Expr::parse(&src) {
                    // `or` and comparison chains are flat lists, not nesting.
                    Ok(e) if flat => {
                        let _ = e.eval(&Row::new());
                    }
                    Ok(_) => panic!("{}... parsed at depth {n}", &src[..40.min(src.len())]),
                    Err(e) => assert!(
                        e.message.contains("nested too deeply"),
                        "{}...: {e}",
                        &src[..40.min(src.len())]
                    ),
                }
            }
        }
    });
}

#[test]
fn unclosed_deep_nesting_is_a_parse_error() {
    on_small_stack(|| {
        for n in [MAX_NESTING + 1, 200_000] {
            assert!(Expr::parse(&"(".repeat(n)).is_err());
            assert!(Expr::parse(&"[{(".repeat(n)).is_err());
        }
    });
}

#[test]
fn nesting_just_under_the_limit_parses_and_evaluates() {
    on_small_stack(|| {
        let row = sample_row();
        for src in hostile_inputs(MAX_NESTING - 2) {
            match Expr::parse(&src) {
                // Evaluation may fail (e.g. subscripting an int); it must not crash.
                Ok(e) => {
                    let _ = e.eval(&row);
                    let _ = e.eval_route_label(&row);
                }
                Err(e) => panic!("{}...: {e}", &src[..40.min(src.len())]),
            }
        }
        let n = MAX_NESTING - 2;
        let parens = format!("{}row['a']{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(
            Expr::parse(&parens).map(|e| e.eval(&row)),
            Ok(Ok(serde_json::json!(1)))
        );
        let sums = format!("0{}", " + 1".repeat(n));
        assert_eq!(
            Expr::parse(&sums).map(|e| e.eval(&row)),
            Ok(Ok(serde_json::json!(n)))
        );
    });
}

#[test]
fn long_flat_conditions_are_fine() {
    let n = 20_000;
    let any = format!("row['a'] in [{}]", "0, ".repeat(n) + "1");
    assert_eq!(
        Expr::parse(&any).map(|e| e.eval(&sample_row())),
        Ok(Ok(Value::Bool(true)))
    );
    let ors = format!("False{}", " or False".repeat(n)) + " or row['a']";
    assert_eq!(
        Expr::parse(&ors).map(|e| e.eval(&sample_row())),
        Ok(Ok(serde_json::json!(1)))
    );
}

#[test]
fn deep_row_values_are_an_error() {
    on_small_stack(|| {
        let mut deep = Value::Null;
        for _ in 0..(MAX_VALUE_DEPTH + 10) {
            deep = Value::Array(vec![deep]);
        }
        let mut row = Row::new();
        row.insert("deep".into(), deep);
        let e = Expr::parse("len(row['deep'])").map(|e| e.eval(&row).map_err(|e| e.kind));
        // Reading it whole is refused ...
        assert_eq!(e, Ok(Err(EvalErrorKind::TooDeep)));
        // ... but indexing into it reads only what it needs.
        let e = Expr::parse(&format!("row['deep']{} is None", "[0]".repeat(15)));
        assert_eq!(e.map(|e| e.eval(&row)), Ok(Ok(Value::Bool(false))));
        // route_label never fails; it elides what is too deep.
        let label = crate::expr::route_label(row.get("deep").unwrap_or(&Value::Null));
        assert!(label.contains("..."));
    });
}

#[test]
fn repetition_is_bounded() {
    let row = sample_row();
    for src in [
        "'x' * 100000000",
        "[0] * 100000000",
        "[row['l']] * 30000000",
        "('ab' * 20000000) * 2",
        "'x' * 9223372036854775807",
    ] {
        let e = Expr::parse(src).map(|e| e.eval(&row).map_err(|e| e.kind));
        assert_eq!(e, Ok(Err(EvalErrorKind::TooLarge)), "{src}");
    }
    // Found by the `expr` fuzz target: each element of a list or tuple costs the memory of
    // a value, not one byte, so six million of them (about 200 MB) are too many.
    for src in ["(1,) * 6666666", "[None] * 6666666", "[[]] * 3000000"] {
        let e = Expr::parse(src).map(|e| e.eval(&row).map_err(|e| e.kind));
        assert_eq!(e, Ok(Err(EvalErrorKind::TooLarge)), "{src}");
    }
    // ... while a repetition well inside the limit still works.
    let e = Expr::parse("len((1,) * 100000)").map(|e| e.eval(&row));
    assert_eq!(e, Ok(Ok(serde_json::json!(100000))));
    // Empty sequences repeat for free however large the count (within Python's index
    // range).
    let e = Expr::parse("'' * 9223372036854775807 + 'ok'").map(|e| e.eval(&row));
    assert_eq!(e, Ok(Ok(serde_json::json!("ok"))));
    let e = Expr::parse("len([] * 9223372036854775807)").map(|e| e.eval(&row));
    assert_eq!(e, Ok(Ok(serde_json::json!(0))));
}
