//! `attest purge --payloads --older-than DAYS`: retention. Removes the payload bytes of
//! finished runs started more than DAYS ago (keeping every hash, and each run's
//! configuration) and records the purge in the ledger's hash-chained purge log, so that
//! verification reports those payloads as purged rather than missing.

use crate::commands::DEFAULT_LEDGER;
use crate::exit::{Code, Failure};
use attest_ledger::Ledger;
use std::path::PathBuf;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

pub fn purge(
    dir: Option<PathBuf>,
    payloads: bool,
    older_than_days: u64,
    json: bool,
) -> Result<Code, Failure> {
    if !payloads {
        return Err(Failure::bad_input(
            "say what to purge: --payloads (the only kind there is)",
        ));
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER));
    if !dir.join("db").exists() {
        return Err(Failure::bad_input(format!(
            "no ledger at {} (use --ledger DIR to name one)",
            dir.display()
        )));
    }
    let ledger = Ledger::open(&dir)?;
    let now = crate::heads::now_ms();
    let cutoff = now.saturating_sub(older_than_days.saturating_mul(DAY_MS));
    let plan = ledger.retention_plan(cutoff)?;
    let reason = format!("retention: payloads of finished runs older than {older_than_days} days");
    let receipt = ledger.purge_recorded(plan.runs.clone(), &plan.hashes, &reason, now)?;
    let purge_head = ledger.purge_log()?.head();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "runs": plan.runs.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "payloads": plan.hashes.len(),
                "removed": receipt.removed,
                "records": receipt.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
                "purge_head": purge_head.map(|h| format!("{}:{}", h.count, h.hash)),
            })
        );
    } else if receipt.entries.is_empty() {
        println!("nothing to purge: no finished run older than {older_than_days} days has payloads of its own");
    } else {
        println!(
            "purged {} payloads ({} still had bytes) of {} run(s)",
            plan.hashes.len(),
            receipt.removed,
            plan.runs.len()
        );
        if let Some(h) = purge_head {
            println!(
                "purge log head {}:{} (keep a copy outside the ledger)",
                h.count, h.hash
            );
        }
    }
    Ok(Code::Ok)
}
