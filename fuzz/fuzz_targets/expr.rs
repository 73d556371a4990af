//! The condition language: parse arbitrary text, and evaluate whatever parses against
//! rows of every value kind (and a row read from the input itself). Every outcome is a
//! value or a positioned error — never a panic, a stack overflow or a runaway allocation.
#![no_main]

use attest_engine::expr::{route_label, truthy, Expr};
use attest_engine::value::Row;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn rows(extra: Option<Row>) -> Vec<Row> {
    let fixed = json!({
        "amount": 1000.5, "score": 0.8, "n": 3, "big": i64::MAX, "neg": -7,
        "name": "Ünïcode", "empty": "", "ok": true, "none": null,
        "list": [1, "a", null, [2.5]], "obj": {"k": {"j": 1}}
    });
    let mut out = vec![Row::new()];
    if let serde_json::Value::Object(m) = fixed {
        out.push(m);
    }
    out.extend(extra);
    out
}

fuzz_target!(|data: &[u8]| {
    // `condition NUL json-row`: the part after the first NUL, if it is a JSON object,
    // is one more row to evaluate against.
    let (cond, row) = match data.iter().position(|&b| b == 0) {
        Some(i) => (
            &data[..i],
            serde_json::from_slice::<Row>(&data[i + 1..]).ok(),
        ),
        None => (data, None),
    };
    let Ok(source) = std::str::from_utf8(cond) else {
        return;
    };
    let Ok(expr) = Expr::parse(source) else {
        return;
    };
    let _ = expr.is_statically_boolean();
    let _ = expr.field_refs();
    for row in rows(row) {
        if let Ok(v) = expr.eval(&row) {
            let _ = route_label(&v);
            let _ = truthy(&v);
        }
        let _ = expr.eval_truthy(&row);
        let _ = expr.eval_route_label(&row);
    }
});
