//! The `llm` transform through the binary: the sentiment example against the local fake
//! server, its output bytes, `attest replay --verify-only`, and the call in lineage.

use attest_tests::fake_llm::{Answering, FakeLlm};
use attest_tests::Scratch;
use serde_json::Value;

const PIPELINE: &str = "examples/llm-sentiment/pipeline.yaml";

fn run_example(s: &Scratch, server: &FakeLlm) -> Value {
    let out = s
        .attest()
        .args(["run", PIPELINE, "--json"])
        .env("LLM_BASE_URL", server.url())
        .env("OPENROUTER_API_KEY", "sk-or-e2e-secret-0451")
        .env_remove("LLM_MODEL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_sentiment_example_runs_against_the_local_server() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let s = Scratch::new();
    let summary = run_example(&s, &server);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["rows"], 6);
    assert_eq!(summary["sinks"]["output"], 4);
    assert_eq!(summary["sinks"]["complaints"], 2);
    assert_eq!(summary["sinks"]["llm_errors"], 0);
    assert_eq!(server.requests(), 6);
    assert_eq!(
        server.credentials(),
        vec!["Bearer sk-or-e2e-secret-0451".to_string(); 6]
    );
    assert_eq!(
        s.read("out/llm-sentiment/reviews.csv"),
        "id,product,review,sentiment,sentiment_usage,sentiment_model\r\n\
         1,kettle,I love it: it boils fast and looks great.,positive,\"{'prompt_tokens': 29, 'completion_tokens': 1}\",openai/gpt-4o-mini\r\n\
         3,lamp,It is a lamp. It gives light.,neutral,\"{'prompt_tokens': 27, 'completion_tokens': 1}\",openai/gpt-4o-mini\r\n\
         4,blender,Best blender I have owned; I recommend it.,positive,\"{'prompt_tokens': 28, 'completion_tokens': 1}\",openai/gpt-4o-mini\r\n\
         6,mug,Holds coffee.,neutral,\"{'prompt_tokens': 22, 'completion_tokens': 1}\",openai/gpt-4o-mini\r\n"
    );
    assert_eq!(
        s.read("out/llm-sentiment/complaints.csv"),
        "id,product,review,sentiment,sentiment_usage,sentiment_model\r\n\
         2,toaster,Terrible. It broke after a week and I want a refund.,negative,\"{'prompt_tokens': 31, 'completion_tokens': 1}\",openai/gpt-4o-mini\r\n\
         5,fan,Too slow and the noise is awful.,negative,\"{'prompt_tokens': 27, 'completion_tokens': 1}\",openai/gpt-4o-mini\r\n"
    );

    let run = summary["run_id"].as_str().unwrap();
    let replay = s
        .attest()
        .args([
            "replay",
            "--ledger",
            "out/ledger",
            "--run",
            run,
            "--verify-only",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        replay.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replay.stdout)
    );
    let report: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(server.requests(), 6, "verification sends nothing");

    // The first complaint's lineage shows its own call: the prompt it sent, the answer.
    let out = s
        .attest()
        .args([
            "lineage",
            "--ledger",
            "out/ledger",
            "--output",
            "complaints:0",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states = l["tokens"][0]["states"].as_array().unwrap();
    let classify = states.iter().find(|s| s["node"] == "classify").unwrap();
    let call = &classify["calls"][0];
    assert_eq!(call["kind"], "llm");
    assert_eq!(call["status"], "responded");
    assert_eq!(call["http_status"], 200);
    assert_eq!(
        call["request"]["body"]["json"]["messages"][1]["content"],
        "Product: toaster\nReview: Terrible. It broke after a week and I want a refund."
    );
    assert_eq!(call["request"]["headers"][0][1], "<redacted>");
    let body: Value =
        serde_json::from_str(call["response"]["body"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "negative");

    // The key never reached the ledger, and the recorded configuration keeps `${...}`.
    for entry in walk(&s.path().join("out/ledger")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(10).any(|w| w == b"e2e-secret"),
            "the key is in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
