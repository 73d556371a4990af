//! Call-index allocation under real concurrency (DESIGN.md rule 2; seeds 001, 003, 004).
//!
//! Many threads allocate call indices on states they share (a cloned `StateHandle`) and on
//! states of their own; the single writer must hand out `0..n` per state, each index
//! exactly once, and record each index with the request of the caller that received it.

mod common;

use attest_ledger::projection::{PKey, PVal};
use attest_ledger::*;
use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: usize = 8;

/// How one iteration is shaped.
#[derive(Clone, Copy)]
struct Shape {
    /// States each thread allocates on alone.
    own_states: usize,
    /// Calls each thread allocates on each of its own states.
    own_calls: usize,
    /// States every thread allocates on through a clone of the same handle.
    shared_states: usize,
    /// Calls each thread allocates on each shared state.
    shared_calls: usize,
}

/// What one thread was given: (state, index, the request bytes it sent).
type Got = Vec<(StateId, u32, Vec<u8>)>;

fn nodes(run: &RunHandle) {
    register(
        run,
        &[
            ("src", NodeKind::Source),
            ("map", NodeKind::Transform),
            ("out", NodeKind::Sink),
        ],
    );
}

/// Ingests `rows` rows and opens a state on each, all in one commit (the ledger picks the
/// attempts); returns the handles and each row's payload hash (a stored payload, so also
/// usable as the state's output).
fn open_states(run: &RunHandle, rows: usize) -> (Vec<StateHandle>, Vec<Hash32>) {
    let mut commit = Commit::new();
    let mut inputs = Vec::new();
    for row in 0..rows as u64 {
        let payload = commit.payload(format!("row {row}").into_bytes());
        inputs.push(payload);
        commit.push(Event::RowIngested {
            row,
            source: n("src"),
            payload,
        });
    }
    for (row, input) in inputs.iter().enumerate() {
        commit.items.push(Item::OpenState {
            subject: Subject::Token(TokenId::for_row(row as u64)),
            node: n("map"),
            input: *input,
        });
    }
    let receipt = run
        .submit(commit, Durability::Buffered)
        .expect("open states");
    assert_eq!(receipt.allocated, vec![1; rows], "first attempts");
    let states = (0..rows as u64)
        .map(|row| {
            run.state_handle(StateId {
                subject: Subject::Token(TokenId::for_row(row)),
                node: n("map"),
                attempt: 1,
            })
        })
        .collect();
    (states, inputs)
}

/// Runs one iteration on a fresh run of `ledger` and checks every state's indices.
fn iteration(ledger: &Ledger, name: &str, shape: Shape) {
    let run = start(ledger, name);
    nodes(&run);
    let own_total = THREADS * shape.own_states;
    let (states, inputs) = open_states(&run, own_total + shape.shared_states);
    let (own, shared) = states.split_at(own_total);
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            // Each thread owns its handles: clones of the shared ones plus its own.
            let mine: Vec<StateHandle> =
                own[t * shape.own_states..(t + 1) * shape.own_states].to_vec();
            let shared: Vec<StateHandle> = shared.to_vec();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut got: Got = Vec::new();
                let rounds = shape.own_calls.max(shape.shared_calls);
                barrier.wait();
                for i in 0..rounds {
                    // Alternate between own and shared states so that allocations of
                    // different states and threads interleave in every commit group.
                    let targets = mine
                        .iter()
                        .filter(|_| i < shape.own_calls)
                        .chain(shared.iter().filter(|_| i < shape.shared_calls));
                    for st in targets {
                        let request = format!("thread {t} call {i} on {}", st.id()).into_bytes();
                        let call = st
                            .allocate_call("http", request.clone(), None)
                            .expect("allocate");
                        assert_eq!(&call.state, st.id());
                        if call.index % 8 == 0 {
                            st.complete_call(
                                &call,
                                CallOutcome::Responded { status: Some(200) },
                                Some(format!("response to {t}/{i}").into_bytes()),
                                1,
                            )
                            .expect("complete");
                        }
                        got.push((call.state, call.index, request));
                    }
                }
                got
            })
        })
        .collect();
    let mut per_state: BTreeMap<StateId, Vec<(u32, Vec<u8>)>> = BTreeMap::new();
    for w in workers {
        for (state, index, request) in w.join().expect("worker thread") {
            per_state.entry(state).or_default().push((index, request));
        }
    }
    let expected_calls = |st: &StateHandle| {
        if shared.iter().any(|s| s.id() == st.id()) {
            THREADS * shape.shared_calls
        } else {
            shape.own_calls
        }
    };
    for st in &states {
        let want = expected_calls(st);
        let mut got = per_state.remove(st.id()).unwrap_or_default();
        got.sort_by_key(|(i, _)| *i);
        let indices: Vec<u32> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            indices,
            (0..want as u32).collect::<Vec<_>>(),
            "{name}: state {} was given indices that are not exactly 0..{want}",
            st.id()
        );
        check_stored_calls(ledger, run.id(), st.id(), &got);
    }
    // Close everything so the run can complete (one commit), then verify the whole chain.
    let mut end = Vec::new();
    for (i, st) in states.iter().enumerate() {
        end.push(Event::StateClosed {
            state: st.id().clone(),
            result: StateResult::Completed { output: inputs[i] },
            duration_us: 1,
        });
        end.push(Event::TokenOutcome {
            token: TokenId::for_row(i as u64),
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: n("out"),
                    ordinal: i as u64,
                },
            },
        });
    }
    run.append(end).expect("close and record outcomes");
    run.append(vec![Event::RunFinished {
        status: FinalStatus::Completed,
    }])
    .expect("finish");
    let report = assert_verifies(ledger, run.id());
    let calls: usize = states.iter().map(expected_calls).sum();
    assert_eq!(
        ledger.run_record(run.id()).unwrap().unwrap().calls,
        calls as u64
    );
    assert!(report.events > calls as u64);
}

/// The stored projections agree with what the threads were told: the state's call counter
/// is `n`, each index `0..n` has a call record carrying the request of the thread that
/// received that index, and there is no record at `n`.
fn check_stored_calls(ledger: &Ledger, run: &RunId, state: &StateId, got: &[(u32, Vec<u8>)]) {
    let Subject::Token(t) = &state.subject else {
        unreachable!("these tests only open token states")
    };
    let rec = token(ledger, run, t).expect("token record");
    let st = rec
        .states
        .iter()
        .find(|s| s.node == state.node && s.attempt == state.attempt)
        .expect("state record");
    assert_eq!(st.calls as usize, got.len(), "state {state} call counter");
    for (index, request) in got {
        match proj(ledger, run, &PKey::Call(state.clone(), *index)) {
            Some(PVal::Call(call)) => assert_eq!(
                call.request,
                Hash32::of(request),
                "call {index} of {state} is recorded with another caller's request"
            ),
            other => panic!("call {index} of {state}: stored {other:?}"),
        }
    }
    assert!(proj(ledger, run, &PKey::Call(state.clone(), got.len() as u32)).is_none());
}

#[test]
fn eight_threads_allocate_gap_free_indices_hundreds_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let shape = Shape {
        own_states: 4,
        own_calls: 8,
        shared_states: 2,
        shared_calls: 4,
    };
    for i in 0..ITERATIONS {
        iteration(&ledger, &format!("small-{i}"), shape);
    }
}

/// Iterations of the small shape: hundreds, as issue 2 asks, within the time budget.
const ITERATIONS: usize = 200;

#[test]
fn thousands_of_calls_per_shared_state() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    iteration(
        &ledger,
        "heavy",
        Shape {
            own_states: 1,
            own_calls: 250,
            shared_states: 2,
            shared_calls: 250,
        },
    );
}

/// The rule violation an error carries, as (rule, code).
fn rule_of(err: &LedgerError) -> (Rule, &'static str) {
    let v = err
        .rule()
        .unwrap_or_else(|| panic!("expected a rule violation, got {err}"));
    (v.rule, v.code)
}

/// An HTTP-like audited client bound to one state (seed 004: it keeps no counter of its own).
struct HttpClient {
    state: StateHandle,
}

impl HttpClient {
    fn get(&self, url: &str) -> Result<CallHandle> {
        let call = self
            .state
            .allocate_call("http", format!("GET {url}").into_bytes(), None)?;
        self.state.complete_call(
            &call,
            CallOutcome::Responded { status: Some(200) },
            Some(format!("body of {url}").into_bytes()),
            12,
        )?;
        Ok(call)
    }
}

/// An LLM-like audited client bound to the same state.
struct LlmClient {
    state: StateHandle,
    model: &'static str,
}

impl LlmClient {
    fn complete(&self, prompt: &str) -> Result<CallHandle> {
        let request = format!("{{\"model\":\"{}\",\"prompt\":\"{prompt}\"}}", self.model);
        let call = self
            .state
            .allocate_call("llm", request.into_bytes(), None)?;
        self.state.complete_call(
            &call,
            CallOutcome::Responded { status: None },
            Some(b"{\"label\":\"ok\"}".to_vec()),
            900,
        )?;
        Ok(call)
    }
}

fn call_kind(ledger: &Ledger, run: &RunId, state: &StateId, index: u32) -> String {
    match proj(ledger, run, &PKey::Call(state.clone(), index)) {
        Some(PVal::Call(c)) => c.kind,
        other => panic!("call {index} of {state}: {other:?}"),
    }
}

/// Seed 004: two different clients on one state share the ledger's per-state allocator, so
/// their indices interleave and never collide; a retry's state starts again at 0, and a
/// client still bound to the failed attempt cannot add to it.
#[test]
fn two_clients_on_one_state_interleave_without_collision() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = start(&ledger, "clients");
    nodes(&run);
    let (states, inputs) = open_states(&run, 1);
    let st = states[0].clone();
    let http = HttpClient { state: st.clone() };
    let llm = LlmClient {
        state: st.clone(),
        model: "gpt-x",
    };

    // One after the other: the indices alternate between the clients.
    let mut seen = Vec::new();
    for i in 0..5 {
        seen.push(("http", http.get(&format!("/doc/{i}")).unwrap().index));
        seen.push(("llm", llm.complete(&format!("classify {i}")).unwrap().index));
    }
    let expect: Vec<(&str, u32)> = (0..10)
        .map(|i| (if i % 2 == 0 { "http" } else { "llm" }, i))
        .collect();
    assert_eq!(seen, expect);

    // From two threads at once: disjoint, together exactly 10..410.
    let barrier = Arc::new(Barrier::new(2));
    let (b1, b2) = (barrier.clone(), barrier);
    let h = thread::spawn(move || {
        b1.wait();
        (0..200)
            .map(|i| http.get(&format!("/p/{i}")).unwrap().index)
            .collect::<Vec<_>>()
    });
    let l = thread::spawn(move || {
        b2.wait();
        (0..200)
            .map(|i| llm.complete(&format!("q{i}")).unwrap().index)
            .collect::<Vec<_>>()
    });
    let (hi, li) = (h.join().unwrap(), l.join().unwrap());
    let mut all: Vec<u32> = hi.iter().chain(li.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (10..410).collect::<Vec<_>>());
    for &i in &hi {
        assert_eq!(call_kind(&ledger, run.id(), st.id(), i), "http");
    }
    for &i in &li {
        assert_eq!(call_kind(&ledger, run.id(), st.id(), i), "llm");
    }

    // A retry is a new state (attempt 2) whose indices start at 0 for both clients.
    st.close(
        StateResult::Failed {
            error: "429".into(),
            retryable: true,
        },
        5,
    )
    .unwrap();
    let retry = run
        .open_state(st.id().subject.clone(), n("map"), inputs[0])
        .unwrap();
    assert_eq!(retry.attempt(), 2);
    let http2 = HttpClient {
        state: retry.clone(),
    };
    let llm2 = LlmClient {
        state: retry.clone(),
        model: "gpt-x",
    };
    assert_eq!(llm2.complete("again").unwrap().index, 0);
    assert_eq!(http2.get("/again").unwrap().index, 1);

    // A client that kept the failed attempt's handle cannot record on it.
    let stale = HttpClient { state: st.clone() };
    let before = snapshot(&ledger);
    let err = stale.get("/late").unwrap_err();
    assert_eq!(rule_of(&err), (Rule::CallIndices, "CALL_ON_CLOSED_STATE"));
    assert_eq!(snapshot(&ledger), before, "a refused call leaves no trace");

    retry
        .close(StateResult::Completed { output: inputs[0] }, 5)
        .unwrap();
    run.append(vec![
        Event::TokenOutcome {
            token: TokenId::for_row(0),
            outcome: Outcome::Completed {
                write: SinkWrite {
                    sink: n("out"),
                    ordinal: 0,
                },
            },
        },
        Event::RunFinished {
            status: FinalStatus::Completed,
        },
    ])
    .unwrap();
    assert_verifies(&ledger, run.id());
}

/// Seed 003: a batch's per-row "state ids" that no node state has cannot be used. The only
/// way to a state is one that was opened; calls a batch state makes for its members name
/// the members in `served`.
#[test]
fn synthetic_state_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = start(&ledger, "synthetic");
    register(
        &run,
        &[
            ("src", NodeKind::Source),
            ("agg", NodeKind::Aggregation),
            ("out", NodeKind::Sink),
        ],
    );
    let batch = BatchId::for_node(&n("agg"), 0);
    let mut commit = Commit::new();
    commit.push(Event::BatchOpened {
        batch: batch.clone(),
        node: n("agg"),
    });
    for row in 0..3u64 {
        let payload = commit.payload(format!("row {row}").into_bytes());
        commit.push(Event::RowIngested {
            row,
            source: n("src"),
            payload,
        });
        commit.push(Event::BatchMemberAdded {
            batch: batch.clone(),
            token: TokenId::for_row(row),
            ordinal: row as u32,
        });
    }
    let input = commit.payload(b"batch input".to_vec());
    run.submit(commit, Durability::Buffered).unwrap();
    let batch_state = run
        .open_state(Subject::Batch(batch.clone()), n("agg"), input)
        .unwrap();

    let synthetic = [
        // Per-row states the batch never opened (the ELSPETH defect).
        (
            StateId {
                subject: Subject::Token(TokenId::for_row(0)),
                node: n("agg"),
                attempt: 1,
            },
            "DANGLING_STATE",
        ),
        // An attempt of the real batch state that was never opened.
        (
            StateId {
                subject: Subject::Batch(batch.clone()),
                node: n("agg"),
                attempt: 2,
            },
            "DANGLING_STATE",
        ),
        // The right subject at another node.
        (
            StateId {
                subject: Subject::Batch(batch.clone()),
                node: n("out"),
                attempt: 1,
            },
            "DANGLING_STATE",
        ),
        // Subjects that do not exist at all.
        (
            StateId {
                subject: Subject::Token(TokenId::new("t0-row-state").unwrap()),
                node: n("agg"),
                attempt: 1,
            },
            "DANGLING_SUBJECT",
        ),
        (
            StateId {
                subject: Subject::Batch(BatchId::for_node(&n("agg"), 7)),
                node: n("agg"),
                attempt: 1,
            },
            "DANGLING_SUBJECT",
        ),
    ];
    for (id, code) in &synthetic {
        let before = snapshot(&ledger);
        let err = run
            .state_handle(id.clone())
            .allocate_call("http", b"GET /".to_vec(), Some(TokenId::for_row(0)))
            .unwrap_err();
        assert_eq!(rule_of(&err), (Rule::References, *code), "state {id}");
        // The same reference submitted as a ready-made event is refused by the rules too.
        let err = run
            .submit(
                Commit::new().event(Event::CallAllocated {
                    state: id.clone(),
                    index: 0,
                    kind: "http".into(),
                    request: Hash32::ZERO,
                    served: None,
                }),
                Durability::Buffered,
            )
            .unwrap_err();
        assert_eq!(rule_of(&err).0, Rule::References, "state {id}: {err}");
        assert_eq!(snapshot(&ledger), before, "state {id}: nothing written");
    }

    // The real batch state records calls for its members, and only for its members.
    for row in 0..3u64 {
        let call = batch_state
            .allocate_call(
                "llm",
                format!("for row {row}").into_bytes(),
                Some(TokenId::for_row(row)),
            )
            .unwrap();
        assert_eq!(call.index, row as u32);
    }
    let err = batch_state
        .allocate_call("llm", b"x".to_vec(), Some(TokenId::new("t9").unwrap()))
        .unwrap_err();
    assert_eq!(rule_of(&err).0, Rule::References);
    batch_state
        .close(StateResult::Completed { output: input }, 1)
        .unwrap();
    let err = batch_state
        .allocate_call("llm", b"late".to_vec(), Some(TokenId::for_row(0)))
        .unwrap_err();
    assert_eq!(rule_of(&err), (Rule::CallIndices, "CALL_ON_CLOSED_STATE"));

    let mut end = vec![Event::BatchCompleted {
        batch,
        trigger: "count".into(),
        state: batch_state.id().clone(),
        outputs: BatchOutputs::Passthrough,
    }];
    for row in 0..3u64 {
        end.push(written_to_out(row));
    }
    end.push(Event::RunFinished {
        status: FinalStatus::Completed,
    });
    run.append(end).unwrap();
    assert_verifies(&ledger, run.id());
}

/// Threads allocating while the state is closed under them: every allocation either got
/// an index below the state's final count, recorded before the close, or was refused with
/// CALL_ON_CLOSED_STATE; nothing lands after the close.
#[test]
fn no_call_lands_on_a_state_after_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let run = start(&ledger, "closing");
    nodes(&run);
    let (states, inputs) = open_states(&run, 1);
    let st = states[0].clone();
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let st = st.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut got = Vec::new();
                // Until the state closes: each thread stops at its first refusal. The bound
                // only turns a ledger that never refuses into a failure instead of a hang.
                for i in 0..5_000 {
                    match st.allocate_call("http", format!("{t}/{i}").into_bytes(), None) {
                        Ok(call) => got.push(call.index),
                        Err(e) => {
                            assert_eq!(rule_of(&e), (Rule::CallIndices, "CALL_ON_CLOSED_STATE"));
                            return got;
                        }
                    }
                }
                panic!("thread {t}: calls were still accepted after the state closed")
            })
        })
        .collect();
    barrier.wait();
    // Let the workers get going by allocating a few calls here too, then close.
    for _ in 0..20 {
        st.allocate_call("http", b"main".to_vec(), None).unwrap();
    }
    let closed = st
        .close(StateResult::Completed { output: inputs[0] }, 1)
        .unwrap();
    let mut all: Vec<u32> = Vec::new();
    for w in workers {
        all.extend(w.join().unwrap());
    }
    let rec = token(&ledger, run.id(), &TokenId::for_row(0)).unwrap();
    let n_calls = rec.states[0].calls;
    assert_eq!(all.len() + 20, n_calls as usize);
    for i in 0..n_calls {
        match proj(&ledger, run.id(), &PKey::Call(st.id().clone(), i)) {
            Some(PVal::Call(c)) => assert!(c.allocated_seq < closed.first_seq),
            other => panic!("call {i}: {other:?}"),
        }
    }
    assert!(proj(&ledger, run.id(), &PKey::Call(st.id().clone(), n_calls)).is_none());
    assert_verifies(&ledger, run.id());
}

/// Commit groups mix runs: threads of four runs allocating at once must not disturb one
/// another's chains or counters.
#[test]
fn runs_sharing_the_writer_stay_separate() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let runs: Vec<(RunHandle, StateHandle)> = (0..4)
        .map(|r| {
            let run = start(&ledger, &format!("multi-{r}"));
            nodes(&run);
            let (states, _) = open_states(&run, 1);
            (run, states[0].clone())
        })
        .collect();
    let barrier = Arc::new(Barrier::new(8));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let st = runs[t % 4].1.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                (0..100)
                    .map(|i| {
                        st.allocate_call("http", format!("{t}/{i}").into_bytes(), None)
                            .unwrap()
                            .index
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut per_run: Vec<Vec<u32>> = vec![Vec::new(); 4];
    for (t, w) in workers.into_iter().enumerate() {
        per_run[t % 4].extend(w.join().unwrap());
    }
    for (r, (run, _)) in runs.iter().enumerate() {
        per_run[r].sort_unstable();
        assert_eq!(per_run[r], (0..200).collect::<Vec<_>>(), "run {r}");
        let report = assert_verifies(&ledger, run.id());
        // run_started, node registrations, ingest + open, and 200 calls.
        assert_eq!(report.events, 1 + 3 + 2 + 200);
    }
}
