//! Every kind of configuration error, each with its exact line and column.

use attest_engine::config::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(yaml: &str) -> Vec<ConfigError> {
    match parse_str(yaml, "p.yaml", &no_env) {
        Ok(_) => panic!("expected errors, the configuration loaded:\n{yaml}"),
        Err(e) => e.0,
    }
}

/// Asserts the exact set of errors: position and a distinctive part of the message.
#[track_caller]
fn expect(yaml: &str, expected: &[(usize, usize, &str)]) {
    let got = errors(yaml);
    let shown: Vec<String> = got.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "wrong number of errors:\n{}",
        shown.join("\n")
    );
    for (e, (line, column, needle)) in got.iter().zip(expected) {
        assert_eq!(
            (e.line, e.column),
            (*line, *column),
            "wrong position for:\n{e}\nall:\n{}",
            shown.join("\n")
        );
        assert!(e.message.contains(needle), "message lacks {needle:?}:\n{e}");
        assert_eq!(e.file, "p.yaml");
    }
}

const SRC: &str = "source:
  plugin: csv
  on_success: a
  options: {path: in.csv, schema: {mode: observed}, on_validation_failure: discard}
";

/// A source wired straight to the sink `out`, for tests about other sections.
const SRC_OUT: &str = "source:
  plugin: csv
  on_success: out
  options: {path: in.csv, schema: {mode: observed}, on_validation_failure: discard}
";

const SINK: &str = "sinks:
  out: {plugin: csv, options: {path: out.csv}}
";

/// One transform `t` (a → out) whose options start on line 12, indented by 4.
fn transform(plugin: &str, options: &str) -> String {
    format!(
        "{SRC}transforms:\n- name: t\n  plugin: {plugin}\n  input: a\n  on_success: out\n  on_error: discard\n  options:\n{options}{SINK}"
    )
}

// ---- YAML level ----

#[test]
fn malformed_yaml() {
    let e = errors("source:\n  plugin: [csv\nsinks: {}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].column), (3, 6), "{}", e[0]);
    assert!(e[0].message.starts_with("invalid YAML"), "{}", e[0]);
}

#[test]
fn duplicate_keys() {
    expect(
        &format!("{SRC}{SINK}sinks: {{}}\n"),
        &[(7, 1, "duplicate key `sinks`")],
    );
}

#[test]
fn empty_file_and_wrong_root() {
    expect("", &[(1, 1, "the settings file is empty")]);
    expect(
        "- a\n- b\n",
        &[(1, 1, "the settings file must be a mapping")],
    );
}

// ---- keys and types ----

#[test]
fn unknown_top_level_key() {
    expect(
        &format!("{SRC_OUT}{SINK}trasforms: []\n"),
        &[(
            7,
            1,
            "unknown key `trasforms` in the settings file; expected one of: source, transforms",
        )],
    );
    let e = errors(&format!("{SRC_OUT}{SINK}trasforms: []\n"));
    assert!(
        e[0].message.ends_with("(did you mean `transforms`?)"),
        "{}",
        e[0]
    );
}

#[test]
fn unknown_option_key_names_the_expected_keys() {
    expect(
        "source:\n  plugin: csv\n  on_success: out\n  options: {path: a, schema: {mode: observed}, on_validation_failure: discard, delimter: ';'}\nsinks: {out: {plugin: csv, options: {path: b}}}\n",
        &[(4, 80, "unknown key `delimter` in csv source options; expected one of: path, schema, on_validation_failure, encoding, delimiter, skip_rows, columns, field_mapping (did you mean `delimiter`?)")],
    );
}

#[test]
fn option_keys_are_case_sensitive() {
    expect(
        &transform("passthrough", "    Validate_Input: true\n"),
        &[(12, 5, "unknown key `Validate_Input`")],
    );
}

#[test]
fn wrong_types() {
    expect(
        "source:\n  plugin: csv\n  on_success: out\n  options:\n    path: [a]\n    schema: {mode: observed}\n    on_validation_failure: discard\n    skip_rows: many\n    delimiter: ';;'\nsinks: {out: {plugin: csv, options: {path: b, validate_input: 'yes'}}}\n",
        &[
            (5, 11, "`path` must be a string; found a list"),
            (8, 16, "`skip_rows` must be an integer; found the string \"many\""),
            (9, 16, "`delimiter` is \";;\"; expected exactly one character"),
            (10, 63, "`validate_input` must be a boolean (true or false); found the string \"yes\""),
        ],
    );
}

#[test]
fn yes_and_no_are_strings_not_booleans() {
    expect(
        &transform("field_mapper", "    strict: yes\n"),
        &[(
            12,
            13,
            "`strict` must be a boolean (true or false); found the string \"yes\"",
        )],
    );
}

#[test]
fn missing_required_keys() {
    expect(
        "source:\n  plugin: csv\n  options: {path: a, schema: {mode: observed}}\nsinks: {out: {plugin: csv, options: {path: b}}}\n",
        &[
            (1, 1, "`source` is missing required key `on_success`"),
            (3, 3, "csv source options is missing required key `on_validation_failure`"),
        ],
    );
    expect(SINK, &[(1, 1, "missing required section `source`")]);
    expect(SRC, &[(1, 1, "missing required section `sinks`")]);
}

#[test]
fn unknown_plugins_and_choices() {
    expect(
        "source:\n  plugin: xml\n  on_success: out\n  options: {path: a}\nsinks: {out: {plugin: parquet, options: {path: b, mode: overwrite}}}\n",
        &[
            (2, 11, "source `plugin` is \"xml\"; expected one of: csv, json"),
            (5, 23, "sink `plugin` is \"parquet\"; expected one of: csv, json"),
        ],
    );
    expect(
        &transform("uppercase", ""),
        &[(7, 11, "transform `plugin` is \"uppercase\"; expected one of: passthrough, field_mapper, truncate, keyword_filter, json_explode, llm, http")],
    );
}

// ---- names (ELSPETH §1.3) ----

#[test]
fn node_name_rules() {
    let yaml = |name: &str| {
        format!("{SRC}transforms:\n- name: {name}\n  plugin: passthrough\n  input: a\n  on_success: out\n  on_error: discard\n{SINK}")
    };
    expect(
        &yaml("9lives"),
        &[(
            6,
            9,
            "node name `9lives` is not allowed; expected an ASCII letter",
        )],
    );
    expect(&yaml("a.b"), &[(6, 9, "node name `a.b` is not allowed")]);
    expect(
        &yaml("fork"),
        &[(6, 9, "node name `fork` is a reserved word")],
    );
    expect(&yaml("on_success"), &[(6, 9, "is a reserved word")]);
    expect(&yaml("__x"), &[(6, 9, "node name `__x` starts with `__`")]);
    expect(
        &yaml(&"n".repeat(39)),
        &[(6, 9, "is 39 characters long; expected at most 38")],
    );
}

#[test]
fn names_are_unique_across_kinds_and_sinks() {
    let yaml = format!(
        "{SRC}transforms:\n- name: out\n  plugin: passthrough\n  input: a\n  on_success: b\n  on_error: discard\ngates:\n- name: out\n  input: b\n  condition: 'True'\n  routes: {{'true': out, 'false': out}}\n{SINK}"
    );
    expect(
        &yaml,
        &[
            (
                12,
                9,
                "the name `out` is already used by transform `out` on line 6",
            ),
            (
                17,
                3,
                "the name `out` is already used by transform `out` on line 6",
            ),
        ],
    );
}

#[test]
fn sink_and_connection_name_rules() {
    expect(
        &format!("{SRC}sinks:\n  Out: {{plugin: csv, options: {{path: b}}}}\n  a: {{plugin: csv, options: {{path: c}}}}\n"),
        &[
            (6, 3, "sink name `Out` mixes upper and lower case; expected lower case"),
            // Nothing leads to it either (the source feeds `a`).
            (6, 3, "sink `Out` is unreachable"),
        ],
    );
    expect(
        &format!("{SRC}sinks:\n  discard: {{plugin: csv, options: {{path: b}}}}\n  a: {{plugin: csv, options: {{path: c}}}}\n"),
        &[
            (6, 3, "a sink may not be named `discard`"),
            (6, 3, "sink `discard` is unreachable"),
        ],
    );
    let long = "c".repeat(65);
    expect(
        &format!("source:\n  plugin: csv\n  on_success: {long}\n  options: {{path: in.csv, schema: {{mode: observed}}, on_validation_failure: discard}}\n{SINK}"),
        &[(3, 15, "is 65 characters long; expected at most 64")],
    );
}

// ---- schemas (ELSPETH §2) ----

#[test]
fn schema_errors() {
    let yaml = |schema: &str| {
        format!("source:\n  plugin: csv\n  on_success: out\n  options:\n    path: a\n    on_validation_failure: discard\n    schema: {schema}\n{SINK}")
    };
    expect(
        &yaml("{fields: ['a: int']}"),
        &[(7, 5, "schema is missing required key `mode`")],
    );
    expect(
        &yaml("{mode: fixed}"),
        &[(
            7,
            5,
            "a fixed or flexible schema needs a non-empty `fields` list",
        )],
    );
    expect(
        &yaml("{mode: strict}"),
        &[(
            7,
            20,
            "`mode` is \"strict\"; expected one of: fixed, flexible, observed",
        )],
    );
    expect(
        &yaml("{mode: fixed, fields: ['a : int', 'b: integer', 'c: Int', '1c: str', 'd']}"),
        &[
            (7, 36, "field `a : int` has a space before `:`"),
            (7, 47, "unknown field type `integer`"),
            (7, 61, "unknown field type `Int`"),
            (7, 71, "field name `1c` is not an identifier"),
            (7, 82, "field `d` has no type"),
        ],
    );
    expect(
        &yaml("{mode: fixed, fields: ['a: int', 'a: str']}"),
        &[(7, 46, "field `a` is declared twice")],
    );
    expect(
        &yaml(
            "{mode: flexible, fields: ['a: int'], required_fields: [b], guaranteed_fields: [a, a]}",
        ),
        &[
            (
                7,
                68,
                "`b` in `required_fields` is not a declared field; expected one of: a",
            ),
            (7, 95, "`a` appears twice in `guaranteed_fields`"),
        ],
    );
    expect(
        &yaml("{mode: observed, fields: ['a: int']}"),
        &[(7, 38, "an observed schema declares no `fields`")],
    );
    expect(
        &yaml("{mode: fixed, fields: [{a: int, b: str}]}"),
        &[(7, 36, "a field given as a mapping must be")],
    );
}

// ---- plugin options (ELSPETH §4, §7, §8, §9) ----

#[test]
fn field_mapper_duplicate_targets() {
    expect(
        &transform("field_mapper", "    mapping: {a: x, b: x}\n"),
        &[(12, 24, "`mapping` has two entries with the target `x`")],
    );
}

#[test]
fn truncate_lengths_and_suffix() {
    expect(
        &transform(
            "truncate",
            "    fields: {a: 0, b: 3, c: 4, d: x}\n    suffix: '...'\n",
        ),
        &[
            (12, 17, "the maximum length of `a` is 0; expected 1 or more"),
            (
                12,
                23,
                "the maximum length of `b` is 3 but the suffix is 3 characters",
            ),
            (12, 35, "the maximum length of `d` must be an integer"),
        ],
    );
}

#[test]
fn keyword_filter_patterns() {
    expect(
        &transform(
            "keyword_filter",
            "    fields: all\n    blocked_patterns: ['ok', '', '(a+)+']\n",
        ),
        &[
            (13, 30, "blocked pattern is empty"),
            (13, 34, "blocked pattern `(a+)+` quantifies a group"),
        ],
    );
    expect(
        &transform(
            "keyword_filter",
            "    fields: all\n    blocked_patterns: []\n",
        ),
        &[(13, 23, "`blocked_patterns` is empty")],
    );
    expect(
        &transform("keyword_filter", "    fields: 5\n"),
        &[
            (11, 3, "missing required key `blocked_patterns`"),
            (
                12,
                13,
                "`fields` must be a field name, a list of names or `all`",
            ),
        ],
    );
}

#[test]
fn json_explode_fields() {
    expect(
        &transform(
            "json_explode",
            "    array_field: items\n    output_field: items\n",
        ),
        &[(
            13,
            19,
            "`output_field` is `items`, the same as `array_field`",
        )],
    );
    expect(
        &transform("json_explode", "    include_index: true\n"),
        &[(11, 3, "missing required key `array_field`")],
    );
}

#[test]
fn json_explode_rejects_required_input_fields() {
    expect(
        &transform(
            "json_explode",
            "    array_field: items\n    required_input_fields: [a]\n",
        ),
        &[(13, 5, "unknown key `required_input_fields`")],
    );
}

const LLM: &str = "    provider: openrouter\n    model: m\n    api_key: k\n    template: hi\n";

#[test]
fn llm_pool_rules_each_name_their_key() {
    let pool = |extra: &str| transform("llm", &format!("{LLM}{extra}"));
    // Options start on line 12; the extra lines on line 16.
    expect(
        &pool("    pool_size: 0\n"),
        &[(16, 16, "`pool_size` is 0; expected 1 or more")],
    );
    expect(
        &pool("    min_dispatch_delay_ms: -1\n"),
        &[(16, 28, "`min_dispatch_delay_ms` is -1; expected 0 or more")],
    );
    expect(
        &pool("    min_dispatch_delay_ms: 10\n    max_dispatch_delay_ms: 5\n"),
        &[(
            16,
            28,
            "`min_dispatch_delay_ms` (10) is greater than `max_dispatch_delay_ms` (5)",
        )],
    );
    expect(
        &pool("    max_dispatch_delay_ms: 0\n"),
        &[(16, 28, "`max_dispatch_delay_ms` is 0; expected more than 0")],
    );
    expect(
        &pool("    backoff_multiplier: 1\n"),
        &[(16, 25, "`backoff_multiplier` is 1; expected more than 1")],
    );
    expect(
        &pool("    backoff_multiplier: .nan\n"),
        &[(16, 25, "`backoff_multiplier` must be a finite number")],
    );
    expect(
        &pool("    recovery_step_ms: -5\n"),
        &[(16, 23, "`recovery_step_ms` is -5; expected 0 or more")],
    );
    expect(
        &pool("    recovery_step_ms: 0\n"),
        &[(
            16,
            23,
            "`recovery_step_ms` is 0 while `min_dispatch_delay_ms` is 0",
        )],
    );
    expect(
        &pool("    max_capacity_retry_seconds: 0\n"),
        &[(
            16,
            33,
            "`max_capacity_retry_seconds` is 0; expected more than 0",
        )],
    );
    expect(
        &pool("    pool_size: 1.5\n"),
        &[(
            16,
            16,
            "`pool_size` must be an integer; found the number `1.5`",
        )],
    );
    // A whole float is an integer (as Pydantic reads it).
    let ok = parse_str(&pool("    pool_size: 4.0\n"), "p.yaml", &no_env).unwrap();
    let TransformOptions::Llm(llm) = &ok.transforms[0].options else {
        panic!()
    };
    assert_eq!(llm.pool.pool_size, 4);
    // A 0 recovery step is fine with a minimum delay above 0.
    let ok = parse_str(
        &pool("    recovery_step_ms: 0\n    min_dispatch_delay_ms: 10\n"),
        "p.yaml",
        &no_env,
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn llm_provider_specific_keys() {
    expect(
        &transform(
            "llm",
            "    provider: openrouter\n    api_key: k\n    template: hi\n    endpoint: e\n",
        ),
        &[
            (11, 3, "missing required key `model`"),
            (
                15,
                5,
                "unknown key `endpoint` in llm options of transform `t`",
            ),
        ],
    );
    expect(
        &transform(
            "llm",
            "    provider: azure\n    api_key: k\n    template: hi\n    deployment_name: d\n",
        ),
        &[(11, 3, "missing required key `endpoint`")],
    );
    expect(
        &transform("llm", "    provider: bedrock\n    template: hi\n"),
        &[(
            12,
            15,
            "`provider` is \"bedrock\"; expected one of: openrouter, openai, azure",
        )],
    );
}

#[test]
fn llm_values() {
    expect(
        &transform(
            "llm",
            &format!("{LLM}    temperature: 3\n    max_tokens: 0\n    response_field: 1x\n    template_file: t.j2\n"),
        ),
        &[
            (16, 18, "`temperature` is 3; expected 0 to 2"),
            (17, 17, "`max_tokens` is 0; expected more than 0"),
            (18, 21, "`response_field` `1x` is not an identifier"),
            (19, 20, "both `template` and `template_file` are given"),
        ],
    );
    expect(
        &transform(
            "llm",
            "    provider: openai\n    model: m\n    api_key: k\n    template: '{{ row.x }}'\n",
        ),
        &[(
            11,
            3,
            "use `row` in the template but do not declare `required_input_fields`",
        )],
    );
}

#[test]
fn llm_queries() {
    expect(
        &transform(
            "llm",
            &format!(
                "{LLM}    queries:\n      q1:\n        template: '{{{{ input_1 }}}}'\n        output_fields: [{{suffix: s, type: enum}}, {{suffix: n, type: number, values: [a]}}]\n"
            ),
        ),
        &[
            (17, 7, "query `q1` is missing required key `input_fields`"),
            (18, 19, "`{{ input_N }}` is not supported"),
            (19, 25, "an enum output field needs `values`"),
            (19, 76, "`values` applies only to `type: enum`"),
        ],
    );
}

#[test]
fn http_options() {
    expect(
        &transform(
            "http",
            "    url: u\n    method: FETCH\n    response_fields: {x: data}\n",
        ),
        &[
            (
                13,
                13,
                "`method` is \"FETCH\"; expected one of: GET, POST, PUT, PATCH, DELETE",
            ),
            (14, 26, "`data` is not a JSON Pointer"),
        ],
    );
}

#[test]
fn sink_options() {
    expect(
        &format!("{SRC}sinks:\n  a: {{plugin: json, options: {{path: x.json, mode: append, indent: two}}}}\n  out: {{plugin: csv, options: {{path: y.csv, headers: {{a: H, b: H}}, format: jsonl}}}}\n"),
        &[
            (6, 51, "`mode: append` needs JSON Lines"),
            (6, 67, "`indent` must be an integer"),
            // The source feeds `a`; nothing leads to `out`.
            (7, 3, "sink `out` is unreachable"),
            (7, 64, "header `H` is given to two fields"),
            (7, 68, "unknown key `format` in options of sink `out`"),
        ],
    );
}

#[test]
fn source_options() {
    expect(
        "source:\n  plugin: json\n  on_success: out\n  options: {path: a.jsonl, schema: {mode: observed}, on_validation_failure: discard, data_key: rows}\nsinks: {out: {plugin: csv, options: {path: b}}}\n",
        &[(4, 96, "`data_key` applies to JSON array files")],
    );
    expect(
        "source:\n  plugin: csv\n  on_success: out\n  options:\n    path: a\n    schema: {mode: observed}\n    on_validation_failure: discard\n    skip_rows: -1\n    columns: [id, class]\n    field_mapping: {id: key, name: key2}\nsinks: {out: {plugin: csv, options: {path: b}}}\n",
        &[
            (8, 16, "`skip_rows` is -1; expected 0 or more"),
            (9, 19, "column `class` is a Python keyword"),
            (10, 30, "`field_mapping` renames `name`, which is not in `columns`"),
        ],
    );
}

#[test]
fn aggregation_options() {
    let agg = |body: &str| {
        format!("{SRC}aggregations:\n- name: agg\n  input: a\n  on_success: out\n  on_error: discard\n{body}{SINK}")
    };
    expect(
        &agg("  plugin: batch_stats\n  trigger: {}\n  options: {value_field: v}\n"),
        &[(11, 3, "`trigger` sets nothing")],
    );
    expect(
        &agg("  plugin: batch_stats\n  trigger: {count: 0, timeout_seconds: -1, condition: 5}\n  options: {value_field: v, compute_mean: 1}\n"),
        &[
            (11, 20, "trigger `count` is 0; expected more than 0"),
            (11, 40, "`timeout_seconds` is -1; expected more than 0"),
            (11, 55, "trigger `condition` must be an expression written as a string"),
            (12, 43, "`compute_mean` must be a boolean"),
        ],
    );
    expect(
        &agg("  plugin: batch_replicate\n  trigger: {count: 2}\n  output_mode: stream\n  options: {default_copies: 20, max_copies: 10}\n"),
        &[
            (12, 16, "`output_mode` is \"stream\"; expected one of: transform, passthrough"),
            (13, 29, "`default_copies` (20) is greater than `max_copies` (10)"),
        ],
    );
    expect(
        &agg("  plugin: batch_stats\n  trigger: {count: 2}\n  options: {}\n"),
        &[(
            12,
            3,
            "batch_stats options of aggregation `agg` is missing required key `value_field`",
        )],
    );
    expect(
        &agg("  plugin: batch_stats\n  options: {value_field: v}\n"),
        &[(6, 3, "missing required key `trigger`")],
    );
}

#[test]
fn retry_and_concurrency_bounds() {
    expect(
        &format!("{SRC_OUT}{SINK}retry: {{max_attempts: 0, initial_delay_seconds: 0, max_delay_seconds: -1, exponential_base: 1, jitter: 1}}\nconcurrency: {{max_workers: 0}}\nledger: {{path: 5}}\n"),
        &[
            (7, 23, "`max_attempts` is 0; expected 1 or more"),
            (7, 49, "`initial_delay_seconds` is 0; expected more than 0"),
            (7, 71, "`max_delay_seconds` is -1; expected more than 0"),
            (7, 93, "`exponential_base` is 1; expected more than 1"),
            (7, 96, "unknown key `jitter` in `retry`"),
            (8, 28, "`max_workers` is 0; expected 1 or more"),
            (9, 16, "`path` must be a string"),
        ],
    );
}

// ---- gates, forks, coalesce ----

fn gate(routes: &str, rest: &str) -> String {
    format!(
        "{SRC}gates:\n- name: g\n  input: a\n  condition: row['x'] > 1\n  routes: {routes}\n{rest}"
    )
}

#[test]
fn gate_shape_errors() {
    expect(
        &gate("{true: out, 'false': out}", SINK),
        &[(
            9,
            12,
            "key `true` in `routes` is the boolean `true`; expected a string (quote it: 'true')",
        )],
    );
    expect(
        &gate("{}", SINK),
        &[(9, 11, "`routes` has 0 entries; expected 1 to 32")],
    );
    expect(
        &gate("{'true': fork, 'false': out}", SINK),
        &[(9, 3, "a route is `fork` but `fork_to` is missing or empty")],
    );
    expect(
        &gate(
            "{'true': out, 'false': out}",
            &format!("  fork_to: [x]\n{SINK}"),
        ),
        &[(10, 3, "`fork_to` is given but no route is `fork`")],
    );
    expect(
        &gate("{'true': continue, 'false': out}", SINK),
        &[(9, 20, "route destination `continue` is a reserved word")],
    );
    expect(
        &format!("{SRC}gates:\n- name: g\n  input: a\n  condition: 42\n  routes: {{'true': out}}\n{SINK}"),
        &[(8, 14, "`condition` must be an expression written as a string")],
    );
}

#[test]
fn fork_and_coalesce_errors() {
    let yaml = format!(
        "{SRC}gates:\n- name: g\n  input: a\n  condition: 'True'\n  routes: {{'true': fork, 'false': out}}\n  fork_to: [p, q, stray]\n- name: h\n  input: c_out\n  condition: 'True'\n  routes: {{'true': fork}}\n  fork_to: [p, r]\ncoalesce:\n- name: c\n  branches: [p, q]\n  policy: quorum\n  quorum_count: 3\n- name: d\n  branches: [q, z]\n  policy: best_effort\n  merge: select\n  select_branch: y\n  on_success: c_out\n{SINK}"
    );
    expect(
        &yaml,
        &[
            (
                10,
                19,
                "fork branch `stray` is neither a coalesce branch nor a sink",
            ),
            // d's on_success is not a sink, so h's input has no producer either.
            (12, 10, "no node produces `c_out`, the input of gate `h`"),
            (15, 13, "fork branch `p` is already a branch of gate `g`"),
            (
                15,
                16,
                "fork branch `r` is neither a coalesce branch nor a sink",
            ),
            (17, 9, "nothing consumes `c`, the output of coalesce `c`"),
            (20, 17, "`quorum_count` is 3; expected 1 to 2"),
            (22, 14, "branch `q` already belongs to coalesce `c`"),
            (22, 17, "coalesce branch `z` is not in any gate's fork_to"),
            (23, 3, "policy best_effort needs `timeout_seconds`"),
            (25, 18, "`select_branch` is `y`, which is not a branch"),
            (
                26,
                15,
                "on_success of coalesce `d` is `c_out`, which is not a sink",
            ),
        ],
    );
}

#[test]
fn coalesce_needs_two_branches_and_policy_settings() {
    // Lines 1-10: source, a gate forking into p and q; the coalesce body starts on line 14.
    let base = |body: &str| {
        format!("{SRC}gates:\n- name: g\n  input: a\n  condition: 'True'\n  routes: {{'true': fork}}\n  fork_to: [p, q]\ncoalesce:\n- name: c\n  on_success: out\n{body}{SINK}")
    };
    expect(
        &base("  branches: [p]\n"),
        &[
            (
                10,
                16,
                "fork branch `q` is neither a coalesce branch nor a sink",
            ),
            (14, 13, "`branches` has 1 entries; expected at least 2"),
        ],
    );
    expect(
        &base("  branches: [p, q, p]\n"),
        &[(14, 20, "branch `p` is listed twice")],
    );
    expect(
        &base("  branches: [p, q]\n  policy: quorum\n  merge: select\n"),
        &[
            (15, 3, "policy quorum needs `quorum_count`"),
            (16, 3, "merge select needs `select_branch`"),
        ],
    );
    // The valid form loads, with identity branches fed straight from the fork.
    let ok = parse_str(&base("  branches: [p, q]\n"), "p.yaml", &no_env).unwrap();
    let g = ok.graph.find(NodeKind::Gate, "g").unwrap();
    assert!(g.edges.iter().all(|e| e.branch.is_some()));
}

// ---- graph (ELSPETH §1.4) ----

/// Transforms given as (name, input, on_success, on_error) on consecutive 5-line entries
/// starting on line 6: entry i's name is on line 6 + 5i, input on 7 + 5i, on_success on
/// 8 + 5i, on_error on 9 + 5i (values in column 15, 10, 15, 13).
fn chain(source_to: &str, steps: &[(&str, &str, &str, &str)], sinks: &str) -> String {
    let mut y = format!(
        "source:\n  plugin: csv\n  on_success: {source_to}\n  options: {{path: in.csv, schema: {{mode: observed}}, on_validation_failure: discard}}\ntransforms:\n"
    );
    for (name, input, on_success, on_error) in steps {
        y.push_str(&format!(
            "- name: {name}\n  input: {input}\n  on_success: {on_success}\n  on_error: {on_error}\n  plugin: passthrough\n"
        ));
    }
    y.push_str(sinks);
    y
}

const OUT: &str = "sinks:\n  out: {plugin: csv, options: {path: o.csv}}\n";

#[test]
fn duplicate_producer() {
    expect(
        &chain(
            "a",
            &[
                ("t1", "a", "b", "discard"),
                ("t2", "b", "c", "discard"),
                ("t3", "a2", "c", "discard"),
                ("t4", "c", "out", "discard"),
            ],
            OUT,
        ),
        &[
            (17, 10, "no node produces `a2`, the input of transform `t3`"),
            (
                18,
                15,
                "connection `c` is already produced by transform `t2`",
            ),
        ],
    );
}

#[test]
fn duplicate_consumer() {
    expect(
        &chain(
            "a",
            &[("t1", "a", "out", "discard"), ("t2", "a", "out", "discard")],
            OUT,
        ),
        &[(
            12,
            10,
            "connection `a` is already consumed by transform `t1`",
        )],
    );
}

#[test]
fn dangling_connections() {
    expect(
        &chain("a", &[("t1", "a", "nowhere", "discard")], OUT),
        &[(
            8,
            15,
            "nothing consumes `nowhere`, the on_success of transform `t1`",
        )],
    );
    expect(
        &chain("a", &[("t1", "missing", "out", "discard")], OUT),
        &[
            (3, 15, "nothing consumes `a`, the source's on_success"),
            (
                7,
                10,
                "no node produces `missing`, the input of transform `t1`",
            ),
        ],
    );
}

#[test]
fn connection_and_sink_names_overlap() {
    expect(
        &chain("out", &[("t1", "out", "out", "discard")], OUT),
        &[
            (3, 15, "the source's on_success names the sink `out`, but the pipeline has processing nodes"),
            (7, 10, "`out` is a sink, so no node can take it as input"),
        ],
    );
}

#[test]
fn unknown_sinks_on_error_paths() {
    expect(
        &chain("a", &[("t1", "a", "out", "errs")], "sinks:\n  out: {plugin: csv, on_write_failure: fails, options: {path: o.csv}}\n  q: {plugin: csv, on_write_failure: q, options: {path: q.csv}}\n"),
        &[
            (9, 13, "on_error names `errs`, which is not a sink; expected `discard` or one of: out, q"),
            (12, 40, "on_write_failure names `fails`, which is not a sink"),
            (13, 38, "sink `q` names itself in on_write_failure"),
        ],
    );
    expect(
        "source:\n  plugin: csv\n  on_success: out\n  options: {path: a, schema: {mode: observed}, on_validation_failure: bad_rows}\nsinks: {out: {plugin: csv, options: {path: b}}}\n",
        &[(4, 71, "on_validation_failure names `bad_rows`, which is not a sink")],
    );
}

#[test]
fn failsinks_do_not_chain() {
    expect(
        &chain("a", &[("t1", "a", "out", "discard")], "sinks:\n  out: {plugin: csv, on_write_failure: f1, options: {path: o.csv}}\n  f1: {plugin: csv, on_write_failure: f2, options: {path: 1.csv}}\n  f2: {plugin: csv, options: {path: 2.csv}}\n"),
        &[(12, 40, "`f1` is a failsink but has its own on_write_failure `f2`")],
    );
}

#[test]
fn cycles() {
    expect(
        &chain(
            "a",
            &[
                ("t1", "a", "out", "discard"),
                ("t2", "x", "y", "discard"),
                ("t3", "y", "x", "discard"),
            ],
            OUT,
        ),
        &[(
            11,
            9,
            "cycle: transform `t2`, transform `t3` feed each other",
        )],
    );
    // A node feeding itself.
    expect(
        &chain(
            "a",
            &[("t1", "a", "out", "discard"), ("t2", "x", "x", "discard")],
            OUT,
        ),
        &[(11, 9, "cycle: transform `t2` feed each other")],
    );
}

#[test]
fn unreachable_nodes_and_sinks() {
    // A sink nothing writes to.
    expect(
        &chain("a", &[("t1", "a", "out", "discard")], "sinks:\n  out: {plugin: csv, options: {path: o.csv}}\n  spare: {plugin: csv, options: {path: s.csv}}\n"),
        &[(13, 3, "sink `spare` is unreachable from the source")],
    );
    // A sink used only by an aggregation's on_error counts as unreachable (ELSPETH).
    expect(
        &format!("{SRC}aggregations:\n- name: agg\n  plugin: batch_stats\n  input: a\n  on_success: out\n  on_error: errs\n  trigger: {{count: 2}}\n  options: {{value_field: v}}\nsinks:\n  out: {{plugin: csv, options: {{path: o.csv}}}}\n  errs: {{plugin: csv, options: {{path: e.csv}}}}\n"),
        &[(15, 3, "sink `errs` is unreachable from the source")],
    );
}

#[test]
fn nodes_downstream_of_a_cycle_are_not_reported_twice() {
    // With every connection produced and consumed once, a processing node can only be
    // unreachable behind a cycle; the cycle is the error worth showing, so `t4` (fed by
    // the looping gate) is not also called unreachable.
    let yaml = format!(
        "{SRC}transforms:\n- name: t1\n  plugin: passthrough\n  input: a\n  on_success: out\n  on_error: discard\n- name: t2\n  plugin: passthrough\n  input: y\n  on_success: x\n  on_error: discard\n- name: t4\n  plugin: passthrough\n  input: z\n  on_success: out2\n  on_error: discard\ngates:\n- name: g\n  input: x\n  condition: 'True'\n  routes: {{'true': y, 'false': z}}\nsinks:\n  out: {{plugin: csv, options: {{path: o.csv}}}}\n  out2: {{plugin: csv, options: {{path: p.csv}}}}\n"
    );
    expect(
        &yaml,
        &[(11, 9, "cycle: transform `t2`, gate `g` feed each other")],
    );
}

#[test]
fn gate_destination_must_be_consumed() {
    expect(
        &gate("{'true': out, 'false': elsewhere}", SINK),
        &[(
            9,
            34,
            "nothing consumes `elsewhere`, the route `false` of gate `g`",
        )],
    );
}

// ---- several at once ----

#[test]
fn several_errors_are_reported_together_in_file_order() {
    let yaml = "source:
  plugin: csv
  on_success: a
  options:
    path: in.csv
    schema: {mode: fixed, fields: ['id: long']}
    on_validation_failure: discard
transforms:
- name: t1
  plugin: truncate
  input: a
  on_success: nowhere
  on_error: discard
  options: {fields: {x: 0}, colour: red}
sinks:
  out: {plugin: csv, options: {path: o.csv, mode: w}}
retry: {max_attempts: -1}
extra: 1
";
    expect(
        yaml,
        &[
            (6, 36, "unknown field type `long`"),
            (12, 15, "nothing consumes `nowhere`"),
            (14, 25, "the maximum length of `x` is 0"),
            (14, 29, "unknown key `colour`"),
            (16, 51, "`mode` is \"w\"; expected one of: write, append"),
            (17, 23, "`max_attempts` is -1"),
            (18, 1, "unknown key `extra` in the settings file"),
        ],
    );
    // Display is `file:line:col: message`, one per line.
    let text = parse_str(yaml, "p.yaml", &no_env).unwrap_err().to_string();
    assert_eq!(text.lines().count(), 7);
    assert!(
        text.starts_with("p.yaml:6:36: unknown field type `long`"),
        "{text}"
    );
}

#[test]
fn unreadable_file_is_an_error_without_position() {
    let e = load("/nonexistent/attest/pipeline.yaml").unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!((e.0[0].line, e.0[0].column), (0, 0));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/attest/pipeline.yaml: cannot read"),
        "{e}"
    );
}

#[test]
fn non_utf8_file_points_at_the_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, b"source:\n  plugin: c\xffsv\n").unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!((e.0[0].line, e.0[0].column), (2, 12), "{e}");
}
