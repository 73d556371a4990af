//! Re-execution through the engine's API: every example re-executes without divergence,
//! and a pipeline changed after the run (mapping, threshold, source schema, sink schema,
//! sink format, a route that now discards) is reported with the right code at the right
//! seq, node and token. Purged rows are named as not re-executable; external calls are
//! answered from the record and never sent.

use attest_engine::build;
use attest_engine::plan::{NodeExec, Plan, Target};
use attest_engine::replay::{reexecute, DivergenceCode, ReexecOptions, ReplayError};
use attest_engine::run::io::{RowSource, SourceError, SourceRecord};
use attest_engine::run::{execute, RunOptions, RunStatus};
use attest_ledger::{CallOutcome, Event, Ledger, Outcome, RunId, RunStart};
use attest_tests::fake_llm::{Answering, FakeLlm, Fault};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Writes example `name`'s pipeline into `dir`, reading its input from the repository and
/// writing its outputs under `dir`.
fn prepare(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("examples").join(name).join("pipeline.yaml"))
        .unwrap()
        .replace(
            "path: examples/",
            &format!("path: {}/examples/", root().display()),
        )
        .replace("path: out/", &format!("path: {}/out/", dir.display()));
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs a pipeline file (its text is the recorded configuration); returns the run.
fn run_pipeline(pipeline: &Path, ledger: &Ledger) -> RunId {
    let (run, status) = run_with(pipeline, ledger, |s| s, RunOptions::default());
    assert_eq!(status, RunStatus::Completed);
    run
}

/// Runs a pipeline file with its source wrapped by `wrap` and these options.
fn run_with(
    pipeline: &Path,
    ledger: &Ledger,
    wrap: impl FnOnce(Box<dyn RowSource>) -> Box<dyn RowSource>,
    opts: RunOptions,
) -> (RunId, RunStatus) {
    let loaded = build::load(pipeline, &no_env).unwrap();
    let plan = build::plan(&loaded.config).unwrap();
    let (source, sinks) = attest_engine::open::open(&loaded.config).unwrap();
    let summary = execute(
        &plan,
        wrap(source),
        sinks,
        ledger,
        RunStart {
            config: loaded.text.clone(),
            engine_version: "test".into(),
            started_at_ms: 1,
        },
        RunOptions { workers: 2, ..opts },
    )
    .unwrap();
    (summary.run_id, summary.status)
}

/// A source that fails after its last record, as one with a bad byte at its end does.
struct FailsAtEnd(Box<dyn RowSource>, bool);
impl RowSource for FailsAtEnd {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        match self.0.next_record() {
            None if !self.1 => {
                self.1 = true;
                Some(Err(SourceError("line 9: not valid UTF-8".into())))
            }
            other => other,
        }
    }
}

/// A ledger in `dir` with one run of example `name`; returns the pipeline file too.
fn recorded(name: &str, dir: &Path) -> (Ledger, RunId, PathBuf) {
    let pipeline = prepare(name, dir);
    let ledger = Ledger::open(dir.join("ledger")).unwrap();
    let run = run_pipeline(&pipeline, &ledger);
    (ledger, run, pipeline)
}

fn events(ledger: &Ledger, run: &RunId) -> Vec<(u64, Event)> {
    let mut out = Vec::new();
    ledger
        .for_each_event(run, |seq, e| {
            out.push((seq, e));
            Ok(())
        })
        .unwrap();
    out
}

/// Writes `pipeline` with `from` replaced by `to` beside it.
fn changed(pipeline: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(pipeline).unwrap();
    assert!(
        text.contains(from),
        "{from:?} is not in {}",
        pipeline.display()
    );
    let path = pipeline.with_extension("changed.yaml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

fn opts_with<'a>(pipeline: &'a Path) -> ReexecOptions<'a> {
    let mut o = ReexecOptions::new(&no_env);
    o.pipeline = Some(pipeline);
    o
}

#[test]
fn every_example_re_executes_without_divergence() {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    // The LLM examples' runs talk to a local server; their re-execution sends nothing.
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    for name in names {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, run) = if name.starts_with("llm-") {
            let pipeline = served_example(&name, dir.path(), &server);
            let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
            let run = run_pipeline(&pipeline, &ledger);
            (ledger, run)
        } else {
            let (ledger, run, _) = recorded(&name, dir.path());
            (ledger, run)
        };
        let requests = server.requests();
        let r = reexecute(&ledger, &run, &ReexecOptions::new(&no_env)).unwrap();
        assert_eq!(server.requests(), requests, "{name}: a request was sent");
        let c = r.comparison.as_ref().unwrap();
        assert_eq!(c.first, None, "{name}");
        assert_eq!(c.divergences, 0, "{name}");
        // Everything the record states was matched by a re-executed event.
        assert_eq!(c.compared, r.record_events, "{name}");
        assert!(c.states > 0, "{name}: no state re-executed");
        assert_eq!(r.not_reexecuted, None);
        assert_eq!(r.partial, None);
    }
}

#[test]
fn a_changed_mapping_is_output_diverged_at_the_mapper_and_the_first_token_in_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, pipeline) = recorded("threshold-gate", dir.path());
    let changed_pipeline = changed(
        &pipeline,
        "{mapping: {name: customer}",
        "{mapping: {name: client}",
    );
    let r = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap();
    let d = r.divergence().unwrap();
    // The record's first closed state of the mapper.
    let (seq, token) = events(&ledger, &run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::StateClosed { state, .. } if state.node.as_str() == "rename" => {
                Some((seq, state.subject.to_string()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(d.code, DivergenceCode::OutputDiverged, "{d}");
    assert_eq!(d.seq, Some(seq));
    assert_eq!(d.node.as_deref(), Some("rename"));
    assert_eq!(d.token.as_deref(), Some(token.as_str()));
    assert!(d.expected.starts_with("output ") && d.found.starts_with("output "));
    assert_ne!(d.expected, d.found);
    assert_eq!(
        r.pipeline.as_deref(),
        Some(changed_pipeline.display().to_string().as_str())
    );
}

#[test]
fn a_changed_threshold_is_route_diverged_at_the_gate_for_the_row_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, pipeline) = recorded("threshold-gate", dir.path());
    // Row 0 (amount 250.5) now goes high; no other row moves.
    let changed_pipeline = changed(&pipeline, "row['amount'] > 1000", "row['amount'] > 200");
    let r = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap();
    let d = r.divergence().unwrap();
    let route_seq = events(&ledger, &run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::RouteDecided { token, .. } if token.as_str() == "t0" => Some(seq),
            _ => None,
        })
        .unwrap();
    assert_eq!(d.code, DivergenceCode::RouteDiverged, "{d}");
    assert_eq!(d.seq, Some(route_seq));
    assert_eq!(d.node.as_deref(), Some("amount_threshold"));
    assert_eq!(d.token.as_deref(), Some("t0"));
    assert_eq!(d.expected, "route \"false\" to output");
    assert_eq!(d.found, "route \"true\" to high_values");
}

#[test]
fn a_narrower_source_schema_is_validation_diverged_at_the_rows_ingestion() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, pipeline) = recorded("threshold-gate", dir.path());
    // Row 0's amount, 250.5, is no int.
    let changed_pipeline = changed(&pipeline, "'amount: float'", "'amount: int'");
    let r = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap();
    let d = r.divergence().unwrap();
    let ingested = events(&ledger, &run)
        .into_iter()
        .find_map(|(seq, e)| matches!(e, Event::RowIngested { row: 0, .. }).then_some(seq))
        .unwrap();
    assert_eq!(d.code, DivergenceCode::ValidationDiverged, "{d}");
    assert_eq!(d.seq, Some(ingested));
    assert_eq!(d.token.as_deref(), Some("t0"));
    assert_eq!(d.expected, "nothing");
    assert!(d.found.contains("amount"), "{}", d.found);
}

#[test]
fn a_sink_that_now_refuses_its_rows_is_outcome_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, pipeline) = recorded("threshold-gate", dir.path());
    // high.csv now has fixed columns without `customer`: its rows are refused (and
    // discarded by on_write_failure); nothing before the outcome changes.
    let changed_pipeline = changed(
        &pipeline,
        "high.csv, schema: {mode: observed}",
        "high.csv, schema: {mode: fixed, fields: ['id: int']}",
    );
    let r = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap();
    let d = r.divergence().unwrap();
    let (seq, token) = events(&ledger, &run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::TokenOutcome {
                token,
                outcome: Outcome::Routed { write },
            } if write.sink.as_str() == "high_values" => Some((seq, token.to_string())),
            _ => None,
        })
        .unwrap();
    assert_eq!(d.code, DivergenceCode::OutcomeDiverged, "{d}");
    assert_eq!(d.seq, Some(seq));
    assert_eq!(d.token.as_deref(), Some(token.as_str()));
    assert_eq!(d.node.as_deref(), Some("high_values"));
    assert!(d.found.starts_with("discarded: "), "{}", d.found);
}

#[test]
fn a_sink_that_writes_other_bytes_is_artifact_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, pipeline) = recorded("threshold-gate", dir.path());
    let changed_pipeline = changed(
        &pipeline,
        "output: {plugin: csv, on_write_failure: discard, options: {",
        "output: {plugin: csv, on_write_failure: discard, options: {delimiter: ';', ",
    );
    let r = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap();
    let d = r.divergence().unwrap();
    let seq = events(&ledger, &run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::ArtifactWritten { sink, .. } if sink.as_str() == "output" => Some(seq),
            _ => None,
        })
        .unwrap();
    assert_eq!(d.code, DivergenceCode::ArtifactDiverged, "{d}");
    assert_eq!(d.seq, Some(seq));
    assert_eq!(d.node.as_deref(), Some("output"));
    assert_eq!(r.comparison.as_ref().unwrap().divergences, 1);
}

#[test]
fn a_plan_whose_gate_route_now_discards_is_route_diverged_then_outcome_diverged() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, _) = recorded("threshold-gate", dir.path());
    // Through the plan builder: the gate's `true` route now discards.
    let builder = |config: &attest_engine::config::PipelineConfig| -> Result<Plan, String> {
        let mut plan = build::plan(config)?;
        for node in &mut plan.nodes {
            if let NodeExec::Gate { routes, .. } = &mut node.exec {
                for (label, target) in routes.iter_mut() {
                    if label == "true" {
                        *target = Target::Discard {
                            reason: "changed".into(),
                        };
                    }
                }
            }
        }
        Ok(plan)
    };
    let mut opts = ReexecOptions::new(&no_env);
    opts.plan = Some(&builder);
    let r = reexecute(&ledger, &run, &opts).unwrap();
    let record = events(&ledger, &run);
    let first_high = record
        .iter()
        .find_map(|(seq, e)| match e {
            Event::RouteDecided { token, label, .. } if label == "true" => {
                Some((*seq, token.to_string()))
            }
            _ => None,
        })
        .unwrap();
    let d = r.divergence().unwrap();
    assert_eq!(d.code, DivergenceCode::RouteDiverged, "{d}");
    assert_eq!(d.seq, Some(first_high.0));
    assert_eq!(d.token.as_deref(), Some(first_high.1.as_str()));
    assert_eq!(d.found, "route \"true\" to nothing");
    // Each moved row also ends otherwise, and high.csv is never written.
    let c = r.comparison.as_ref().unwrap();
    let high_rows = record
        .iter()
        .filter(|(_, e)| matches!(e, Event::RouteDecided { label, .. } if label == "true"))
        .count() as u64;
    assert_eq!(c.divergences, 2 * high_rows + 1, "{c:?}");
}

#[test]
fn a_pipeline_with_another_topology_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, pipeline) = recorded("threshold-gate", dir.path());
    let changed_pipeline = changed(&pipeline, "- name: rename", "- name: renamer");
    let err = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ReplayError::Topology(_)), "{msg}");
    assert!(msg.contains("the run has transform `rename`"), "{msg}");
    assert!(
        msg.contains("the pipeline has transform `renamer`"),
        "{msg}"
    );
}

#[test]
fn purged_rows_are_named_and_nothing_is_re_executed() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, _) = recorded("threshold-gate", dir.path());
    let plan = ledger.retention_plan(u64::MAX).unwrap();
    ledger
        .purge_recorded(plan.runs.clone(), &plan.hashes, "test", 2)
        .unwrap();
    let r = reexecute(&ledger, &run, &ReexecOptions::new(&no_env)).unwrap();
    assert_eq!(r.comparison, None);
    let n = r.not_reexecuted.unwrap();
    assert_eq!(n.rows, (0..6).collect::<Vec<u64>>());
    assert_eq!(n.rows_total, 6);
    assert!(n.reason.starts_with("source row 0: "), "{}", n.reason);
    assert!(n.reason.contains("purged"), "{}", n.reason);
    let states: Vec<String> = events(&ledger, &run)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::StateOpened { state, .. } => Some(state.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(states.len(), 12);
    assert_eq!(n.states, states);
    assert_eq!(n.states_total, 12);
    // Verification still stands: the payloads are purged by a recorded purge.
    let report = ledger.verify(&run, &Default::default()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert!(report.payloads_purged > 0);
}

/// LLM example `name` against a local server.
fn served_example(name: &str, dir: &Path, server: &FakeLlm) -> PathBuf {
    let path = prepare(name, dir);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("${LLM_BASE_URL:-http://127.0.0.1:8787/v1}", &server.url());
    std::fs::write(&path, text).unwrap();
    path
}

/// The llm-sentiment example against a local server, with `from` replaced by `to`.
fn llm_pipeline(dir: &Path, server: &FakeLlm, from: &str, to: &str) -> PathBuf {
    let path = prepare("llm-sentiment", dir);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("${LLM_BASE_URL:-http://127.0.0.1:8787/v1}", &server.url());
    assert!(text.contains(from), "{from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

/// A replay of an LLM pipeline sends no request: every call is answered from the record,
/// and the re-execution agrees with it.
#[test]
fn an_llm_run_re_executes_from_its_record_and_sends_nothing() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = llm_pipeline(dir.path(), &server, "", "");
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let run = run_pipeline(&pipeline, &ledger);
    assert_eq!(server.requests(), 6);
    let calls = events(&ledger, &run)
        .iter()
        .filter(|(_, e)| matches!(e, Event::CallAllocated { .. }))
        .count();
    assert_eq!(calls, 6);
    for _ in 0..3 {
        let r = reexecute(&ledger, &run, &ReexecOptions::new(&no_env)).unwrap();
        let c = r.comparison.as_ref().unwrap();
        assert_eq!(c.first, None, "{c:?}");
        assert_eq!(c.compared, r.record_events);
    }
    assert_eq!(server.requests(), 6, "re-execution sent a request");
}

/// A prompt changed after the run asks something the record cannot answer: the first
/// such call, in the record's order of the calls re-execution made, is reported with its
/// node, token and the recorded allocation's seq; nothing is sent.
#[test]
fn a_changed_prompt_is_call_request_changed_at_the_recorded_call() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = llm_pipeline(dir.path(), &server, "", "");
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let run = run_pipeline(&pipeline, &ledger);
    let changed_pipeline = changed(
        &pipeline,
        "Review: {{ row.review }}",
        "Text: {{ row.review }}",
    );
    let r = reexecute(&ledger, &run, &opts_with(&changed_pipeline)).unwrap();
    let d = r.divergence().unwrap();
    assert_eq!(d.code, DivergenceCode::CallRequestChanged, "{d}");
    assert_eq!(d.node.as_deref(), Some("classify"));
    let (seq, state) = events(&ledger, &run)
        .into_iter()
        .find_map(|(seq, e)| match e {
            Event::CallAllocated { state, .. } if Some(seq) == d.seq => Some((seq, state)),
            _ => None,
        })
        .expect("the divergence names a recorded call");
    assert_eq!(Some(seq), d.seq);
    assert_eq!(d.token.as_deref(), Some(state.subject.to_string().as_str()));
    assert!(d.expected.starts_with("request ") && d.found.starts_with("request "));
    assert_ne!(d.expected, d.found);
    assert_eq!(server.requests(), 6, "re-execution sent a request");
}

/// A run that gave up on a call after one attempt, re-executed with retries: the retry's
/// call is not in the record, which cannot say what the service would have answered.
#[test]
fn a_call_the_record_does_not_have_is_call_missing() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    // One request answered 500 (retryable, not a capacity error: the example's pool would
    // retry a 503 itself); with one attempt its row fails.
    server.fail_next(1, Fault::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let pipeline = llm_pipeline(
        dir.path(),
        &server,
        "retry: {max_attempts: 3,",
        "retry: {max_attempts: 1,",
    );
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let run = run_pipeline(&pipeline, &ledger);
    let failed = events(&ledger, &run)
        .into_iter()
        .find_map(|(_, e)| match e {
            Event::CallCompleted {
                state,
                outcome: CallOutcome::Errored { .. },
                ..
            } => Some(state),
            _ => None,
        })
        .expect("one call failed");
    let retried = changed(
        &pipeline,
        "retry: {max_attempts: 1,",
        "retry: {max_attempts: 3,",
    );
    let requests = server.requests();
    let r = reexecute(&ledger, &run, &opts_with(&retried)).unwrap();
    let d = r.divergence().unwrap();
    assert_eq!(d.code, DivergenceCode::CallMissing, "{d}");
    assert_eq!(d.seq, None, "the record has no such call");
    assert_eq!(d.node.as_deref(), Some("classify"));
    assert_eq!(
        d.token.as_deref(),
        Some(failed.subject.to_string().as_str())
    );
    assert!(
        d.found.contains(&format!(
            "state {}#2",
            failed.subject.to_string() + "@classify"
        )),
        "{}",
        d.found
    );
    assert_eq!(server.requests(), requests, "re-execution sent a request");
}

/// batch-stats has 7 rows in batches of 3: a run that stops after its rows leaves the last
/// batch (one row) open, and re-execution must leave it so too.
fn open_batch_left(r: &attest_engine::replay::Reexecution, ledger: &Ledger, run: &RunId) {
    let c = r.comparison.as_ref().unwrap();
    assert_eq!(c.first, None, "{c:?}");
    assert_eq!(c.compared, r.record_events);
    let completed = events(ledger, run)
        .iter()
        .filter(|(_, e)| matches!(e, Event::BatchCompleted { .. }))
        .count();
    assert_eq!(completed, 2, "the third batch stayed open in the record");
}

#[test]
fn an_interrupted_run_is_re_executed_up_to_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = prepare("batch-stats", dir.path());
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    // Interrupted once all 7 rows are through, as Ctrl-C would at that moment.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let opts = RunOptions {
        interrupt: stop,
        progress: Some(Box::new(move |n| {
            if n >= 7 {
                flag.store(true, std::sync::atomic::Ordering::SeqCst)
            }
        })),
        ..RunOptions::default()
    };
    let (run, status) = run_with(&pipeline, &ledger, |s| s, opts);
    assert_eq!(status, RunStatus::Interrupted);
    let r = reexecute(&ledger, &run, &ReexecOptions::new(&no_env)).unwrap();
    assert_eq!(r.partial.as_deref(), Some("the run did not finish"));
    open_batch_left(&r, &ledger, &run);
}

#[test]
fn a_run_whose_source_failed_is_re_executed_up_to_where_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = prepare("batch-stats", dir.path());
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let (run, status) = run_with(
        &pipeline,
        &ledger,
        |s| Box::new(FailsAtEnd(s, false)),
        RunOptions::default(),
    );
    assert_eq!(status, RunStatus::Failed);
    let r = reexecute(&ledger, &run, &ReexecOptions::new(&no_env)).unwrap();
    assert_eq!(r.partial.as_deref(), Some("the run failed"));
    open_batch_left(&r, &ledger, &run);
}

/// The comparison matches by id, not by arrival: re-executing with more workers than the
/// run had, many times over, never reports the order in which rows finished as a
/// divergence (forks, merges and batches included).
#[test]
fn re_execution_with_many_workers_agrees_every_time() {
    for name in ["fork-coalesce", "batch-stats", "json-explode"] {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, run, _) = recorded(name, dir.path());
        for round in 0..15 {
            let mut opts = ReexecOptions::new(&no_env);
            opts.workers = Some(1 + round % 6);
            let r = reexecute(&ledger, &run, &opts).unwrap();
            let c = r.comparison.as_ref().unwrap();
            assert_eq!(c.first, None, "{name}, round {round}");
            assert_eq!(c.compared, r.record_events, "{name}, round {round}");
        }
    }
}

/// A re-execution that fails as a whole is reported as that failure, not as the states
/// it then never produced.
#[test]
fn a_re_execution_that_fails_is_run_diverged_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, run, _) = recorded("threshold-gate", dir.path());
    let builder = |config: &attest_engine::config::PipelineConfig| -> Result<Plan, String> {
        let mut plan = build::plan(config)?;
        for node in &mut plan.nodes {
            if let NodeExec::Transform { on_success, .. } = &mut node.exec {
                *on_success = Target::Node(99);
            }
        }
        Ok(plan)
    };
    let mut opts = ReexecOptions::new(&no_env);
    opts.plan = Some(&builder);
    let r = reexecute(&ledger, &run, &opts).unwrap();
    let d = r.divergence().unwrap();
    assert_eq!(d.code, DivergenceCode::RunDiverged, "{d}");
    assert_eq!(d.expected, "completed");
    assert!(d.found.contains("plan has no node 99"), "{}", d.found);
    let last = events(&ledger, &run).last().unwrap().0;
    assert_eq!(d.seq, Some(last));
}
