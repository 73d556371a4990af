//! The `json` source (ELSPETH-CONFIG §3): a JSON array (optionally under `data_key`) or JSONL.
//!
//! Array mode parses the whole document first, as ELSPETH's `json.load` does, so that any
//! parse or structure problem yields exactly one quarantine row and no data rows. JSONL is
//! streamed: a bad line is quarantined as `{__raw_line__, __line_number__}` and reading goes on.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::coerce::Validator;
use super::json_parse::{parse_document, parse_json};
use super::lines::{LineRead, PhysicalLines};
use super::python::{py_repr, py_strip, py_type_name};
use super::record::{Outcome, RawRecord, SourceError, SourceRecord};
use super::schema::Schema;

/// Longest JSONL line accepted.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonFormat {
    /// One JSON array (`format: json`).
    Array,
    /// One JSON value per line (`format: jsonl`).
    Lines,
}

impl JsonFormat {
    /// ELSPETH's auto-detection: `jsonl` iff the file's last suffix is exactly `.jsonl`.
    pub fn detect(path: &Path) -> JsonFormat {
        if path.extension().is_some_and(|e| e == "jsonl") {
            JsonFormat::Lines
        } else {
            JsonFormat::Array
        }
    }
}

/// Options of the `json` source (encoding is always utf-8).
#[derive(Clone, Debug)]
pub struct JsonSourceOptions {
    pub path: PathBuf,
    pub schema: Schema,
    /// `None` = detect from the path.
    pub format: Option<JsonFormat>,
    /// Array mode only: read the array stored under this root key.
    pub data_key: Option<String>,
    pub max_line_bytes: usize,
}

impl JsonSourceOptions {
    pub fn new(path: impl Into<PathBuf>, schema: Schema) -> Self {
        JsonSourceOptions {
            path: path.into(),
            schema,
            format: None,
            data_key: None,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

enum Mode<R> {
    Array(std::vec::IntoIter<(u64, Value)>),
    /// Array mode failed as a whole: one quarantine record, then nothing.
    Failed(Option<SourceRecord>),
    Lines {
        lines: PhysicalLines<R>,
        line_no: u64,
        buf: Vec<u8>,
        limit: usize,
    },
    Done,
}

/// An open JSON source: an iterator of records.
pub struct JsonSource<R = BufReader<File>> {
    path: PathBuf,
    validator: Validator,
    next_index: u64,
    mode: Mode<R>,
}

impl JsonSource<BufReader<File>> {
    pub fn open(options: JsonSourceOptions) -> Result<Self, SourceError> {
        let file = File::open(&options.path).map_err(|source| SourceError::Io {
            path: options.path.clone(),
            source,
        })?;
        JsonSource::from_reader(BufReader::with_capacity(64 * 1024, file), options)
    }
}

impl<R: BufRead> JsonSource<R> {
    /// Read from any reader; `options.path` decides the format when none is given and names
    /// the file in messages.
    pub fn from_reader(mut input: R, options: JsonSourceOptions) -> Result<Self, SourceError> {
        let path = options.path.clone();
        let format = options
            .format
            .unwrap_or_else(|| JsonFormat::detect(&options.path));
        // ELSPETH treats an empty data_key as unset.
        let data_key = options.data_key.filter(|k| !k.is_empty());
        let mode = match format {
            JsonFormat::Lines => {
                if data_key.is_some() {
                    return Err(SourceError::Config {
                        path,
                        message: "data_key cannot be used with format jsonl".to_string(),
                    });
                }
                Mode::Lines {
                    lines: PhysicalLines::new(input),
                    line_no: 0,
                    buf: Vec::new(),
                    limit: options.max_line_bytes,
                }
            }
            JsonFormat::Array => {
                let mut bytes = Vec::new();
                input
                    .read_to_end(&mut bytes)
                    .map_err(|source| SourceError::Io {
                        path: path.clone(),
                        source,
                    })?;
                load_array(&path, bytes, data_key.as_deref())
            }
        };
        Ok(JsonSource {
            path,
            validator: Validator::new(options.schema),
            next_index: 0,
            mode,
        })
    }

    fn record(&mut self, line: u64, raw: RawRecord, outcome: Outcome) -> SourceRecord {
        let row_index = self.next_index;
        self.next_index += 1;
        SourceRecord {
            row_index,
            line,
            raw,
            outcome,
        }
    }

    fn validated(&mut self, line: u64, item: Value) -> SourceRecord {
        let outcome = match self.validator.validate_value(item.clone()) {
            Ok(row) => Outcome::Valid(row),
            Err(rej) => Outcome::Quarantined {
                row: rej.row,
                error: rej.message,
            },
        };
        self.record(line, RawRecord::Json(item), outcome)
    }

    fn next_line_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        loop {
            let Mode::Lines {
                lines,
                line_no,
                buf,
                limit,
            } = &mut self.mode
            else {
                return None;
            };
            let read = match lines.next_line(buf, *limit) {
                Ok(r) => r,
                Err(source) => {
                    self.mode = Mode::Done;
                    return Some(Err(SourceError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            };
            *line_no += 1;
            let n = *line_no;
            match read {
                LineRead::Eof => {
                    self.mode = Mode::Done;
                    return None;
                }
                LineRead::TooLong => {
                    let limit = *limit;
                    self.mode = Mode::Done;
                    return Some(Err(SourceError::RecordTooLarge {
                        path: self.path.clone(),
                        line: n,
                        limit,
                    }));
                }
                LineRead::Line => {}
            }
            let text = match std::str::from_utf8(buf) {
                Ok(t) => py_strip(t).to_string(),
                Err(e) => {
                    // ELSPETH crashes here (the decode error escapes its per-line handling).
                    self.mode = Mode::Done;
                    return Some(Err(SourceError::InvalidUtf8 {
                        path: self.path.clone(),
                        line: n,
                        byte_offset: e.valid_up_to(),
                    }));
                }
            };
            if text.is_empty() {
                continue;
            }
            let record = match parse_json(&text) {
                Ok(item) => self.validated(n, item),
                Err(e) => {
                    let error = format!(
                        "JSON parse error at line {n}: {} (column {})",
                        e.message, e.column
                    );
                    let mut row = Map::new();
                    row.insert("__raw_line__".to_string(), Value::String(text.clone()));
                    row.insert("__line_number__".to_string(), Value::from(n));
                    self.record(
                        n,
                        RawRecord::Text(text),
                        Outcome::Quarantined { row, error },
                    )
                }
            };
            return Some(Ok(record));
        }
    }
}

/// Parse a whole array-mode document into its items (with their start lines), or into the
/// one quarantine record ELSPETH yields for a file that fails as a whole.
fn load_array<R>(path: &Path, bytes: Vec<u8>, data_key: Option<&str>) -> Mode<R> {
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = 1 + valid.iter().filter(|&&b| b == b'\n').count() as u64;
            let msg = format!(
                "JSON decode error: not valid UTF-8 at line {line} (byte {} of the file)",
                valid.len()
            );
            return failed(path, line, "parse_error", msg);
        }
    };
    let doc = match parse_document(&text) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!(
                "JSON parse error at line {} col {}: {}",
                e.line, e.column, e.message
            );
            return failed(path, e.line, "parse_error", msg);
        }
    };
    let (items, lines) = match data_key {
        None => (doc.value, doc.root_item_lines),
        Some(key) => {
            let Value::Object(mut root) = doc.value else {
                let msg = format!(
                    "Cannot extract data_key '{key}': expected JSON object, got {}",
                    py_type_name(&doc.value)
                );
                return failed(path, 1, "structure_error", msg);
            };
            let Some(inner) = root.remove(key) else {
                let keys = Value::Array(root.keys().cloned().map(Value::String).collect());
                let msg = format!(
                    "data_key '{key}' not found in JSON object. Available keys: {}",
                    py_repr(&keys)
                );
                return failed(path, 1, "structure_error", msg);
            };
            let lines = doc
                .keyed_item_lines
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, l)| l)
                .unwrap_or_default();
            (inner, lines)
        }
    };
    let Value::Array(items) = items else {
        let msg = format!("Expected JSON array, got {}", py_type_name(&items));
        return failed(path, 1, "structure_error", msg);
    };
    let mut lines = lines.into_iter();
    let numbered: Vec<(u64, Value)> = items
        .into_iter()
        .map(|item| (lines.next().unwrap_or(1), item))
        .collect();
    Mode::Array(numbered.into_iter())
}

fn failed<R>(path: &Path, line: u64, key: &str, msg: String) -> Mode<R> {
    let mut row = Map::new();
    row.insert(
        "file_path".to_string(),
        Value::String(path.display().to_string()),
    );
    row.insert(key.to_string(), Value::String(msg.clone()));
    Mode::Failed(Some(SourceRecord {
        row_index: 0,
        line,
        raw: RawRecord::Text(msg.clone()),
        outcome: Outcome::Quarantined { row, error: msg },
    }))
}

impl<R: BufRead> Iterator for JsonSource<R> {
    type Item = Result<SourceRecord, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.mode {
            Mode::Done => None,
            Mode::Failed(rec) => {
                let rec = rec.take();
                self.mode = Mode::Done;
                if rec.is_some() {
                    self.next_index = 1;
                }
                rec.map(Ok)
            }
            Mode::Array(items) => match items.next() {
                Some((line, item)) => Some(Ok(self.validated(line, item))),
                None => {
                    self.mode = Mode::Done;
                    None
                }
            },
            Mode::Lines { .. } => self.next_line_record(),
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for JsonSource<R> {}
