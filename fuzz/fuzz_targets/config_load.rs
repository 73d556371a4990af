//! The configuration loader on arbitrary text: YAML parsing, `${VAR}` expansion, decoding
//! of every section and the wiring checks. Every input is a configuration or a list of
//! errors that each name a place — never a panic.
#![no_main]

use attest_engine::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader itself refuses non-UTF-8 files before parsing (`load_with_env`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A few variables are set so both expansion branches run; file references resolve
    // against a directory that does not exist, so nothing outside is read.
    let env = |name: &str| match name {
        "HOME" => Some("/home/fuzz".to_string()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${HOME}".to_string()),
        _ => None,
    };
    match config::parse_str(text, "/nonexistent-fuzz-dir/pipeline.yaml", &env) {
        Ok(cfg) => {
            // A loaded graph must be internally consistent enough to describe.
            let _ = format!("{:?}", cfg.graph.nodes);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an Err must carry at least one error");
            for e in &errors.0 {
                assert!(!e.message.is_empty(), "an error with no message");
            }
        }
    }
});
