//! `fake-llm`: the local OpenAI-compatible server of `attest_tests::fake_llm`, for the
//! examples and benchmarks.
//!
//! ```text
//! fake-llm [--port N] [--latency-ms N] [--answer echo|sentiment]
//!          [--fail-first N:FAULT] [--fail-every N:FAULT]
//! ```
//!
//! FAULT is a status (`429`, `503`, `529`, `500`, ...), `hang`, `reset`, `malformed`,
//! `html` or `truncated`. It serves on 127.0.0.1 until killed and prints its base URL.

use attest_tests::fake_llm::{Answering, FakeLlm, Fault};
use std::time::Duration;

fn usage(problem: &str) -> ! {
    eprintln!(
        "fake-llm: {problem}\nusage: fake-llm [--port N] [--latency-ms N] [--answer echo|sentiment] \
         [--fail-first N:FAULT] [--fail-every N:FAULT]"
    );
    std::process::exit(2)
}

fn count_and_fault(v: &str) -> (u64, Fault) {
    let (n, f) = v
        .split_once(':')
        .unwrap_or_else(|| usage(&format!("{v:?}: expected N:FAULT")));
    let n = n
        .parse()
        .unwrap_or_else(|_| usage(&format!("{n:?} is not a count")));
    let f = Fault::parse(f).unwrap_or_else(|| usage(&format!("{f:?} is not a fault")));
    (n, f)
}

fn main() {
    let mut port = 0u16;
    let mut latency = 0u64;
    let mut answering = Answering::Echo;
    let mut first = Vec::new();
    let mut every = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--latency-ms" => {
                latency = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --latency-ms"))
            }
            "--answer" => {
                answering = match value().as_str() {
                    "echo" => Answering::Echo,
                    "sentiment" => Answering::Sentiment,
                    other => usage(&format!("unknown answer mode {other:?}")),
                }
            }
            "--fail-first" => first.push(count_and_fault(&value())),
            "--fail-every" => every = Some(count_and_fault(&value())),
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown option {other:?}")),
        }
    }
    let server = FakeLlm::bind(&format!("127.0.0.1:{port}"), answering)
        .unwrap_or_else(|e| usage(&format!("cannot listen on 127.0.0.1:{port}: {e}")));
    server.set_latency(Duration::from_millis(latency));
    for (n, f) in first {
        server.fail_next(n as usize, f);
    }
    if let Some((n, f)) = every {
        server.fail_every(n, f);
    }
    println!("fake-llm listening on {}", server.url());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
