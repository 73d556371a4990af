//! Pipeline configuration: the YAML settings file, read into typed structures.
//!
//! The format is ELSPETH's (see `docs/configuration.md` for every key and each place
//! attest differs). Loading parses the YAML into a tree that remembers line and column
//! (`yaml`), expands `${VAR}` references (`env`), decodes each section by hand into typed
//! structures while collecting every error (`settings` and the per-section modules), and
//! finally resolves and checks the wiring into a [`Graph`] (`graph`).
//!
//! ```no_run
//! let config = attest_engine::config::load("pipeline.yaml")?;
//! for node in &config.graph.nodes {
//!     println!("{:?} {}", node.kind, node.name);
//! }
//! # Ok::<(), attest_engine::config::ConfigErrors>(())
//! ```

mod aggregation;
mod canonical;
mod coalesce;
mod condition;
mod decode;
mod env;
mod error;
mod gate;
mod graph;
mod llm;
mod names;
mod plugins;
mod schema;
pub mod secrets;
mod settings;
mod sink;
mod source;
mod transform;
mod yaml;

use std::path::Path;

pub use aggregation::{
    AggregationConfig, AggregationOptions, BatchReplicateOptions, BatchStatsOptions, OutputMode,
    Trigger,
};
pub use canonical::NodeHashes;
pub use coalesce::{CoalesceBranch, CoalesceConfig, CoalescePolicy, MergeStrategy};
pub use condition::Condition;
pub use env::{expand_str, EnvLookup};
pub use error::{ConfigError, ConfigErrors, ConfigWarning, Loc, Located};
pub use gate::{GateConfig, Route};
pub use graph::{Edge, EdgeLabel, Graph, GraphNode, NodeId, NodeKind};
pub use llm::{
    LlmOptions, LlmProvider, LlmQuery, OutputField, OutputType, PoolOptions, ResponseFormat,
};
pub use names::DISCARD;
pub use plugins::{
    FieldMapperOptions, HttpMethod, HttpOptions, JsonExplodeOptions, KeywordFields,
    KeywordFilterOptions, PassthroughOptions, TruncateOptions,
};
pub use schema::{FieldSpec, FieldType, Schema, SchemaMode};
pub use settings::{ConcurrencyConfig, ConditionOwner, LedgerConfig, PipelineConfig, RetryConfig};
pub use sink::{Headers, SinkConfig, SinkFormat, SinkOptions, SinkPlugin, WriteMode};
pub use source::{
    CsvSourceOptions, JsonFormat, JsonSourceOptions, SourceConfig, SourceFormat, SourceOptions,
    SourcePlugin,
};
pub use transform::{TransformConfig, TransformOptions};

use error::Diagnostics;

/// Loads a settings file, expanding `${VAR}` from the process environment.
pub fn load(path: impl AsRef<Path>) -> Result<PipelineConfig, ConfigErrors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// The node hashes of `text` with its literal secrets removed, as the run records the text
/// (`secrets::redact_text`), when there were any: a secret is never hashed, and a file
/// with a literal key hashes as the configuration its run recorded, which `attest resume`
/// compares. `None` when the text holds no literal secret.
fn redacted_node_hashes(text: &str, config: &PipelineConfig) -> Option<NodeHashes> {
    let redacted = secrets::redact_text(text, &secrets::secrets(config));
    if redacted == text {
        return None;
    }
    let mut d = Diagnostics::new(String::new());
    yaml::parse(&redacted, &mut d).map(|root| canonical::node_hashes(&root))
}

/// Loads a settings file, expanding `${VAR}` through `env`.
pub fn load_with_env(
    path: impl AsRef<Path>,
    env: EnvLookup<'_>,
) -> Result<PipelineConfig, ConfigErrors> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file,
                line: 0,
                column: 0,
                message: format!("cannot read the settings file: {e}"),
            }]));
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => parse_str(&text, path, env),
        Err(e) => {
            // Point at the first byte that is not UTF-8.
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let text = String::from_utf8_lossy(valid);
            let line = text.matches('\n').count() + 1;
            let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Err(ConfigErrors(vec![ConfigError {
                file,
                line,
                column,
                message: "the settings file is not valid UTF-8; expected UTF-8 text".to_string(),
            }]))
        }
    }
}

/// Parses settings from `text`. `file` names the file in messages, and its directory is
/// where `template_file`, `system_prompt_file` and `lookup_file` are read from.
pub fn parse_str(
    text: &str,
    file: impl AsRef<Path>,
    env: EnvLookup<'_>,
) -> Result<PipelineConfig, ConfigErrors> {
    let file = file.as_ref();
    let mut d = Diagnostics::new(file.display().to_string());
    // A byte-order mark is not content (ELSPETH's loader drops it too).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let base_dir = file.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let config = yaml::parse(text, &mut d).and_then(|mut root| {
        // Before expansion: a node's hash covers what the file says, never a variable's
        // value (see `canonical`).
        let node_hashes = canonical::node_hashes(&root);
        env::expand_tree(&mut root, env, &mut d);
        let mut config = settings::parse_pipeline(&root, text, base_dir, &mut d)?;
        config.node_hashes = redacted_node_hashes(text, &config).unwrap_or(node_hashes);
        Some(config)
    });
    let (errors, warnings) = d.finish();
    match config {
        Some(mut config) if errors.is_empty() => {
            config.warnings = warnings;
            Ok(config)
        }
        _ if errors.is_empty() => Err(ConfigErrors(vec![ConfigError {
            file: file.display().to_string(),
            line: 1,
            column: 1,
            message: "the configuration could not be read (no specific error was recorded)"
                .to_string(),
        }])),
        _ => Err(ConfigErrors(errors)),
    }
}
