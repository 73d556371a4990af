//! Exporting a run's chain as JSON lines, and checking such an export without the ledger.
//!
//! One line per record, in order, then one manifest line:
//!
//! ```text
//! {"seq":0,"prev":"00…","hash":"1dc8…","event_hex":"0005…","event":{"RunStarted":{…}}}
//! …
//! {"manifest":{"format":"attest-export/1","record_format_version":1,"run":"…","count":56,"head":"7672…"}}
//! ```
//!
//! `event_hex` is the record's event bytes exactly as stored, so the chain rule of
//! `docs/ledger-format.md` §5 can be recomputed from the export alone; `event` is the same
//! event in serde's JSON shape (hashes as hex) for people. Every line is in one canonical
//! form (compact, keys in this order), and the checker regenerates each line from its
//! bytes and requires the line to be exactly that: a change of any byte anywhere in the
//! file is caught.

use crate::codec;
use crate::error::Result;
use crate::event::Event;
use crate::ids::{Hash32, RunId};
use crate::ledger::Ledger;
use crate::rules::{self, MemProj};
use crate::verify::{Failure, FailureCode, Head};
use serde_json::{json, Value};
use std::io::{BufRead, Write};

/// The manifest's `format`.
pub const EXPORT_FORMAT: &str = "attest-export/1";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            let pair = s.get(i..i + 2)?;
            if !pair.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return None;
            }
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

/// An event in serde's JSON shape with every hash (a 32-number byte array) as hex.
pub fn event_json(event: &Event) -> Value {
    fn hexify(v: Value) -> Value {
        match v {
            Value::Array(items)
                if items.len() == 32
                    && items.iter().all(|i| i.as_u64().is_some_and(|n| n < 256)) =>
            {
                let bytes: Vec<u8> = items
                    .iter()
                    .filter_map(|i| i.as_u64())
                    .map(|n| n as u8)
                    .collect();
                Value::String(hex(&bytes))
            }
            Value::Array(items) => Value::Array(items.into_iter().map(hexify).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, hexify(v))).collect())
            }
            other => other,
        }
    }
    hexify(serde_json::to_value(event).unwrap_or(Value::Null))
}

/// The one canonical line for a record.
fn record_line(
    seq: u64,
    prev: &Hash32,
    hash: &Hash32,
    event_bytes: &[u8],
    event: &Event,
) -> String {
    json!({
        "seq": seq,
        "prev": prev.to_hex(),
        "hash": hash.to_hex(),
        "event_hex": hex(event_bytes),
        "event": event_json(event),
    })
    .to_string()
}

fn manifest_line(run: &str, head: Head) -> String {
    json!({"manifest": {
        "format": EXPORT_FORMAT,
        "record_format_version": codec::FORMAT_VERSION,
        "run": run,
        "count": head.count,
        "head": head.hash.to_hex(),
    }})
    .to_string()
}

impl Ledger {
    /// Writes `run`'s chain to `out` as JSON lines ending with the manifest; returns the
    /// head written. Records are written as stored: an export of an altered ledger fails
    /// `verify_export`.
    pub fn export_jsonl(&self, run: &RunId, out: &mut dyn Write) -> Result<Head> {
        let mut head = Head {
            count: 0,
            hash: Hash32::ZERO,
        };
        let io = |e: std::io::Error| crate::error::LedgerError::Storage {
            path: "export output".into(),
            message: e.to_string(),
        };
        crate::records::for_each(self.store(), run, |r| {
            let event = r.event()?;
            writeln!(
                out,
                "{}",
                record_line(r.seq, &r.prev, &r.hash, r.event_bytes, &event)
            )
            .map_err(io)?;
            head = Head {
                count: r.seq + 1,
                hash: r.hash,
            };
            Ok(())
        })?;
        writeln!(out, "{}", manifest_line(run.as_str(), head)).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(head)
    }

    /// Calls `f` with every decoded event of `run` and its seq, in order, without holding
    /// the run in memory (for exporters).
    pub fn for_each_event(
        &self,
        run: &RunId,
        mut f: impl FnMut(u64, Event) -> Result<()>,
    ) -> Result<()> {
        crate::records::for_each(self.store(), run, |r| f(r.seq, r.event()?))
    }

    /// The event at `seq` of `run`'s log, read from the one segment that holds it (for
    /// tools that name a record found earlier, e.g. re-execution's report).
    pub fn event_at(&self, run: &RunId, seq: u64) -> Result<Option<Event>> {
        let mut found = None;
        crate::records::for_segment_holding(self.store(), run, seq, |r| {
            if r.seq == seq {
                found = Some(r.event()?);
            }
            Ok(())
        })?;
        Ok(found)
    }
}

/// What checking an export found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    pub run: Option<String>,
    pub events: u64,
    pub head: Option<Head>,
    pub failure: Option<Failure>,
}

impl ExportReport {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

fn fail(
    code: FailureCode,
    seq: Option<u64>,
    expected: impl ToString,
    found: impl ToString,
    message: impl Into<String>,
) -> Failure {
    Failure {
        code,
        seq,
        expected: expected.to_string(),
        found: found.to_string(),
        message: message.into(),
    }
}

/// Checks an export from its text alone: each line canonical, sequence contiguous from
/// 0, every hash recomputed by the chain rule, every link, every event re-applied under
/// the integrity rules, and a manifest last whose run, count and head match the chain.
/// I/O errors are errors; anything wrong with the content is in the report.
pub fn verify_export(input: &mut dyn BufRead) -> std::io::Result<ExportReport> {
    let mut report = ExportReport {
        run: None,
        events: 0,
        head: None,
        failure: None,
    };
    let mut proj = MemProj::with_capacity(0);
    let mut run: Option<RunId> = None;
    let mut last = Hash32::ZERO;
    let mut manifest_seen = false;
    let mut line = Vec::new();
    let mut k = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let Ok(line) = std::str::from_utf8(&line) else {
            report.failure = Some(fail(
                FailureCode::DecodeFailed,
                Some(k),
                "UTF-8 text",
                "other bytes",
                "a line is not UTF-8",
            ));
            return Ok(report);
        };
        let Some(text) = line.strip_suffix('\n') else {
            report.failure = Some(fail(
                FailureCode::DecodeFailed,
                Some(k),
                "a line ending in a newline",
                "end of file",
                "the export's last line is cut",
            ));
            return Ok(report);
        };
        if manifest_seen {
            report.failure = Some(fail(
                FailureCode::DecodeFailed,
                None,
                "nothing after the manifest",
                clip(text),
                "lines follow the manifest",
            ));
            return Ok(report);
        }
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report.failure = Some(fail(
                    FailureCode::DecodeFailed,
                    Some(k),
                    "a JSON line",
                    e,
                    "a line is not JSON",
                ));
                return Ok(report);
            }
        };
        if let Some(m) = v.get("manifest") {
            manifest_seen = true;
            let run_name = run
                .as_ref()
                .map(|r| r.as_str().to_string())
                .unwrap_or_default();
            let head = Head {
                count: k,
                hash: last,
            };
            let expected = manifest_line(&run_name, head);
            if text != expected {
                let found_count = m.get("count").and_then(Value::as_u64);
                let code = if found_count.is_some_and(|c| c != k)
                    || m.get("head").and_then(Value::as_str) != Some(last.to_hex().as_str())
                {
                    FailureCode::HeadMismatch
                } else {
                    FailureCode::DecodeFailed
                };
                report.failure = Some(fail(
                    code,
                    None,
                    expected,
                    clip(text),
                    "the manifest does not match the chain before it",
                ));
                return Ok(report);
            }
            report.head = Some(head);
            continue;
        }
        let field = |name: &str| v.get(name).and_then(Value::as_str).and_then(unhex);
        let (Some(seq), Some(prev), Some(hash), Some(bytes)) = (
            v.get("seq").and_then(Value::as_u64),
            field("prev").and_then(|b| Hash32::from_hex(&hex(&b))),
            field("hash").and_then(|b| Hash32::from_hex(&hex(&b))),
            field("event_hex"),
        ) else {
            report.failure = Some(fail(
                FailureCode::DecodeFailed,
                Some(k),
                "seq, prev, hash and event_hex",
                clip(text),
                "a record line lacks a field or has a malformed one",
            ));
            return Ok(report);
        };
        if seq != k {
            report.failure = Some(fail(
                FailureCode::SeqGap,
                Some(k),
                k,
                seq,
                "sequence numbers are not contiguous",
            ));
            return Ok(report);
        }
        let computed = codec::record_hash(codec::FORMAT_VERSION, seq, &prev, &bytes);
        if computed != hash {
            report.failure = Some(fail(
                FailureCode::RecordAltered,
                Some(k),
                hash,
                computed,
                "the record does not hash to its stated hash",
            ));
            return Ok(report);
        }
        if prev != last {
            report.failure = Some(fail(
                FailureCode::ChainBroken,
                Some(k),
                last,
                prev,
                "the record does not link to the one before",
            ));
            return Ok(report);
        }
        let event: Event = match codec::decode(&bytes) {
            Ok(e) => e,
            Err(e) => {
                report.failure = Some(fail(
                    FailureCode::DecodeFailed,
                    Some(k),
                    "a decodable event",
                    e,
                    "event does not decode",
                ));
                return Ok(report);
            }
        };
        // The genesis commits to the run id the rules check every later event against.
        let r = match (&run, &event) {
            (Some(r), _) => r,
            (None, Event::RunStarted { run: id, .. }) => {
                report.run = Some(id.to_string());
                run.insert(id.clone())
            }
            (None, other) => {
                report.failure = Some(fail(
                    FailureCode::RuleViolation,
                    Some(k),
                    "RunStarted",
                    other.name(),
                    "the first record must start the run",
                ));
                return Ok(report);
            }
        };
        if let Err(e) = rules::apply(&mut proj, r, seq, hash, &event) {
            report.failure = Some(fail(
                FailureCode::RuleViolation,
                Some(k),
                "an event that keeps the integrity rules",
                event.name(),
                e.to_string(),
            ));
            return Ok(report);
        }
        let canonical = record_line(seq, &prev, &hash, &bytes, &event);
        if text != canonical {
            report.failure = Some(fail(FailureCode::RecordAltered, Some(k), clip(&canonical), clip(text), "the line is not the canonical form of its record (its readable event or layout was changed)"));
            return Ok(report);
        }
        last = hash;
        k += 1;
        report.events = k;
    }
    if !manifest_seen {
        report.failure = Some(fail(
            FailureCode::HeadMismatch,
            Some(k),
            "a manifest line last",
            "end of file",
            "the export has no manifest: truncated",
        ));
    } else if k == 0 {
        report.failure = Some(fail(
            FailureCode::EmptyRun,
            None,
            "at least one record",
            0,
            "the export has no records",
        ));
    }
    Ok(report)
}

fn clip(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
