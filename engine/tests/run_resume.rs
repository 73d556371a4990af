//! Resuming runs in process: a run stopped (interrupted) after any number of rows, then
//! resumed, as many times as it takes, writes exactly the bytes of an uninterrupted run,
//! and its ledger verifies. The crash windows (SIGKILL) are covered through the binary by
//! `tests/e2e/kill_resume.rs` and `tests/e2e/crash_windows.rs`.

use attest_engine::open::{open_sinks, open_source};
use attest_engine::run::io::{RowSource, SourceError, SourceRecord};
use attest_engine::run::resume::{self, ResumeError};
use attest_engine::run::{execute, RunOptions, RunStatus};
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

/// Sets `flag` once `left` records have been read: the run stops reading there.
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

fn opts(stop: &Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        workers: 3,
        interrupt: stop.clone(),
        progress: None,
    }
}

fn load(c: &Case) -> attest_engine::build::Loaded {
    attest_engine::build::load(&c.pipeline, &|_| None).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Runs the case, stopping after `stop_after` rows if given. Returns the run and its status.
fn run(c: &Case, ledger: &Ledger, stop_after: Option<u64>) -> (RunId, RunStatus) {
    let loaded = load(c);
    let plan = attest_engine::build::plan(&loaded.config).unwrap();
    let (source, sinks) = attest_engine::open::open(&loaded.config).unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let source: Box<dyn RowSource> = match stop_after {
        Some(n) => Box::new(StopAfter {
            inner: source,
            left: n,
            flag: flag.clone(),
        }),
        None => source,
    };
    let s = execute(
        &plan,
        source,
        sinks,
        ledger,
        RunStart {
            config: loaded.text.clone(),
            engine_version: "test".into(),
            started_at_ms: 1,
        },
        opts(&flag),
    )
    .unwrap();
    (s.run_id, s.status)
}

/// Resumes `run`, stopping after `stop_after` new rows if given.
fn resume_run(
    c: &Case,
    ledger: &Ledger,
    run: &RunId,
    stop_after: Option<u64>,
) -> Result<RunStatus, ResumeError> {
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
    Ok(resume::resume(&plan, ledger, prepared, sinks, opts(&flag))
        .unwrap()
        .status)
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
