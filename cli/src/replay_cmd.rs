//! `attest replay`, after verification: re-execution (unless `--verify-only`) and the
//! report of both, as text or one JSON object (`docs/replay.md`).

use crate::exit::{Code, Failure};
use attest_engine::replay::{self, Divergence, Recorder, ReexecOptions, Reexecution, ReplayError};
use attest_ledger::verify::VerifyReport;
use attest_ledger::{Ledger, RunId};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// What to do after verification.
pub struct Reexec<'a> {
    /// `--verify-only`.
    pub skip: bool,
    /// `--pipeline FILE`.
    pub pipeline: Option<&'a Path>,
}

/// Re-executes the verified run (when verification passed and it is wanted), prints the
/// report and returns the exit code.
pub fn finish(
    ledger: &Ledger,
    report: &VerifyReport,
    recorder: Option<Recorder>,
    reexec: &Reexec<'_>,
    started: Instant,
    json: bool,
) -> Result<Code, Failure> {
    let verified_in = started.elapsed();
    let reexecution = match recorder {
        Some(recorder) if report.ok() => {
            let run =
                RunId::new(report.run.as_str()).map_err(|e| Failure::bad_input(e.to_string()))?;
            let env = |k: &str| std::env::var(k).ok();
            let mut opts = ReexecOptions::new(&env);
            opts.pipeline = reexec.pipeline;
            let reexecuted =
                replay::reexecute_recorded(ledger, &run, recorder, &opts, Instant::now());
            Some(reexecuted.map_err(|e| match e {
                ReplayError::Ledger(e) => Failure::from(e),
                ReplayError::Start(m) => Failure::run_failed(format!("re-execution: {m}")),
                other => Failure::bad_input(format!(
                    "run {run} verified ({} events), but it cannot be re-executed: {other}",
                    report.events
                )),
            })?)
        }
        _ => None,
    };
    let ok = report.ok()
        && reexecution
            .as_ref()
            .is_none_or(|r| r.divergence().is_none());
    if json {
        println!(
            "{}",
            report_json(report, reexecution.as_ref(), ok, started.elapsed())
        );
    } else {
        print_text(report, reexecution.as_ref(), verified_in, started.elapsed());
    }
    Ok(if ok { Code::Ok } else { Code::Integrity })
}

/// The first failure, verification's or re-execution's, in one shape.
fn failure_json(report: &VerifyReport, divergence: Option<&Divergence>) -> Value {
    if let Some(f) = &report.failure {
        return json!({
            "code": f.code.as_str(),
            "seq": f.seq,
            "node": null,
            "token": null,
            "expected": f.expected,
            "found": f.found,
            "message": f.message,
        });
    }
    match divergence {
        Some(d) => divergence_json(d),
        None => Value::Null,
    }
}

fn divergence_json(d: &Divergence) -> Value {
    json!({
        "code": d.code.as_str(),
        "seq": d.seq,
        "node": d.node,
        "token": d.token,
        "expected": d.expected,
        "found": d.found,
        "message": d.message,
    })
}

fn report_json(
    report: &VerifyReport,
    reexecution: Option<&Reexecution>,
    ok: bool,
    elapsed: Duration,
) -> Value {
    let head = report.head.map(|h| {
        json!({"count": h.count, "hash": h.hash.to_hex(), "head": format!("{}:{}", h.count, h.hash)})
    });
    let failure = failure_json(report, reexecution.and_then(Reexecution::divergence));
    let reexecution = reexecution.map(|r| {
        let c = r.comparison.as_ref();
        json!({
            "performed": c.is_some(),
            "pipeline": r.pipeline,
            "states": c.map(|c| c.states),
            "events": c.map(|c| c.events),
            "record_events": r.record_events,
            "compared": c.map(|c| c.compared),
            "divergences": c.map(|c| c.divergences),
            "divergence": r.divergence().map(divergence_json),
            "not_reexecuted": r.not_reexecuted,
            "partial": r.partial,
            "elapsed_ms": r.elapsed.as_millis() as u64,
        })
    });
    json!({
        "run": report.run,
        "events": report.events,
        "head": head,
        "projections_checked": report.projections_checked,
        "payloads_checked": report.payloads_checked,
        "payloads_purged": report.payloads_purged,
        "failure": failure,
        "reexecution": reexecution,
        "ok": ok,
        "elapsed_ms": elapsed.as_millis() as u64,
    })
}

fn print_text(
    report: &VerifyReport,
    reexecution: Option<&Reexecution>,
    verified_in: Duration,
    elapsed: Duration,
) {
    let run = &report.run;
    if let Some(f) = &report.failure {
        println!("run {run}: NOT CONSISTENT");
        println!("{f}");
        return;
    }
    let divergence = reexecution.and_then(Reexecution::divergence);
    if divergence.is_some() {
        println!("run {run}: NOT CONSISTENT — re-execution diverged from the record");
    } else {
        println!("run {run}: consistent");
    }
    println!(
        "  verified     {} events, {} projections, {} payloads checked ({} purged) in {verified_in:.2?}",
        report.events, report.projections_checked, report.payloads_checked, report.payloads_purged
    );
    match reexecution {
        None => println!("  re-executed  no (--verify-only)"),
        Some(r) => print_reexecution(r),
    }
    if let Some(d) = divergence {
        println!("{d}");
    }
    if let Some(h) = report.head {
        println!("head {}:{}", h.count, h.hash);
    }
    if divergence.is_none() {
        println!("  total        {elapsed:.2?}");
    }
}

fn print_reexecution(r: &Reexecution) {
    if let Some(p) = &r.pipeline {
        println!("  pipeline     {p} (instead of the recorded configuration)");
    }
    if let Some(n) = &r.not_reexecuted {
        println!("  re-executed  no: {}", n.reason);
        let rows: Vec<String> = n.rows.iter().take(10).map(u64::to_string).collect();
        println!(
            "  rows         {} cannot be read: {}{}",
            n.rows_total,
            rows.join(", "),
            if n.rows_total > 10 { ", ..." } else { "" }
        );
        println!(
            "  states       {} could not be re-executed: {}{}",
            n.states_total,
            n.states
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if n.states_total > 10 {
                " ... (--json lists more)"
            } else {
                ""
            }
        );
        return;
    }
    let Some(c) = &r.comparison else { return };
    match &c.first {
        None => println!(
            "  re-executed  {} states, {} events; all {} recorded results match, in {:.2?}",
            c.states, c.events, c.compared, r.elapsed
        ),
        Some(_) => println!(
            "  re-executed  {} states, {} events; {} divergence(s), the first:",
            c.states, c.events, c.divergences
        ),
    }
    if let Some(p) = &r.partial {
        println!("  note         {p}: what re-execution did beyond the record is not compared");
    }
}
