//! The `csv` sink (ELSPETH-CONFIG §8), writing rows one at a time with ELSPETH's bytes:
//! Python's `csv.DictWriter` with the default dialect.
//!
//! * Columns: observed → keys of the first row written; fixed → declared fields; flexible →
//!   declared, then the first row's extras. Missing keys are empty cells; a key outside the
//!   columns refuses that row (ELSPETH crashes; attest reports the row and goes on).
//! * A cell is quoted only if it holds the delimiter, `"`, `\r` or `\n`; `"` is doubled; a
//!   row that is one empty cell is `""`; every line ends `\r\n`.
//! * Cells are Python's `str()`: `True`, `1.0`, `1e+16`, `None` → empty, dicts as repr.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::csv_parse::{CsvReadError, CsvRecordReader};
use super::csv_source::DEFAULT_MAX_RECORD_BYTES;
use super::python::{py_number_repr, py_repr};
use super::schema::{Schema, SchemaMode};
use super::sink::{
    existing_len, io_error, point_before_first_row, restore_before_run, ArtifactInfo, DurablePoint,
    HeaderMode, SinkError, SinkFile, WriteMode,
};
use crate::value::Row;

/// Options of the `csv` sink (encoding is always utf-8).
#[derive(Clone, Debug)]
pub struct CsvSinkOptions {
    pub path: PathBuf,
    pub schema: Schema,
    pub delimiter: char,
    pub headers: HeaderMode,
    pub mode: WriteMode,
}

impl CsvSinkOptions {
    pub fn new(path: impl Into<PathBuf>, schema: Schema) -> Self {
        CsvSinkOptions {
            path: path.into(),
            schema,
            delimiter: ',',
            headers: HeaderMode::Normalized,
            mode: WriteMode::Write,
        }
    }
}

/// The fixed columns of an open sink.
struct Columns {
    names: Vec<String>,
    set: HashSet<String>,
}

impl Columns {
    fn new(names: Vec<String>) -> Columns {
        let set = names.iter().cloned().collect();
        Columns { names, set }
    }
}

/// A streaming CSV writer. The file is created (or truncated) only when the first row is
/// written: a sink that receives no rows leaves the file system untouched.
pub struct CsvSink {
    opts: CsvSinkOptions,
    columns: Option<Columns>,
    file: Option<SinkFile>,
    rows: u64,
    failed: bool,
}

impl CsvSink {
    pub fn new(opts: CsvSinkOptions) -> Result<CsvSink, SinkError> {
        if matches!(opts.delimiter, '"' | '\r' | '\n') {
            return Err(SinkError::Config {
                path: opts.path.clone(),
                message: format!(
                    "delimiter {:?} cannot be a quote or a line break",
                    opts.delimiter
                ),
            });
        }
        Ok(CsvSink {
            opts,
            columns: None,
            file: None,
            rows: 0,
            failed: false,
        })
    }

    /// Continue a sink from a recorded durable point: the file must still begin with the
    /// point's bytes (else [`SinkError::Resume`]); it is cut back to `point.bytes`
    /// (dropping any torn tail) and writing continues after row `point.rows`.
    pub fn open_resume(opts: CsvSinkOptions, point: DurablePoint) -> Result<CsvSink, SinkError> {
        let mut sink = CsvSink::new(opts)?;
        let path = sink.opts.path.clone();
        if point.rows == 0 {
            restore_before_run(&path, sink.opts.mode, point)?;
            return Ok(sink);
        }
        let file = SinkFile::resume(&path, point, &[])?;
        let header = read_header(&path, sink.opts.delimiter)?.ok_or_else(|| SinkError::Resume {
            path: path.clone(),
            message: "the file has no header row".to_string(),
        })?;
        let names = header
            .iter()
            .map(|h| sink.opts.headers.field_of(h).to_string())
            .collect();
        sink.columns = Some(Columns::new(names));
        sink.file = Some(file);
        sink.rows = point.rows;
        Ok(sink)
    }

    pub fn path(&self) -> &Path {
        &self.opts.path
    }

    /// Rows written so far (across resumes).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The columns, once the first row (or an existing header) has fixed them.
    pub fn columns(&self) -> Option<&[String]> {
        self.columns.as_ref().map(|c| c.names.as_slice())
    }

    /// Write one row. A row error (see [`SinkError::is_row_error`]) writes nothing and leaves
    /// the sink usable; any other error makes the sink refuse further work.
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
        if self.file.is_none() {
            if self.columns.is_none() && self.opts.mode == WriteMode::Append {
                self.columns = self.existing_columns()?;
            }
            let existing = self.columns.is_some();
            let columns = match self.columns.take() {
                Some(c) => c,
                None => Columns::new(self.columns_for_first(row)),
            };
            if let Err(e) = self.check_row(row, &columns, row_no) {
                // Columns from an existing header stay; a new file's columns wait for the
                // first row that is actually written.
                if existing {
                    self.columns = Some(columns);
                }
                return Err(e);
            }
            let mut file = if existing {
                SinkFile::append(&self.opts.path)?
            } else {
                // Write mode, or append to a missing/empty file: start with the header.
                SinkFile::create(&self.opts.path)?
            };
            if !existing {
                let header: Vec<Value> = columns
                    .names
                    .iter()
                    .map(|c| Value::String(self.opts.headers.display(c).to_string()))
                    .collect();
                file.write(format_line(header.iter(), self.opts.delimiter).as_bytes())?;
            }
            let line = format_line(
                columns
                    .names
                    .iter()
                    .map(|c| row.get(c).unwrap_or(&Value::Null)),
                self.opts.delimiter,
            );
            self.columns = Some(columns);
            self.file = Some(file);
            return self.write_line(&line);
        }
        let line = match &self.columns {
            Some(columns) => {
                self.check_row(row, columns, row_no)?;
                format_line(
                    columns
                        .names
                        .iter()
                        .map(|c| row.get(c).unwrap_or(&Value::Null)),
                    self.opts.delimiter,
                )
            }
            None => {
                return Err(SinkError::Failed {
                    path: self.opts.path.clone(),
                })
            }
        };
        self.write_line(&line)
    }

    fn write_line(&mut self, line: &str) -> Result<(), SinkError> {
        match self.file.as_mut() {
            Some(file) => file.write(line.as_bytes())?,
            None => {
                return Err(SinkError::Failed {
                    path: self.opts.path.clone(),
                })
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Columns for a new file, decided by the first row written.
    fn columns_for_first(&self, row: &Row) -> Vec<String> {
        let declared = self.opts.schema.fields.iter().map(|f| f.name.clone());
        match self.opts.schema.mode {
            SchemaMode::Observed => row.keys().cloned().collect(),
            SchemaMode::Fixed => declared.collect(),
            SchemaMode::Flexible => declared
                .chain(
                    row.keys()
                        .filter(|k| self.opts.schema.field(k).is_none())
                        .cloned(),
                )
                .collect(),
        }
    }

    fn check_row(&self, row: &Row, columns: &Columns, row_no: u64) -> Result<(), SinkError> {
        if let Some(k) = row.keys().find(|k| !columns.set.contains(k.as_str())) {
            return Err(SinkError::UnknownField {
                path: self.opts.path.clone(),
                row: row_no,
                field: k.clone(),
                columns: columns.names.clone(),
            });
        }
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
        Ok(())
    }

    /// In append mode: the columns of an existing, non-empty file, checked against the
    /// schema (fixed: the same columns in the same order; flexible: every declared field).
    fn existing_columns(&self) -> Result<Option<Columns>, SinkError> {
        let path = &self.opts.path;
        let Some(header) = read_header(path, self.opts.delimiter)? else {
            return Ok(None);
        };
        let expected: Vec<&str> = self
            .opts
            .schema
            .fields
            .iter()
            .map(|f| self.opts.headers.display(&f.name))
            .collect();
        match self.opts.schema.mode {
            SchemaMode::Observed => {}
            SchemaMode::Fixed => {
                if header
                    .iter()
                    .map(String::as_str)
                    .ne(expected.iter().copied())
                {
                    return Err(SinkError::HeaderMismatch {
                        path: path.clone(),
                        message: format!(
                            "fixed schema needs exactly {expected:?} in this order, the file has {header:?}"
                        ),
                    });
                }
            }
            SchemaMode::Flexible => {
                let missing: Vec<&str> = expected
                    .iter()
                    .copied()
                    .filter(|e| !header.iter().any(|h| h == e))
                    .collect();
                if !missing.is_empty() {
                    return Err(SinkError::HeaderMismatch {
                        path: path.clone(),
                        message: format!("the file's header {header:?} lacks {missing:?}"),
                    });
                }
            }
        }
        let names = header
            .iter()
            .map(|h| self.opts.headers.field_of(h).to_string())
            .collect();
        Ok(Some(Columns::new(names)))
    }

    /// Flush and fsync; the returned point is what a resume may rely on. Before the first row
    /// it describes the file as this sink found it, so an engine should record one before
    /// writing (for append mode that is the length of the content that was already there).
    pub fn flush_durable(&mut self) -> Result<DurablePoint, SinkError> {
        if self.failed {
            return Err(SinkError::Failed {
                path: self.opts.path.clone(),
            });
        }
        match self.file.as_mut() {
            Some(file) => {
                let point = file.durable_point(self.rows);
                if point.is_err() {
                    self.failed = true;
                }
                point
            }
            None => point_before_first_row(&self.opts.path, self.opts.mode),
        }
    }

    /// Sync and describe the file; `None` when no row was ever written (no file was made).
    pub fn finish(self) -> Result<Option<ArtifactInfo>, SinkError> {
        if self.failed {
            return Err(SinkError::Failed {
                path: self.opts.path,
            });
        }
        match self.file {
            Some(file) => file.finish(self.rows).map(Some),
            None => Ok(None),
        }
    }
}

/// The first record of an existing file, or `None` if the file is missing, empty or starts
/// with a blank line (ELSPETH's `DictReader.fieldnames` is then empty and the file is
/// rewritten from scratch).
fn read_header(path: &Path, delimiter: char) -> Result<Option<Vec<String>>, SinkError> {
    if existing_len(path)? == 0 {
        return Ok(None);
    }
    let file = File::open(path).map_err(io_error(path, "open to read the header"))?;
    let mut reader =
        CsvRecordReader::new(BufReader::new(file), delimiter, DEFAULT_MAX_RECORD_BYTES);
    match reader.next_record() {
        Ok(Some(rec)) if !rec.fields.is_empty() => Ok(Some(rec.fields)),
        Ok(_) => Ok(None),
        Err(CsvReadError::Io(e)) => Err(io_error(path, "read the header")(e)),
        Err(CsvReadError::InvalidUtf8 { line, .. }) => Err(SinkError::HeaderMismatch {
            path: path.to_path_buf(),
            message: format!("line {line} of the existing file is not valid UTF-8"),
        }),
        Err(CsvReadError::TooLarge { line, limit }) => Err(SinkError::HeaderMismatch {
            path: path.to_path_buf(),
            message: format!("the header at line {line} is larger than {limit} bytes"),
        }),
    }
}

/// One CSV line (with `\r\n`) from cell values.
pub(crate) fn format_line<'a>(cells: impl Iterator<Item = &'a Value>, delimiter: char) -> String {
    let mut line = String::new();
    let mut count = 0usize;
    for (i, v) in cells.enumerate() {
        if i > 0 {
            line.push(delimiter);
        }
        push_cell(&mut line, v, delimiter);
        count = i + 1;
    }
    if count > 0 && line.is_empty() {
        // Python writes a record consisting of one empty field as `""` so that it reads back
        // as a record rather than a blank line.
        line.push_str("\"\"");
    }
    line.push_str("\r\n");
    line
}

fn push_cell(line: &mut String, v: &Value, delimiter: char) {
    let owned;
    let text: &str = match v {
        Value::String(s) => s,
        Value::Null => "",
        Value::Bool(true) => "True",
        Value::Bool(false) => "False",
        Value::Number(n) => {
            owned = py_number_repr(n);
            &owned
        }
        other => {
            owned = py_repr(other);
            &owned
        }
    };
    if text
        .chars()
        .any(|c| c == delimiter || c == '"' || c == '\r' || c == '\n')
    {
        line.push('"');
        for c in text.chars() {
            if c == '"' {
                line.push('"');
            }
            line.push(c);
        }
        line.push('"');
    } else {
        line.push_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(v: Value) -> String {
        match v {
            Value::Array(items) => format_line(items.iter(), ','),
            _ => String::new(),
        }
    }

    #[test]
    fn cell_text_and_quoting() {
        assert_eq!(
            line(json!(["a", 1, 1.0, true, false, null])),
            "a,1,1.0,True,False,\r\n"
        );
        assert_eq!(
            line(json!(["a,b", "say \"hi\"", "x\ny", "r\rs"])),
            "\"a,b\",\"say \"\"hi\"\"\",\"x\ny\",\"r\rs\"\r\n"
        );
        assert_eq!(line(json!([""])), "\"\"\r\n");
        assert_eq!(line(json!([null])), "\"\"\r\n");
        assert_eq!(line(json!(["", ""])), ",\r\n");
        assert_eq!(line(json!([])), "\r\n");
        assert_eq!(line(json!([" padded ", "it's"])), " padded ,it's\r\n");
        assert_eq!(
            line(json!([1e16, 1e-5, -0.0, 0.0001])),
            "1e+16,1e-05,-0.0,0.0001\r\n"
        );
        assert_eq!(
            line(json!([{"prompt_tokens": 3, "completion_tokens": 4}])),
            "\"{'prompt_tokens': 3, 'completion_tokens': 4}\"\r\n"
        );
        assert_eq!(line(json!([["a", 1]])), "\"['a', 1]\"\r\n");
        assert_eq!(line(json!([{}])), "{}\r\n");
    }

    #[test]
    fn other_delimiter_quotes_that_delimiter_only() {
        let v = [json!("a;b"), json!("c,d")];
        assert_eq!(format_line(v.iter(), ';'), "\"a;b\";c,d\r\n");
    }
}
