//! What the benchmarks share: the engine issue's workload (a generated CSV and the
//! pipeline CSV → field_mapper → gate on score → two CSV sinks) and the load average.

use std::path::Path;

/// The benchmark pipeline: its paths are relative to the directory it is written to.
pub const PIPELINE: &str = r#"
source:
  plugin: csv
  on_success: raw
  options:
    path: input.csv
    schema: {mode: fixed, fields: ['id: int', 'text: str', 'score: float']}
    on_validation_failure: discard
transforms:
- name: rename
  plugin: field_mapper
  input: raw
  on_success: mapped
  on_error: discard
  options: {mapping: {text: comment}, schema: {mode: observed}}
gates:
- name: by_score
  input: mapped
  condition: row['score'] >= 0.5
  routes: {'true': high, 'false': low}
sinks:
  high: {plugin: csv, on_write_failure: discard, options: {path: out/high.csv, schema: {mode: observed}}}
  low: {plugin: csv, on_write_failure: discard, options: {path: out/low.csv, schema: {mode: observed}}}
"#;

/// `rows` rows of `id`, a ~75-character `text` and a `score` in [0, 1), the same for a
/// given `rows` on every machine.
pub fn csv(rows: usize) -> String {
    let mut csv = String::with_capacity(rows * 100);
    csv.push_str("id,text,score\n");
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let score = (x % 10_000) as f64 / 10_000.0;
        csv.push_str(&format!(
            "{i},The quick brown fox number {i:08} jumps over the lazy dog near the river bank,{score}\n"
        ));
    }
    csv
}

/// Writes `input.csv` (`rows` rows) and `pipeline.yaml` into `dir`.
pub fn write_workload(dir: &Path, rows: usize) {
    std::fs::write(dir.join("input.csv"), csv(rows)).expect("write input");
    std::fs::write(dir.join("pipeline.yaml"), PIPELINE).expect("write pipeline");
}

/// `/proc/loadavg`'s first three fields: the benchmarks share the machine.
#[allow(dead_code)]
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
