//! Forks and coalesce, aggregations, json_explode, error routing with a failsink and deep
//! routing, through the binary: every output row of each example, every token terminal,
//! the ledger verified, and lineage showing forks, merges and batches.

use attest_ledger::{Ledger, RunId};
use attest_tests::Scratch;
use serde_json::Value;

fn run_json(s: &Scratch, pipeline: &str) -> Value {
    let summary = s.run_json(pipeline);
    assert_eq!(summary["status"], "completed", "{summary}");
    summary
}

/// Replay verifies the run, and the ledger has no token without its terminal outcome
/// (the rules refuse a second one) and no open state.
fn audited(s: &Scratch, summary: &Value) {
    let run = summary["run_id"].as_str().unwrap();
    let (code, report) = s.replay_json(&["--run", run]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    let ledger = Ledger::open_for_reading(s.path().join("out/ledger")).unwrap();
    let rec = ledger
        .run_record(&RunId::new(run).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rec.live_tokens, 0, "every token has a terminal outcome");
    assert_eq!(rec.open_states, 0);
}

fn lineage(s: &Scratch, output: &str) -> Value {
    s.lineage_json(&["--output", output])
}

fn token<'a>(l: &'a Value, id: &str) -> &'a Value {
    l["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token"] == id)
        .unwrap_or_else(|| panic!("no token {id} in {l}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

#[test]
fn fork_coalesce_example_joins_both_branches_into_a_nested_row() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/fork-coalesce/pipeline.yaml");
    assert_eq!(summary["sinks"]["merged"], 2);
    assert_eq!(summary["sinks"]["refunds"], 1);
    assert_eq!(
        s.read("out/fork-coalesce/merged.jsonl"),
        "{\"pricing\": {\"price\": 120.5}, \"contact\": {\"id\": 1, \"customer\": \"Ada\", \"amount\": 120.5}}\n\
         {\"pricing\": {\"price\": 99.0}, \"contact\": {\"id\": 3, \"customer\": \"Grace\", \"amount\": 99.0}}\n"
    );
    assert_eq!(
        s.read("out/fork-coalesce/refunds.csv"),
        "id,customer,amount\r\n2,Alan,-40.0\r\n"
    );
    audited(&s, &summary);
    let l = lineage(&s, "merged:1");
    let parent = token(&l, "t2");
    assert_eq!(parent["outcome"]["outcome"], "forked");
    assert_eq!(strs(&parent["children"]), ["t2.pricing", "t2.contact"]);
    let pricing = token(&l, "t2.pricing");
    assert_eq!(pricing["origin"], "fork");
    assert_eq!(pricing["states"][0]["node"], "price_band");
    assert_eq!(pricing["outcome"]["outcome"], "coalesced");
    let merged = token(&l, "t2+join");
    assert_eq!(strs(&merged["parents"]), ["t2.pricing", "t2.contact"]);
    // The merge is recorded as the merged token's state: branch rows in, merged row out.
    assert_eq!(merged["states"][0]["node"], "join");
    assert_eq!(merged["states"][0]["input"]["pricing"]["price"], 99.0);
    assert_eq!(
        merged["states"][0]["output"]["contact"]["customer"],
        "Grace"
    );
    assert_eq!(merged["outcome"]["sink"], "merged");
}

#[test]
fn batch_stats_example_summarises_each_batch_per_region() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/batch-stats/pipeline.yaml");
    // Batches of three; the seventh row flushes at the end of the source. Sums follow
    // Python's: 0.2 + 0.3 + 0.4 is 0.9.
    assert_eq!(
        s.read("out/batch-stats/summary.csv"),
        "count,sum,batch_size,mean,region\r\n\
         2,10.1,2,5.05,north\r\n\
         1,5.0,1,5.0,south\r\n\
         3,0.9,3,0.3,south\r\n\
         1,8.0,1,8.0,east\r\n"
    );
    audited(&s, &summary);
    let l = lineage(&s, "summary:2");
    let b = &l["batches"][0];
    assert_eq!(b["batch"], "per_region#b1");
    assert_eq!(b["trigger"], "count");
    assert_eq!(strs(&b["members"]), ["t3", "t4", "t5"]);
    assert_eq!(
        strs(&token(&l, "per_region#b1/0")["parents"]),
        ["t3", "t4", "t5"]
    );
    assert_eq!(token(&l, "t4")["outcome"]["outcome"], "consumed_in_batch");
    let l = lineage(&s, "summary:3");
    assert_eq!(l["batches"][0]["trigger"], "end_of_source");
    assert_eq!(strs(&l["batches"][0]["members"]), ["t6"]);
}

#[test]
fn deaggregation_example_makes_one_row_per_ticket() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/deaggregation/pipeline.yaml");
    assert_eq!(
        s.read("out/deaggregation/tickets.csv"),
        "order,event,copies,copy_index\r\n\
         A1,concert,2,0\r\nA1,concert,2,1\r\nA2,opera,1,0\r\n\
         A3,match,3,0\r\nA3,match,3,1\r\nA3,match,3,2\r\n"
    );
    audited(&s, &summary);
    let l = lineage(&s, "issued:4");
    assert_eq!(l["batches"][0]["batch"], "tickets#b1");
    assert_eq!(l["batches"][0]["trigger"], "end_of_source");
    assert_eq!(strs(&token(&l, "tickets#b1/1")["parents"]), ["t2"]);
}

#[test]
fn json_explode_example_makes_one_row_per_tag_and_routes_the_empty_array() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/json-explode/pipeline.yaml");
    assert_eq!(
        s.read("out/json-explode/tags.csv"),
        "id,title,tag,item_index\r\n\
         1,Rust ledgers,rust,0\r\n1,Rust ledgers,audit,1\r\n\
         3,Forks,dag,0\r\n3,Forks,fork,1\r\n3,Forks,coalesce,2\r\n"
    );
    assert_eq!(
        s.read("out/json-explode/untagged.jsonl"),
        "{\"id\": 2, \"title\": \"Nothing to see\", \"tags\": []}\n"
    );
    audited(&s, &summary);
    let l = lineage(&s, "tagged:3");
    let parent = token(&l, "t2");
    assert_eq!(parent["outcome"]["outcome"], "expanded");
    assert_eq!(strs(&parent["children"]), ["t2/0", "t2/1", "t2/2"]);
    assert_eq!(token(&l, "t2/1")["outcome"]["sink"], "tagged");
    let l = lineage(&s, "untagged:0");
    let t = token(&l, "t1");
    assert_eq!(t["outcome"]["outcome"], "routed");
    assert!(t["states"][0]["error"]
        .as_str()
        .unwrap()
        .contains("empty array"));
}

#[test]
fn error_routing_example_diverts_unwritable_rows_to_the_failsink() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/error-routing/pipeline.yaml");
    assert_eq!(
        s.read("out/error-routing/clean.csv"),
        "id,comment\r\n1,all good\r\n"
    );
    assert_eq!(
        s.read("out/error-routing/errors.csv"),
        "id,comment\r\n2,my password is hunter2\r\n"
    );
    assert_eq!(
        s.read("out/error-routing/failed_writes.jsonl"),
        "{\"id\": \"3\", \"comment\": \"fine\", \"note\": \"extra\"}\n\
         {\"id\": \"4\", \"comment\": \"PASSWORD reset please\", \"note\": \"urgent\"}\n"
    );
    audited(&s, &summary);
    let l = lineage(&s, "failed_writes:1");
    let t = token(&l, "t3");
    assert_eq!(t["routes"][0]["label"], "on_error");
    assert_eq!(t["outcome"]["outcome"], "diverted");
    assert!(
        t["outcome"]["detail"].as_str().unwrap().contains("note"),
        "{t}"
    );
}

#[test]
fn deep_routing_example_sends_each_application_to_one_sink() {
    let s = Scratch::new();
    let summary = run_json(&s, "examples/deep-routing/pipeline.yaml");
    let header = "id,country,age,score,amount,notes,name\r\n";
    let expect = [
        (
            "underage",
            "2,GB,16,70,300.0,,Tim\r\n10,YY,17,95,10.0,,Lea\r\n",
        ),
        ("sanctioned", "3,XX,40,88,900.0,,Olga\r\n"),
        ("declined", "4,US,52,20,100.0,,Bob\r\n"),
        (
            "manual_review",
            "5,US,29,75,90000.0,,Eve\r\n7,FR,45,82,60000.0,,Ivy\r\n",
        ),
        ("approved_gold", "1,GB,36,91,1200.0,long-standi~,Ada\r\n"),
        ("approved", "6,DE,33,60,5000.0,new,Max\r\n"),
    ];
    for (sink, rows) in expect {
        assert_eq!(
            s.read(&format!("out/deep-routing/{sink}.csv")),
            format!("{header}{rows}"),
            "{sink}"
        );
    }
    assert_eq!(
        s.read("out/deep-routing/blocked.jsonl"),
        "{\"id\": 8, \"country\": \"US\", \"age\": 30, \"score\": 55, \"amount\": 700.0, \"notes\": \"suspected fraud ring\", \"name\": \"Sam\"}\n"
    );
    assert!(s
        .read("out/deep-routing/quarantine.jsonl")
        .contains("\"age\": \"old\""));
    audited(&s, &summary);
    let l = lineage(&s, "approved:0");
    let nodes: Vec<&str> = l["tokens"][0]["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "rename",
            "screen",
            "shorten",
            "minors",
            "sanctions",
            "low_score",
            "large_amount",
            "tier"
        ]
    );
}

/// A fork into three branches; branch `b` loses rows whose `b` is `drop` (keyword_filter
/// error, discarded), branch `c` renames `v` to `cv`.
fn coalesce_pipeline(s: &Scratch, settings: &str) -> String {
    s.write(
        "coal/input.csv",
        "id,v,b\n1,10,keep\n2,20,drop\n3,30,keep\n",
    );
    let yaml = format!(
        "source:
  plugin: csv
  on_success: rows
  options:
    path: coal/input.csv
    schema: {{mode: fixed, fields: ['id: int', 'v: int', 'b: str']}}
    on_validation_failure: discard
gates:
- name: split
  input: rows
  condition: row['id'] > 0
  routes: {{'true': fork, 'false': out}}
  fork_to: [a, b, c]
transforms:
- name: bfilter
  plugin: keyword_filter
  input: b
  on_success: b_done
  on_error: discard
  options: {{fields: [b], blocked_patterns: ['drop'], schema: {{mode: observed}}}}
- name: cmap
  plugin: field_mapper
  input: c
  on_success: c_done
  on_error: discard
  options: {{mapping: {{v: cv}}, schema: {{mode: observed}}}}
coalesce:
- name: join
  branches: {{a: a, b: b_done, c: c_done}}
  on_success: out
{settings}
sinks:
  out: {{plugin: json, on_write_failure: discard, options: {{path: coal/out.jsonl, schema: {{mode: observed}}}}}}
ledger: {{path: out/ledger}}
"
    );
    s.write("coal/pipeline.yaml", &yaml);
    let summary = run_json(s, "coal/pipeline.yaml");
    audited(s, &summary);
    s.read("coal/out.jsonl")
}

#[test]
fn coalesce_policies_and_merges() {
    let s = Scratch::new();
    // require_all + union: row 2 lost branch b, so it fails; keys first-seen, later wins.
    assert_eq!(
        coalesce_pipeline(&s, "  policy: require_all\n  merge: union"),
        "{\"id\": 1, \"v\": 10, \"b\": \"keep\", \"cv\": 10}\n\
         {\"id\": 3, \"v\": 30, \"b\": \"keep\", \"cv\": 30}\n"
    );
    let l = lineage(&s, "out:0");
    let merged = token(&l, "t0+join");
    assert_eq!(strs(&merged["parents"]), ["t0.a", "t0.b", "t0.c"]);
    assert_eq!(merged["states"][0]["input"]["c"]["cv"], 10);
    assert_eq!(merged["states"][0]["output"]["cv"], 10);
    // The failed group's arrived branches end failed with the reason.
    let out = s
        .attest()
        .args([
            "lineage",
            "--ledger",
            "out/ledger",
            "--token",
            "t1.a",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = token(&l, "t1.a");
    assert_eq!(t["outcome"]["outcome"], "failed");
    assert!(t["outcome"]["detail"]
        .as_str()
        .unwrap()
        .contains("branch(es) b did not arrive"));

    // first: the first branch to arrive (a, the fork copy) is the merge; b and c are late.
    assert_eq!(
        coalesce_pipeline(&s, "  policy: first\n  merge: nested"),
        "{\"a\": {\"id\": 1, \"v\": 10, \"b\": \"keep\"}}\n\
         {\"a\": {\"id\": 2, \"v\": 20, \"b\": \"drop\"}}\n\
         {\"a\": {\"id\": 3, \"v\": 30, \"b\": \"keep\"}}\n"
    );
    // quorum 2: row 2 merges a and c without b.
    assert_eq!(
        coalesce_pipeline(
            &s,
            "  policy: quorum\n  quorum_count: 2\n  merge: select\n  select_branch: a"
        ),
        "{\"id\": 1, \"v\": 10, \"b\": \"keep\"}\n\
         {\"id\": 2, \"v\": 20, \"b\": \"drop\"}\n\
         {\"id\": 3, \"v\": 30, \"b\": \"keep\"}\n"
    );
    // best_effort: everything that arrived once every branch is accounted for.
    assert_eq!(
        coalesce_pipeline(&s, "  policy: best_effort\n  timeout_seconds: 5\n  merge: nested"),
        "{\"a\": {\"id\": 1, \"v\": 10, \"b\": \"keep\"}, \"b\": {\"id\": 1, \"v\": 10, \"b\": \"keep\"}, \"c\": {\"id\": 1, \"b\": \"keep\", \"cv\": 10}}\n\
         {\"a\": {\"id\": 2, \"v\": 20, \"b\": \"drop\"}, \"c\": {\"id\": 2, \"b\": \"drop\", \"cv\": 20}}\n\
         {\"a\": {\"id\": 3, \"v\": 30, \"b\": \"keep\"}, \"b\": {\"id\": 3, \"v\": 30, \"b\": \"keep\"}, \"c\": {\"id\": 3, \"b\": \"keep\", \"cv\": 30}}\n"
    );
    // select of a branch that was lost fails the group.
    assert_eq!(
        coalesce_pipeline(
            &s,
            "  policy: best_effort\n  timeout_seconds: 5\n  merge: select\n  select_branch: b"
        ),
        "{\"id\": 1, \"v\": 10, \"b\": \"keep\"}\n{\"id\": 3, \"v\": 30, \"b\": \"keep\"}\n"
    );
}

#[test]
fn aggregation_passthrough_and_condition_trigger() {
    let s = Scratch::new();
    s.write("agg/input.csv", "id,copies\n1,1\n2,2\n3,1\n4,1\n5,1\n");
    s.write(
        "agg/pipeline.yaml",
        "source:
  plugin: csv
  on_success: rows
  options:
    path: agg/input.csv
    schema: {mode: fixed, fields: ['id: int', 'copies: int']}
    on_validation_failure: discard
aggregations:
- name: pairs
  plugin: batch_replicate
  input: rows
  on_success: replicated
  on_error: discard
  output_mode: passthrough
  trigger: {condition: \"row['batch_count'] >= 2\"}
  options: {include_copy_index: true, schema: {mode: observed}}
sinks:
  replicated: {plugin: csv, on_write_failure: discard, options: {path: agg/out.csv, schema: {mode: observed}}}
ledger: {path: out/ledger}
",
    );
    let summary = run_json(&s, "agg/pipeline.yaml");
    // Passthrough needs one row per member: the batch holding row 2 (two copies) fails,
    // its members end failed; the others continue as themselves.
    assert_eq!(
        s.read("agg/out.csv"),
        "id,copies,copy_index\r\n3,1,0\r\n4,1,0\r\n5,1,0\r\n"
    );
    assert_eq!(summary["failed"], 2);
    audited(&s, &summary);
    let l = lineage(&s, "replicated:0");
    let t = token(&l, "t2");
    assert_eq!(t["origin"], "source", "passthrough keeps the member token");
    assert_eq!(t["outcome"]["sink"], "replicated");
    assert_eq!(l["batches"][0]["trigger"], "condition");
    assert_eq!(strs(&l["batches"][0]["members"]), ["t2", "t3"]);
    let l = lineage(&s, "replicated:2");
    assert_eq!(l["batches"][0]["trigger"], "end_of_source");
}
