//! The `llm` transform through the binary: the sentiment example against the local fake
//! server, its output bytes, `attest replay --verify-only`, and the call in lineage.

use attest_tests::fake_llm::{Answering, FakeLlm};
use attest_tests::{json_success, Scratch};
use serde_json::Value;

#[test]
fn the_sentiment_example_runs_against_the_local_server() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let s = Scratch::new();
    let summary = run_named(&s, "llm-sentiment", &server);
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
    let (code, report) = s.replay_json(&["--run", run, "--verify-only"]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true);
    assert_eq!(server.requests(), 6, "verification sends nothing");

    // The first complaint's lineage shows its own call: the prompt it sent, the answer.
    let l = s.lineage_json(&["--output", "complaints:0"]);
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

/// Runs `examples/NAME/pipeline.yaml` against `server` through the binary.
fn run_named(s: &Scratch, name: &str, server: &FakeLlm) -> Value {
    json_success(
        s.attest()
            .args(["run", &format!("examples/{name}/pipeline.yaml"), "--json"])
            .env("LLM_BASE_URL", server.url())
            .env("OPENROUTER_API_KEY", "sk-or-e2e-secret-0451")
            .env_remove("LLM_MODEL"),
    )
}

/// Multi-query: both questions about a review are asked under the row's one state, their
/// typed answers added query by query; the output bytes are fixed.
#[test]
fn the_multi_query_example_asks_each_row_its_questions_under_one_state() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let s = Scratch::new();
    let summary = run_named(&s, "llm-multi-query", &server);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["sinks"]["output"], 4);
    assert_eq!(summary["sinks"]["complaints"], 2);
    assert_eq!(server.requests(), 12);
    let header = "id,product,review,sentiment_label,sentiment_score,sentiment_answer,\
                  sentiment_answer_usage,sentiment_answer_model,pleased_verdict,pleased_answer,\
                  pleased_answer_usage,pleased_answer_model\r\n";
    assert_eq!(
        s.read("out/llm-multi-query/complaints.csv"),
        format!(
            "{header}\
             2,toaster,Terrible. It broke after a week and I want a refund.,negative,-2,\
             \"{{\"\"label\"\":\"\"negative\"\",\"\"score\"\":-2}}\",\
             \"{{'prompt_tokens': 27, 'completion_tokens': 1}}\",openai/gpt-4o-mini,False,\
             \"{{\"\"verdict\"\":false}}\",\"{{'prompt_tokens': 35, 'completion_tokens': 1}}\",\
             openai/gpt-4o-mini\r\n\
             5,fan,Too slow and the noise is awful.,negative,-2,\
             \"{{\"\"label\"\":\"\"negative\"\",\"\"score\"\":-2}}\",\
             \"{{'prompt_tokens': 23, 'completion_tokens': 1}}\",openai/gpt-4o-mini,False,\
             \"{{\"\"verdict\"\":false}}\",\"{{'prompt_tokens': 31, 'completion_tokens': 1}}\",\
             openai/gpt-4o-mini\r\n"
        )
    );
    let l = s.lineage_json(&["--row", "0"]);
    let grade = l["tokens"][0]["states"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["node"] == "grade")
        .unwrap();
    assert_eq!(grade["state"], "t0@grade#1");
    let calls = grade["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    for (i, (call, query)) in calls.iter().zip(["sentiment", "pleased"]).enumerate() {
        assert_eq!(call["index"], i);
        let format = &call["request"]["body"]["json"]["response_format"];
        assert_eq!(format["json_schema"]["name"], format!("{query}_output"));
    }
    assert_eq!(grade["pool"]["capacity_retries"], 0);
}

/// `llm_batch`: a batch's rows are sent under the batch's one state, and lineage for a
/// member row, by row and by output, shows that row's own call only.
#[test]
fn the_llm_batch_example_records_each_rows_call_under_the_batch_state() {
    let server = FakeLlm::bind("127.0.0.1:0", Answering::Sentiment).unwrap();
    let s = Scratch::new();
    let summary = run_named(&s, "llm-batch", &server);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["sinks"]["output"], 4);
    assert_eq!(summary["sinks"]["complaints"], 2);
    assert_eq!(server.requests(), 6);
    assert_eq!(
        s.read("out/llm-batch/complaints.csv"),
        "id,product,review,sentiment,sentiment_usage,sentiment_model,sentiment_error\r\n\
         2,toaster,Terrible. It broke after a week and I want a refund.,negative,\"{'prompt_tokens': 31, 'completion_tokens': 1}\",openai/gpt-4o-mini,\r\n\
         5,fan,Too slow and the noise is awful.,negative,\"{'prompt_tokens': 27, 'completion_tokens': 1}\",openai/gpt-4o-mini,\r\n"
    );
    for target in [["--row", "1"], ["--output", "complaints:0"]] {
        let l = s.lineage_json(&target);
        assert_eq!(l["focus"], "t1");
        let batch = &l["batches"][0];
        assert_eq!(batch["batch"], "classify#b0");
        assert_eq!(batch["members"], serde_json::json!(["t0", "t1", "t2"]));
        let state = &batch["states"][0];
        assert_eq!(state["state"], "classify#b0@classify#1");
        let calls = state["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{target:?}: only row 1's own call");
        assert_eq!(calls[0]["served"], "t1");
        assert_eq!(calls[0]["index"], 1);
        assert_eq!(
            calls[0]["request"]["body"]["json"]["messages"][1]["content"],
            "Product: toaster\nReview: Terrible. It broke after a week and I want a refund."
        );
        assert_eq!(state["other_calls"], 2);
        assert!(state["pool"].is_object());
    }
    let text = s
        .attest()
        .args(["lineage", "--ledger", "out/ledger", "--row", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("call 1 llm for t1: responded 200"), "{text}");
    assert!(
        text.contains("(2 more call(s) of this state served other members)"),
        "{text}"
    );
}
