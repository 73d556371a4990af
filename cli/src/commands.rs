//! One function per subcommand. Each returns the exit code, or a `Failure` whose message
//! says what went wrong and where.

use crate::exit::{Code, Failure};
use crate::heads::{self, Expectation};
use crate::render;
use attest_ledger::head::{self, SignedHead};
use attest_ledger::lineage::LineageQuery;
use attest_ledger::verify::{FailureCode, Head, VerifyOptions, VerifyReport};
use attest_ledger::{Ledger, NodeId, RunId, TokenId};
use std::path::{Path, PathBuf};

/// The ledger directory used when neither `--ledger` nor the pipeline names one.
pub const DEFAULT_LEDGER: &str = "attest-ledger";

pub(crate) fn open_existing(dir: Option<PathBuf>) -> Result<Ledger, Failure> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER));
    if !dir.join("db").exists() {
        return Err(Failure::bad_input(format!(
            "no ledger at {} (use --ledger DIR to name one)",
            dir.display()
        )));
    }
    Ok(Ledger::open_for_reading(&dir)?)
}

pub(crate) fn resolve_run(ledger: &Ledger, run: &str) -> Result<RunId, Failure> {
    if run == "latest" {
        return ledger.latest_run()?.map(|r| r.run).ok_or_else(|| {
            Failure::bad_input(format!(
                "the ledger at {} has no runs",
                ledger.path().display()
            ))
        });
    }
    let id = RunId::new(run).map_err(|e| Failure::bad_input(e.to_string()))?;
    if ledger.run_record(&id)?.is_none() {
        return Err(Failure::bad_input(format!(
            "no run {run} in the ledger at {}",
            ledger.path().display()
        )));
    }
    Ok(id)
}

pub fn runs(dir: Option<PathBuf>, json: bool) -> Result<Code, Failure> {
    let ledger = open_existing(dir)?;
    let runs = ledger.runs()?;
    if json {
        let list: Vec<_> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.run.as_str(),
                    "status": r.status.name(),
                    "started_at_ms": r.started_at_ms,
                    "started": render::utc(r.started_at_ms),
                    "rows": r.rows,
                    "events": r.next_seq,
                    "head": r.head.to_hex(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else if runs.is_empty() {
        println!("no runs in {}", ledger.path().display());
    } else {
        println!(
            "{:<32} {:<12} {:<21} {:>10} {:>10}  head",
            "run", "status", "started", "rows", "events"
        );
        for r in runs {
            println!(
                "{:<32} {:<12} {:<21} {:>10} {:>10}  {}:{}",
                r.run.as_str(),
                r.status.name(),
                render::utc(r.started_at_ms),
                r.rows,
                r.next_seq,
                r.next_seq,
                r.head.to_hex()
            );
        }
    }
    Ok(Code::Ok)
}

/// `attest replay`: verification, optionally against a head kept outside the ledger, then
/// re-execution unless `reexec.skip`.
pub fn replay(
    dir: Option<PathBuf>,
    run: &str,
    expect_head: Option<&str>,
    verify_key: Option<&Path>,
    expect_purge_head: Option<&str>,
    reexec: &crate::replay_cmd::Reexec<'_>,
    json: bool,
) -> Result<Code, Failure> {
    if reexec.skip && reexec.pipeline.is_some() {
        return Err(Failure::bad_input(
            "--pipeline re-executes a pipeline against the record; --verify-only does not re-execute",
        ));
    }
    let expectation = expect_head.map(heads::parse_expectation).transpose()?;
    let purge_head = expect_purge_head.map(heads::parse_count_hash).transpose()?;
    let key = verify_key.map(head::read_verifying_key).transpose()?;
    if key.is_some() && !matches!(expectation, Some(Expectation::File(_))) {
        return Err(Failure::bad_input(
            "--verify-key checks a signed head file: give it as --expect-head FILE",
        ));
    }
    crate::allocator::keep_freed_pages();
    let ledger = open_existing(dir)?;
    let started = std::time::Instant::now();
    // Verification's walk hands the run's events to re-execution, which so needs no log
    // pass of its own.
    let mut recorder = (!reexec.skip).then(attest_engine::replay::Recorder::new);
    let observe = &mut |seq: u64, event: &attest_ledger::Event| {
        if let Some(r) = recorder.as_mut() {
            r.observe(seq, event)
        }
    };
    let mut report = match expectation {
        None => {
            let run = resolve_run(&ledger, run)?;
            verify(&ledger, &run, None, observe)?
        }
        Some(Expectation::Head(h)) => {
            // A head kept outside says the run was recorded: if the ledger no longer has
            // it, that is lost evidence (verify reports EMPTY_RUN, exit 4), not a typo.
            let run = match run {
                "latest" => resolve_run(&ledger, run)?,
                id => RunId::new(id).map_err(|e| Failure::bad_input(e.to_string()))?,
            };
            verify(&ledger, &run, Some(h), observe)?
        }
        Some(Expectation::Hash(hash)) => {
            let run = resolve_run(&ledger, run)?;
            match heads::place_hash(&ledger, &run, &hash) {
                Some(h) => verify(&ledger, &run, Some(h), observe)?,
                None => {
                    // A log that does not walk is reported as such (the walk comes
                    // before the head check); otherwise the chain was rewritten or
                    // truncated before the head.
                    let mut report = verify(&ledger, &run, None, observe)?;
                    let walk_failed = report.failure.as_ref().is_some_and(|f| {
                        matches!(
                            f.code,
                            FailureCode::EmptyRun
                                | FailureCode::DecodeFailed
                                | FailureCode::SeqGap
                                | FailureCode::RecordAltered
                                | FailureCode::ChainBroken
                                | FailureCode::RuleViolation
                        )
                    });
                    if !walk_failed {
                        report.failure = Some(attest_ledger::verify::Failure {
                            code: FailureCode::HeadMismatch,
                            seq: None,
                            expected: format!("a record with hash {hash}"),
                            found: format!("{} records, none with it", report.events),
                            message:
                                "no record of the run has the head's hash: truncated or rewritten"
                                    .into(),
                        });
                    }
                    report
                }
            }
        }
        Some(Expectation::File(file)) => file_head(&ledger, run, &file, key.as_ref(), observe)?,
    };
    if let (Some(expected), true) = (purge_head, report.ok()) {
        report.failure = heads::check_purge_head(&ledger, expected)?;
    }
    crate::replay_cmd::finish(&ledger, &report, recorder, reexec, started, json)
}

fn verify(
    ledger: &Ledger,
    run: &RunId,
    expected_head: Option<Head>,
    observe: &mut dyn FnMut(u64, &attest_ledger::Event),
) -> Result<VerifyReport, Failure> {
    Ok(ledger.verify_observing(
        run,
        &VerifyOptions {
            expected_head,
            skip_payloads: false,
        },
        observe,
    )?)
}

/// Verification against a head file: its signature first (when a key is given), then its
/// run, then the ledger against its head.
fn file_head(
    ledger: &Ledger,
    run: &str,
    file: &SignedHead,
    key: Option<&attest_ledger::head::VerifyingKey>,
    observe: &mut dyn FnMut(u64, &attest_ledger::Event),
) -> Result<VerifyReport, Failure> {
    match key {
        Some(key) => {
            if let Err(problem) = file.check_signature(key) {
                return Ok(heads::early_failure(
                    &file.run,
                    FailureCode::HeadSignatureInvalid,
                    "a head signed by the verification key".into(),
                    problem.to_string(),
                    "the head kept outside the ledger cannot be trusted".into(),
                ));
            }
        }
        None if file.signature.is_some() => return Err(Failure::bad_input(
            "the head file is signed: give --verify-key FILE (the signer's public key) to check it",
        )),
        None => {}
    }
    let head = file
        .head()
        .ok_or_else(|| Failure::bad_input("the head file's hash is not 64 hex digits"))?;
    // `--run latest` (the default) means the head's own run.
    let wanted = if run == "latest" {
        file.run.as_str()
    } else {
        run
    };
    let mismatch = |found: String, message: &str| {
        heads::early_failure(
            wanted,
            FailureCode::HeadMismatch,
            format!("run {}", file.run),
            found,
            message.to_string(),
        )
    };
    if wanted != file.run {
        return Ok(mismatch(
            format!("run {wanted}"),
            "the head file is for another run",
        ));
    }
    let id = RunId::new(wanted).map_err(|e| Failure::bad_input(e.to_string()))?;
    if ledger.run_record(&id)?.is_none() {
        return Ok(mismatch(
            "no such run".into(),
            "the ledger has no run named by the head kept outside it: deleted or replaced",
        ));
    }
    verify(ledger, &id, Some(head), observe)
}

pub fn lineage(
    dir: Option<PathBuf>,
    run: &str,
    row: Option<u64>,
    token: Option<String>,
    output: Option<String>,
    format: render::LineageFormat,
) -> Result<Code, Failure> {
    let query = match (row, token, output) {
        (Some(r), None, None) => LineageQuery::Row(r),
        (None, Some(t), None) => {
            LineageQuery::Token(TokenId::new(t).map_err(|e| Failure::bad_input(e.to_string()))?)
        }
        (None, None, Some(o)) => {
            let bad =
                || Failure::bad_input(format!("--output {o:?}: expected SINK:N, e.g. output:0"));
            let (sink, n) = o.rsplit_once(':').ok_or_else(bad)?;
            LineageQuery::Output {
                sink: NodeId::new(sink).map_err(|_| bad())?,
                ordinal: n.parse().map_err(|_| bad())?,
            }
        }
        _ => {
            return Err(Failure::bad_input(
                "give exactly one of --row N, --token ID, --output SINK:N",
            ))
        }
    };
    let ledger = open_existing(dir)?;
    let run = resolve_run(&ledger, run)?;
    let Some(l) = ledger.lineage(&run, &query)? else {
        return Err(Failure::bad_input(format!(
            "run {run} has no {}",
            describe(&query)
        )));
    };
    match format {
        render::LineageFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&l).map_err(|e| Failure::run_failed(e.to_string()))?
            )
        }
        render::LineageFormat::Text => print!("{}", render::lineage_text(&l)),
        render::LineageFormat::Dot => print!("{}", render::lineage_dot(&l)),
        render::LineageFormat::Mermaid => print!("{}", render::lineage_mermaid(&l)),
    }
    Ok(Code::Ok)
}

fn describe(q: &LineageQuery) -> String {
    match q {
        LineageQuery::Row(r) => format!("source row {r}"),
        LineageQuery::Token(t) => format!("token {t}"),
        LineageQuery::Output { sink, ordinal } => format!("row {ordinal} written to sink {sink}"),
    }
}

pub fn plugins() -> Result<Code, Failure> {
    for (kind, names) in attest_engine::build::PLUGINS {
        println!("{kind:<12} {}", names.join(", "));
    }
    Ok(Code::Ok)
}

pub fn validate(pipeline: &Path) -> Result<Code, Failure> {
    match attest_engine::build::load(pipeline, &|k| std::env::var(k).ok()) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: valid", pipeline.display());
            Ok(Code::Ok)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            Err(Failure::bad_input(format!(
                "{}: {} error(s)",
                pipeline.display(),
                errors.len()
            )))
        }
    }
}

pub fn run(pipeline: &Path, ledger_dir: Option<PathBuf>, json: bool) -> Result<Code, Failure> {
    crate::run_cmd::run(pipeline, ledger_dir, json)
}
