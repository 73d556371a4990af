//! The SIGKILL harness: runs example pipelines in a child `attest` process, kills it with
//! SIGKILL at random moments, resumes (`attest resume`, killed again at random too) until
//! the kills are spent and the run completes, then compares every output with an
//! uninterrupted run byte for byte and checks that every ledger passes
//! `attest replay --verify-only`, and some (an LLM one among them) full `attest replay`.
//!
//! The LLM examples (`llm-sentiment`, one call per row; `llm-batch`, a batch's calls under
//! its one state) run against the local fake server with some latency, so kills land
//! while calls are in flight. Their outputs are the uninterrupted ones because the server
//! answers deterministically; beyond that the harness checks, from the server's count and
//! the final ledger, that across all the kills and resumes **no request was answered
//! twice** except calls the crash left recorded without an answer, which are honestly
//! sent again: the record holds exactly one answer from the server per row, and the
//! server saw at most one more request per such call. Replay sends nothing.
//!
//! Environment (see docs/reliability.md):
//! * `ATTEST_KILLS` — kills in all (default 8, one per example; the long run uses 60+);
//! * `ATTEST_KILL_ROWS` — rows of each example's input (default 2,000);
//! * `ATTEST_KILL_LLM_ROWS` — rows of the LLM examples' inputs (default 240);
//! * `ATTEST_KILL_LLM_LATENCY_MS` — the fake server's latency (default 10);
//! * `ATTEST_KILL_SEED` — the seed of the kill moments (default: from the clock). It is
//!   printed; the moments it picks are reproduced, the state a kill finds depends on timing.

use attest_ledger::projection::{PKey, PVal};
use attest_ledger::{Event, Ledger, RunId, TokenId};
use attest_tests::crash::{
    assert_every_run_verifies, assert_same_outputs, len, reference_with, replay_passes, runs, text,
    CallCounts, Example,
};
use attest_tests::fake_llm::{Answering, FakeLlm};
use attest_tests::Scratch;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// splitmix64: small, seedable, and enough to spread kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn below(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis() as u64;
        Duration::from_millis(self.next() % (ms + 1))
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Setup = fn(&Scratch, usize) -> Example;

/// An example the harness kills.
struct Target {
    name: &'static str,
    /// Its aggregation node, if any.
    aggregation: Option<&'static str>,
    setup: Setup,
    /// It calls the fake LLM server.
    llm: bool,
    /// Its final ledger is re-executed (`attest replay` without `--verify-only`).
    full_replay: bool,
}

/// The examples the harness kills: every kind of node and sink framing, and calls.
const EXAMPLES: &[Target] = &[
    Target {
        name: "threshold-gate, JSON array sink",
        aggregation: None,
        setup: |s, rows| {
            Example::grown(s, "threshold-gate", rows).edit(s, |t| {
                t.replace(
                    "high_values: {plugin: csv, on_write_failure: discard, options: {path: out/threshold-gate/high.csv,",
                    "high_values: {plugin: json, on_write_failure: discard, options: {path: out/threshold-gate/high.json, format: json, indent: 2,",
                )
            })
        },
        llm: false,
        full_replay: false,
    },
    Target {
        name: "batch-stats (aggregation)",
        aggregation: Some("per_region"),
        setup: |s, rows| Example::grown(s, "batch-stats", rows),
        llm: false,
        full_replay: true,
    },
    Target {
        name: "fork-coalesce",
        aggregation: None,
        setup: |s, rows| Example::grown(s, "fork-coalesce", rows),
        llm: false,
        full_replay: true,
    },
    Target {
        name: "json-explode (expansion, error routing)",
        aggregation: None,
        setup: |s, rows| Example::grown(s, "json-explode", rows),
        llm: false,
        full_replay: false,
    },
    Target {
        name: "deaggregation (batch_replicate)",
        aggregation: Some("tickets"),
        setup: |s, rows| Example::grown(s, "deaggregation", rows),
        llm: false,
        full_replay: false,
    },
    Target {
        name: "quarantine",
        aggregation: None,
        setup: |s, rows| Example::grown(s, "quarantine", rows),
        llm: false,
        full_replay: false,
    },
    Target {
        name: "llm-sentiment (a call per row)",
        aggregation: None,
        setup: |s, rows| Example::grown(s, "llm-sentiment", rows),
        llm: true,
        full_replay: true,
    },
    Target {
        name: "llm-batch (a batch's calls under its state)",
        aggregation: Some("classify"),
        setup: |s, rows| Example::grown(s, "llm-batch", rows),
        llm: true,
        full_replay: true,
    },
];

/// What one kill left behind, from the ledger and the files.
#[derive(Default, Debug)]
struct Windows {
    kills: u64,
    /// The kill came before the run was recorded: it is started again.
    before_start: u64,
    /// No checkpoint yet: the resume starts from row 0.
    no_checkpoint: u64,
    /// Rows read after the last checkpoint.
    read_past_cut: u64,
    /// Rows whose own events are recorded after the last checkpoint (processed, not written).
    processed_not_written: u64,
    /// A sink file longer than its recorded durable position.
    bytes_past_durable: u64,
    /// An aggregation batch open at the last checkpoint.
    open_batch: u64,
    /// A state left open: a node was calling out (the resume closes it as interrupted).
    open_state: u64,
    /// Aggregation events recorded after the last checkpoint: a batch's state was
    /// recorded before its calls (the resumed sequencer repeats them against the record).
    batch_past_cut: u64,
}

impl Windows {
    fn observe(&mut self, s: &Scratch, aggregation: Option<&str>) {
        self.kills += 1;
        let Some(run) = runs(s).into_iter().find(|r| r["status"] != "completed") else {
            if runs(s).is_empty() {
                self.before_start += 1;
            }
            return;
        };
        let Ok(ledger) = Ledger::open(s.path().join("out/ledger")) else {
            return;
        };
        let Ok(id) = RunId::new(run["run_id"].as_str().unwrap_or_default()) else {
            return;
        };
        let Ok(Some(rec)) = ledger.run_record(&id) else {
            return;
        };
        let last = ledger
            .find_last_event(&id, |e| match e {
                Event::Checkpoint {
                    rows_ingested,
                    note,
                } => Some((*rows_ingested, note.clone())),
                _ => None,
            })
            .ok()
            .flatten();
        let (released, note) = match last {
            Some((_, c)) => c,
            None => {
                self.no_checkpoint += 1;
                (0, "{}".into())
            }
        };
        if rec.rows > released {
            self.read_past_cut += 1;
        }
        if rec.open_states > 0 {
            self.open_state += 1;
        }
        let mut past_cut = false;
        let _ = ledger.scan_events_rev(&id, |_, e| {
            if matches!(
                e,
                Event::BatchOpened { .. } | Event::BatchMemberAdded { .. }
            ) {
                past_cut = true;
            }
            Ok(!matches!(e, Event::Checkpoint { .. }) && !past_cut)
        });
        if past_cut {
            self.batch_past_cut += 1;
        }
        let processed = (released..rec.rows).any(|i| {
            matches!(
                ledger.projection(&id, &PKey::Token(TokenId::for_row(i))),
                Ok(Some(PVal::Token(t))) if !t.states.is_empty() || t.terminal.is_some()
            )
        });
        if processed {
            self.processed_not_written += 1;
        }
        let note: serde_json::Value = serde_json::from_str(&note).unwrap_or_default();
        let beyond = note["sinks"].as_object().is_some_and(|m| {
            m.values().any(|v| {
                let path = s.path().join(v["path"].as_str().unwrap_or_default());
                len(&path) > v["bytes"].as_u64().unwrap_or(u64::MAX)
            })
        });
        if beyond {
            self.bytes_past_durable += 1;
        }
        if let Some(node) = aggregation.and_then(|n| attest_ledger::NodeId::new(n).ok()) {
            let batch = |k| {
                ledger.projection(
                    &id,
                    &PKey::Batch(attest_ledger::BatchId::for_node(&node, k)),
                )
            };
            let newest = (0..)
                .map(batch)
                .take_while(|b| matches!(b, Ok(Some(_))))
                .last();
            if let Some(Ok(Some(PVal::Batch(b)))) = newest {
                if b.completion.is_none() {
                    self.open_batch += 1;
                }
            }
        }
    }

    fn add(&mut self, o: &Windows) {
        self.kills += o.kills;
        self.before_start += o.before_start;
        self.no_checkpoint += o.no_checkpoint;
        self.read_past_cut += o.read_past_cut;
        self.processed_not_written += o.processed_not_written;
        self.bytes_past_durable += o.bytes_past_durable;
        self.open_batch += o.open_batch;
        self.open_state += o.open_state;
        self.batch_past_cut += o.batch_past_cut;
    }
}

/// The next step of the run in `s`: start it, or resume it. `None` once it completed.
fn step(s: &Scratch, ex: &Example, env: &[(&str, &str)]) -> Option<Child> {
    let all = runs(s);
    let mut cmd = Command::new(attest_tests::binary());
    cmd.current_dir(s.path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match all.iter().find(|r| r["status"] != "completed") {
        Some(r) => {
            assert!(
                r["status"] == "running" || r["status"] == "interrupted",
                "{r}"
            );
            cmd.args([
                "resume",
                r["run_id"].as_str().expect("id"),
                "--ledger",
                "out/ledger",
                "--json",
            ]);
        }
        None if all.is_empty() => {
            cmd.args(["run", &ex.pipeline, "--json"]);
        }
        None => return None,
    }
    Some(cmd.spawn().expect("spawn attest"))
}

/// Waits for `child`, at most `limit`; its exit must be 0 (a resumed run may also end 3
/// only if interrupted, which the harness never does).
fn finish(mut child: Child, limit: Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            assert_eq!(status.code(), Some(0), "{}", text(&out));
            return;
        }
        assert!(
            started.elapsed() < limit,
            "attest did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_output() {
    let kills = env_u64("ATTEST_KILLS", EXAMPLES.len() as u64);
    let rows = env_u64("ATTEST_KILL_ROWS", 2_000) as usize;
    let llm_rows = env_u64("ATTEST_KILL_LLM_ROWS", 240) as usize;
    let latency = Duration::from_millis(env_u64("ATTEST_KILL_LLM_LATENCY_MS", 10));
    let seed = env_u64(
        "ATTEST_KILL_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    println!(
        "kill_resume: seed {seed} (ATTEST_KILL_SEED={seed}), {kills} kills, {rows} rows, \
         {llm_rows} LLM rows at {latency:?}"
    );
    // Built before anything is timed: the kill moments scale with a run's duration.
    attest_tests::binary();
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut total = Windows::default();
    let per = |i: usize| {
        kills / EXAMPLES.len() as u64 + u64::from((i as u64) < kills % EXAMPLES.len() as u64)
    };
    for (i, target) in EXAMPLES.iter().enumerate() {
        let name = target.name;
        let budget = per(i);
        if budget == 0 {
            continue;
        }
        let rows = if target.llm { llm_rows } else { rows };
        let t0 = Instant::now();
        // One server for the reference run and one for the killed run, whose requests are
        // counted.
        let server = |_| {
            let f = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).expect("fake server");
            f.set_latency(latency);
            f
        };
        let (reference_server, server) = (server(0), server(1));
        let (reference_url, url) = (reference_server.url(), server.url());
        let env: &[(&str, &str)] = if target.llm {
            &[("LLM_BASE_URL", &url)]
        } else {
            &[]
        };
        let (_, want) = reference_with(
            &|s| (target.setup)(s, rows),
            &[("LLM_BASE_URL", &reference_url)],
        );
        let wanted_requests = reference_server.requests();
        // Kill moments are drawn over how long the step is expected to take: a little more
        // than an uninterrupted run for a new run, less for a resume, which has only the
        // rows after its cut left (plus re-reading the rest, about a quarter of the work).
        let full = t0.elapsed().mul_f64(1.2).max(Duration::from_millis(200));
        let s = Scratch::new();
        let ex = (target.setup)(&s, rows);
        let mut windows = Windows::default();
        let mut finished_early = 0;
        let mut attempts = 0;
        // Requests the server had seen when the current run started.
        let mut base = 0;
        while windows.kills < budget {
            attempts += 1;
            assert!(attempts < budget * 20 + 20, "{name}: too many attempts");
            let done = runs(&s)
                .iter()
                .find(|r| r["status"] != "completed")
                .and_then(|r| r["rows"].as_u64())
                .map_or(0.0, |n| n as f64 / rows as f64);
            let span = full.mul_f64(1.0 - 0.75 * done.min(1.0));
            let Some(mut child) = step(&s, &ex, env) else {
                // Completed before every kill was spent: check it, then run it again.
                assert_same_outputs(&s, &ex, &want, name);
                assert_every_run_verifies(&s);
                std::fs::remove_dir_all(s.path().join("out")).expect("clear out/");
                base = server.requests();
                continue;
            };
            std::thread::sleep(rng.below(span));
            match child.try_wait().expect("try_wait") {
                Some(status) => {
                    let out = child.wait_with_output().expect("output");
                    assert_eq!(status.code(), Some(0), "{name}: {}", text(&out));
                    finished_early += 1;
                }
                None => {
                    child.kill().expect("SIGKILL");
                    child.wait().expect("reap");
                    windows.observe(&s, target.aggregation);
                }
            }
        }
        // Resume, unkilled, until done.
        while let Some(child) = step(&s, &ex, env) {
            finish(child, Duration::from_secs(600));
        }
        assert_same_outputs(&s, &ex, &want, name);
        assert_every_run_verifies(&s);
        let run = runs(&s)
            .first()
            .and_then(|r| r["run_id"].as_str().map(String::from))
            .expect("the run");
        let mut calls = None;
        if target.llm {
            let c = CallCounts::read(&s, &run);
            let sent = server.requests() - base;
            // One answer from the server per call an uninterrupted run makes: none was
            // answered twice in the record. The server saw those, plus at most one per
            // call a crash left without an answer (sent again: it may have gone out).
            assert_eq!(c.answered, wanted_requests, "{name}: {c:?}");
            assert!(
                sent >= wanted_requests && sent <= wanted_requests + c.interrupted,
                "{name}: the server answered {sent} requests; an uninterrupted run sends \
                 {wanted_requests}, and {} call(s) were left without an answer: {c:?}",
                c.interrupted
            );
            calls = Some((c, sent));
        }
        if target.full_replay {
            let before = server.requests();
            replay_passes(&s, &run, false, env);
            assert_eq!(server.requests(), before, "{name}: replay sent a request");
        }
        println!(
            "kill_resume: {name}: {} kills ({finished_early} runs finished before their kill) in {:.1}s: {windows:?}",
            windows.kills,
            t0.elapsed().as_secs_f64()
        );
        if let Some((c, sent)) = calls {
            println!(
                "kill_resume: {name}: {sent} requests (uninterrupted: {wanted_requests}); {c:?}"
            );
        }
        total.add(&windows);
    }
    println!(
        "kill_resume: seed {seed}: {} kills in {:.1}s: {total:?}",
        total.kills,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(total.kills, kills);
}
