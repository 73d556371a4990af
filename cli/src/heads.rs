//! Heads kept outside the ledger: `attest head`, `attest keygen`, the heads log `attest run`
//! appends to, and what `replay --expect-head` accepts.

use crate::commands::{open_existing, resolve_run};
use crate::exit::{Code, Failure};
use attest_ledger::head::{self, HeadError, SignedHead};
use attest_ledger::verify::{Head, VerifyOptions};
use attest_ledger::{Hash32, Ledger, RunId};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The heads log's file name inside the ledger directory (beside `db/`): one JSON line per
/// run that `attest run` ended, for the operator to copy somewhere the ledger's writers
/// cannot reach (`docs/replay.md`).
pub const HEADS_LOG: &str = "heads.jsonl";

impl From<HeadError> for Failure {
    fn from(e: HeadError) -> Failure {
        match e {
            HeadError::Random(_) => Failure::run_failed(e.to_string()),
            _ => Failure::bad_input(e.to_string()),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Appends a run's final head to the heads log of the ledger in `dir`; returns the log's
/// path.
pub fn record(dir: &Path, run: &RunId, head: Head, status: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(HEADS_LOG);
    let line = serde_json::json!({
        "run": run.as_str(),
        "count": head.count,
        "hash": head.hash.to_hex(),
        "head": format!("{}:{}", head.count, head.hash),
        "status": status,
        "recorded_at_ms": now_ms(),
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    // One write per line, so a concurrent reader never sees half of one.
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

/// `attest head`.
pub fn head(
    dir: Option<PathBuf>,
    run: &str,
    sign_key: Option<&Path>,
    out: Option<&Path>,
    json: bool,
) -> Result<Code, Failure> {
    let key = sign_key.map(head::read_signing_key).transpose()?;
    let ledger = open_existing(dir)?;
    let run = resolve_run(&ledger, run)?;
    let rec = ledger
        .run_record(&run)?
        .ok_or_else(|| Failure::bad_input(format!("no run {run}")))?;
    if key.is_none() && out.is_none() {
        let h = Head {
            count: rec.next_seq,
            hash: rec.head,
        };
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "run": run.as_str(),
                    "status": rec.status.name(),
                    "count": h.count,
                    "hash": h.hash.to_hex(),
                    "head": format!("{}:{}", h.count, h.hash),
                })
            );
        } else {
            println!("run     {run} ({})", rec.status.name());
            println!("events  {}", h.count);
            println!("head    {}:{}", h.count, h.hash);
        }
        return Ok(Code::Ok);
    }
    // A head file is only made for a run that verifies: a signature (or a head handed to
    // an auditor) must never vouch for a ledger that was already altered.
    let report = ledger.verify(&run, &VerifyOptions::default())?;
    let (Some(h), None) = (report.head, &report.failure) else {
        let why = report
            .failure
            .map_or_else(|| "no head".to_string(), |f| f.to_string());
        eprintln!("attest: run {run} does not verify, so no head file is made: {why}");
        return Ok(Code::Integrity);
    };
    let file = match &key {
        Some(key) => SignedHead::sign(&run, h, now_ms(), key),
        None => SignedHead::unsigned(&run, h, now_ms()),
    };
    match out {
        Some(path) => {
            std::fs::write(path, file.to_json() + "\n")
                .map_err(|e| Failure::bad_input(format!("cannot write {}: {e}", path.display())))?;
            if json {
                println!("{}", file.to_json());
            } else {
                println!(
                    "{} head of run {run} ({}:{}) written to {}",
                    if key.is_some() { "signed" } else { "unsigned" },
                    h.count,
                    h.hash,
                    path.display()
                );
            }
        }
        None => println!("{}", file.to_json()),
    }
    Ok(Code::Ok)
}

/// `attest keygen --out FILE`: FILE gets the private key (mode 0600), FILE.pub the public
/// one. Neither may exist already: a key is never overwritten.
pub fn keygen(out: &Path) -> Result<Code, Failure> {
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [out, public_path.as_path()] {
        if p.exists() {
            return Err(Failure::bad_input(format!(
                "{} already exists; keys are never overwritten",
                p.display()
            )));
        }
    }
    let (private, public) = head::generate_key()?;
    write_new(out, private.as_bytes(), 0o600)?;
    write_new(&public_path, public.as_bytes(), 0o644)?;
    println!(
        "private key {} (keep it secret), public key {}",
        out.display(),
        public_path.display()
    );
    Ok(Code::Ok)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let bad =
        |e: std::io::Error| Failure::bad_input(format!("cannot write {}: {e}", path.display()));
    let mut f = opts.open(path).map_err(bad)?;
    f.write_all(bytes).map_err(bad)?;
    f.sync_all().map_err(bad)
}

/// What `--expect-head` named.
pub enum Expectation {
    /// `COUNT:HASH`.
    Head(Head),
    /// A bare hash: the chain must contain a record with it.
    Hash(Hash32),
    /// A head file (signed or not).
    File(SignedHead),
}

/// Reads a `COUNT:HASH` head.
pub fn parse_count_hash(s: &str) -> Result<Head, Failure> {
    match parse_expectation(s)? {
        Expectation::Head(h) => Ok(h),
        _ => Err(Failure::bad_input(format!(
            "--expect-purge-head {s:?}: expected COUNT:HASH, as `attest purge` prints it"
        ))),
    }
}

/// Checks the purge log against a head of it kept outside the ledger: its intact part must
/// reach `expected.count` records, the last of them with `expected.hash`. A purge log
/// rewritten, truncated or broken before that point is `HEAD_MISMATCH`.
pub fn check_purge_head(
    ledger: &Ledger,
    expected: Head,
) -> Result<Option<attest_ledger::verify::Failure>, Failure> {
    let log = ledger.purge_log()?;
    let at = expected
        .count
        .checked_sub(1)
        .and_then(|i| log.entries.get(i as usize));
    if at.is_some_and(|e| e.hash == expected.hash) {
        return Ok(None);
    }
    let found = match (at, &log.broken) {
        (Some(e), _) => format!("record {} has hash {}", e.seq, e.hash),
        (None, Some((seq, why))) => format!("the purge log is broken at record {seq}: {why}"),
        (None, None) => format!("{} purge records", log.entries.len()),
    };
    Ok(Some(attest_ledger::verify::Failure {
        code: attest_ledger::verify::FailureCode::HeadMismatch,
        seq: expected.count.checked_sub(1),
        expected: format!("purge log head {}:{}", expected.count, expected.hash),
        found,
        message:
            "the purge log does not reach or match the head kept outside: rewritten or truncated"
                .into(),
    }))
}

/// Reads `--expect-head`: `COUNT:HASH`, a bare 64-hex hash, or the path of a head file.
pub fn parse_expectation(s: &str) -> Result<Expectation, Failure> {
    if let Some((count, hash)) = s.split_once(':') {
        if let (Ok(count), Some(hash)) = (count.parse(), Hash32::from_hex(hash)) {
            return Ok(Expectation::Head(Head { count, hash }));
        }
    }
    if let Some(hash) = Hash32::from_hex(s) {
        return Ok(Expectation::Hash(hash));
    }
    let path = Path::new(s);
    if path.is_file() {
        return Ok(Expectation::File(SignedHead::read(path)?));
    }
    Err(Failure::bad_input(format!(
        "--expect-head {s:?}: expected COUNT:HASH, a 64-hex-digit hash, or a head file (from `attest head --sign-key`)"
    )))
}

/// A verification failure made before the ledger is walked (a head that cannot be
/// trusted or does not fit the ledger).
pub fn early_failure(
    run: &str,
    code: attest_ledger::verify::FailureCode,
    expected: String,
    found: String,
    message: String,
) -> attest_ledger::verify::VerifyReport {
    attest_ledger::verify::VerifyReport {
        run: run.to_string(),
        events: 0,
        head: None,
        projections_checked: 0,
        payloads_checked: 0,
        payloads_purged: 0,
        failure: Some(attest_ledger::verify::Failure {
            code,
            seq: None,
            expected,
            found,
            message,
        }),
    }
}

/// Places a bare hash in `run`'s chain: the head it names, or `None` when no record has it.
/// A log that cannot be read to the end also gives `None`; verification names why.
pub fn place_hash(ledger: &Ledger, run: &RunId, hash: &Hash32) -> Option<Head> {
    ledger.head_at_hash(run, hash).ok().flatten()
}
