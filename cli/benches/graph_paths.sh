#!/bin/sh
# Throughput of the fork/coalesce and aggregation paths beside the engine issue's
# pipeline, through the release binary: ROWS rows (default 100000), RUNS runs each
# (default 3). Usage: cargo build --release -p attest-cli && sh cli/benches/graph_paths.sh
set -eu
BIN=${BIN:-$(pwd)/target/release/attest}
ROWS=${ROWS:-100000}
RUNS=${RUNS:-3}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"
awk -v n="$ROWS" 'BEGIN { print "id,text,score"; x = 12345;
  for (i = 0; i < n; i++) { x = (x * 1103515245 + 12345) % 2147483648;
    printf "%d,The quick brown fox number %08d jumps over the lazy dog near the river bank,%.4f\n", i, i, (x % 10000) / 10000 } }' > input.csv
HEAD='source:
  plugin: csv
  on_success: raw
  options:
    path: input.csv
    schema: {mode: fixed, fields: ['"'"'id: int'"'"', '"'"'text: str'"'"', '"'"'score: float'"'"']}
    on_validation_failure: discard'
SINK='{plugin: csv, on_write_failure: discard, options: {path: out/PATH.csv, schema: {mode: observed}}}'
cat > baseline.yaml <<YAML
$HEAD
transforms:
- {name: rename, plugin: field_mapper, input: raw, on_success: mapped, on_error: discard, options: {mapping: {text: comment}, schema: {mode: observed}}}
gates:
- {name: by_score, input: mapped, condition: "row['score'] >= 0.5", routes: {'true': high, 'false': low}}
sinks:
  high: $(echo "$SINK" | sed s/PATH/high/)
  low: $(echo "$SINK" | sed s/PATH/low/)
YAML
cat > fork.yaml <<YAML
$HEAD
gates:
- {name: split, input: raw, condition: "row['score'] >= 0", routes: {'true': fork, 'false': low}, fork_to: [a, b]}
transforms:
- {name: rename, plugin: field_mapper, input: b, on_success: b_done, on_error: discard, options: {mapping: {text: comment}, select_only: true, schema: {mode: observed}}}
coalesce:
- {name: join, branches: {a: a, b: b_done}, policy: require_all, merge: union, on_success: merged}
sinks:
  merged: $(echo "$SINK" | sed s/PATH/merged/)
  low: $(echo "$SINK" | sed s/PATH/low/)
YAML
cat > aggregate.yaml <<YAML
$HEAD
transforms:
- {name: rename, plugin: field_mapper, input: raw, on_success: mapped, on_error: discard, options: {mapping: {text: comment}, schema: {mode: observed}}}
aggregations:
- {name: stats, plugin: batch_stats, input: mapped, on_success: summary, on_error: discard, trigger: {count: 100}, options: {value_field: score}}
sinks:
  summary: $(echo "$SINK" | sed s/PATH/summary/)
YAML
for p in baseline fork aggregate; do
  for r in $(seq "$RUNS"); do
    rm -rf ledger out
    /usr/bin/time -f "$p run $r: %e s wall, peak %M KB" "$BIN" run "$p.yaml" --ledger ledger --json > run.json
    grep -o '"status":"[a-z]*"' run.json
  done
done
