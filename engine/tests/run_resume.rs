//! Resuming runs in process: a run stopped (interrupted) after any number of rows, then
//! resumed, as many times as it takes, writes exactly the bytes of an uninterrupted run,
//! and its ledger verifies. The crash windows (SIGKILL) are covered through the binary by
//! `tests/e2e/kill_resume.rs` and `tests/e2e/crash_windows.rs`.

use attest_engine::open::{open_sinks, open_source};
use attest_engine::run::io::{RowSource, SourceError, SourceRecord};
use attest_engine::run::resume::{self, ResumeError};
use attest_engine::run::{execute, RunOptions, RunStatus, RunSummary};
use attest_ledger::verify::VerifyOptions;
use attest_ledger::{Ledger, RunId, RunStart};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An example's pipeline with its paths moved under `dir`, and a bigger input.
struct Case {
    name: &'static str,
    pipeline: PathBuf,
    outputs: Vec<PathBuf>,
}

fn case(dir: &Path, name: &'static str, rows: usize, edit: &dyn Fn(String) -> String) -> Case {
    let ex = repo().join("examples").join(name);
    let text = std::fs::read_to_string(ex.join("pipeline.yaml")).unwrap();
    let text = edit(text)
        .replace("examples/", &format!("{}/examples/", dir.display()))
        .replace("out/", &format!("{}/out/", dir.display()));
    let input_name = std::fs::read_dir(&ex)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with("input"))
        .unwrap();
    let input = std::fs::read_to_string(ex.join(&input_name)).unwrap();
    let dest = dir.join("examples").join(name);
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join(&input_name), grow(&input, &input_name, rows)).unwrap();
    let pipeline = dest.join("pipeline.yaml");
    std::fs::write(&pipeline, &text).unwrap();
    let outputs = text
        .split("path: ")
        .skip(1)
        .filter_map(|p| p.split([',', '}', '\n']).next())
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| p.starts_with(dir.join("out")) && !p.ends_with("ledger"))
        .collect();
    Case {
        name,
        pipeline,
        outputs,
    }
}

/// The example's input repeated to `rows` data rows (ids kept distinct where there is one).
fn grow(input: &str, name: &str, rows: usize) -> String {
    let mut lines = input.lines();
    let mut out = String::new();
    let header = if name.ends_with(".csv") {
        lines.next().map(|h| format!("{h}\n"))
    } else {
        None
    };
    let body: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    out.push_str(header.as_deref().unwrap_or(""));
    for i in 0..rows {
        out.push_str(body[i % body.len()]);
        out.push('\n');
    }
    out
}

/// Sets `flag` once `left` records have been read: the run stops reading there. Records
/// read but not yet recorded are dropped, as with Ctrl-C, so the run stops at or before
/// that row (the reader runs ahead of the ingestion).
struct StopAfter {
    inner: Box<dyn RowSource>,
    left: u64,
    flag: Arc<AtomicBool>,
}

impl RowSource for StopAfter {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        if self.left == 0 {
            self.flag.store(true, Ordering::SeqCst);
        }
        self.left = self.left.saturating_sub(1);
        self.inner.next_record()
    }
}

/// Options that interrupt the run once `n` rows are released (written or otherwise done):
/// unlike [`StopAfter`], at least `n` rows are done.
fn stop_when_released(n: u64) -> RunOptions {
    let flag = Arc::new(AtomicBool::new(false));
    let mut o = opts(&flag);
    o.progress = Some(Box::new(move |released| {
        if released >= n {
            flag.store(true, Ordering::SeqCst);
        }
    }));
    o
}

fn opts(stop: &Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        workers: 3,
        interrupt: stop.clone(),
        progress: None,
        ..RunOptions::default()
    }
}

fn load(c: &Case) -> attest_engine::build::Loaded {
    attest_engine::build::load(&c.pipeline, &|_| None).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Runs the case, stopping after `stop_after` rows if given. Returns the run and its status.
fn run(c: &Case, ledger: &Ledger, stop_after: Option<u64>) -> (RunId, RunStatus) {
    let s = run_summary(c, ledger, stop_after);
    (s.run_id, s.status)
}

/// [`run`], returning the whole summary.
fn run_summary(c: &Case, ledger: &Ledger, stop_after: Option<u64>) -> RunSummary {
    let loaded = load(c);
    let source = attest_engine::open::open(&loaded.config).unwrap().0;
    let flag = Arc::new(AtomicBool::new(false));
    let source: Box<dyn RowSource> = match stop_after {
        Some(n) => Box::new(StopAfter {
            inner: source,
            left: n,
            flag: flag.clone(),
        }),
        None => source,
    };
    execute_with(c, ledger, source, opts(&flag))
}

/// Runs the case from `source` with `opts`.
fn execute_with(
    c: &Case,
    ledger: &Ledger,
    source: Box<dyn RowSource>,
    opts: RunOptions,
) -> RunSummary {
    let loaded = load(c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    let sinks = attest_engine::open::open(&loaded.config).unwrap().1;
    execute(
        &plan,
        source,
        sinks,
        ledger,
        RunStart {
            config: loaded.text.clone(),
            engine_version: "test".into(),
            started_at_ms: 1,
        },
        opts,
    )
    .unwrap()
}

/// Resumes `run`, stopping after `stop_after` new rows if given.
fn resume_run(
    c: &Case,
    ledger: &Ledger,
    run: &RunId,
    stop_after: Option<u64>,
) -> Result<RunStatus, ResumeError> {
    resume_summary(c, ledger, run, stop_after).map(|s| s.status)
}

/// [`resume_run`], returning the whole summary.
fn resume_summary(
    c: &Case,
    ledger: &Ledger,
    run: &RunId,
    stop_after: Option<u64>,
) -> Result<RunSummary, ResumeError> {
    let loaded = load(c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    let stopped = resume::find_stop(&plan, ledger, run)?;
    let opened = open_source(&loaded.config).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let source: Box<dyn RowSource> = match stop_after {
        // The resume reads the rows the run had read first.
        Some(n) => Box::new(StopAfter {
            inner: opened.source,
            left: stopped.ingested + n,
            flag: flag.clone(),
        }),
        None => opened.source,
    };
    let prepared = resume::prepare(&plan, ledger, stopped, source)?;
    let sinks = open_sinks(
        &loaded.config,
        &opened.names,
        Some(&prepared.stopped.points),
    )
    .unwrap_or_else(|e| panic!("{}", e.message));
    Ok(resume::resume(&plan, ledger, prepared, sinks, opts(&flag)).unwrap())
}

fn outputs(c: &Case) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    c.outputs
        .iter()
        .map(|p| (p.clone(), std::fs::read(p).ok()))
        .collect()
}

fn verify(ledger: &Ledger, run: &RunId) {
    let report = ledger.verify(run, &VerifyOptions::default()).unwrap();
    assert!(report.ok(), "{:?}", report.failure);
}

/// Runs `c` uninterrupted in `refdir`'s copy, then stopped after each of `stops` and
/// resumed until done, and compares.
fn check(make: &dyn Fn(&Path) -> Case, stops: &[u64]) {
    let refdir = tempfile::tempdir().unwrap();
    let reference = make(refdir.path());
    let ledger = Ledger::open(refdir.path().join("ledger")).unwrap();
    let (_, status) = run(&reference, &ledger, None);
    assert_eq!(status, RunStatus::Completed);
    let want: Vec<Option<Vec<u8>>> = outputs(&reference).into_iter().map(|(_, b)| b).collect();
    assert!(
        want.iter().any(|b| b.is_some()),
        "{}: no output",
        reference.name
    );

    let dir = tempfile::tempdir().unwrap();
    let c = make(dir.path());
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let (id, mut status) = run(&c, &ledger, stops.first().copied());
    let mut rest = stops.iter().skip(1);
    let mut resumes = 0;
    while status != RunStatus::Completed {
        assert_eq!(status, RunStatus::Interrupted, "{}", c.name);
        status = resume_run(&c, &ledger, &id, rest.next().copied())
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        resumes += 1;
        assert!(resumes < 50, "{}: never completes", c.name);
    }
    let got: Vec<Option<Vec<u8>>> = outputs(&c).into_iter().map(|(_, b)| b).collect();
    for ((path, _), (g, w)) in outputs(&c).iter().zip(got.iter().zip(&want)) {
        assert!(
            g == w,
            "{}: {} differs after {resumes} resume(s)",
            c.name,
            path.display()
        );
    }
    verify(&ledger, &id);
    // The checkpoints, interruptions and resumes are bookkeeping: re-executing the run
    // from its record gives what it recorded, id for id.
    reexecutes(&ledger, &id);
    // A completed run is final.
    match resume_run(&c, &ledger, &id, None) {
        Err(ResumeError::Refused(m)) => assert!(m.contains("already completed"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn aggregation_resumes_with_its_open_batch() {
    // Batches of 3: most stops leave a batch open at the checkpoint.
    let make = |d: &Path| case(d, "batch-stats", 700, &|t| t);
    check(&make, &[1, 5, 100, 101, 350]);
    check(&make, &[0, 2, 4]);
}

#[test]
fn deaggregation_resumes() {
    let make = |d: &Path| case(d, "deaggregation", 400, &|t| t);
    check(&make, &[3, 7, 99, 200]);
}

#[test]
fn fork_and_coalesce_resume() {
    let make = |d: &Path| case(d, "fork-coalesce", 600, &|t| t);
    check(&make, &[1, 50, 51, 300]);
}

#[test]
fn expansion_and_error_routing_resume() {
    let make = |d: &Path| case(d, "json-explode", 500, &|t| t);
    check(&make, &[2, 3, 250]);
}

#[test]
fn quarantine_resumes() {
    let make = |d: &Path| case(d, "quarantine", 500, &|t| t);
    check(&make, &[4, 120, 121]);
}

#[test]
fn json_array_and_append_sinks_resume() {
    // One sink a JSON array (its closing bracket is rewritten at every durable point),
    // the other appending to a file that already has content.
    let edit = |t: String| {
        t.replace(
            "high_values: {plugin: csv, on_write_failure: discard, options: {path: out/threshold-gate/high.csv,",
            "high_values: {plugin: json, on_write_failure: discard, options: {path: out/threshold-gate/high.json, format: json, indent: 2,",
        )
        .replace(
            "options: {path: out/threshold-gate/normal.csv,",
            "options: {path: out/threshold-gate/normal.csv, mode: append,",
        )
    };
    let make = |d: &Path| {
        let c = case(d, "threshold-gate", 800, &edit);
        std::fs::create_dir_all(d.join("out/threshold-gate")).unwrap();
        std::fs::write(
            d.join("out/threshold-gate/normal.csv"),
            "id,customer,amount,ok\r\n0,before,1.0,True\r\n",
        )
        .unwrap();
        c
    };
    check(&make, &[1, 2, 300, 301, 600]);
}

#[test]
fn a_changed_node_configuration_is_named_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "threshold-gate", 100, &|t| t);
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let (id, status) = run(&c, &ledger, Some(10));
    assert_eq!(status, RunStatus::Interrupted);
    let text = std::fs::read_to_string(&c.pipeline).unwrap();
    std::fs::write(&c.pipeline, text.replace("> 1000", "> 999")).unwrap();
    let loaded = load(&c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    match resume::find_stop(&plan, &ledger, &id) {
        Err(ResumeError::Refused(m)) => {
            assert!(
                m.contains("the configuration of gate `amount_threshold` changed"),
                "{m}"
            );
            assert!(!m.contains("rename"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Layout and comments are not configuration.
    std::fs::write(&c.pipeline, format!("# a comment\n{text}\n\n")).unwrap();
    let loaded = load(&c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    assert!(resume::find_stop(&plan, &ledger, &id).is_ok());
}

#[test]
fn a_sink_path_moved_by_a_variable_is_refused() {
    // The path's `${OUT}` is hashed unexpanded, so the node's configuration is the same;
    // the checkpoint records the path the run wrote to, and the resume compares it.
    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "threshold-gate", 200, &|t| {
        t.replace(
            "path: out/threshold-gate/high.csv",
            "path: \"${OUT}/high.csv\"",
        )
    });
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let out = |d: &str| dir.path().join(d).display().to_string();
    let env_a = {
        let v = out("a");
        move |k: &str| (k == "OUT").then(|| v.clone())
    };
    let loaded = attest_engine::build::load(&c.pipeline, &env_a).unwrap();
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    let (source, sinks) = attest_engine::open::open(&loaded.config).unwrap();
    let s = execute(
        &plan,
        source,
        sinks,
        &ledger,
        RunStart {
            config: loaded.text.clone(),
            engine_version: "test".into(),
            started_at_ms: 1,
        },
        stop_when_released(50),
    )
    .unwrap();
    // Rows were written to both sinks, so each has a durable position.
    assert_eq!(s.status, RunStatus::Interrupted);
    assert!(s.sinks.iter().all(|(_, n)| *n > 0), "{:?}", s.sinks);
    let env_b = {
        let v = out("b");
        move |k: &str| (k == "OUT").then(|| v.clone())
    };
    let loaded = attest_engine::build::load(&c.pipeline, &env_b).unwrap();
    let plan_b = attest_engine::build::plan(&loaded.config).unwrap();
    match resume::find_stop(&plan_b, &ledger, &s.run_id) {
        Err(ResumeError::Refused(m)) => assert!(
            m.contains(&format!(
                "sink high_values: run {} wrote it to {}/high.csv, the pipeline now writes it to {}/high.csv",
                s.run_id,
                out("a"),
                out("b")
            )),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(resume::find_stop(&plan, &ledger, &s.run_id).is_ok());
}

#[test]
fn a_run_that_stopped_before_its_registration_is_registered_by_the_resume() {
    let refdir = tempfile::tempdir().unwrap();
    let reference = case(refdir.path(), "fork-coalesce", 100, &|t| t);
    let ledger = Ledger::open(refdir.path().join("ledger")).unwrap();
    run(&reference, &ledger, None);
    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "fork-coalesce", 100, &|t| t);
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    // All that reached the disk: the genesis event (a crash, then the resume's check
    // found no end event; RunInterrupted stands in for the crash here).
    let handle = ledger
        .start_run(RunStart {
            config: load(&c).text,
            engine_version: "test".into(),
            started_at_ms: 1,
        })
        .unwrap();
    handle
        .append(vec![attest_ledger::Event::RunInterrupted {
            reason: "test".into(),
        }])
        .unwrap();
    let id = handle.id().clone();
    assert_eq!(
        resume_run(&c, &ledger, &id, None).unwrap(),
        RunStatus::Completed
    );
    for ((p, got), (_, want)) in outputs(&c).iter().zip(outputs(&reference)) {
        assert!(*got == want, "{}", p.display());
    }
    verify(&ledger, &id);
}

/// Re-executes `run` (`attest replay` without `--verify-only`): no divergence.
fn reexecutes(ledger: &Ledger, run: &RunId) {
    let env = |_: &str| None;
    let r = attest_engine::replay::reexecute(
        ledger,
        run,
        &attest_engine::replay::ReexecOptions::new(&env),
    )
    .unwrap();
    assert!(r.not_reexecuted.is_none(), "{:?}", r.not_reexecuted);
    assert_eq!(r.divergence(), None, "re-execution diverged");
    assert!(r.comparison.as_ref().is_some_and(|c| c.compared > 0));
}

/// A run stopped after 10 rows, and what a crash in the middle of its next row would
/// leave: `events` opens the resume and ingests row `next`, and `commit` is that row's
/// walk, for a test to record all or part of (altered or not) before it resumes.
struct NextRow {
    id: RunId,
    next: u64,
    plan: attest_engine::plan::Plan,
    handle: attest_ledger::RunHandle,
    commit: attest_ledger::Commit,
    events: Vec<attest_ledger::Event>,
}

fn stopped_before_next_row(c: &Case, ledger: &Ledger) -> NextRow {
    use attest_ledger::Event;
    let (id, status) = run(c, ledger, Some(10));
    assert_eq!(status, RunStatus::Interrupted);
    let next = ledger.run_record(&id).unwrap().unwrap().rows;
    let loaded = load(c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    let mut source = open_source(&loaded.config).unwrap().source;
    let record = (0..=next)
        .filter_map(|_| source.next_record())
        .last()
        .unwrap()
        .unwrap();
    let payload = ledger.put_value(&record.raw).unwrap();
    let handle = ledger.run(&id).unwrap();
    let (commit, _) =
        attest_engine::run::worker::walk_record(&plan, &handle, next, record).unwrap();
    // The walk's payloads travel in its commit; the tests record its events by hand, so
    // the bytes those events reference are stored here.
    for (_, bytes) in commit.payloads() {
        ledger.put_payload(bytes).unwrap();
    }
    let events = vec![
        Event::RunResumed {
            reason: "test".into(),
        },
        Event::RowIngested {
            row: next,
            source: plan.source.id.clone(),
            payload,
        },
    ];
    NextRow {
        id,
        next,
        plan,
        handle,
        commit,
        events,
    }
}

#[test]
fn a_state_left_open_is_closed_as_interrupted_and_run_again_as_the_next_attempt() {
    // What a crash while a node calls out leaves: its row's events up to the state's
    // opening, the state open. (Here on a node that makes no calls, so that only the
    // attempt logic is at stake; the calls are tested through the binary, in
    // tests/e2e/resume_calls.rs.) The resume closes the state as interrupted in its
    // commit and runs the node again as attempt 2; the output is the uninterrupted one,
    // and re-execution walks attempt 1 as recorded.
    use attest_ledger::projection::{PKey, PVal, StateStatus};
    use attest_ledger::{Event, Item, NodeId, StateId, StateResult, Subject, TokenId};
    let refdir = tempfile::tempdir().unwrap();
    let reference = case(refdir.path(), "threshold-gate", 100, &|t| t);
    let refledger = Ledger::open(refdir.path().join("ledger")).unwrap();
    assert_eq!(run(&reference, &refledger, None).1, RunStatus::Completed);

    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "threshold-gate", 100, &|t| t);
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    // Row `next`'s walk, recorded up to its first state's opening.
    let NextRow {
        id,
        next,
        plan,
        handle,
        commit,
        mut events,
    } = stopped_before_next_row(&c, &ledger);
    for item in commit.items {
        let Item::Event(e) = item else { continue };
        let opened = matches!(e, Event::StateOpened { .. });
        events.push(e);
        if opened {
            break;
        }
    }
    events.push(Event::RunInterrupted {
        reason: "test".into(),
    });
    handle.append(events).unwrap();
    let state = StateId {
        subject: Subject::Token(TokenId::for_row(next)),
        node: NodeId::new("rename").unwrap(),
        attempt: 1,
    };
    let stopped = resume::find_stop(&plan, &ledger, &id).unwrap();
    assert_eq!(stopped.open_states(), std::slice::from_ref(&state));

    assert_eq!(
        resume_run(&c, &ledger, &id, None).unwrap(),
        RunStatus::Completed
    );
    let token = match ledger
        .projection(&id, &PKey::Token(TokenId::for_row(next)))
        .unwrap()
    {
        Some(PVal::Token(t)) => t,
        other => panic!("{other:?}"),
    };
    let renames: Vec<_> = token
        .states
        .iter()
        .filter(|s| s.node == state.node)
        .collect();
    assert_eq!(renames.len(), 2, "{renames:?}");
    assert!(
        renames[0].status.is_interrupted(),
        "{:?}",
        renames[0].status
    );
    assert!(
        matches!(renames[1].status, StateStatus::Completed { .. }),
        "{:?}",
        renames[1].status
    );
    assert!(StateResult::interrupted().is_interrupted());
    let want: Vec<_> = outputs(&reference).into_iter().map(|(_, b)| b).collect();
    let got: Vec<_> = outputs(&c).into_iter().map(|(_, b)| b).collect();
    assert!(got == want, "the resumed run's output differs");
    verify(&ledger, &id);
    reexecutes(&ledger, &id);
}

#[test]
fn a_row_recorded_with_another_result_fails_the_resumed_run() {
    // A row processed before the crash is run again on resume and compared with what was
    // recorded: a plugin that now gives another output is caught, not written.
    use attest_ledger::{Event, Item, StateResult};
    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "threshold-gate", 60, &|t| t);
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    // Row `next` as the input has it, and its walk with the transform's output altered.
    let NextRow {
        id,
        next,
        plan: _,
        handle,
        commit,
        mut events,
    } = stopped_before_next_row(&c, &ledger);
    let mut altered = false;
    for item in commit.items {
        let Item::Event(mut e) = item else { continue };
        if let Event::StateClosed {
            result: StateResult::Completed { output },
            ..
        } = &mut e
        {
            if !altered {
                *output = ledger.put_payload(b"{}").unwrap();
                altered = true;
            }
        }
        events.push(e);
    }
    assert!(altered);
    events.push(Event::RunInterrupted {
        reason: "test".into(),
    });
    handle.append(events).unwrap();

    let summary = resume_summary(&c, &ledger, &id, None).unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    let error = summary.error.unwrap_or_default();
    assert!(
        error.contains(&format!(
            "resume: row {next} gives a different state_closed when run again than the run recorded"
        )),
        "{error}"
    );
    verify(&ledger, &id);
}

#[test]
fn artifacts_recorded_before_the_stop_are_not_recorded_again() {
    // Stopped once its last row was written: every row is done and the artifacts are
    // recorded, but the run is not finished. The resume has nothing left to do; the files
    // it finishes are the same artifacts, so it records none.
    use attest_ledger::projection::{PKey, PVal};
    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "threshold-gate", 40, &|t| t);
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    let loaded = load(&c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    let (source, sinks) = attest_engine::open::open(&loaded.config).unwrap();
    let start = RunStart {
        config: loaded.text.clone(),
        engine_version: "test".into(),
        started_at_ms: 1,
    };
    let s = execute(&plan, source, sinks, &ledger, start, stop_when_released(40)).unwrap();
    assert_eq!((s.status, s.rows), (RunStatus::Interrupted, 40));
    let id = s.run_id;
    let artifacts = |ledger: &Ledger| -> Vec<u64> {
        plan.sinks
            .iter()
            .map(
                |s| match ledger.projection(&id, &PKey::Node(s.id.clone())).unwrap() {
                    Some(PVal::Node(n)) => n.artifacts,
                    other => panic!("{other:?}"),
                },
            )
            .collect()
    };
    assert_eq!(artifacts(&ledger), vec![1, 1]);
    let before = outputs(&c);
    assert_eq!(
        resume_run(&c, &ledger, &id, None).unwrap(),
        RunStatus::Completed
    );
    assert_eq!(artifacts(&ledger), vec![1, 1]);
    assert_eq!(outputs(&c), before);
    verify(&ledger, &id);
}

#[test]
fn rows_left_unanswered_before_the_cut_still_fail_the_resumed_run() {
    // Nothing listens at the endpoint: every row's call is refused and the row fails
    // unanswered, which makes `attest run` exit 1. A run stopped after some rows and
    // resumed must count the rows before its cut too (they come from the checkpoint
    // note), or the resumed run would end looking like a success.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = move |t: String| {
        t.replace(
            "${LLM_BASE_URL:-http://127.0.0.1:8787/v1}",
            &format!("http://127.0.0.1:{port}/v1"),
        )
        .replace("max_attempts: 3", "max_attempts: 1")
    };
    let refdir = tempfile::tempdir().unwrap();
    let reference = case(refdir.path(), "llm-sentiment", 30, &dead);
    let refledger = Ledger::open(refdir.path().join("ledger")).unwrap();
    let whole = run_summary(&reference, &refledger, None);
    assert_eq!(whole.unanswered.rows, 30);

    let dir = tempfile::tempdir().unwrap();
    let c = case(dir.path(), "llm-sentiment", 30, &dead);
    let ledger = Ledger::open(dir.path().join("ledger")).unwrap();
    // Stopped once 10 rows are done (the calls are slower than reading: a stop after 10
    // rows read could leave none done).
    let source = attest_engine::open::open(&load(&c).config).unwrap().0;
    let first = execute_with(&c, &ledger, source, stop_when_released(10));
    assert_eq!(first.status, RunStatus::Interrupted);
    let before = first.unanswered.rows;
    assert!(
        before > 0,
        "the stopped run left no row unanswered: {} rows, {} failed",
        first.rows,
        first.failed
    );
    let resumed = resume_summary(&c, &ledger, &first.run_id, None).unwrap();
    assert_eq!(resumed.status, RunStatus::Completed);
    assert_eq!(
        resumed.unanswered.rows, 30,
        "rows before the cut are counted"
    );
    assert_eq!(resumed.unanswered.first, whole.unanswered.first);
    verify(&ledger, &first.run_id);
}
