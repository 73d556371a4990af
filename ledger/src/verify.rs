//! Verification of a run: every link of its chain, sequence contiguity, the projections
//! rebuilt from the log with the same rules and compared with the stored ones, every
//! referenced payload against its hash, and optionally a head kept outside the ledger.
//!
//! The first failure is reported with a stable code, the sequence number where there is
//! one, and what was expected and found.

use crate::codec;
use crate::error::Result;
use crate::event::Event;
use crate::ids::{Hash32, RunId};
use crate::ledger::Ledger;
use crate::projection::{self, PKey};
use crate::rules::{self, MemProj};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;

/// Stable failure codes. Their names are part of the command-line contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureCode {
    /// The run has no records at all.
    EmptyRun,
    /// A record does not frame or decode.
    DecodeFailed,
    /// A sequence number is missing, repeated or out of place.
    SeqGap,
    /// A record's content does not hash to the hash stored in it.
    RecordAltered,
    /// A record's `prev_hash` is not the previous record's hash.
    ChainBroken,
    /// The log itself contains an event that breaks an integrity rule.
    RuleViolation,
    /// A stored projection differs from the one rebuilt from the log.
    ProjectionMismatch,
    /// A stored payload does not hash to its key.
    PayloadMismatch,
    /// A payload referenced by an event is gone and no purge was recorded.
    PayloadMissing,
    /// The chain does not reach, or does not match, the head kept outside the ledger.
    HeadMismatch,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::EmptyRun => "EMPTY_RUN",
            FailureCode::DecodeFailed => "DECODE_FAILED",
            FailureCode::SeqGap => "SEQ_GAP",
            FailureCode::RecordAltered => "RECORD_ALTERED",
            FailureCode::ChainBroken => "CHAIN_BROKEN",
            FailureCode::RuleViolation => "RULE_VIOLATION",
            FailureCode::ProjectionMismatch => "PROJECTION_MISMATCH",
            FailureCode::PayloadMismatch => "PAYLOAD_MISMATCH",
            FailureCode::PayloadMissing => "PAYLOAD_MISSING",
            FailureCode::HeadMismatch => "HEAD_MISMATCH",
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub code: FailureCode,
    pub seq: Option<u64>,
    pub expected: String,
    pub found: String,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(seq) = self.seq {
            write!(f, " at seq {seq}")?;
        }
        write!(
            f,
            ": {} (expected {}, found {})",
            self.message, self.expected, self.found
        )
    }
}

/// A head kept outside the ledger: the number of events and the hash of the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Head {
    pub count: u64,
    pub hash: Hash32,
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub expected_head: Option<Head>,
    /// Check referenced payloads against their hashes (on by default in `verify`).
    pub skip_payloads: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub run: String,
    pub events: u64,
    pub head: Option<Head>,
    pub projections_checked: u64,
    pub payloads_checked: u64,
    pub payloads_purged: u64,
    pub failure: Option<Failure>,
}

impl VerifyReport {
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

/// Hashes an event references in the payload store, with the seq of the first reference.
fn referenced_payloads(event: &Event, out: &mut Vec<Hash32>) {
    match event {
        Event::RunStarted { config_hash, .. } => out.push(*config_hash),
        Event::RowIngested { payload, .. } => out.push(*payload),
        Event::StateOpened { input, .. } => out.push(*input),
        Event::StateClosed {
            result: crate::event::StateResult::Completed { output },
            ..
        } => out.push(*output),
        Event::CallAllocated { request, .. } => out.push(*request),
        Event::CallCompleted {
            response: Some(response),
            ..
        } => out.push(*response),
        _ => {}
    }
}

struct Walk {
    events: u64,
    last_hash: Hash32,
    head_hash_at_expected: Option<Hash32>,
    payloads: Vec<(Hash32, u64)>,
    proj: MemProj,
}

impl Ledger {
    /// Verifies `run`. Storage errors are errors; integrity failures are in the report.
    pub fn verify(&self, run: &RunId, opts: &VerifyOptions) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            run: run.to_string(),
            events: 0,
            head: None,
            projections_checked: 0,
            payloads_checked: 0,
            payloads_purged: 0,
            failure: None,
        };
        let walk = match self.walk_log(run, opts, &mut report)? {
            Ok(w) => w,
            Err(f) => {
                report.failure = Some(f);
                return Ok(report);
            }
        };
        report.events = walk.events;
        report.head = Some(Head {
            count: walk.events,
            hash: walk.last_hash,
        });
        if let Some(expected) = opts.expected_head {
            if let Some(f) = check_head(&walk, expected) {
                report.failure = Some(f);
                return Ok(report);
            }
        }
        if let Some(f) = self.compare_projections(run, &walk.proj, &mut report)? {
            report.failure = Some(f);
            return Ok(report);
        }
        if !opts.skip_payloads {
            report.failure = self.check_payloads(&walk.payloads, &mut report)?;
        }
        Ok(report)
    }

    fn walk_log(
        &self,
        run: &RunId,
        opts: &VerifyOptions,
        report: &mut VerifyReport,
    ) -> Result<Result<Walk, Failure>> {
        let store = self.store();
        let mut walk = Walk {
            events: 0,
            last_hash: Hash32::ZERO,
            head_hash_at_expected: None,
            payloads: Vec::new(),
            proj: MemProj::default(),
        };
        let mut seen_payloads: HashSet<Hash32> = HashSet::new();
        let mut refs = Vec::new();
        let prefix = projection::log_prefix(run);
        let want_at = opts.expected_head.and_then(|h| h.count.checked_sub(1));
        for item in store.db.scan_prefix(&prefix) {
            let (key, segment) = item.map_err(|e| store.storage_err(e))?;
            let key_seq = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let expected_seq = walk.events;
            if key_seq != Some(expected_seq) {
                return Ok(Err(fail(
                    FailureCode::SeqGap,
                    Some(expected_seq),
                    format!("segment starting at seq {expected_seq}"),
                    key_seq.map_or("a malformed segment key".to_string(), |s| {
                        format!("segment starting at seq {s}")
                    }),
                    "log segments are not contiguous",
                )));
            }
            // A segment with no records would pass the walk unnoticed: it cannot be written
            // (commits are never empty), so it is a sign of tampering.
            if segment.is_empty() {
                return Ok(Err(fail(
                    FailureCode::DecodeFailed,
                    Some(expected_seq),
                    "a segment holding at least one record",
                    "an empty segment",
                    "log segment is empty",
                )));
            }
            for rec in codec::read_segment(&segment) {
                let seq = walk.events;
                let rec = match rec {
                    Ok(r) => r,
                    Err(e) => {
                        return Ok(Err(fail(
                            FailureCode::DecodeFailed,
                            Some(seq),
                            "a well-framed record",
                            e,
                            "record does not frame",
                        )))
                    }
                };
                if rec.seq != seq {
                    return Ok(Err(fail(
                        FailureCode::SeqGap,
                        Some(seq),
                        seq,
                        rec.seq,
                        "sequence numbers must be contiguous",
                    )));
                }
                let computed = rec.computed_hash();
                if computed != rec.hash {
                    return Ok(Err(fail(
                        FailureCode::RecordAltered,
                        Some(seq),
                        rec.hash,
                        computed,
                        "the record's content does not hash to the hash stored in it",
                    )));
                }
                if rec.prev != walk.last_hash {
                    return Ok(Err(fail(
                        FailureCode::ChainBroken,
                        Some(seq),
                        walk.last_hash,
                        rec.prev,
                        "prev_hash is not the previous record's hash",
                    )));
                }
                let event = match rec.event() {
                    Ok(e) => e,
                    Err(e) => {
                        return Ok(Err(fail(
                            FailureCode::DecodeFailed,
                            Some(seq),
                            "a decodable event",
                            e,
                            "event does not decode",
                        )))
                    }
                };
                if let Err(e) = rules::apply(&mut walk.proj, run, seq, rec.hash, &event) {
                    return Ok(Err(fail(
                        FailureCode::RuleViolation,
                        Some(seq),
                        "an event that keeps the integrity rules",
                        event.name(),
                        e.to_string(),
                    )));
                }
                refs.clear();
                referenced_payloads(&event, &mut refs);
                for h in refs.drain(..) {
                    if seen_payloads.insert(h) {
                        walk.payloads.push((h, seq));
                    }
                }
                if Some(seq) == want_at {
                    walk.head_hash_at_expected = Some(rec.hash);
                }
                walk.last_hash = rec.hash;
                walk.events += 1;
            }
        }
        report.events = walk.events;
        if walk.events == 0 {
            return Ok(Err(fail(
                FailureCode::EmptyRun,
                None,
                "at least one record",
                0,
                format!("run {run} has no log records"),
            )));
        }
        Ok(Ok(walk))
    }

    fn compare_projections(
        &self,
        run: &RunId,
        rebuilt: &MemProj,
        report: &mut VerifyReport,
    ) -> Result<Option<Failure>> {
        let store = self.store();
        let mut expected: Vec<(Vec<u8>, Vec<u8>, &PKey)> = Vec::with_capacity(rebuilt.map.len());
        for (k, v) in &rebuilt.map {
            expected.push((k.encode(run), codec::encode(v)?, k));
        }
        expected.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut want = expected.iter().peekable();
        let mismatch = |what: &str, exp: String, found: String| {
            Some(fail(
                FailureCode::ProjectionMismatch,
                None,
                exp,
                found,
                what.to_string(),
            ))
        };
        for item in store.db.scan_prefix(projection::proj_prefix(run)) {
            let (key, value) = item.map_err(|e| store.storage_err(e))?;
            report.projections_checked += 1;
            match want.peek() {
                Some((k, v, pk)) if k.as_slice() == &*key => {
                    if v.as_slice() != &*value {
                        let found = codec::decode::<projection::PVal>(&value)
                            .map(|d| format!("{d:?}"))
                            .unwrap_or_else(|e| format!("undecodable ({e})"));
                        let exp = codec::decode::<projection::PVal>(v)
                            .map(|d| format!("{d:?}"))
                            .unwrap_or_default();
                        return Ok(mismatch(
                            &format!("stored projection {pk:?} differs from the rebuilt one"),
                            clip(exp),
                            clip(found),
                        ));
                    }
                    want.next();
                }
                Some((k, _, pk)) if k.as_slice() < &*key => {
                    return Ok(mismatch(
                        &format!("projection {pk:?} is missing from storage"),
                        format!("{pk:?}"),
                        "nothing".into(),
                    ));
                }
                _ => {
                    return Ok(mismatch(
                        "storage holds a projection the log does not produce",
                        "nothing".into(),
                        String::from_utf8_lossy(&key).replace('\0', "/"),
                    ));
                }
            }
        }
        if let Some((_, _, pk)) = want.next() {
            return Ok(mismatch(
                &format!("projection {pk:?} is missing from storage"),
                format!("{pk:?}"),
                "nothing".into(),
            ));
        }
        Ok(None)
    }

    fn check_payloads(
        &self,
        payloads: &[(Hash32, u64)],
        report: &mut VerifyReport,
    ) -> Result<Option<Failure>> {
        let store = self.store();
        for (hash, seq) in payloads {
            match store.payload(hash)? {
                Some(bytes) => {
                    report.payloads_checked += 1;
                    let found = Hash32::of(&bytes);
                    if found != *hash {
                        return Ok(Some(fail(
                            FailureCode::PayloadMismatch,
                            Some(*seq),
                            hash,
                            found,
                            "a stored payload does not hash to its key",
                        )));
                    }
                }
                None => {
                    if store.get_raw(&projection::purged_key(hash))?.is_some() {
                        report.payloads_purged += 1;
                    } else {
                        return Ok(Some(fail(
                            FailureCode::PayloadMissing,
                            Some(*seq),
                            hash,
                            "nothing",
                            "a referenced payload is gone and no purge was recorded",
                        )));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn check_head(walk: &Walk, expected: Head) -> Option<Failure> {
    if walk.events < expected.count {
        return Some(fail(
            FailureCode::HeadMismatch,
            Some(walk.events),
            format!("{} events", expected.count),
            format!("{} events", walk.events),
            "the ledger holds fewer events than the head kept outside it: truncated or rewritten",
        ));
    }
    match walk.head_hash_at_expected {
        Some(h) if h == expected.hash => None,
        found => Some(fail(
            FailureCode::HeadMismatch,
            expected.count.checked_sub(1),
            expected.hash,
            found.map_or("nothing".to_string(), |h| h.to_hex()),
            "the record at the head's position does not have the head's hash: rewritten",
        )),
    }
}

fn clip(s: String) -> String {
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}
