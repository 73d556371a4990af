//! Replay and lineage speed (a bench binary, not a test), through the release `attest`
//! binary, on the engine issue's workload (`common`):
//!
//! - `attest run` of ROWS rows (default 100,000), the baseline;
//! - `attest replay --verify-only`: events per second;
//! - `attest replay` (verification and re-execution): against the run's own time;
//! - `attest lineage --row N --format json` as a whole command, process start included, on
//!   a ledger of LINEAGE_ROWS rows (default 1,000,000; 0 skips it) built first, or on the
//!   ledger directory LINEAGE_LEDGER names (one run of this workload of LINEAGE_ROWS rows),
//!   which saves building one.
//!
//! Every figure is printed with the load average before it: the machine is shared.
//! Run: `cargo bench -p attest-cli --bench replay` (RUNS=N, default 3, repeats each
//! measurement; LINEAGE_QUERIES=N, default 20).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of the children waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One command's wall and CPU time, and its output.
struct Timed {
    wall: Duration,
    cpu: Duration,
    stdout: Vec<u8>,
}

fn timed(bin: &str, dir: &Path, args: &[&str]) -> Timed {
    let cpu = children_cpu();
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run attest");
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "attest {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Timed {
        wall,
        cpu: children_cpu().saturating_sub(cpu),
        stdout: out.stdout,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the workload of `rows` rows in `dir` (ledger `dir/ledger`); returns the run's time
/// and its event count.
fn record(bin: &str, dir: &Path, rows: usize) -> (Timed, u64) {
    common::write_workload(dir, rows);
    let t = timed(
        bin,
        dir,
        &["run", "pipeline.yaml", "--ledger", "ledger", "--json"],
    );
    let summary: serde_json::Value = serde_json::from_slice(&t.stdout).expect("run --json");
    assert_eq!(summary["status"], "completed", "{summary}");
    let events = summary["events"].as_u64().unwrap_or(0);
    (t, events)
}

fn replays(bin: &str, dir: &Path, events: u64, runs: usize, run_wall: Duration) {
    let mut verify = Vec::new();
    let mut full = Vec::new();
    for i in 0..runs {
        let load = common::loadavg();
        let v = timed(
            bin,
            dir,
            &["replay", "--ledger", "ledger", "--verify-only", "--json"],
        );
        println!(
            "verify-only {i}: {} wall, {} cpu = {:.0} events/s (load before: {load})",
            secs(v.wall),
            secs(v.cpu),
            events as f64 / v.wall.as_secs_f64()
        );
        verify.push(v.wall);
        let load = common::loadavg();
        let r = timed(bin, dir, &["replay", "--ledger", "ledger", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&r.stdout).expect("replay --json");
        assert_eq!(report["ok"], true, "{report}");
        println!(
            "replay {i}: {} wall, {} cpu ({} states re-executed; load before: {load})",
            secs(r.wall),
            secs(r.cpu),
            report["reexecution"]["states"]
        );
        full.push(r.wall);
    }
    let v = median(verify);
    let r = median(full);
    println!(
        "median verify-only: {} = {:.0} events/s (target 1,000,000)",
        secs(v),
        events as f64 / v.as_secs_f64()
    );
    println!(
        "median replay: {} = {:.2}x the run's {} (target: at most 1x)",
        secs(r),
        r.as_secs_f64() / run_wall.as_secs_f64(),
        secs(run_wall)
    );
}

fn lineage(bin: &str, ledger: &Path, rows: usize, queries: usize) {
    // The first command to open a ledger after a long run replays sled's log since its
    // last snapshot: that one is timed apart.
    let dir = ledger.parent().unwrap_or(Path::new("."));
    let ledger_arg = ledger.display().to_string();
    let first = timed(bin, dir, &["runs", "--ledger", &ledger_arg]);
    println!(
        "first open after the run (attest runs): {}",
        secs(first.wall)
    );
    let mut walls = Vec::new();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for _ in 0..queries {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let row = (x % rows as u64).to_string();
        let load = common::loadavg();
        let t = timed(
            bin,
            dir,
            &[
                "lineage",
                "--ledger",
                &ledger_arg,
                "--row",
                &row,
                "--format",
                "json",
            ],
        );
        let l: serde_json::Value = serde_json::from_slice(&t.stdout).expect("lineage json");
        assert!(l.is_object(), "{l}");
        println!(
            "lineage --row {row}: {} ms (load before: {load})",
            t.wall.as_millis()
        );
        walls.push(t.wall);
    }
    walls.sort();
    println!(
        "lineage on {rows} rows: min {} ms, median {} ms, max {} ms (target < 20 ms)",
        walls[0].as_millis(),
        walls[walls.len() / 2].as_millis(),
        walls[walls.len() - 1].as_millis()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rows = env_num("ROWS", 100_000);
    let runs = env_num("RUNS", 3).max(1);
    let lineage_rows = env_num("LINEAGE_ROWS", 1_000_000);
    let queries = env_num("LINEAGE_QUERIES", 20).max(1);
    let bin = env!("CARGO_BIN_EXE_attest");

    let dir = tempfile::tempdir().expect("tempdir");
    let load = common::loadavg();
    let (run, events) = record(bin, dir.path(), rows);
    println!(
        "run: {rows} rows, {events} events in {} wall, {} cpu (load before: {load})",
        secs(run.wall),
        secs(run.cpu)
    );
    replays(bin, dir.path(), events, runs, run.wall);

    let built;
    let ledger: PathBuf = match std::env::var_os("LINEAGE_LEDGER") {
        Some(p) => PathBuf::from(p),
        None if lineage_rows == 0 => return,
        None => {
            built = tempfile::tempdir().expect("tempdir");
            let load = common::loadavg();
            let (t, events) = record(bin, built.path(), lineage_rows);
            println!(
                "lineage ledger: {lineage_rows} rows, {events} events in {} (load before: {load})",
                secs(t.wall)
            );
            built.path().join("ledger")
        }
    };
    lineage(bin, &ledger, lineage_rows.max(1), queries);
}
