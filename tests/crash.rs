//! Helpers for the crash and resume tests: examples with bigger inputs, the runs a ledger
//! holds, resuming until done, and comparing outputs with an uninterrupted run.

use crate::Scratch;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Each output file of an example (relative path) and its bytes, `None` when missing.
pub type Outputs = Vec<(String, Option<Vec<u8>>)>;

/// An example pipeline in a scratch directory, with the sink files it writes.
#[derive(Clone, Debug)]
pub struct Example {
    pub name: &'static str,
    /// Relative to the scratch directory.
    pub pipeline: String,
    pub outputs: Vec<String>,
}

impl Example {
    /// `examples/NAME/pipeline.yaml` of `s`, its input grown to `rows` data rows.
    pub fn grown(s: &Scratch, name: &'static str, rows: usize) -> Example {
        let dir = s.path().join("examples").join(name);
        let input = std::fs::read_dir(&dir)
            .expect("example dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("input"))
            .expect("the example has an input file");
        let text = std::fs::read_to_string(dir.join(&input)).expect("read input");
        std::fs::write(dir.join(&input), grow(&text, input.ends_with(".csv"), rows))
            .expect("write input");
        Example::at(s, name)
    }

    /// `examples/NAME/pipeline.yaml` of `s` as it is.
    pub fn at(s: &Scratch, name: &'static str) -> Example {
        let pipeline = format!("examples/{name}/pipeline.yaml");
        let text = s.read(&pipeline);
        let outputs = text
            .split("path: ")
            .skip(1)
            .filter_map(|p| p.split([',', '}', '\n']).next())
            .map(|p| p.trim().to_string())
            .filter(|p| p.starts_with("out/") && p != "out/ledger")
            .collect();
        Example {
            name,
            pipeline,
            outputs,
        }
    }

    /// Rewrites the pipeline file (and the outputs it names).
    pub fn edit(self, s: &Scratch, f: impl Fn(String) -> String) -> Example {
        s.write(&self.pipeline, &f(s.read(&self.pipeline)));
        Example::at(s, self.name)
    }

    /// The bytes of each output file (`None` when it does not exist).
    pub fn output_bytes(&self, s: &Scratch) -> Outputs {
        self.outputs
            .iter()
            .map(|o| (o.clone(), std::fs::read(s.path().join(o)).ok()))
            .collect()
    }
}

/// An input's data lines repeated to `rows` lines (after the header for CSV).
pub fn grow(text: &str, csv: bool, rows: usize) -> String {
    let mut lines = text.lines();
    let mut out = String::new();
    if csv {
        if let Some(h) = lines.next() {
            out.push_str(h);
            out.push('\n');
        }
    }
    let body: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    for i in 0..rows {
        out.push_str(body[i % body.len()]);
        out.push('\n');
    }
    out
}

/// `attest runs --json` of the scratch's `out/ledger` (empty when there is no ledger yet).
pub fn runs(s: &Scratch) -> Vec<Value> {
    if !s.path().join("out/ledger/db").exists() {
        return Vec::new();
    }
    let out = s
        .attest()
        .args(["runs", "--ledger", "out/ledger", "--json"])
        .output()
        .expect("attest runs");
    assert!(out.status.success(), "{}", text(&out));
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(runs)) => runs,
        other => panic!("attest runs --json: {other:?}"),
    }
}

/// stdout and stderr, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `attest replay --verify-only` passes for every run in the scratch's ledger.
pub fn assert_every_run_verifies(s: &Scratch) {
    for r in runs(s) {
        let id = r["run_id"].as_str().expect("run id");
        let out = s
            .attest()
            .args([
                "replay",
                "--ledger",
                "out/ledger",
                "--verify-only",
                "--run",
                id,
            ])
            .output()
            .expect("attest replay");
        assert_eq!(out.status.code(), Some(0), "run {id}: {}", text(&out));
    }
}

/// Runs `example` uninterrupted in a fresh scratch prepared by `setup`; returns its outputs.
pub fn reference(setup: &dyn Fn(&Scratch) -> Example) -> (Example, Outputs) {
    reference_with(setup, &[])
}

/// [`reference`] with `env` set for the run.
pub fn reference_with(
    setup: &dyn Fn(&Scratch) -> Example,
    env: &[(&str, &str)],
) -> (Example, Outputs) {
    let s = Scratch::new();
    let ex = setup(&s);
    let out = s
        .attest()
        .args(["run", &ex.pipeline, "--json"])
        .envs(env.iter().copied())
        .timeout(Duration::from_secs(600))
        .output()
        .expect("attest run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bytes = ex.output_bytes(&s);
    assert!(
        bytes.iter().any(|(_, b)| b.is_some()),
        "{}: the reference run wrote nothing",
        ex.name
    );
    (ex, bytes)
}

/// Resumes `run` with `attest resume` until it completes (each resume must end 0 or 3).
pub fn resume_until_done(s: &Scratch, run: &str) -> Vec<Output> {
    resume_until_done_with(s, run, &[])
}

/// [`resume_until_done`] with `env` set for each resume.
pub fn resume_until_done_with(s: &Scratch, run: &str, env: &[(&str, &str)]) -> Vec<Output> {
    let mut outs = Vec::new();
    loop {
        let out = s
            .attest()
            .args(["resume", run, "--ledger", "out/ledger", "--json"])
            .envs(env.iter().copied())
            .timeout(Duration::from_secs(600))
            .output()
            .expect("attest resume");
        let code = out.status.code();
        outs.push(out);
        match code {
            Some(0) => return outs,
            Some(3) if outs.len() < 20 => continue,
            _ => panic!(
                "attest resume {run}: {:?}\n{}",
                code,
                outs.last().map(text).unwrap_or_default()
            ),
        }
    }
}

/// Asserts the outputs of `ex` in `s` are byte for byte `want`.
pub fn assert_same_outputs(s: &Scratch, ex: &Example, want: &Outputs, what: &str) {
    for ((name, got), (_, w)) in ex.output_bytes(s).iter().zip(want) {
        if got != w {
            let len = |b: &Option<Vec<u8>>| b.as_ref().map(|b| b.len());
            panic!(
                "{what}: {name} differs from the uninterrupted run ({:?} bytes, expected {:?})",
                len(got),
                len(w)
            );
        }
    }
}

/// The run the scratch's ledger holds, if exactly one.
pub fn only_run(s: &Scratch) -> Option<Value> {
    let mut r = runs(s);
    assert!(r.len() <= 1, "more than one run: {r:?}");
    r.pop()
}

/// A file's length, 0 when missing.
pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Runs `ex` in the crash child (`tests/bin/crash_child.rs`, built as `child`) with `env`
/// until `spec`; it must die by SIGKILL, leaving the one run of the scratch's ledger
/// `running`. Returns the run id.
pub fn crash_child(
    s: &Scratch,
    child: &Path,
    ex: &Example,
    spec: &str,
    env: &[(&str, &str)],
) -> String {
    let out = Command::new(child)
        .args([&ex.pipeline, "out/ledger", spec])
        .envs(env.iter().copied())
        .current_dir(s.path())
        .output()
        .expect("crash child");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{spec}: the child did not crash: {:?} {}",
        out.status,
        text(&out)
    );
    let run = only_run(s).expect("the crashed run");
    assert_eq!(run["status"], "running", "a crashed run has no end event");
    run["run_id"].as_str().expect("id").to_string()
}

/// What a run's record says about its external calls, for the tests that resume runs
/// killed while calling out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub allocated: u64,
    /// Answered by the server, as recorded (answers taken from the record not counted).
    pub answered: u64,
    /// Answered from an interrupted attempt's record (`reused`), not sent.
    pub reused: u64,
    /// Completed by a resume: the run stopped before their answer was recorded.
    pub interrupted: u64,
    /// States closed as interrupted.
    pub interrupted_states: u64,
}

impl CallCounts {
    /// Reads run `run` of the scratch's ledger (`out/ledger`).
    pub fn read(s: &Scratch, run: &str) -> CallCounts {
        use attest_ledger::{CallOutcome, Event, Ledger, RunId};
        let ledger = Ledger::open(s.path().join(crate::LEDGER)).expect("open ledger");
        let id = RunId::new(run).expect("run id");
        let mut c = CallCounts::default();
        ledger
            .for_each_event(&id, |_, e| {
                match e {
                    Event::CallAllocated { .. } => c.allocated += 1,
                    Event::CallCompleted {
                        outcome: CallOutcome::Errored { error, .. },
                        ..
                    } if error.starts_with("interrupted:") => c.interrupted += 1,
                    Event::CallCompleted {
                        response: Some(h), ..
                    } => {
                        let bytes = ledger.payload(&h)?.unwrap_or_default();
                        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        if v.get("reused").is_some() {
                            c.reused += 1;
                        } else if v.get("status").is_some() {
                            c.answered += 1;
                        }
                    }
                    Event::StateClosed { result, .. } if result.is_interrupted() => {
                        c.interrupted_states += 1
                    }
                    _ => {}
                }
                Ok(())
            })
            .expect("read the log");
        c
    }
}

/// `attest replay` of `run` (re-executing it unless `verify_only`) with `env` set: it must
/// exit 0, and a re-execution must find no divergence. Returns the report.
pub fn replay_passes(s: &Scratch, run: &str, verify_only: bool, env: &[(&str, &str)]) -> Value {
    let mut cmd = s.attest();
    cmd.args(["replay", "--ledger", crate::LEDGER, "--run", run, "--json"])
        .envs(env.iter().copied())
        .timeout(Duration::from_secs(600));
    if verify_only {
        cmd.arg("--verify-only");
    }
    let report = crate::json_success(&mut cmd);
    if !verify_only {
        let r = &report["reexecution"];
        assert_eq!(r["performed"], true, "replay {run}: {report}");
        assert_eq!(r["divergences"], 0, "replay {run}: {report}");
    }
    report
}
