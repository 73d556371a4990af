//! Resuming runs that crashed while a node was calling out (issue 4, external calls).
//!
//! The crash child (`tests/bin/crash_child.rs`) runs an LLM example against the local fake
//! server and kills itself with SIGKILL at an exact call: `call:N` when the Nth call is
//! about to be sent (its request recorded, never sent), `answer:N` when the Nth call has
//! its answer and before the answer is recorded (the server answered; the ledger does
//! not know). Each test checks the crash left a state open, resumes through the binary,
//! and checks:
//!
//! - the outputs are byte for byte an uninterrupted run's;
//! - the server's request count: only calls that were never answered in the record are
//!   sent again, so the resumed run sends exactly the uninterrupted run's requests, plus
//!   one for a call answered by the server whose answer the crash lost (`answer:N`);
//! - the record says what happened: the open state closed as interrupted, its call with
//!   no answer completed as `interrupted`, the next attempt's answers taken from the
//!   record marked `reused`;
//! - `attest replay --verify-only` and full `attest replay` pass, and replay sends nothing.
//!
//! Workers and pools are set to 1, so that the Nth call is always the same one.

use attest_ledger::{Ledger, RunId};
use attest_tests::crash::{
    assert_same_outputs, crash_child, reference_with, replay_passes, resume_until_done_with,
    CallCounts, Example, Outputs,
};
use attest_tests::fake_llm::{Answering, FakeLlm};
use attest_tests::{Scratch, LEDGER};
use std::path::Path;

/// One worker, one call at a time.
fn sequential(text: String) -> String {
    let text = text
        .replace("pool_size: 4", "pool_size: 1")
        .replace("pool_size: 3", "pool_size: 1");
    format!("{text}\nconcurrency: {{max_workers: 1}}\n")
}

fn sentiment(s: &Scratch) -> Example {
    Example::at(s, "llm-sentiment").edit(s, sequential)
}

fn multi_query(s: &Scratch) -> Example {
    Example::at(s, "llm-multi-query").edit(s, sequential)
}

fn batch(s: &Scratch) -> Example {
    Example::at(s, "llm-batch").edit(s, sequential)
}

/// llm-sentiment with a second calling node after `classify`: each row's first state is
/// closed, with its call answered, before the second one calls out.
fn two_calls(s: &Scratch) -> Example {
    sentiment(s).edit(s, |t| {
        let explain =
            "- name: explain\n  plugin: llm\n  input: labelled\n  on_success: classified\n  \
             on_error: llm_errors\n  options:\n    provider: openrouter\n    \
             base_url: ${LLM_BASE_URL:-http://127.0.0.1:8787/v1}\n    \
             api_key: ${OPENROUTER_API_KEY:-no-key-needed-locally}\n    model: fake\n    \
             template: 'Say why: {{ row.review }}'\n    required_input_fields: [review]\n    \
             response_field: reason\n    \
             pool_size: 1\n    timeout_seconds: 30\n";
        t.replacen("  on_success: classified\n", "  on_success: labelled\n", 1)
            .replace("retry:", &format!("{explain}retry:"))
    })
}

/// The runs of the scratch's ledger with a state open.
fn open_states(s: &Scratch, run: &str) -> u64 {
    let ledger = Ledger::open(s.path().join(LEDGER)).expect("open ledger");
    let rec = ledger
        .run_record(&RunId::new(run).expect("id"))
        .expect("read")
        .expect("run");
    rec.open_states
}

/// `attest replay` (with `--verify-only` if `verify_only`) passes and sends nothing.
fn replays(s: &Scratch, server: &FakeLlm, run: &str, verify_only: bool) {
    let before = server.requests();
    replay_passes(s, run, verify_only, &[("LLM_BASE_URL", &server.url())]);
    assert_eq!(server.requests(), before, "replay sent a request");
}

/// The uninterrupted run of `setup`'s example: its outputs and the requests it sent.
fn reference(setup: fn(&Scratch) -> Example) -> (Outputs, u64) {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).expect("server");
    let (_, outputs) = reference_with(&|s| setup(s), &[("LLM_BASE_URL", &server.url())]);
    (outputs, server.requests())
}

/// Crashes `setup`'s example at `spec`, resumes it, checks outputs, requests and replay;
/// returns what the record says of its calls.
fn crash_and_resume(setup: fn(&Scratch) -> Example, spec: &str, extra_requests: u64) -> CallCounts {
    let (want, requests) = reference(setup);
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).expect("server");
    let url = server.url();
    let s = Scratch::new();
    let ex = setup(&s);
    let child = Path::new(env!("CARGO_BIN_EXE_attest-crash-child"));
    let run = crash_child(&s, child, &ex, spec, &[("LLM_BASE_URL", &url)]);
    assert!(
        open_states(&s, &run) >= 1,
        "{spec}: the crash left no state open"
    );
    let outs = resume_until_done_with(&s, &run, &[("LLM_BASE_URL", &url)]).len();
    assert_eq!(open_states(&s, &run), 0);
    assert_same_outputs(&s, &ex, &want, &format!("{} after {spec}", ex.name));
    assert_eq!(
        server.requests(),
        requests + extra_requests,
        "{} after {spec}: requests sent across the crash and {} resume(s)",
        ex.name,
        outs
    );
    replays(&s, &server, &run, true);
    replays(&s, &server, &run, false);
    CallCounts::read(&s, &run)
}

#[test]
fn a_call_answered_but_not_recorded_is_sent_again() {
    // Row 3's call got its answer and the process died before recording it: nobody can
    // tell it was answered, so the resume sends it again, once.
    let c = crash_and_resume(sentiment, "answer:3", 1);
    assert_eq!(c.interrupted_states, 1, "{c:?}");
    assert_eq!(c.interrupted, 1, "{c:?}");
    assert_eq!(c.reused, 0, "{c:?}");
    assert_eq!(c.answered, 6, "{c:?}");
    assert_eq!(c.allocated, 7, "{c:?}");
}

#[test]
fn a_call_recorded_but_not_sent_is_sent_once() {
    // Row 3's request was recorded and the process died before sending it. The record
    // cannot say it was not sent: its completion says `interrupted`, and the next attempt
    // sends it. The server sees it once.
    let c = crash_and_resume(sentiment, "call:3", 0);
    assert_eq!(c.interrupted_states, 1, "{c:?}");
    assert_eq!(c.interrupted, 1, "{c:?}");
    assert_eq!(c.reused, 0, "{c:?}");
    assert_eq!(c.answered, 6, "{c:?}");
}

#[test]
fn a_state_answered_in_part_takes_its_recorded_answers() {
    // Row 0's two queries are two calls of one state: the first answered and recorded,
    // the process dies about to send the second. The next attempt takes the first answer
    // from the record (marked reused) and sends only the second.
    let c = crash_and_resume(multi_query, "call:2", 0);
    assert_eq!(c.interrupted_states, 1, "{c:?}");
    assert_eq!(c.interrupted, 1, "{c:?}");
    assert_eq!(c.reused, 1, "{c:?}");
    assert_eq!(c.answered, 12, "{c:?}");
}

#[test]
fn an_earlier_state_of_the_row_is_answered_from_the_record() {
    // Row 0's `classify` closed with its call answered; the process dies as `explain`
    // calls out. The resume runs `classify` again from the record, sending nothing, and
    // `explain` as attempt 2.
    let c = crash_and_resume(two_calls, "call:2", 0);
    assert_eq!(c.interrupted_states, 1, "{c:?}");
    assert_eq!(c.reused, 0, "{c:?}");
    assert_eq!(c.answered, 12, "{c:?}");
}

#[test]
fn a_batch_state_resumes_with_its_recorded_answers() {
    // llm_batch: the batch of rows 0-2 is one state, calling for each member (all three
    // calls are recorded before the first is sent); the second member's call is about to
    // go out. The batch's state, its members and the batch were sent before the
    // checkpoint (to record the state before its calls); the resumed run repeats them
    // against the record, closes the state as interrupted (two calls without an answer),
    // and processes the batch as attempt 2, taking the first member's answer from the
    // record and sending the other two.
    let c = crash_and_resume(batch, "call:2", 0);
    assert_eq!(c.interrupted_states, 1, "{c:?}");
    assert_eq!(c.interrupted, 2, "{c:?}");
    assert_eq!(c.reused, 1, "{c:?}");
    assert_eq!(c.answered, 6, "{c:?}");
}

#[test]
fn a_batch_call_answered_but_not_recorded_is_sent_again() {
    // The second batch's second call was answered, the answer lost: sent again; its
    // first call's answer is taken from the record; its third was never sent.
    let c = crash_and_resume(batch, "answer:5", 1);
    assert_eq!(c.interrupted_states, 1, "{c:?}");
    assert_eq!(c.interrupted, 2, "{c:?}");
    assert_eq!(c.reused, 1, "{c:?}");
    assert_eq!(c.answered, 6, "{c:?}");
}
