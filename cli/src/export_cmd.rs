//! `attest export` (JSON lines or OpenLineage) and `attest verify-export`.

use crate::commands::{open_existing, resolve_run};
use crate::exit::{Code, Failure};
use attest_ledger::projection::RunStatus;
use attest_ledger::{Event, Hash32, Ledger, NodeKind, RunId};
use serde_json::{json, Value};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    /// Every record with its seq and hash, then a manifest (docs/replay.md, "Exports")
    Jsonl,
    /// OpenLineage run events, one JSON object per line
    Openlineage,
}

pub fn export(
    dir: Option<PathBuf>,
    run: &str,
    out: &Path,
    format: ExportFormat,
) -> Result<Code, Failure> {
    let ledger = open_existing(dir)?;
    let run = resolve_run(&ledger, run)?;
    let cannot =
        |e: std::io::Error| Failure::bad_input(format!("cannot write {}: {e}", out.display()));
    let mut w = BufWriter::new(std::fs::File::create(out).map_err(cannot)?);
    match format {
        ExportFormat::Jsonl => {
            let head = ledger.export_jsonl(&run, &mut w)?;
            println!(
                "exported run {run}: {} events, head {}:{} -> {}",
                head.count,
                head.count,
                head.hash,
                out.display()
            );
        }
        ExportFormat::Openlineage => {
            let events = openlineage(&ledger, &run, crate::heads::now_ms())?;
            for e in &events {
                writeln!(w, "{e}").map_err(cannot)?;
            }
            w.flush().map_err(cannot)?;
            println!(
                "exported run {run}: {} OpenLineage events -> {}",
                events.len(),
                out.display()
            );
        }
    }
    Ok(Code::Ok)
}

pub fn verify_export(file: &Path, json: bool) -> Result<Code, Failure> {
    let f = std::fs::File::open(file)
        .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", file.display())))?;
    let report = attest_ledger::export::verify_export(&mut BufReader::new(f))
        .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", file.display())))?;
    if json {
        let v = json!({
            "file": file.display().to_string(),
            "run": report.run,
            "events": report.events,
            "head": report.head.map(|h| json!({"count": h.count, "hash": h.hash.to_hex(), "head": format!("{}:{}", h.count, h.hash)})),
            "failure": report.failure,
            "ok": report.ok(),
        });
        println!("{v}");
    } else if let Some(f) = &report.failure {
        println!("{}: NOT CONSISTENT", file.display());
        println!("{f}");
    } else if let Some(h) = report.head {
        println!(
            "{}: consistent — run {}, {} events, head {}:{}",
            file.display(),
            report.run.as_deref().unwrap_or("?"),
            report.events,
            h.count,
            h.hash
        );
    }
    Ok(if report.ok() {
        Code::Ok
    } else {
        Code::Integrity
    })
}

const PRODUCER: &str = concat!("urn:attest:attest-cli:", env!("CARGO_PKG_VERSION"));
const RUN_EVENT_SCHEMA: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const NAMESPACE: &str = "attest";

/// A UUID (RFC 9562 version 8, "custom") derived from `parts`: OpenLineage run ids must be
/// UUIDs, and a derived one gives the same export twice for the same run.
fn uuid(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0]);
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.finalize().as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The source's input path from the recorded configuration, when it still parses on its
/// own (without the environment it ran in, and unless it was purged).
fn source_path(ledger: &Ledger, config_hash: &Hash32) -> Option<String> {
    let bytes = ledger.payload(config_hash).ok()??;
    let text = String::from_utf8(bytes).ok()?;
    let config =
        attest_engine::config::parse_str(&text, "recorded-pipeline.yaml", &|_| None).ok()?;
    Some(config.source.options.path.value)
}

/// OpenLineage events for a run: START and COMPLETE (FAIL, ABORT) for the pipeline, and
/// for each node as a child job (parent facet) with the source's input dataset and the
/// sinks' output datasets. Every run carries the custom `attest_ledger` facet with the
/// ledger head. The ledger records when a run started, not when it ended: end events
/// carry `exported_at_ms`.
pub fn openlineage(
    ledger: &Ledger,
    run: &RunId,
    exported_at_ms: u64,
) -> Result<Vec<Value>, Failure> {
    let rec = ledger
        .run_record(run)?
        .ok_or_else(|| Failure::bad_input(format!("no run {run}")))?;
    let mut nodes: Vec<(String, NodeKind, String)> = Vec::new();
    let mut artifacts: Vec<(String, String, Hash32, u64, u64)> = Vec::new();
    ledger.for_each_event(run, |_, e| {
        match e {
            Event::NodeRegistered {
                node, kind, plugin, ..
            } => nodes.push((node.to_string(), kind, plugin)),
            Event::ArtifactWritten {
                sink,
                path,
                content_hash,
                size,
                rows,
            } => artifacts.push((sink.to_string(), path, content_hash, size, rows)),
            _ => {}
        }
        Ok(())
    })?;
    let source = source_path(ledger, &rec.config_hash);
    let job = format!("pipeline-{}", &rec.config_hash.to_hex()[..12]);
    let run_uuid = uuid(&[run.as_str()]);
    let ledger_facet = json!({
        "_producer": PRODUCER,
        "_schemaURL": "urn:attest:facets:attest_ledger:1",
        "run": run.as_str(),
        "count": rec.next_seq,
        "head": rec.head.to_hex(),
        "config_hash": rec.config_hash.to_hex(),
        "status": rec.status.name(),
    });
    let end = match rec.status {
        RunStatus::Completed => Some("COMPLETE"),
        RunStatus::Failed => Some("FAIL"),
        RunStatus::Interrupted => Some("ABORT"),
        RunStatus::Running => None,
    };
    let start_time = crate::render::utc(rec.started_at_ms);
    let end_time = crate::render::utc(exported_at_ms);
    let event = |kind: &str,
                 time: &str,
                 run_id: &str,
                 job_name: &str,
                 parent: bool,
                 inputs: Value,
                 outputs: Value| {
        let mut facets = json!({ "attest_ledger": ledger_facet.clone() });
        if parent {
            facets["parent"] = json!({
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json#/$defs/ParentRunFacet",
                "job": {"namespace": NAMESPACE, "name": job},
                "run": {"runId": run_uuid},
            });
        }
        json!({
            "eventType": kind,
            "eventTime": time,
            "producer": PRODUCER,
            "schemaURL": RUN_EVENT_SCHEMA,
            "run": {"runId": run_id, "facets": facets},
            "job": {"namespace": NAMESPACE, "name": job_name},
            "inputs": inputs,
            "outputs": outputs,
        })
    };
    let dataset =
        |name: &str, facets: Value| json!({"namespace": "file", "name": name, "facets": facets});
    let mut out = vec![event(
        "START",
        &start_time,
        &run_uuid,
        &job,
        false,
        json!([]),
        json!([]),
    )];
    for (node, kind, plugin) in &nodes {
        let node_uuid = uuid(&[run.as_str(), node]);
        let node_job = format!("{job}.{node}");
        let inputs = match (kind, &source) {
            (NodeKind::Source, Some(path)) => json!([dataset(path, json!({}))]),
            (NodeKind::Source, None) => json!([dataset(&format!("{node} ({plugin})"), json!({}))]),
            _ => json!([]),
        };
        let outputs: Vec<Value> = artifacts
            .iter()
            .filter(|a| *kind == NodeKind::Sink && a.0 == *node)
            .map(|(_, path, hash, size, rows)| {
                dataset(
                    path,
                    json!({"attest_artifact": {
                        "_producer": PRODUCER,
                        "_schemaURL": "urn:attest:facets:attest_artifact:1",
                        "content_hash": hash.to_hex(),
                        "size": size,
                        "rows": rows,
                    }}),
                )
            })
            .collect();
        out.push(event(
            "START",
            &start_time,
            &node_uuid,
            &node_job,
            true,
            inputs.clone(),
            json!(outputs),
        ));
        if let Some(end) = end {
            out.push(event(
                end,
                &end_time,
                &node_uuid,
                &node_job,
                true,
                inputs,
                json!(outputs),
            ));
        }
    }
    if let Some(end) = end {
        let inputs: Vec<Value> = source.iter().map(|p| dataset(p, json!({}))).collect();
        let outputs: Vec<Value> = artifacts.iter().map(|a| dataset(&a.1, json!({}))).collect();
        out.push(event(
            end,
            &end_time,
            &run_uuid,
            &job,
            false,
            json!(inputs),
            json!(outputs),
        ));
    }
    Ok(out)
}
