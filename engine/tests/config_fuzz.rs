//! No input makes the loader panic: random edits of a valid pipeline and arbitrary text
//! either load or come back as located errors.

use attest_engine::config::parse_str;
use proptest::prelude::*;

const BASE: &str = "source:
  plugin: csv
  on_success: a
  options: {path: in.csv, schema: {mode: fixed, fields: ['id: int', 'v: float?']}, on_validation_failure: q}
transforms:
- name: t
  plugin: llm
  input: a
  on_success: b
  on_error: q
  options: {provider: openrouter, model: m, api_key: '${K:-x}', template: 'x', pool_size: 2, queries: {q1: {input_fields: {a: id}}}}
gates:
- name: g
  input: b
  condition: row['v'] > 1
  routes: {'true': fork, 'false': out}
  fork_to: [p1, p2]
aggregations:
- name: agg
  plugin: batch_replicate
  input: m
  on_success: out
  on_error: discard
  trigger: {count: 2, condition: \"row['batch_count'] > 1\"}
coalesce:
- name: m
  branches: [p1, p2]
  merge: nested
sinks:
  out: {plugin: csv, on_write_failure: q, options: {path: o.csv}}
  q: {plugin: json, options: {path: q.jsonl}}
retry: {max_attempts: 2}
";

fn env(name: &str) -> Option<String> {
    (name == "K").then(|| "secret".to_string())
}

#[test]
fn the_base_pipeline_is_valid() {
    if let Err(e) = parse_str(BASE, "f.yaml", &env) {
        panic!("{e}");
    }
}

const PIECES: [&str; 16] = [
    ":", "-", "[", "]", "{", "}", ",", "'", "\"", "\n", "  ", "&a ", "*a", "${", "<<: ", "!!int ",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn edits_of_a_valid_pipeline_never_panic(
        edits in prop::collection::vec((0usize..BASE.len(), 0usize..PIECES.len(), 0usize..4, any::<bool>()), 1..6)
    ) {
        let mut text = BASE.to_string();
        for (pos, piece, cut, insert) in edits {
            let mut at = pos.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            if insert {
                text.insert_str(at, PIECES[piece]);
            } else {
                let mut end = (at + cut).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, "");
            }
        }
        if let Err(errors) = parse_str(&text, "f.yaml", &env) {
            prop_assert!(!errors.is_empty());
            for e in errors.iter() {
                prop_assert!(e.line >= 1 && e.column >= 1, "{}", e);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_str(&text, "f.yaml", &env);
    }
}
