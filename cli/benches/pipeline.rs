//! End-to-end pipeline benchmark (a bench binary, not a test): the engine issue's
//! pipeline — CSV (100,000 rows: id, ~75-char text, score) → field_mapper → gate on score
//! → two CSV sinks — run through the release `attest` binary with the full audit and the
//! ledger durable at run end. Reports rows/s, peak memory, ledger bytes per row and the
//! time of `attest --version`.
//!
//! Run: `cargo bench -p attest-cli --bench pipeline` (ROWS=N and RUNS=N override the
//! defaults of 100000 and 3).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bytes of live keys and values in the ledger, per row, by kind: what the audit record
/// holds, as opposed to sled's files, which also hold superseded page versions until
/// sled reclaims them.
fn logical_bytes(dir: &Path) -> String {
    let Ok(ledger) = attest_ledger::Ledger::open(dir) else {
        return "logical size unavailable".into();
    };
    let mut by_kind = [0u64; 5]; // log, projections, payloads, payload index, other
    for (k, v) in ledger.raw_db().iter().flatten() {
        let i = match k.first() {
            Some(b'L') => 0,
            Some(b'P') => 1,
            // Packs, and payloads stored under keys of their own.
            Some(b'Q' | b'B') => 2,
            Some(b'H' | b'G') => 3,
            _ => 4,
        };
        by_kind[i] += (k.len() + v.len()) as u64;
    }
    let rows = ledger
        .runs()
        .ok()
        .and_then(|r| r.last().map(|r| r.rows))
        .unwrap_or(1)
        .max(1);
    format!(
        "logical {:.0} bytes/row (log {:.0}, projections {:.0}, payloads {:.0}, payload index {:.0})",
        by_kind.iter().sum::<u64>() as f64 / rows as f64,
        by_kind[0] as f64 / rows as f64,
        by_kind[1] as f64 / rows as f64,
        by_kind[2] as f64 / rows as f64,
        by_kind[3] as f64 / rows as f64
    )
}

fn dir_size(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_size(&path)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rows = env_num("ROWS", 100_000);
    let runs = env_num("RUNS", 3);
    let bin = env!("CARGO_BIN_EXE_attest");
    let dir = tempfile::tempdir().expect("tempdir");
    common::write_workload(dir.path(), rows);
    let time = Path::new("/usr/bin/time").exists();

    let mut results = Vec::new();
    for run in 0..runs {
        let _ = std::fs::remove_dir_all(dir.path().join("ledger"));
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let mut cmd = if time {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "PEAK_KB=%M", bin]);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(["run", "pipeline.yaml", "--ledger", "ledger", "--json"])
            .current_dir(dir.path());
        let started = Instant::now();
        let out = cmd.output().expect("run attest");
        let elapsed = started.elapsed();
        assert!(
            out.status.success(),
            "attest run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let peak_kb: Option<u64> = stderr
            .lines()
            .find_map(|l| l.strip_prefix("PEAK_KB="))
            .and_then(|v| v.trim().parse().ok());
        let ledger_bytes = dir_size(&dir.path().join("ledger"));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
        let logical = logical_bytes(&dir.path().join("ledger"));
        let events = summary["events"].as_u64().unwrap_or(0);
        println!(
            "run {run}: {rows} rows in {:.3}s = {:.0} rows/s; peak {} MB; ledger on disk {} bytes ({:.0} bytes/row, {events} events); {logical}",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64(),
            peak_kb.map_or("n/a".to_string(), |k| format!("{:.1}", k as f64 / 1024.0)),
            ledger_bytes,
            ledger_bytes as f64 / rows as f64,
        );
        results.push(elapsed);
    }
    results.sort();
    let median = results[results.len() / 2];
    println!(
        "median: {:.3}s = {:.0} rows/s",
        median.as_secs_f64(),
        rows as f64 / median.as_secs_f64()
    );

    let mut versions: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new(bin)
                .arg("--version")
                .output()
                .expect("attest --version");
            assert!(out.status.success());
            t.elapsed()
        })
        .collect();
    versions.sort();
    println!(
        "attest --version: median {:.2} ms, max {:.2} ms (20 runs)",
        versions[10].as_secs_f64() * 1000.0,
        versions[19].as_secs_f64() * 1000.0
    );
}
