//! The sinks re-execution writes to: the pipeline's own CSV and JSON sinks, so the bytes
//! are made by the same code, but writing into a scratch directory instead of the
//! configured paths. Their artifacts' hashes, sizes and row counts are what is compared.

use crate::config::{Headers, PipelineConfig, WriteMode};
use crate::run::io::RowSink;
use attest_ledger::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Sinks writing into a scratch directory.
pub(crate) struct ScratchSinks {
    /// In the configuration's order.
    pub sinks: Vec<Box<dyn RowSink>>,
    /// Sinks whose bytes cannot be reproduced from the record (only their row counts are
    /// compared): append mode (the file held content from before the run) and
    /// `headers: original` (the source's header text is not in the record).
    pub rows_only: HashSet<NodeId>,
    /// (scratch path, configured path) of each sink: a sink's errors name its file, and
    /// the record names the configured one.
    pub paths: Vec<(String, String)>,
}

pub(crate) fn open(config: &PipelineConfig, dir: &Path) -> Result<ScratchSinks, String> {
    let mut scratch = config.clone();
    let mut rows_only = HashSet::new();
    let mut paths = Vec::new();
    for (i, sink) in scratch.sinks.iter_mut().enumerate() {
        // Sink names are node ids: no NUL, but they may hold `/`.
        let name: String = sink
            .name
            .value
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("{i}-{name}")).display().to_string();
        paths.push((path.clone(), sink.options.path.value.clone()));
        sink.options.path.value = path;
        let original = matches!(sink.options.headers, Headers::Original);
        if original || sink.options.mode == WriteMode::Append {
            if let Ok(id) = NodeId::new(sink.name.value.clone()) {
                rows_only.insert(id);
            }
            sink.options.mode = WriteMode::Write;
        }
    }
    let sinks = crate::open::open_sinks(&scratch, &BTreeMap::new())?;
    // Longest first, so that no path is replaced inside a longer one.
    paths.sort_by_key(|(scratch, _)| std::cmp::Reverse(scratch.len()));
    Ok(ScratchSinks {
        sinks,
        rows_only,
        paths,
    })
}
