//! Running a pipeline that calls the local fake LLM server, for the calls tests.
#![allow(dead_code)]

use attest_engine::calls::CallBackend;
use attest_engine::run::{execute, RunOptions, RunSummary};
use attest_ledger::lineage::{LineageQuery, StateLineage};
use attest_ledger::{Ledger, RunId, RunStart};
use std::path::PathBuf;
use std::sync::Arc;

/// A scratch directory with an input CSV (`id,text`) and the pipelines run on it.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
}

impl Pipeline {
    pub fn new(rows: &[(u64, &str)]) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("id,text\n");
        for (id, text) in rows {
            csv.push_str(&format!("{id},{text}\n"));
        }
        std::fs::write(dir.path().join("input.csv"), csv).unwrap();
        Pipeline { dir }
    }

    /// `n` rows, `id` 0..n, `text` "review number {id}".
    pub fn numbered(n: u64) -> Pipeline {
        let texts: Vec<String> = (0..n).map(|i| format!("review number {i}")).collect();
        let rows: Vec<(u64, &str)> = (0..n).map(|i| (i, texts[i as usize].as_str())).collect();
        Pipeline::new(&rows)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// A pipeline: the CSV source, one transform `ask` of `plugin` with `options` (a YAML
    /// flow mapping's inside), `out.csv` on success, `errors.csv` on error, and a quick
    /// retry policy of `attempts` tries.
    pub fn yaml(&self, plugin: &str, options: &str, attempts: u32) -> String {
        let d = self.dir.path().display();
        format!(
            "source:\n  plugin: csv\n  on_success: ask_in\n  options:\n    path: {d}/input.csv\n    \
             schema: {{mode: fixed, fields: ['id: int', 'text: str']}}\n    on_validation_failure: discard\n\
             transforms:\n- name: ask\n  plugin: {plugin}\n  input: ask_in\n  on_success: output\n  \
             on_error: errors\n  options: {{{options}}}\n\
             retry: {{max_attempts: {attempts}, initial_delay_seconds: 0.01, max_delay_seconds: 0.1}}\n\
             sinks:\n  output: {{plugin: csv, options: {{path: {d}/out.csv, schema: {{mode: observed}}}}}}\n  \
             errors: {{plugin: csv, options: {{path: {d}/errors.csv, schema: {{mode: observed}}}}}}\n"
        )
    }

    /// An `llm` transform against `url`, key from `${FAKE_KEY}`.
    pub fn llm_yaml(&self, url: &str, extra: &str, attempts: u32) -> String {
        self.yaml(
            "llm",
            &format!(
                "provider: openai, base_url: '{url}', model: fake-model, api_key: '${{FAKE_KEY}}', \
                 template: 'Review {{{{ row.id }}}}: {{{{ row.text }}}}', required_input_fields: [id, text]{extra}"
            ),
            attempts,
        )
    }

    /// Loads, plans, opens and runs `yaml` (written as `pipeline.yaml`) on `ledger`.
    pub fn run(
        &self,
        yaml: &str,
        env: &[(&str, &str)],
        ledger: &Ledger,
        calls: Option<Arc<dyn CallBackend>>,
    ) -> RunSummary {
        self.run_with_workers(yaml, env, ledger, calls, 2)
    }

    /// [`Pipeline::run`] with at least `workers` worker threads.
    pub fn run_with_workers(
        &self,
        yaml: &str,
        env: &[(&str, &str)],
        ledger: &Ledger,
        calls: Option<Arc<dyn CallBackend>>,
        workers: usize,
    ) -> RunSummary {
        let path = self.path("pipeline.yaml");
        std::fs::write(&path, yaml).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let loaded = attest_engine::build::load(&path, &lookup).unwrap_or_else(|e| panic!("{e:?}"));
        let plan = attest_engine::build::plan(&loaded.config).unwrap();
        let (source, sinks) = attest_engine::open::open(&loaded.config).unwrap();
        let mut opts = RunOptions {
            workers,
            ..RunOptions::default()
        };
        if let Some(c) = calls {
            opts.calls = c;
        }
        execute(
            &plan,
            source,
            sinks,
            ledger,
            RunStart {
                config: loaded.text,
                engine_version: "test".into(),
                started_at_ms: 0,
            },
            opts,
        )
        .unwrap()
    }
}

/// The states of source row `row`'s token at node `ask`, from lineage.
pub fn ask_states(ledger: &Ledger, run: &RunId, row: u64) -> Vec<StateLineage> {
    let l = ledger
        .lineage(run, &LineageQuery::Row(row))
        .unwrap()
        .unwrap_or_else(|| panic!("no lineage for row {row}"));
    let token = l
        .tokens
        .iter()
        .find(|t| t.token == format!("t{row}"))
        .unwrap_or_else(|| panic!("row {row} has no token t{row}"));
    token
        .states
        .iter()
        .filter(|s| s.node == "ask")
        .cloned()
        .collect()
}

/// Every file under `dir`, read whole.
pub fn all_bytes(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}
