//! The `llm` pool options at load time (issue 7, ELSPETH seed 002): every rule refused
//! with an error naming its key at its file:line:col, and the loader and the executor's own
//! [`PoolConfig`] agreeing on every input, so neither can accept what the other refuses.
//! The base cases (one per rule) are in `config_errors.rs`; these cover the rest.

use attest_engine::config::*;
use attest_engine::pool::PoolConfig;
use proptest::prelude::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// An `llm` transform whose options end with `pool` (lines from 16, indented by 4).
fn pipeline(pool: &str) -> String {
    format!(
        "source:
  plugin: csv
  on_success: a
  options: {{path: in.csv, schema: {{mode: observed}}, on_validation_failure: discard}}
transforms:
- name: t
  plugin: llm
  input: a
  on_success: out
  on_error: discard
  options:
    provider: openrouter
    model: m
    api_key: k
    template: hi
{pool}sinks:
  out: {{plugin: csv, options: {{path: out.csv}}}}
"
    )
}

fn load(pool: &str) -> Result<PoolOptions, Vec<ConfigError>> {
    match parse_str(&pipeline(pool), "p.yaml", &no_env) {
        Ok(config) => match &config.transforms[0].options {
            TransformOptions::Llm(llm) => Ok(llm.pool.clone()),
            other => panic!("not an llm transform: {other:?}"),
        },
        Err(e) => Err(e.0),
    }
}

/// Exactly one error, at `(line, column)`, containing `needle`.
#[track_caller]
fn refused(pool: &str, line: usize, column: usize, needle: &str) {
    let errors = load(pool).expect_err("the pool options loaded");
    let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{}", shown.join("\n"));
    let e = &errors[0];
    assert_eq!(
        (e.file.as_str(), e.line, e.column),
        ("p.yaml", line, column),
        "{e}"
    );
    assert!(e.message.contains(needle), "message lacks {needle:?}: {e}");
}

#[test]
fn rules_beyond_the_base_cases() {
    refused(
        "    backoff_multiplier: .inf\n",
        16,
        25,
        "`backoff_multiplier` must be a finite number",
    );
    refused(
        "    backoff_multiplier: 0.5\n",
        16,
        25,
        "`backoff_multiplier` is 0.5; expected more than 1",
    );
    refused(
        "    backoff_multiplier: fast\n",
        16,
        25,
        "`backoff_multiplier` must be a number",
    );
    refused(
        "    max_capacity_retry_seconds: -1\n",
        16,
        33,
        "`max_capacity_retry_seconds` is -1; expected more than 0",
    );
    refused(
        "    max_capacity_retry_seconds: .inf\n",
        16,
        33,
        "`max_capacity_retry_seconds` must be a finite number",
    );
    refused(
        "    max_dispatch_delay_ms: -5\n",
        16,
        28,
        "`max_dispatch_delay_ms` is -5; expected 0 or more",
    );
    refused(
        "    pool_size: many\n",
        16,
        16,
        "`pool_size` must be an integer",
    );
    // A minimum above the default maximum blames the key that was written.
    refused(
        "    min_dispatch_delay_ms: 6000\n",
        16,
        28,
        "`min_dispatch_delay_ms` (6000) is greater than `max_dispatch_delay_ms` (5000)",
    );
    // So does a maximum below a written minimum, wherever the maximum is.
    refused(
        "    max_dispatch_delay_ms: 10\n    min_dispatch_delay_ms: 20\n",
        17,
        28,
        "`min_dispatch_delay_ms` (20) is greater than `max_dispatch_delay_ms` (10)",
    );
    // A 0 step with an explicit 0 minimum blames the step.
    refused(
        "    min_dispatch_delay_ms: 0\n    recovery_step_ms: 0\n",
        17,
        23,
        "`recovery_step_ms` is 0 while `min_dispatch_delay_ms` is 0",
    );
}

#[test]
fn several_bad_pool_keys_are_all_reported() {
    let errors =
        load("    pool_size: 0\n    backoff_multiplier: 1\n    max_capacity_retry_seconds: 0\n")
            .expect_err("loaded");
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, [(16, 16), (17, 25), (18, 33)], "{errors:?}");
}

#[test]
fn a_pool_that_loads_is_a_pool_the_executor_accepts() {
    let options = load(
        "    pool_size: 16\n    min_dispatch_delay_ms: 10\n    max_dispatch_delay_ms: 2000\n    \
         backoff_multiplier: 1.5\n    recovery_step_ms: 0\n    max_capacity_retry_seconds: 30\n",
    )
    .unwrap();
    let config = PoolConfig::try_from(&options).unwrap();
    assert_eq!(config.pool_size(), 16);
    assert_eq!(config.throttle().min_delay().as_millis(), 10);
    assert_eq!(config.throttle().max_delay().as_millis(), 2000);
    assert_eq!(config.throttle().backoff_multiplier(), 1.5);
    assert_eq!(config.throttle().recovery_step().as_millis(), 0);
    assert_eq!(config.max_capacity_retry().as_secs(), 30);
}

const POOL_KEYS: [&str; 6] = [
    "pool_size",
    "min_dispatch_delay_ms",
    "max_dispatch_delay_ms",
    "backoff_multiplier",
    "recovery_step_ms",
    "max_capacity_retry_seconds",
];

/// A YAML scalar for an integer option: mostly small values around the rules' edges.
fn int_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-2i64..4).prop_map(|v| v.to_string()),
        (0i64..6000).prop_map(|v| v.to_string()),
        Just("1e3".to_string()),
        Just("7.0".to_string()),
    ]
}

fn float_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-2.0f64..4.0).prop_map(|v| format!("{v:?}")),
        Just("1".to_string()),
        Just("1.0".to_string()),
        Just("0".to_string()),
        Just(".inf".to_string()),
        Just("-.inf".to_string()),
        Just(".nan".to_string()),
        Just("1e300".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random pool options, valid and invalid: the loader accepts exactly what
    /// `PoolConfig` accepts, and every refusal names a pool key.
    #[test]
    fn the_loader_and_the_executor_agree(
        values in (
            proptest::option::of(int_value()),
            proptest::option::of(int_value()),
            proptest::option::of(int_value()),
            proptest::option::of(float_value()),
            proptest::option::of(int_value()),
            proptest::option::of(float_value()),
        )
    ) {
        let (a, b, c, d, e, f) = values;
        let mut pool = String::new();
        for (key, value) in POOL_KEYS.iter().zip([a, b, c, d, e, f]) {
            if let Some(v) = value {
                pool.push_str(&format!("    {key}: {v}\n"));
            }
        }
        match load(&pool) {
            Ok(options) => {
                let accepted = PoolConfig::try_from(&options);
                prop_assert!(accepted.is_ok(), "loaded but refused by the executor: {pool}{accepted:?}");
            }
            Err(errors) => {
                for error in &errors {
                    prop_assert!(
                        POOL_KEYS.iter().any(|k| error.message.contains(&format!("`{k}`"))),
                        "an error that names no pool key: {error}"
                    );
                    prop_assert!(error.line >= 16, "not located on a pool key: {error}");
                }
                // The same values the executor would be given, where they can be written
                // at all (a negative integer cannot): the executor refuses them too.
                if let Some(options) = representable(&pool) {
                    prop_assert!(
                        PoolConfig::try_from(&options).is_err(),
                        "refused at load but accepted by the executor: {pool}"
                    );
                }
            }
        }
    }
}

/// The options `pool` would give if the loader took every value as written, or `None`
/// when some value cannot be a `PoolOptions` field (a negative or fractional integer).
fn representable(pool: &str) -> Option<PoolOptions> {
    let mut o = PoolOptions::default();
    for line in pool.lines() {
        let (key, value) = line.trim().split_once(": ")?;
        let float = match value {
            ".inf" => f64::INFINITY,
            "-.inf" => f64::NEG_INFINITY,
            ".nan" => f64::NAN,
            v => v.parse::<f64>().ok()?,
        };
        let int = || (float >= 0.0 && float.fract() == 0.0).then_some(float as u64);
        match key {
            "pool_size" => o.pool_size = int()?,
            "min_dispatch_delay_ms" => o.min_dispatch_delay_ms = int()?,
            "max_dispatch_delay_ms" => o.max_dispatch_delay_ms = int()?,
            "recovery_step_ms" => o.recovery_step_ms = int()?,
            "backoff_multiplier" => o.backoff_multiplier = float,
            "max_capacity_retry_seconds" => o.max_capacity_retry_seconds = float,
            _ => return None,
        }
    }
    Some(o)
}
