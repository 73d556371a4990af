//! Opening a pipeline's source and sinks from its configuration, as the executor's
//! [`RowSource`] and [`RowSink`]. Errors name the file and say what is wrong.

use crate::config::{self, PipelineConfig, SinkFormat, SourceFormat};
use crate::formats;
use crate::run::io::{
    ArtifactInfo, Quarantine, RowSink, RowSource, RowWriteError, SinkIoError, SinkPosition,
    SourceError, SourceRecord, WriteError,
};
use crate::value::{Row, Value};
use attest_ledger::Hash32;
use std::collections::BTreeMap;

pub(crate) fn schema(s: &config::Schema) -> formats::Schema {
    formats::Schema {
        mode: s.mode,
        fields: s
            .fields
            .iter()
            .map(|f| formats::FieldSpec::new(f.name.clone(), f.ty, f.optional))
            .collect(),
    }
}

fn check_encoding(what: &str, path: &str, encoding: &str) -> Result<(), String> {
    let e = encoding.to_ascii_lowercase().replace('_', "-");
    if e == "utf-8" || e == "utf8" {
        Ok(())
    } else {
        Err(format!(
            "{what} {path}: encoding {encoding:?} is not supported; attest reads and writes utf-8"
        ))
    }
}

/// Wraps a formats source iterator.
struct Source<I> {
    inner: I,
    /// CSV column names: raw cells are recorded as `{name: cell}` when they line up, so a
    /// person reading lineage sees which value is which. A ragged row stays a list.
    names: Option<Vec<String>>,
}

impl<I> RowSource for Source<I>
where
    I: Iterator<Item = Result<formats::SourceRecord, formats::SourceError>> + Send,
{
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        let rec = match self.inner.next()? {
            Ok(r) => r,
            Err(e) => return Some(Err(SourceError(e.to_string()))),
        };
        let raw = match rec.raw {
            formats::RawRecord::Cells(cells) => match &self.names {
                Some(names) if names.len() == cells.len() => Value::Object(
                    names
                        .iter()
                        .cloned()
                        .zip(cells.into_iter().map(Value::String))
                        .collect(),
                ),
                _ => Value::Array(cells.into_iter().map(Value::String).collect()),
            },
            formats::RawRecord::Json(v) => v,
            formats::RawRecord::Text(t) => Value::String(t),
        };
        let parsed = match rec.outcome {
            formats::Outcome::Valid(row) => Ok(row),
            formats::Outcome::Quarantined { row, error } => Err(Quarantine { row, error }),
        };
        Some(Ok(SourceRecord { raw, parsed }))
    }
}

enum SinkKind {
    Csv(formats::CsvSink),
    Json(formats::JsonSink),
}

struct Sink {
    inner: SinkKind,
}

/// The executor names the sink when it reports either error; naming it here too printed
/// "sink output: sink output: ..." (found by the bad-input matrix).
fn row_or_io(e: formats::SinkError) -> Result<RowWriteError, SinkIoError> {
    if e.is_row_error() {
        Ok(RowWriteError(e.to_string()))
    } else {
        Err(SinkIoError(e.to_string()))
    }
}

impl RowSink for Sink {
    fn write_row(&mut self, row: &Row) -> Result<(), WriteError> {
        let r = match &mut self.inner {
            SinkKind::Csv(s) => s.write_row(row),
            SinkKind::Json(s) => s.write_row(row),
        };
        r.map_err(|e| match row_or_io(e) {
            Ok(row) => WriteError::Row(row),
            Err(io) => WriteError::Io(io),
        })
    }

    fn flush_durable(&mut self) -> Result<SinkPosition, SinkIoError> {
        let p = match &mut self.inner {
            SinkKind::Csv(s) => s.flush_durable(),
            SinkKind::Json(s) => s.flush_durable(),
        }
        .map_err(|e| SinkIoError(e.to_string()))?;
        Ok(SinkPosition {
            bytes: p.bytes,
            rows: p.rows,
        })
    }

    fn finish(self: Box<Self>) -> Result<Option<ArtifactInfo>, SinkIoError> {
        let info = match self.inner {
            SinkKind::Csv(s) => s.finish(),
            SinkKind::Json(s) => s.finish(),
        }
        .map_err(|e| SinkIoError(e.to_string()))?;
        Ok(info.map(|a| ArtifactInfo {
            path: a.path.display().to_string(),
            content_hash: Hash32(a.content_hash),
            size: a.size,
            rows: a.rows,
        }))
    }
}

/// A pipeline's opened source and sinks (in the configuration's sink order).
pub type Opened = (Box<dyn RowSource>, Vec<Box<dyn RowSink>>);

/// Opens the source (reading its header, so a missing or unreadable file is reported
/// before the run starts) and prepares the sinks (which create their files only when the
/// first row arrives).
pub fn open(config: &PipelineConfig) -> Result<Opened, String> {
    let src = &config.source;
    let path = src.options.path.value.clone();
    check_encoding("source", &path, &src.options.encoding)?;
    let mut original_names = BTreeMap::new();
    let source: Box<dyn RowSource> = match &src.options.format {
        SourceFormat::Csv(o) => {
            let mut opts = formats::CsvSourceOptions::new(&path, schema(&src.options.schema));
            opts.delimiter = o.delimiter;
            opts.skip_rows = o.skip_rows;
            opts.columns = o.columns.clone();
            opts.field_mapping = o.field_mapping.clone();
            let s = formats::CsvSource::open(opts).map_err(|e| format!("source: {e}"))?;
            original_names = s.headers().original_names();
            let names = Some(s.headers().names());
            Box::new(Source { inner: s, names })
        }
        SourceFormat::Json(o) => {
            let mut opts = formats::JsonSourceOptions::new(&path, schema(&src.options.schema));
            opts.format = Some(match o.format {
                config::JsonFormat::Json => formats::JsonFormat::Array,
                config::JsonFormat::Jsonl => formats::JsonFormat::Lines,
            });
            opts.data_key = o.data_key.clone();
            Box::new(Source {
                inner: formats::JsonSource::open(opts).map_err(|e| format!("source: {e}"))?,
                names: None,
            })
        }
    };
    Ok((source, open_sinks(config, &original_names)?))
}

/// Prepares the pipeline's sinks (in the configuration's sink order); `original_names` maps
/// source fields to their header text, for `headers: original`.
pub fn open_sinks(
    config: &PipelineConfig,
    original_names: &BTreeMap<String, String>,
) -> Result<Vec<Box<dyn RowSink>>, String> {
    let mut sinks: Vec<Box<dyn RowSink>> = Vec::new();
    for s in &config.sinks {
        let o = &s.options;
        check_encoding("sink", &o.path.value, &o.encoding)?;
        // Output directories are created as needed (the file itself only with its first
        // row); a directory that cannot be created is reported before the run starts.
        if let Some(dir) = std::path::Path::new(&o.path.value)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                // The OS says "File exists" when a file stands where a directory must be.
                let why = match e.kind() {
                    std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                        "part of that path exists and is not a directory".to_string()
                    }
                    _ => e.to_string(),
                };
                format!(
                    "sink {}: cannot create directory {} for {}: {why}",
                    s.name.value,
                    dir.display(),
                    o.path.value
                )
            })?;
        }
        let headers = match &o.headers {
            config::Headers::Normalized => formats::HeaderMode::Normalized,
            config::Headers::Original => formats::HeaderMode::Original(original_names.clone()),
            config::Headers::Custom(m) => formats::HeaderMode::Custom(m.iter().cloned().collect()),
        };
        let mode = match o.mode {
            config::WriteMode::Write => formats::WriteMode::Write,
            config::WriteMode::Append => formats::WriteMode::Append,
        };
        let fail = |e: formats::SinkError| format!("sink {}: {e}", s.name.value);
        let inner = match &o.format {
            SinkFormat::Csv { delimiter } => {
                let mut opts = formats::CsvSinkOptions::new(&o.path.value, schema(&o.schema));
                opts.delimiter = *delimiter;
                opts.headers = headers;
                opts.mode = mode;
                SinkKind::Csv(formats::CsvSink::new(opts).map_err(fail)?)
            }
            SinkFormat::Json { format, indent } => {
                let mut opts = formats::JsonSinkOptions::new(&o.path.value, schema(&o.schema));
                opts.format = Some(match format {
                    config::JsonFormat::Json => formats::JsonFormat::Array,
                    config::JsonFormat::Jsonl => formats::JsonFormat::Lines,
                });
                opts.indent = *indent;
                opts.headers = headers;
                opts.mode = mode;
                SinkKind::Json(formats::JsonSink::new(opts).map_err(fail)?)
            }
        };
        sinks.push(Box::new(Sink { inner }));
    }
    Ok(sinks)
}
