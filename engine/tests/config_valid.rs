//! Valid pipelines load into the expected structures.

use attest_engine::config::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_ok(yaml: &str) -> PipelineConfig {
    match parse_str(yaml, "pipeline.yaml", &no_env) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid configuration, got:\n{e}"),
    }
}

/// The example of issue 5, verbatim.
const ISSUE_5: &str = r#"source:
  plugin: csv                  # csv | json (array or jsonl)
  on_success: gate_in          # a named connection (or a sink name)
  options:
    path: data/input.csv       # relative paths resolve against the current directory
    schema:
      mode: fixed              # fixed | flexible | observed
      fields: ['id: int', 'name: str', 'amount: float', 'ok: bool']
    on_validation_failure: discard   # or the name of a sink that receives bad rows
transforms:
- name: rename
  plugin: field_mapper         # passthrough | field_mapper | truncate | keyword_filter
  input: gate_in
  on_success: mapped
  on_error: discard            # required on transforms: a sink name or discard
  options: {mapping: {name: customer}, schema: {mode: observed}}
gates:
- name: amount_threshold
  input: mapped
  condition: row['amount'] > 1000
  routes: {'true': high_values, 'false': output}
sinks:
  output: {plugin: csv, options: {path: out/normal.csv, schema: {mode: observed}}}
  high_values: {plugin: json, options: {path: out/high.jsonl, format: jsonl}}
ledger: {path: runs/ledger}    # ELSPETH's `landscape:` block is accepted and ignored
"#;

#[test]
fn issue_5_example_loads_into_the_expected_structures() {
    let c = load_ok(ISSUE_5);
    assert_eq!(c.file, "pipeline.yaml");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // source
    assert_eq!(c.source.plugin, SourcePlugin::Csv);
    assert_eq!(c.source.on_success.value, "gate_in");
    assert_eq!(c.source.on_success.loc, Loc::new(3, 15));
    let o = &c.source.options;
    assert_eq!(o.path.value, "data/input.csv");
    assert_eq!(o.on_validation_failure.value, "discard");
    assert_eq!(o.encoding, "utf-8");
    assert_eq!(
        o.format,
        SourceFormat::Csv(CsvSourceOptions {
            delimiter: ',',
            skip_rows: 0,
            columns: None,
            field_mapping: vec![],
        })
    );
    assert_eq!(o.schema.mode, SchemaMode::Fixed);
    let fields: Vec<(&str, FieldType, bool)> = o
        .schema
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.ty, f.optional))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("id", FieldType::Int, false),
            ("name", FieldType::Str, false),
            ("amount", FieldType::Float, false),
            ("ok", FieldType::Bool, false),
        ]
    );
    assert_eq!(o.schema.fields[1].loc, Loc::new(8, 27));

    // transforms
    assert_eq!(c.transforms.len(), 1);
    let t = &c.transforms[0];
    assert_eq!(t.name.value, "rename");
    assert_eq!(t.input.value, "gate_in");
    assert_eq!(t.on_success.value, "mapped");
    assert_eq!(t.on_error.value, "discard");
    let TransformOptions::FieldMapper(fm) = &t.options else {
        panic!("expected field_mapper options, got {:?}", t.options)
    };
    assert_eq!(
        fm.mapping,
        vec![("name".to_string(), "customer".to_string())]
    );
    assert!(!fm.select_only && !fm.strict && !fm.validate_input);
    assert_eq!(fm.schema.mode, SchemaMode::Observed);
    assert_eq!(fm.required_input_fields, None);

    // gates
    let g = &c.gates[0];
    assert_eq!(g.name.value, "amount_threshold");
    assert_eq!(g.input.value, "mapped");
    assert_eq!(g.condition.source, "row['amount'] > 1000");
    assert_eq!((g.condition.line, g.condition.column), (20, 14));
    let routes: Vec<(&str, &str)> = g
        .routes
        .iter()
        .map(|r| (r.label.value.as_str(), r.destination.value.as_str()))
        .collect();
    assert_eq!(routes, vec![("true", "high_values"), ("false", "output")]);
    assert!(g.fork_to.is_empty());

    // sinks, in file order
    let names: Vec<&str> = c.sinks.iter().map(|s| s.name.value.as_str()).collect();
    assert_eq!(names, vec!["output", "high_values"]);
    let out = c.sink("output").unwrap();
    assert_eq!(out.plugin, SinkPlugin::Csv);
    assert_eq!(out.on_write_failure, None);
    assert_eq!(out.options.format, SinkFormat::Csv { delimiter: ',' });
    assert_eq!(out.options.mode, WriteMode::Write);
    assert_eq!(out.options.headers, Headers::Normalized);
    let high = c.sink("high_values").unwrap();
    assert_eq!(
        high.options.format,
        SinkFormat::Json {
            format: JsonFormat::Jsonl,
            indent: None
        }
    );
    assert_eq!(high.options.schema.mode, SchemaMode::Observed);

    // run-wide settings
    assert_eq!(c.ledger.path.as_deref(), Some("runs/ledger"));
    assert_eq!(c.retry, RetryConfig::default());
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(c.concurrency.max_workers, None);

    // graph: topological, declaration order breaking ties
    let order: Vec<(NodeKind, &str)> = c
        .graph
        .nodes
        .iter()
        .map(|n| (n.kind, n.name.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![
            (NodeKind::Source, "source"),
            (NodeKind::Transform, "rename"),
            (NodeKind::Gate, "amount_threshold"),
            (NodeKind::Sink, "output"),
            (NodeKind::Sink, "high_values"),
        ]
    );
    let gate = c.graph.find(NodeKind::Gate, "amount_threshold").unwrap();
    assert_eq!(gate.input.as_deref(), Some("mapped"));
    let edges: Vec<(EdgeLabel, &str)> = gate
        .edges
        .iter()
        .map(|e| (e.label.clone(), c.graph.node(e.to).unwrap().name.as_str()))
        .collect();
    assert_eq!(
        edges,
        vec![
            (EdgeLabel::Route("true".into()), "high_values"),
            (EdgeLabel::Route("false".into()), "output"),
        ]
    );
    let source = c.graph.source().unwrap();
    assert_eq!(source.edges.len(), 1);
    assert_eq!(source.edges[0].connection.as_deref(), Some("gate_in"));
    assert_eq!(source.edges[0].label, EdgeLabel::Success);
}

/// Forks, coalesce (list and map branches), aggregations, every plugin, failsinks.
const FULL: &str = r#"source:
  plugin: json
  on_success: raw
  options:
    path: in.json
    data_key: records
    schema:
      mode: flexible
      fields:
        - 'id: int'
        - {score: float?}
        - {name: text, type: str, required: false}
      guaranteed_fields: [id]
    on_validation_failure: quarantine
transforms:
- name: explode
  plugin: json_explode
  input: raw
  on_success: exploded
  on_error: discard
  options: {array_field: items, include_index: false}
- name: trim
  plugin: truncate
  input: exploded
  on_success: trimmed
  on_error: errors
  options: {fields: {text: 10}, suffix: '...', strict: true}
- name: screen
  plugin: keyword_filter
  input: trimmed
  on_success: screened
  on_error: errors
  options: {fields: [text], blocked_patterns: ['(?i)secret', '\bpassword\b']}
- name: enrich
  plugin: http
  input: path_b
  on_success: b_done
  on_error: discard
  options:
    url: https://example.invalid/lookup/{{ row.id }}
    method: POST
    headers: {Authorization: Bearer xyz}
    response_fields: {country: /data/country}
    required_input_fields: [id]
- name: classify
  plugin: llm
  input: path_c
  on_success: c_done
  on_error: discard
  options:
    provider: azure
    deployment_name: gpt-4o
    endpoint: https://x.openai.azure.com
    api_key: k
    template: "Classify {{ row.text }}"
    required_input_fields: [text]
    pool_size: 4
    queries:
      sentiment:
        input_fields: {t: text}
        response_format: structured
        output_fields:
          - {suffix: label, type: enum, values: [pos, neg]}
          - {suffix: score, type: number}
gates:
- name: splitter
  input: screened
  condition: "True"
  routes: {'true': fork, 'false': errors}
  fork_to: [path_a, path_b, path_c, archive]
aggregations:
- name: stats
  plugin: batch_stats
  input: merged
  on_error: discard
  trigger: {count: 100, timeout_seconds: 2.5, condition: "row['batch_count'] >= 5"}
  options: {value_field: score, group_by: name}
- name: copies
  plugin: batch_replicate
  input: stats
  on_success: final
  on_error: discard
  output_mode: passthrough
  trigger: {count: 1}
  options: {max_copies: 5, default_copies: 2}
coalesce:
- name: merged
  branches: {path_a: path_a, path_b: b_done, path_c: c_done}
  policy: quorum
  quorum_count: 2
  merge: nested
  timeout_seconds: 30
sinks:
  final: {plugin: csv, on_write_failure: failed, options: {path: final.csv, delimiter: ';', headers: {id: ID}}}
  archive: {plugin: json, options: {path: archive.json, indent: 2}}
  errors: {plugin: json, on_write_failure: discard, options: {path: errors.jsonl, mode: append}}
  quarantine: {plugin: csv, options: {path: q.csv, mode: append}}
  failed: {plugin: csv, on_write_failure: discard, options: {path: failed.csv}}
retry: {max_attempts: 5, initial_delay_seconds: 0.5, max_delay_seconds: 10, exponential_base: 3}
concurrency: {max_workers: 4}
"#;

#[test]
fn a_full_pipeline_with_every_kind_of_node_loads() {
    let c = load_ok(FULL);
    assert_eq!(c.source.plugin, SourcePlugin::Json);
    assert_eq!(
        c.source.options.format,
        SourceFormat::Json(JsonSourceOptions {
            format: JsonFormat::Json,
            data_key: Some("records".into())
        })
    );
    let schema = &c.source.options.schema;
    assert_eq!(schema.mode, SchemaMode::Flexible);
    let fields: Vec<(&str, FieldType, bool)> = schema
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.ty, f.optional))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("id", FieldType::Int, false),
            ("score", FieldType::Float, true),
            ("text", FieldType::Str, true),
        ]
    );
    assert_eq!(schema.guaranteed_fields, vec!["id"]);

    let plugins: Vec<&str> = c.transforms.iter().map(|t| t.options.plugin()).collect();
    assert_eq!(
        plugins,
        vec!["json_explode", "truncate", "keyword_filter", "http", "llm"]
    );
    assert_eq!(
        c.transforms[0].options,
        TransformOptions::JsonExplode(JsonExplodeOptions {
            schema: Schema::observed(Loc::new(21, 3)),
            array_field: "items".into(),
            output_field: "item".into(),
            include_index: false,
        })
    );
    let TransformOptions::Truncate(tr) = &c.transforms[1].options else {
        panic!()
    };
    assert_eq!(tr.fields, vec![("text".to_string(), 10)]);
    assert_eq!(tr.suffix, "...");
    assert!(tr.strict);
    let TransformOptions::KeywordFilter(kf) = &c.transforms[2].options else {
        panic!()
    };
    assert_eq!(kf.fields, KeywordFields::Named(vec!["text".into()]));
    assert_eq!(kf.blocked_patterns[1].value, "\\bpassword\\b");
    let TransformOptions::Http(h) = &c.transforms[3].options else {
        panic!()
    };
    assert_eq!(h.method, HttpMethod::Post);
    assert_eq!(
        h.response_fields,
        vec![("country".to_string(), "/data/country".to_string())]
    );
    assert_eq!(h.timeout_seconds, 30.0);
    let TransformOptions::Llm(llm) = &c.transforms[4].options else {
        panic!()
    };
    assert_eq!(llm.provider, LlmProvider::Azure);
    assert_eq!(llm.model, "gpt-4o");
    assert_eq!(llm.base_url, "https://x.openai.azure.com");
    assert_eq!(llm.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(llm.response_field, "llm_response");
    assert_eq!(
        llm.pool,
        PoolOptions {
            pool_size: 4,
            ..PoolOptions::default()
        }
    );
    let queries = llm.queries.as_ref().unwrap();
    assert_eq!(queries[0].name, "sentiment");
    assert_eq!(queries[0].response_format, ResponseFormat::Structured);
    assert_eq!(
        queries[0].output_fields,
        vec![
            OutputField {
                suffix: "label".into(),
                ty: OutputType::Enum(vec!["pos".into(), "neg".into()])
            },
            OutputField {
                suffix: "score".into(),
                ty: OutputType::Number
            },
        ]
    );

    let g = &c.gates[0];
    assert!(g.routes[0].is_fork());
    let branches: Vec<&str> = g.fork_to.iter().map(|b| b.value.as_str()).collect();
    assert_eq!(branches, vec!["path_a", "path_b", "path_c", "archive"]);

    let stats = &c.aggregations[0];
    assert_eq!(
        stats.on_success.value, "stats",
        "defaults to the aggregation's name"
    );
    assert_eq!(stats.trigger.count, Some(100));
    assert_eq!(stats.trigger.timeout_seconds, Some(2.5));
    assert_eq!(
        stats.trigger.condition.as_ref().unwrap().source,
        "row['batch_count'] >= 5"
    );
    assert_eq!(stats.output_mode, OutputMode::Transform);
    let AggregationOptions::BatchStats(bs) = &stats.options else {
        panic!()
    };
    assert_eq!(bs.group_by.as_deref(), Some("name"));
    assert!(bs.compute_mean);
    let copies = &c.aggregations[1];
    assert_eq!(copies.output_mode, OutputMode::Passthrough);
    let AggregationOptions::BatchReplicate(br) = &copies.options else {
        panic!()
    };
    assert_eq!((br.default_copies, br.max_copies), (2, 5));
    assert_eq!(br.copies_field, "copies");

    let m = &c.coalesce[0];
    assert_eq!(m.policy, CoalescePolicy::Quorum);
    assert_eq!(m.merge, MergeStrategy::Nested);
    assert_eq!(m.quorum_count, Some(2));
    let bs: Vec<(&str, &str)> = m
        .branches
        .iter()
        .map(|b| (b.name.value.as_str(), b.input.value.as_str()))
        .collect();
    assert_eq!(
        bs,
        vec![
            ("path_a", "path_a"),
            ("path_b", "b_done"),
            ("path_c", "c_done")
        ]
    );

    let fin = c.sink("final").unwrap();
    assert_eq!(fin.on_write_failure.as_ref().unwrap().value, "failed");
    assert_eq!(fin.options.format, SinkFormat::Csv { delimiter: ';' });
    assert_eq!(
        fin.options.headers,
        Headers::Custom(vec![("id".into(), "ID".into())])
    );
    assert_eq!(
        c.sink("archive").unwrap().options.format,
        SinkFormat::Json {
            format: JsonFormat::Json,
            indent: Some(2)
        }
    );
    assert_eq!(c.sink("errors").unwrap().options.mode, WriteMode::Append);

    assert_eq!(
        c.retry,
        RetryConfig {
            max_attempts: 5,
            initial_delay_seconds: 0.5,
            max_delay_seconds: 10.0,
            exponential_base: 3.0
        }
    );
    assert_eq!(c.concurrency.max_workers, Some(4));

    // Graph: every node after its producers, ties in declaration order.
    let order: Vec<&str> = c.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        order,
        vec![
            "source",
            "explode",
            "trim",
            "screen",
            "splitter",
            "enrich",
            "classify",
            "merged",
            "stats",
            "copies",
            "final",
            "archive",
            "errors",
            "quarantine",
            "failed"
        ]
    );
    let name_of = |id: NodeId| c.graph.node(id).unwrap().name.as_str();
    let splitter = c.graph.find(NodeKind::Gate, "splitter").unwrap();
    let edges: Vec<(EdgeLabel, &str, Option<&str>, Option<&str>)> = splitter
        .edges
        .iter()
        .map(|e| {
            (
                e.label.clone(),
                name_of(e.to),
                e.connection.as_deref(),
                e.branch.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![
            (EdgeLabel::Route("false".into()), "errors", None, None),
            (
                EdgeLabel::Fork("path_a".into()),
                "merged",
                None,
                Some("path_a")
            ),
            (
                EdgeLabel::Fork("path_b".into()),
                "enrich",
                Some("path_b"),
                None
            ),
            (
                EdgeLabel::Fork("path_c".into()),
                "classify",
                Some("path_c"),
                None
            ),
            (EdgeLabel::Fork("archive".into()), "archive", None, None),
        ]
    );
    let enrich = c.graph.find(NodeKind::Transform, "enrich").unwrap();
    assert_eq!(enrich.edges[0].branch.as_deref(), Some("path_b"));
    assert_eq!(name_of(enrich.edges[0].to), "merged");
    let merged = c.graph.find(NodeKind::Coalesce, "merged").unwrap();
    assert_eq!(merged.edges[0].connection.as_deref(), Some("merged"));
    assert_eq!(name_of(merged.edges[0].to), "stats");
    let source = c.graph.source().unwrap();
    assert_eq!(source.edges[1].label, EdgeLabel::ValidationFailure);
    assert_eq!(name_of(source.edges[1].to), "quarantine");
    let fin = c.graph.find(NodeKind::Sink, "final").unwrap();
    assert_eq!(fin.edges[0].label, EdgeLabel::WriteFailure);
    assert_eq!(name_of(fin.edges[0].to), "failed");
    // Each node's id is its position.
    for (i, n) in c.graph.nodes.iter().enumerate() {
        assert_eq!(n.id, NodeId(i));
    }
}

#[test]
fn source_straight_to_a_sink_is_valid_without_processing_nodes() {
    let c = load_ok(
        "source: {plugin: csv, on_success: out, options: {path: a.csv, schema: {mode: observed}, on_validation_failure: discard}}\nsinks: {out: {plugin: csv, options: {path: b.csv}}}\n",
    );
    assert_eq!(c.graph.nodes.len(), 2);
    assert_eq!(c.graph.nodes[0].edges[0].to, NodeId(1));
}

#[test]
fn schema_level_keys_ignore_case_and_upper_case_sinks_are_lowered() {
    let c = load_ok(
        "SOURCE: {Plugin: csv, on_success: out_file, options: {path: a.csv, schema: {mode: observed}, on_validation_failure: discard}}\nSinks: {OUT_FILE: {plugin: csv, options: {path: b.csv}}}\n",
    );
    assert_eq!(c.sinks[0].name.value, "out_file");
}

#[test]
fn yaml_1_2_values_and_anchors() {
    let c = load_ok(
        r#"source:
  plugin: csv
  on_success: out
  options: {path: on, schema: &schema {mode: observed}, on_validation_failure: discard, skip_rows: 0o10}
sinks: {out: {plugin: csv, options: {path: 'no', schema: *schema}}}
"#,
    );
    // `on` and `no` are strings under YAML 1.2; 0o10 is 8.
    assert_eq!(c.source.options.path.value, "on");
    assert_eq!(c.sinks[0].options.path.value, "no");
    let SourceFormat::Csv(csv) = &c.source.options.format else {
        panic!()
    };
    assert_eq!(csv.skip_rows, 8);
    assert_eq!(c.sinks[0].options.schema.mode, SchemaMode::Observed);
}

#[test]
fn labels_of_one_gate_may_share_a_connection() {
    let c = load_ok(
        "source: {plugin: csv, on_success: a, options: {path: a.csv, schema: {mode: observed}, on_validation_failure: discard}}
gates:
- {name: g, input: a, condition: \"row['k']\", routes: {x: next, y: next, z: out}}
transforms:
- {name: t, plugin: passthrough, input: next, on_success: out, on_error: discard}
sinks: {out: {plugin: csv, options: {path: b.csv}}}
",
    );
    let g = c.graph.find(NodeKind::Gate, "g").unwrap();
    let labels: Vec<(&EdgeLabel, &str)> = g
        .edges
        .iter()
        .map(|e| (&e.label, c.graph.node(e.to).unwrap().name.as_str()))
        .collect();
    // Both labels lead through the one connection; each keeps its own edge.
    assert_eq!(
        labels,
        vec![
            (&EdgeLabel::Route("x".into()), "t"),
            (&EdgeLabel::Route("y".into()), "t"),
            (&EdgeLabel::Route("z".into()), "out"),
        ]
    );
}
