//! The `json` sink (ELSPETH-CONFIG §8): JSONL or one JSON array, in Python `json.dump` bytes.
//!
//! JSONL is one compact object per line plus `\n`. Array mode must end with ELSPETH's final
//! bytes — `[{"a": 1}, {"a": 2}]`, no trailing newline — although attest writes rows as they
//! finish. Rather than rewriting the whole file per flush, the array is kept *valid at every
//! durable point*: `flush_durable` writes the closing bracket as the file's provisional
//! tail, and the next row cuts it off again before adding `, {...}`. A resume cuts the file
//! to the durable length, which ends with that bracket, and treats it as the tail again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::json_encode::{encode_value, Indent};
use super::json_source::JsonFormat;
use super::schema::Schema;
use super::sink::{
    point_before_first_row, restore_before_run, ArtifactInfo, DurablePoint, HeaderMode, SinkError,
    SinkFile, WriteMode,
};
use crate::value::Row;

/// Options of the `json` sink (encoding is always utf-8).
#[derive(Clone, Debug)]
pub struct JsonSinkOptions {
    pub path: PathBuf,
    pub schema: Schema,
    /// `None` = `jsonl` iff the path's suffix is `.jsonl`.
    pub format: Option<JsonFormat>,
    /// Array mode only (ELSPETH ignores it for JSONL): `None` compact, `n` spaces per level,
    /// `n <= 0` newlines only.
    pub indent: Option<i64>,
    pub headers: HeaderMode,
    /// `Append` only with JSONL.
    pub mode: WriteMode,
}

impl JsonSinkOptions {
    pub fn new(path: impl Into<PathBuf>, schema: Schema) -> Self {
        JsonSinkOptions {
            path: path.into(),
            schema,
            format: None,
            indent: None,
            headers: HeaderMode::Normalized,
            mode: WriteMode::Write,
        }
    }
}

/// A streaming JSON writer; like the CSV sink it creates its file only with the first row.
pub struct JsonSink {
    opts: JsonSinkOptions,
    format: JsonFormat,
    indent: Option<Indent>,
    file: Option<SinkFile>,
    rows: u64,
    failed: bool,
}

impl JsonSink {
    pub fn new(opts: JsonSinkOptions) -> Result<JsonSink, SinkError> {
        let format = opts
            .format
            .unwrap_or_else(|| JsonFormat::detect(&opts.path));
        if format == JsonFormat::Array && opts.mode == WriteMode::Append {
            return Err(SinkError::Config {
                path: opts.path.clone(),
                message: "mode append needs format jsonl (a JSON array cannot be appended to)"
                    .to_string(),
            });
        }
        Ok(JsonSink {
            indent: Indent::from_option(opts.indent),
            opts,
            format,
            file: None,
            rows: 0,
            failed: false,
        })
    }

    /// Continue from a recorded durable point (see [`DurablePoint`]).
    pub fn open_resume(opts: JsonSinkOptions, point: DurablePoint) -> Result<JsonSink, SinkError> {
        let mut sink = JsonSink::new(opts)?;
        let path = sink.opts.path.clone();
        if point.rows == 0 {
            restore_before_run(&path, sink.opts.mode, point)?;
            return Ok(sink);
        }
        // A durable array ends with its closing bracket, which the next write cut off: it
        // is the file's provisional tail again, cut off by the next row (or kept if none
        // comes).
        let tail = match sink.format {
            JsonFormat::Array => sink.closing(),
            JsonFormat::Lines => String::new(),
        };
        sink.file = Some(SinkFile::resume(&path, point, tail.as_bytes())?);
        sink.rows = point.rows;
        Ok(sink)
    }

    pub fn path(&self) -> &Path {
        &self.opts.path
    }

    pub fn format(&self) -> JsonFormat {
        self.format
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn opening(&self) -> String {
        match self.indent {
            None => "[".to_string(),
            Some(ind) => format!("[{}", ind.newline(1)),
        }
    }

    fn separator(&self) -> String {
        match self.indent {
            None => ", ".to_string(),
            Some(ind) => format!(",{}", ind.newline(1)),
        }
    }

    fn closing(&self) -> String {
        match self.indent {
            None => "]".to_string(),
            Some(ind) => format!("{}]", ind.newline(0)),
        }
    }

    /// Write one row. Row errors leave the sink usable; other errors end it.
    pub fn write_row(&mut self, row: &Row) -> Result<(), SinkError> {
        if self.failed {
            return Err(SinkError::Failed {
                path: self.opts.path.clone(),
            });
        }
        let result = self.write_row_inner(row);
        if matches!(&result, Err(e) if !e.is_row_error()) {
            self.failed = true;
        }
        result
    }

    fn write_row_inner(&mut self, row: &Row) -> Result<(), SinkError> {
        let row_no = self.rows + 1;
        let renamed = self.rename(row, row_no)?;
        if let Some(f) = self
            .opts
            .schema
            .fields
            .iter()
            .find(|f| !f.optional && !row.contains_key(&f.name))
        {
            return Err(SinkError::MissingField {
                path: self.opts.path.clone(),
                row: row_no,
                field: f.name.clone(),
            });
        }
        let value = Value::Object(renamed);
        let mut text = String::new();
        match self.format {
            JsonFormat::Lines => {
                encode_value(&mut text, &value, None, 0);
                text.push('\n');
                if self.file.is_none() {
                    self.file = Some(match self.opts.mode {
                        WriteMode::Write => SinkFile::create(&self.opts.path)?,
                        WriteMode::Append => SinkFile::append(&self.opts.path)?,
                    });
                }
            }
            JsonFormat::Array => {
                if self.file.is_none() {
                    self.file = Some(SinkFile::create(&self.opts.path)?);
                    text.push_str(&self.opening());
                } else {
                    // Writing cuts off the closing bracket of the last durable point.
                    text.push_str(&self.separator());
                }
                encode_value(&mut text, &value, self.indent, 1);
            }
        }
        match self.file.as_mut() {
            Some(file) => file.write(text.as_bytes())?,
            None => {
                return Err(SinkError::Failed {
                    path: self.opts.path.clone(),
                })
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Keys renamed by `headers`, in row order; two fields landing on one key refuse the row.
    fn rename(&self, row: &Row, row_no: u64) -> Result<Row, SinkError> {
        if self.opts.headers == HeaderMode::Normalized {
            return Ok(row.clone());
        }
        let mut out = Map::new();
        let mut first_source: HashMap<&str, &str> = HashMap::with_capacity(row.len());
        for (k, v) in row {
            let key = self.opts.headers.display(k);
            if let Some(first) = first_source.get(key) {
                return Err(SinkError::KeyCollision {
                    path: self.opts.path.clone(),
                    row: row_no,
                    key: key.to_string(),
                    first: first.to_string(),
                    second: k.clone(),
                });
            }
            first_source.insert(key, k);
            out.insert(key.to_string(), v.clone());
        }
        Ok(out)
    }

    /// Flush and fsync. Array mode first makes the file a complete array. Before the first
    /// row the point describes the file as found (its length for JSONL append, else 0).
    pub fn flush_durable(&mut self) -> Result<DurablePoint, SinkError> {
        if self.failed {
            return Err(SinkError::Failed {
                path: self.opts.path.clone(),
            });
        }
        let result = self.flush_inner();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn flush_inner(&mut self) -> Result<DurablePoint, SinkError> {
        let closing = self.closing();
        let array = self.format == JsonFormat::Array;
        let Some(file) = self.file.as_mut() else {
            return point_before_first_row(&self.opts.path, self.opts.mode);
        };
        if array && !file.has_tail() {
            file.write_tail(closing.as_bytes())?;
        }
        file.durable_point(self.rows)
    }

    /// Complete and sync the file and describe it; `None` when no row was ever written.
    pub fn finish(mut self) -> Result<Option<ArtifactInfo>, SinkError> {
        if self.file.is_none() && !self.failed {
            return Ok(None);
        }
        self.flush_durable()?;
        match self.file {
            Some(file) => file.finish(self.rows).map(Some),
            None => Ok(None),
        }
    }
}
