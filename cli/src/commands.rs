//! One function per subcommand. Each returns the exit code, or a `Failure` whose message
//! says what went wrong and where.

use crate::exit::{Code, Failure};
use crate::render;
use attest_ledger::lineage::LineageQuery;
use attest_ledger::verify::{Head, VerifyOptions};
use attest_ledger::{Hash32, Ledger, NodeId, RunId, TokenId};
use std::path::{Path, PathBuf};

/// The ledger directory used when neither `--ledger` nor the pipeline names one.
pub const DEFAULT_LEDGER: &str = "attest-ledger";

fn open_existing(dir: Option<PathBuf>) -> Result<Ledger, Failure> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER));
    if !dir.join("db").exists() {
        return Err(Failure::bad_input(format!(
            "no ledger at {} (use --ledger DIR to name one)",
            dir.display()
        )));
    }
    Ok(Ledger::open_for_reading(&dir)?)
}

fn resolve_run(ledger: &Ledger, run: &str) -> Result<RunId, Failure> {
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

fn parse_head(s: &str) -> Result<Head, Failure> {
    let bad = || {
        Failure::bad_input(format!(
            "--expect-head {s:?}: expected COUNT:HASH, e.g. 1234:3f2a…(64 hex digits)"
        ))
    };
    let (count, hash) = s.split_once(':').ok_or_else(bad)?;
    Ok(Head {
        count: count.parse().map_err(|_| bad())?,
        hash: Hash32::from_hex(hash).ok_or_else(bad)?,
    })
}

pub fn replay(
    dir: Option<PathBuf>,
    run: &str,
    expect_head: Option<&str>,
    json: bool,
) -> Result<Code, Failure> {
    let expected_head = expect_head.map(parse_head).transpose()?;
    let ledger = open_existing(dir)?;
    let run = match expected_head {
        // A head kept outside says the run was recorded: if the ledger no longer has it,
        // that is lost evidence (verify reports EMPTY_RUN, exit 4), not a mistyped id.
        Some(_) if run != "latest" => {
            RunId::new(run).map_err(|e| Failure::bad_input(e.to_string()))?
        }
        _ => resolve_run(&ledger, run)?,
    };
    let started = std::time::Instant::now();
    let report = ledger.verify(
        &run,
        &VerifyOptions {
            expected_head,
            skip_payloads: false,
        },
    )?;
    let elapsed = started.elapsed();
    if json {
        let mut v =
            serde_json::to_value(&report).map_err(|e| Failure::run_failed(e.to_string()))?;
        if let Some(obj) = v.as_object_mut() {
            // Hashes are hex for people and tools (the derived form is a byte array).
            if let Some(h) = report.head {
                obj.insert(
                    "head".into(),
                    serde_json::json!({"count": h.count, "hash": h.hash.to_hex(), "head": format!("{}:{}", h.count, h.hash)}),
                );
            }
            obj.insert("ok".into(), report.ok().into());
            obj.insert("elapsed_ms".into(), (elapsed.as_millis() as u64).into());
        }
        println!("{v}");
    } else if let Some(f) = &report.failure {
        println!("run {run}: NOT CONSISTENT");
        println!("{f}");
    } else {
        println!(
            "run {run}: consistent — {} events, {} projections, {} payloads checked ({} purged) in {:.2?}",
            report.events, report.projections_checked, report.payloads_checked, report.payloads_purged, elapsed
        );
        if let Some(h) = report.head {
            println!("head {}:{}", h.count, h.hash);
        }
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
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
