//! Verification of a run: every link of its chain, sequence contiguity, the projections
//! rebuilt from the log with the same rules and compared with the stored ones, every
//! referenced payload against its hash, and optionally a head kept outside the ledger.
//!
//! The first failure is reported with a stable code, the sequence number where there is
//! one, and what was expected and found.

use crate::bucket;
use crate::codec;
use crate::error::{LedgerError, Result};
use crate::event::Event;
use crate::ids::{Hash32, RunId};
use crate::ledger::Ledger;
use crate::payload_check::{self, PayloadState};
use crate::projection::{self, PKey};
use crate::rules::{self, MemProj};
use crate::store::Store;
use serde::Serialize;
use std::fmt;
use std::hash::BuildHasher;

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
    /// A signed head kept outside the ledger is unsigned, malformed, or not signed by the
    /// operator's key.
    HeadSignatureInvalid,
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
            FailureCode::HeadSignatureInvalid => "HEAD_SIGNATURE_INVALID",
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

pub(crate) fn fail(
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
pub(crate) fn referenced_payloads(event: &Event, out: &mut Vec<Hash32>) {
    match event {
        Event::RunStarted { config_hash, .. } => out.push(*config_hash),
        Event::RowIngested { payload, .. } => out.push(*payload),
        Event::RowDetail { detail, .. } => out.push(*detail),
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

/// Frees a walk's rebuilt projections on a thread of their own: for a run of a million
/// events that is about a sixth of a verification's time, and the answer need not wait.
fn dispose(walk: Walk) {
    // If no thread can be started, the closure and the walk are dropped here instead.
    let _ = std::thread::Builder::new()
        .name("attest-verify-free".into())
        .spawn(move || drop(walk));
}

struct Walk {
    events: u64,
    last_hash: Hash32,
    head_hash_at_expected: Option<Hash32>,
    payloads: Vec<(Hash32, u64)>,
    proj: MemProj,
}

/// A record that framed, hashed, chained and decoded: what the reading thread hands to the
/// thread that applies the rules.
struct Decoded {
    seq: u64,
    hash: Hash32,
    event: Event,
}

/// A record that framed, hashed and chained, left for the applying thread to decode: where
/// its event's bytes are in the segment.
struct Undecoded {
    seq: u64,
    hash: Hash32,
    start: usize,
    end: usize,
}

/// One segment's records, handed from the reading thread to the applying one. The reader
/// decodes them itself while the applier is busy, and leaves the decoding to the applier
/// when it is waiting: decoding is the largest part of the walk, and this keeps both
/// threads busy whichever is the faster on the day.
enum Batch {
    Decoded(Vec<Decoded>),
    Undecoded(sled::IVec, Vec<Undecoded>),
}

/// What the reading thread found, besides the records it handed on.
struct ReadEnd {
    events: u64,
    last_hash: Hash32,
    head_hash_at_expected: Option<Hash32>,
    /// The first record that failed to frame, hash, chain or decode. Every record before it
    /// was handed on.
    failure: Option<Failure>,
}

impl Ledger {
    /// Verifies `run`. Storage errors are errors; integrity failures are in the report.
    ///
    /// Two threads share the work. While one reads the log (framing, sequence, hashes,
    /// chain, decoding), the other applies the events to rebuild the projections; then one
    /// checks the payloads while the other compares the projections. Failures are
    /// reported exactly as a sequential walk would: the first failing record in log order,
    /// then the outside head, then the projections, then the payloads in the order they
    /// were first referenced.
    pub fn verify(&self, run: &RunId, opts: &VerifyOptions) -> Result<VerifyReport> {
        self.verify_observing(run, opts, &mut |_, _| {})
    }

    /// As [`Ledger::verify`], handing `observer` every event of the log, in seq order, as
    /// the walk applies it (before the projections and payloads are checked): a caller that
    /// needs the run's events too (re-execution) gets them without decoding the log twice.
    /// Events after a failing record are not seen.
    pub fn verify_observing(
        &self,
        run: &RunId,
        opts: &VerifyOptions,
        observer: &mut dyn FnMut(u64, &Event),
    ) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            run: run.to_string(),
            events: 0,
            head: None,
            projections_checked: 0,
            payloads_checked: 0,
            payloads_purged: 0,
            failure: None,
        };
        let walk = match self.walk_log(run, opts, &mut report, observer)? {
            Ok(w) => w,
            Err(f) => {
                report.failure = Some(f);
                return Ok(report);
            }
        };
        let checked = self.check_walk(run, opts, &walk, &mut report);
        dispose(walk);
        checked.map(|()| report)
    }

    /// Everything verification checks after the log walk: the outside head, the stored
    /// projections against the rebuilt ones, and the payloads.
    fn check_walk(
        &self,
        run: &RunId,
        opts: &VerifyOptions,
        walk: &Walk,
        report: &mut VerifyReport,
    ) -> Result<()> {
        report.events = walk.events;
        report.head = Some(Head {
            count: walk.events,
            hash: walk.last_hash,
        });
        if let Some(expected) = opts.expected_head {
            if let Some(f) = check_head(walk, expected) {
                report.failure = Some(f);
                return Ok(());
            }
        }
        let store = self.store();
        let index = ProjIndex::new(run, &walk.proj);
        let parts = index.parts();
        // Two threads take work from one list: the payload check first (the largest piece),
        // then the projection key ranges, so both stay busy to the end.
        let next = std::sync::atomic::AtomicUsize::new(0);
        let ranges: Vec<std::sync::Mutex<Option<Result<RangeResult>>>> =
            parts.iter().map(|_| std::sync::Mutex::new(None)).collect();
        let want_payloads = !opts.skip_payloads;
        let work = |take_payloads: bool| -> Option<Result<payload_check::PayloadCheck>> {
            let payloads = (take_payloads && want_payloads)
                .then(|| payload_check::check(store, run, &walk.payloads));
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((from, to)) = parts.get(i) else {
                    return payloads;
                };
                let result = index.compare_range(store, from, to);
                if let Ok(mut slot) = ranges[i].lock() {
                    *slot = Some(result);
                }
            }
        };
        let payloads = std::thread::scope(|s| {
            let helper = s.spawn(|| work(true));
            work(false);
            helper
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        let mut matched = 0u64;
        let mut equal = true;
        for slot in ranges {
            let r = slot.into_inner().ok().flatten().ok_or_else(|| {
                LedgerError::Corrupt("a projection range was not compared".into())
            })??;
            matched += r.matched;
            equal &= r.equal;
        }
        if equal && matched == index.len() as u64 {
            report.projections_checked = matched;
        } else if let Some(f) = self.describe_projection_mismatch(run, &walk.proj, report)? {
            report.failure = Some(f);
            return Ok(());
        }
        if let Some(checked) = payloads {
            let checked = checked?;
            // The payload index is a projection of the packs: reported with the others.
            if let Some(f) = checked.index_failure.or(checked.pack_failure) {
                report.failure = Some(f);
                return Ok(());
            }
            let mut states = checked.states;
            // A tombstone only says where to look: a payload counts as purged when an
            // intact purge-log record made since the run started names it, else it is
            // missing (tampering).
            if states.contains(&PayloadState::Purged) {
                let since = self.run_record(run)?.map_or(0, |r| r.started_at_ms);
                let recorded = crate::purge::read_log(store)?.purged_since(since);
                for (state, (hash, _)) in states.iter_mut().zip(&walk.payloads) {
                    if *state == PayloadState::Purged && !recorded.contains(hash) {
                        *state = PayloadState::Missing;
                    }
                }
            }
            report.failure = payload_check::report(&walk.payloads, &states, report);
        }
        Ok(())
    }

    fn walk_log(
        &self,
        run: &RunId,
        opts: &VerifyOptions,
        report: &mut VerifyReport,
        observer: &mut dyn FnMut(u64, &Event),
    ) -> Result<Result<Walk, Failure>> {
        let store = self.store();
        let want_at = opts.expected_head.and_then(|h| h.count.checked_sub(1));
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(4);
        let records = expected_records(store, run);
        let mut proj = MemProj::with_capacity(records);
        let mut payloads = Vec::with_capacity(records);
        // A run references about one payload per projection record (a row, its states'
        // outputs): room made once instead of growing through every power of two.
        let mut seen_payloads: hashbrown::HashSet<Hash32> =
            hashbrown::HashSet::with_capacity(records);
        let mut refs = Vec::new();
        let mut stopped = None;
        let mut step = |seq: u64, hash: Hash32, event: &Event| -> Option<Failure> {
            if let Err(e) = rules::apply(&mut proj, run, seq, hash, event) {
                return Some(fail(
                    FailureCode::RuleViolation,
                    Some(seq),
                    "an event that keeps the integrity rules",
                    event.name(),
                    e.to_string(),
                ));
            }
            referenced_payloads(event, &mut refs);
            for h in refs.drain(..) {
                if seen_payloads.insert(h) {
                    payloads.push((h, seq));
                }
            }
            observer(seq, event);
            None
        };
        let end = std::thread::scope(|s| {
            let reader = s.spawn(move || read_log(store, run, want_at, tx));
            'apply: for batch in rx.iter() {
                match batch {
                    Batch::Decoded(records) => {
                        for d in records {
                            stopped = step(d.seq, d.hash, &d.event);
                            if stopped.is_some() {
                                break 'apply;
                            }
                        }
                    }
                    Batch::Undecoded(segment, records) => {
                        for r in records {
                            let event = match codec::decode_event(&segment[r.start..r.end]) {
                                Ok(e) => e,
                                Err(e) => {
                                    stopped = Some(fail(
                                        FailureCode::DecodeFailed,
                                        Some(r.seq),
                                        "a decodable event",
                                        e,
                                        "event does not decode",
                                    ));
                                    break 'apply;
                                }
                            };
                            stopped = step(r.seq, r.hash, &event);
                            if stopped.is_some() {
                                break 'apply;
                            }
                        }
                    }
                }
            }
            // Lets a reader blocked on a full channel see that nobody listens any more.
            drop(rx);
            reader
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })?;
        // The reader only hands on records that passed its checks, and the applier takes
        // them in order, so whatever stopped the applier is earlier in the log than whatever
        // stopped the reader.
        if let Some(f) = stopped.or(end.failure) {
            return Ok(Err(f));
        }
        report.events = end.events;
        if end.events == 0 {
            return Ok(Err(fail(
                FailureCode::EmptyRun,
                None,
                "at least one record",
                0,
                format!("run {run} has no log records"),
            )));
        }
        Ok(Ok(Walk {
            events: end.events,
            last_hash: end.last_hash,
            head_hash_at_expected: end.head_hash_at_expected,
            payloads,
            proj,
        }))
    }

    /// Names the first difference between the stored projections and the rebuilt ones,
    /// walking both in key order; only run once the fast comparison has found one.
    fn describe_projection_mismatch(
        &self,
        run: &RunId,
        rebuilt: &MemProj,
        report: &mut VerifyReport,
    ) -> Result<Option<Failure>> {
        report.projections_checked = 0;
        let store = self.store();
        let mut expected: Vec<(Vec<u8>, Vec<u8>, &PKey)> = Vec::with_capacity(rebuilt.map.len());
        for (k, v) in &rebuilt.map {
            expected.push((k.encode(run), codec::encode(v)?, k));
        }
        expected.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mismatch = |what: String, exp: String, found: String| {
            Some(fail(
                FailureCode::ProjectionMismatch,
                None,
                exp,
                found,
                what,
            ))
        };
        // Storage by logical key, each record with the bucket it was found in, so that it
        // walks in the same order as `expected`.
        let prefix = projection::proj_prefix(run);
        let mut stored: Vec<(Vec<u8>, Vec<u8>, Option<u64>)> = Vec::new();
        for item in store.db.scan_prefix(&prefix) {
            let (key, value) = item.map_err(|e| store.storage_err(e))?;
            let suffix = &key[prefix.len()..];
            let Some(b) = bucket::bucket_in_suffix(suffix) else {
                stored.push((key.to_vec(), value.to_vec(), None));
                continue;
            };
            if value.is_empty() {
                return Ok(mismatch(
                    format!("stored row bucket {b} is empty"),
                    "a bucket holding at least one record".into(),
                    "an empty bucket".into(),
                ));
            }
            for e in bucket::entries(&value) {
                match e {
                    Ok((s, v)) => {
                        stored.push(([prefix.as_slice(), s].concat(), v.to_vec(), Some(b)))
                    }
                    Err(e) => {
                        return Ok(mismatch(
                            format!("stored row bucket {b} does not frame"),
                            "a well-framed bucket".into(),
                            e.to_string(),
                        ))
                    }
                }
            }
        }
        stored.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = expected.iter().peekable();
        for (key, value, found_in) in &stored {
            report.projections_checked += 1;
            match want.peek() {
                Some((k, v, pk)) if k == key => {
                    if v != value {
                        let found = codec::decode::<projection::PVal>(value)
                            .map(|d| format!("{d:?}"))
                            .unwrap_or_else(|e| format!("undecodable ({e})"));
                        let exp = codec::decode::<projection::PVal>(v)
                            .map(|d| format!("{d:?}"))
                            .unwrap_or_default();
                        return Ok(mismatch(
                            format!("stored projection {pk:?} differs from the rebuilt one"),
                            clip(exp),
                            clip(found),
                        ));
                    }
                    let belongs = bucket::bucket_of(pk.as_ref());
                    if belongs != *found_in {
                        let place = |b: Option<u64>| {
                            b.map_or("its own key".to_string(), |b| format!("row bucket {b}"))
                        };
                        return Ok(mismatch(
                            format!("projection {pk:?} is stored in the wrong place"),
                            place(belongs),
                            place(*found_in),
                        ));
                    }
                    want.next();
                }
                Some((k, _, pk)) if k < key => {
                    return Ok(mismatch(
                        format!("projection {pk:?} is missing from storage"),
                        format!("{pk:?}"),
                        "nothing".into(),
                    ));
                }
                _ => {
                    return Ok(mismatch(
                        "storage holds a projection the log does not produce".into(),
                        "nothing".into(),
                        String::from_utf8_lossy(key).replace('\0', "/"),
                    ));
                }
            }
        }
        if let Some((_, _, pk)) = want.next() {
            return Ok(mismatch(
                format!("projection {pk:?} is missing from storage"),
                format!("{pk:?}"),
                "nothing".into(),
            ));
        }
        Ok(None)
    }
}

/// The rebuilt projections by encoded key, for comparing with storage a key range at a
/// time from any thread. The common case, everything equal, needs only a lookup and an
/// encoding per stored record.
struct ProjIndex<'a> {
    prefix: Vec<u8>,
    /// Every key's encoding less the run's prefix, end to end: one allocation rather than
    /// one per record.
    arena: Vec<u8>,
    table: hashbrown::HashTable<Entry<'a>>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// One rebuilt record: its key is `arena[start..end]`, and it belongs in row bucket
/// `bucket` (`None`: under its own key).
struct Entry<'a> {
    start: usize,
    end: usize,
    value: &'a projection::PVal,
    bucket: Option<u64>,
}

/// What comparing one key range found.
struct RangeResult {
    matched: u64,
    equal: bool,
}

/// Key ranges the projection comparison is cut into, so two threads can share it evenly.
const RANGES: usize = 16;

impl<'a> ProjIndex<'a> {
    fn new(run: &RunId, rebuilt: &'a MemProj) -> ProjIndex<'a> {
        let hasher = hashbrown::DefaultHashBuilder::default();
        let mut arena = Vec::with_capacity(rebuilt.map.len() * 16);
        let mut table = hashbrown::HashTable::with_capacity(rebuilt.map.len());
        for (k, v) in &rebuilt.map {
            let start = arena.len();
            k.as_ref().encode_suffix(&mut arena);
            let end = arena.len();
            let h = hasher.hash_one(&arena[start..end]);
            let entry = Entry {
                start,
                end,
                value: v,
                bucket: bucket::bucket_of(k.as_ref()),
            };
            table.insert_unique(h, entry, |e: &Entry| {
                hasher.hash_one(&arena[e.start..e.end])
            });
        }
        ProjIndex {
            prefix: projection::proj_prefix(run),
            arena,
            table,
            hasher,
        }
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn get(&self, suffix: &[u8]) -> Option<&Entry<'a>> {
        let h = self.hasher.hash_one(suffix);
        self.table
            .find(h, |e| &self.arena[e.start..e.end] == suffix)
    }

    /// Whether the record stored as `value` under `suffix`, found in `bucket`, is the
    /// rebuilt one in its place.
    fn matches(
        &self,
        suffix: &[u8],
        value: &[u8],
        bucket: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<bool> {
        let Some(e) = self.get(suffix) else {
            return Ok(false);
        };
        if e.bucket != bucket {
            return Ok(false);
        }
        buf.clear();
        codec::encode_proj_into(e.value, buf)?;
        Ok(buf.as_slice() == value)
    }

    /// Cuts the run's projection keys into about [`RANGES`] ranges of similar size, at
    /// keys sampled from the rebuilt ones (the map's order is as good as random).
    fn parts(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        // Where each sampled record is stored: its bucket's key or its own.
        let mut sample: Vec<Vec<u8>> = self
            .table
            .iter()
            .take(64 * RANGES)
            .map(|e| match e.bucket {
                Some(b) => [&[bucket::BUCKET_KIND][..], &b.to_be_bytes()].concat(),
                None => self.arena[e.start..e.end].to_vec(),
            })
            .collect();
        sample.sort_unstable();
        let full = |suffix: &[u8]| [self.prefix.as_slice(), suffix].concat();
        let mut bounds = vec![self.prefix.clone()];
        for i in 1..RANGES {
            if let Some(k) = sample.get(i * sample.len() / RANGES) {
                let k = full(k);
                if bounds.last().is_some_and(|b| *b < k) {
                    bounds.push(k);
                }
            }
        }
        // Just past every key with the prefix: the prefix ends in the NUL after the run id.
        let mut end = self.prefix.clone();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        bounds.push(end);
        bounds
            .windows(2)
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    /// Compares the stored records in `[from, to)` with the rebuilt ones, stopping at the
    /// first difference.
    fn compare_range(&self, store: &Store, from: &[u8], to: &[u8]) -> Result<RangeResult> {
        let mut buf = Vec::with_capacity(512);
        let mut result = RangeResult {
            matched: 0,
            equal: true,
        };
        'keys: for item in store.db.range(from..to) {
            let (key, value) = item.map_err(|e| store.storage_err(e))?;
            let Some(suffix) = key.strip_prefix(self.prefix.as_slice()) else {
                result.equal = false;
                break;
            };
            let Some(b) = bucket::bucket_in_suffix(suffix) else {
                if !self.matches(suffix, &value, None, &mut buf)? {
                    result.equal = false;
                    break;
                }
                result.matched += 1;
                continue;
            };
            // A bucket is never written empty.
            if value.is_empty() {
                result.equal = false;
                break;
            }
            for e in bucket::entries(&value) {
                let matched = match e {
                    Ok((s, v)) => self.matches(s, v, Some(b), &mut buf)?,
                    Err(_) => false,
                };
                if !matched {
                    result.equal = false;
                    break 'keys;
                }
                result.matched += 1;
            }
        }
        Ok(result)
    }
}

/// Roughly how many projection records the run has, from its stored record: room for them
/// is made before rebuilding, so the map never rehashes. Only a hint (the stored record is
/// what is being verified), so it is capped.
fn expected_records(store: &Store, run: &RunId) -> usize {
    match store.get_proj(run, &PKey::Run) {
        Ok(Some(projection::PVal::Run(r))) => {
            let n = r.rows.saturating_add(r.tokens).saturating_add(r.calls);
            usize::try_from(n).unwrap_or(usize::MAX).min(1 << 22) + 1024
        }
        _ => 1024,
    }
}

/// The reading half of the log walk: frames each record, checks its seq, its hash and its
/// link to the previous one, and (when the applier is busy) decodes it, handing the
/// records on a segment at a time. Stops at the first record that fails, after handing on
/// every record before it, or when nobody listens any more.
fn read_log(
    store: &Store,
    run: &RunId,
    want_at: Option<u64>,
    tx: crossbeam_channel::Sender<Batch>,
) -> Result<ReadEnd> {
    let mut end = ReadEnd {
        events: 0,
        last_hash: Hash32::ZERO,
        head_hash_at_expected: None,
        failure: None,
    };
    let prefix = projection::log_prefix(run);
    'segments: for item in store.db.scan_prefix(&prefix) {
        let (key, segment) = item.map_err(|e| store.storage_err(e))?;
        let key_seq = key
            .get(prefix.len()..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        let expected_seq = end.events;
        if key_seq != Some(expected_seq) {
            end.failure = Some(fail(
                FailureCode::SeqGap,
                Some(expected_seq),
                format!("segment starting at seq {expected_seq}"),
                key_seq.map_or("a malformed segment key".to_string(), |s| {
                    format!("segment starting at seq {s}")
                }),
                "log segments are not contiguous",
            ));
            break;
        }
        // A segment with no records would pass the walk unnoticed: it cannot be written
        // (commits are never empty), so it is a sign of tampering.
        if segment.is_empty() {
            end.failure = Some(fail(
                FailureCode::DecodeFailed,
                Some(expected_seq),
                "a segment holding at least one record",
                "an empty segment",
                "log segment is empty",
            ));
            break;
        }
        let decode_here = !tx.is_empty();
        let mut decoded = Vec::new();
        let mut undecoded = Vec::new();
        for rec in codec::read_segment(&segment) {
            let seq = end.events;
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    end.failure = Some(fail(
                        FailureCode::DecodeFailed,
                        Some(seq),
                        "a well-framed record",
                        e,
                        "record does not frame",
                    ));
                    break;
                }
            };
            if rec.seq != seq {
                end.failure = Some(fail(
                    FailureCode::SeqGap,
                    Some(seq),
                    seq,
                    rec.seq,
                    "sequence numbers must be contiguous",
                ));
                break;
            }
            let computed = rec.computed_hash();
            if computed != rec.hash {
                end.failure = Some(fail(
                    FailureCode::RecordAltered,
                    Some(seq),
                    rec.hash,
                    computed,
                    "the record's content does not hash to the hash stored in it",
                ));
                break;
            }
            if rec.prev != end.last_hash {
                end.failure = Some(fail(
                    FailureCode::ChainBroken,
                    Some(seq),
                    end.last_hash,
                    rec.prev,
                    "prev_hash is not the previous record's hash",
                ));
                break;
            }
            if decode_here {
                match rec.event() {
                    Ok(event) => decoded.push(Decoded {
                        seq,
                        hash: rec.hash,
                        event,
                    }),
                    Err(e) => {
                        end.failure = Some(fail(
                            FailureCode::DecodeFailed,
                            Some(seq),
                            "a decodable event",
                            e,
                            "event does not decode",
                        ));
                        break;
                    }
                }
            } else {
                // The event's bytes are a slice of the segment.
                let start = rec.event_bytes.as_ptr() as usize - segment.as_ptr() as usize;
                undecoded.push(Undecoded {
                    seq,
                    hash: rec.hash,
                    start,
                    end: start + rec.event_bytes.len(),
                });
            }
            if Some(seq) == want_at {
                end.head_hash_at_expected = Some(rec.hash);
            }
            end.last_hash = rec.hash;
            end.events += 1;
        }
        let batch = if decode_here {
            Batch::Decoded(decoded)
        } else {
            Batch::Undecoded(segment.clone(), undecoded)
        };
        // A closed channel means the applier stopped at a failure; it needs nothing more.
        if tx.send(batch).is_err() || end.failure.is_some() {
            break 'segments;
        }
    }
    Ok(end)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Outcome, SinkWrite};
    use crate::ids::{NodeId, TokenId};
    use crate::writer::Durability;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    /// The observer sees exactly the run's events, in seq order.
    #[test]
    fn verify_observing_hands_on_every_event_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = crate::test_support::source_to_sink_run(&ledger);
        for row in 0..300u64 {
            let mut c = crate::ledger::Commit::new();
            let payload = c.payload(format!("row {row}").into_bytes());
            c.push(Event::RowIngested {
                row,
                source: node("src"),
                payload,
            });
            run.submit(c, Durability::Buffered).unwrap();
        }
        ledger.flush().unwrap();
        let mut logged = Vec::new();
        ledger
            .for_each_event(run.id(), |seq, e| {
                logged.push((seq, e));
                Ok(())
            })
            .unwrap();
        let mut seen = Vec::new();
        let report = ledger
            .verify_observing(run.id(), &VerifyOptions::default(), &mut |seq, e| {
                seen.push((seq, e.clone()))
            })
            .unwrap();
        assert!(report.ok(), "{:?}", report.failure);
        assert_eq!(seen.len(), 303);
        assert_eq!(seen, logged);
        // Any one of them can be read back by its seq.
        for (seq, e) in logged.iter().step_by(7) {
            assert_eq!(ledger.event_at(run.id(), *seq).unwrap().as_ref(), Some(e));
        }
        assert_eq!(ledger.event_at(run.id(), 303).unwrap(), None);
    }

    /// A run with a few thousand projection records, enough for every comparison range.
    fn big_run(ledger: &Ledger) -> RunId {
        let run = crate::test_support::source_to_sink_run(ledger);
        let mut c = crate::ledger::Commit::new();
        for row in 0..2000u64 {
            let payload = c.payload(format!("row {row}").into_bytes());
            c.push(Event::RowIngested {
                row,
                source: node("src"),
                payload,
            });
            c.push(Event::TokenOutcome {
                token: TokenId::for_row(row),
                outcome: Outcome::Completed {
                    write: SinkWrite {
                        sink: node("out"),
                        ordinal: row,
                    },
                },
            });
        }
        run.submit(c, Durability::Flushed).unwrap();
        run.id().clone()
    }

    #[test]
    fn projection_ranges_find_every_kind_of_difference() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let run = big_run(&ledger);
        let opts = VerifyOptions::default();
        let report = ledger.verify(&run, &opts).unwrap();
        assert!(report.ok(), "{:?}", report.failure);
        let db = ledger.raw_db();
        let prefix = projection::proj_prefix(&run);
        let snapshot: Vec<(sled::IVec, sled::IVec)> =
            db.scan_prefix(&prefix).map(|kv| kv.unwrap()).collect();
        let logical: usize = snapshot
            .iter()
            .map(
                |(k, v)| match bucket::bucket_in_suffix(&k[prefix.len()..]) {
                    Some(_) => bucket::entries(v).count(),
                    None => 1,
                },
            )
            .sum();
        assert_eq!(report.projections_checked, logical as u64);
        assert!(snapshot.len() * 10 < logical, "rows share buckets");
        assert_eq!(report.payloads_checked, 2001);

        let token = PKey::Token(TokenId::for_row(1234));
        let original = ledger.raw_projection(&run, &token).unwrap().unwrap();
        let mut edited = original.clone();
        *edited.last_mut().unwrap() ^= 1;
        let bucket0 = bucket::bucket_key(&run, 0);
        let set = |k: &PKey, v: Option<&[u8]>| ledger.raw_set_projection(&run, k, v).unwrap();
        type Step<'a> = Box<dyn Fn() + 'a>;
        let cases: Vec<(&str, Step)> = vec![
            ("edited", Box::new(|| set(&token, Some(&edited)))),
            ("deleted", Box::new(|| set(&PKey::Row(777), None))),
            (
                "added to a new bucket",
                Box::new(|| set(&PKey::Row(50_000), Some(b"x"))),
            ),
            (
                "added to a bucket",
                Box::new(|| set(&PKey::Row(1), Some(&original))),
            ),
            (
                "added under its own key",
                Box::new(|| {
                    db.insert(
                        PKey::Node(NodeId::new("zz").unwrap()).encode(&run),
                        &b"x"[..],
                    )
                    .unwrap();
                }),
            ),
            (
                "moved out of its bucket",
                Box::new(|| {
                    set(&token, None);
                    db.insert(token.encode(&run), original.clone()).unwrap();
                }),
            ),
            (
                "stored twice",
                Box::new(|| {
                    db.insert(token.encode(&run), original.clone()).unwrap();
                }),
            ),
            (
                "bucket emptied",
                Box::new(|| {
                    db.insert(&bucket0, &b""[..]).unwrap();
                }),
            ),
            (
                "bucket truncated",
                Box::new(|| {
                    let v = db.get(&bucket0).unwrap().unwrap();
                    db.insert(&bucket0, &v[..v.len() - 3]).unwrap();
                }),
            ),
        ];
        for (what, tamper) in &cases {
            tamper();
            let report = ledger.verify(&run, &opts).unwrap();
            let failure = report.failure.expect(what);
            assert_eq!(failure.code, FailureCode::ProjectionMismatch, "{what}");
            assert_eq!(report.payloads_checked, 0, "{what}");
            for kv in db.scan_prefix(&prefix) {
                db.remove(kv.unwrap().0).unwrap();
            }
            for (k, v) in &snapshot {
                db.insert(k, v).unwrap();
            }
            assert!(ledger.verify(&run, &opts).unwrap().ok(), "{what} undone");
        }
    }
}
