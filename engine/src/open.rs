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
    append: bool,
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
            hash: Hash32(p.hash),
        })
    }

    fn position_before_run(&mut self) -> Result<Option<SinkPosition>, SinkIoError> {
        if !self.append {
            return Ok(None);
        }
        // Before the first row, a durable point describes the file as found. Recorded
        // even for an empty or missing file: a resume that finds no position for an
        // append-mode sink knows the run never wrote to it, and leaves the file alone.
        self.flush_durable().map(Some)
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
    let OpenedSource { source, names } = open_source(config)?;
    let sinks = open_sinks(config, &names, None).map_err(|e| e.message)?;
    Ok((source, sinks))
}

/// An opened source, and what its sinks need to know of it.
pub struct OpenedSource {
    pub source: Box<dyn RowSource>,
    pub names: SourceNames,
}

/// Field → the source's original header text, for sinks with `headers: original`.
#[derive(Clone, Debug, Default)]
pub struct SourceNames(BTreeMap<String, String>);

/// Why a sink could not be opened; `changed_outside` when a resumed sink's file no longer
/// holds what the run recorded as durable in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOpenError {
    pub message: String,
    pub changed_outside: bool,
}

/// Opens the source (reading its header).
pub fn open_source(config: &PipelineConfig) -> Result<OpenedSource, String> {
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
    Ok(OpenedSource {
        source,
        names: SourceNames(original_names),
    })
}

/// Prepares the sinks, in configuration order. With `resume`, each sink given a durable
/// point continues from it (`attest resume`): its file must still hold the point's bytes,
/// and a torn tail after them is cut off; a sink given `None` starts as new.
pub fn open_sinks(
    config: &PipelineConfig,
    names: &SourceNames,
    resume: Option<&[Option<formats::DurablePoint>]>,
) -> Result<Vec<Box<dyn RowSink>>, SinkOpenError> {
    let plain = |message: String| SinkOpenError {
        message,
        changed_outside: false,
    };
    if let Some(points) = resume {
        if points.len() != config.sinks.len() {
            return Err(plain(format!(
                "{} durable points for {} sinks",
                points.len(),
                config.sinks.len()
            )));
        }
    }
    let original_names = &names.0;
    let mut sinks: Vec<Box<dyn RowSink>> = Vec::new();
    for (i, s) in config.sinks.iter().enumerate() {
        let o = &s.options;
        let point = resume.and_then(|p| p.get(i)).copied().flatten();
        check_encoding("sink", &o.path.value, &o.encoding).map_err(plain)?;
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
                plain(format!(
                    "sink {}: cannot create directory {} for {}: {why}",
                    s.name.value,
                    dir.display(),
                    o.path.value
                ))
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
        let fail = |e: formats::SinkError| SinkOpenError {
            changed_outside: matches!(e, formats::SinkError::Resume { .. }),
            message: format!("sink {}: {e}", s.name.value),
        };
        let inner = match &o.format {
            SinkFormat::Csv { delimiter } => {
                let mut opts = formats::CsvSinkOptions::new(&o.path.value, schema(&o.schema));
                opts.delimiter = *delimiter;
                opts.headers = headers;
                opts.mode = mode;
                SinkKind::Csv(
                    match point {
                        None => formats::CsvSink::new(opts),
                        Some(p) => formats::CsvSink::open_resume(opts, p),
                    }
                    .map_err(fail)?,
                )
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
                SinkKind::Json(
                    match point {
                        None => formats::JsonSink::new(opts),
                        Some(p) => formats::JsonSink::open_resume(opts, p),
                    }
                    .map_err(fail)?,
                )
            }
        };
        sinks.push(Box::new(Sink {
            inner,
            append: mode == formats::WriteMode::Append,
        }));
    }
    Ok(sinks)
}
