//! The `csv` source (ELSPETH-CONFIG §3): streaming records, header resolution, validation.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::coerce::Validator;
use super::csv_parse::{CsvReadError, CsvRecord, CsvRecordReader};
use super::headers::{resolve_headers, HeaderResolution};
use super::record::{Outcome, RawRecord, SourceError, SourceRecord};
use super::schema::Schema;

/// Records larger than this are refused: an unterminated quote near the top of a large file
/// would otherwise read the whole rest of the file into one field.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Options of the `csv` source (encoding is always utf-8).
#[derive(Clone, Debug)]
pub struct CsvSourceOptions {
    pub path: PathBuf,
    pub schema: Schema,
    /// One character; not `"`, `\r` or `\n`.
    pub delimiter: char,
    /// Parsed records (blank lines included, as in ELSPETH) skipped before the header.
    pub skip_rows: u64,
    /// Headerless file: these names, verbatim, instead of a header row.
    pub columns: Option<Vec<String>>,
    /// Effective name → new name, in configuration order.
    pub field_mapping: Vec<(String, String)>,
    pub max_record_bytes: usize,
}

impl CsvSourceOptions {
    /// Defaults for everything but the path and schema.
    pub fn new(path: impl Into<PathBuf>, schema: Schema) -> Self {
        CsvSourceOptions {
            path: path.into(),
            schema,
            delimiter: ',',
            skip_rows: 0,
            columns: None,
            field_mapping: Vec::new(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// An open CSV source: an iterator of records. Reading stops at the first error.
pub struct CsvSource<R = BufReader<File>> {
    path: PathBuf,
    reader: CsvRecordReader<R>,
    headers: HeaderResolution,
    names: Vec<String>,
    delimiter: char,
    validator: Validator,
    next_index: u64,
    finished: bool,
}

impl CsvSource<BufReader<File>> {
    /// Open the file and read up to and including the header, so header problems are
    /// reported before any row.
    pub fn open(options: CsvSourceOptions) -> Result<Self, SourceError> {
        let file = File::open(&options.path).map_err(|source| SourceError::Io {
            path: options.path.clone(),
            source,
        })?;
        CsvSource::from_reader(BufReader::with_capacity(64 * 1024, file), options)
    }
}

impl<R: BufRead> CsvSource<R> {
    /// Read from any reader; `options.path` is used in messages only.
    pub fn from_reader(input: R, options: CsvSourceOptions) -> Result<Self, SourceError> {
        let path = options.path.clone();
        if matches!(options.delimiter, '"' | '\r' | '\n') {
            return Err(SourceError::Config {
                path,
                message: format!(
                    "delimiter {:?} cannot be a quote or a line break",
                    options.delimiter
                ),
            });
        }
        let mut reader = CsvRecordReader::new(input, options.delimiter, options.max_record_bytes);
        let mut empty = false;
        for _ in 0..options.skip_rows {
            if read(&mut reader, &path)?.is_none() {
                empty = true;
                break;
            }
        }
        let headers =
            match &options.columns {
                Some(cols) => resolve_headers(None, Some(cols), &options.field_mapping).map_err(
                    |message| SourceError::Config {
                        path: path.clone(),
                        message,
                    },
                )?,
                None if empty => HeaderResolution::default(),
                None => match read(&mut reader, &path)? {
                    // An empty file (or one used up by skip_rows) has no rows.
                    None => {
                        empty = true;
                        HeaderResolution::default()
                    }
                    Some(rec) if rec.fields.is_empty() => {
                        // ELSPETH would take a blank header line as zero columns and quarantine
                        // every row; refusing the file says what is wrong instead.
                        return Err(SourceError::Header {
                            path,
                            line: rec.line,
                            message: "the header row is a blank line".to_string(),
                        });
                    }
                    Some(rec) => resolve_headers(Some(&rec.fields), None, &options.field_mapping)
                        .map_err(|message| SourceError::Header {
                        path: path.clone(),
                        line: rec.line,
                        message,
                    })?,
                },
            };
        let names = headers.names();
        Ok(CsvSource {
            path,
            reader,
            headers,
            names,
            delimiter: options.delimiter,
            validator: Validator::new(options.schema),
            next_index: 0,
            finished: empty,
        })
    }

    /// The columns: final field names and the original header text.
    pub fn headers(&self) -> &HeaderResolution {
        &self.headers
    }

    fn make_record(&mut self, rec: CsvRecord) -> SourceRecord {
        let row_index = self.next_index;
        self.next_index += 1;
        let outcome = if rec.fields.len() != self.names.len() {
            // ELSPETH's exact text: quarantine ordering hashes it.
            let error = format!(
                "CSV parse error at line {}: expected {} fields, got {}",
                rec.line,
                self.names.len(),
                rec.fields.len()
            );
            let mut row = Map::new();
            row.insert(
                "__raw_line__".to_string(),
                Value::String(rec.fields.join(&self.delimiter.to_string())),
            );
            row.insert("__line_number__".to_string(), Value::from(rec.line));
            row.insert("__row_number__".to_string(), Value::from(row_index + 1));
            Outcome::Quarantined { row, error }
        } else {
            let row: Map<String, Value> = self
                .names
                .iter()
                .cloned()
                .zip(rec.fields.iter().cloned().map(Value::String))
                .collect();
            match self.validator.validate(row) {
                Ok(valid) => Outcome::Valid(valid),
                Err(rej) => Outcome::Quarantined {
                    row: rej.row,
                    error: rej.message,
                },
            }
        };
        SourceRecord {
            row_index,
            line: rec.line,
            raw: RawRecord::Cells(rec.fields),
            outcome,
        }
    }
}

fn read<R: BufRead>(
    reader: &mut CsvRecordReader<R>,
    path: &Path,
) -> Result<Option<CsvRecord>, SourceError> {
    reader.next_record().map_err(|e| match e {
        CsvReadError::Io(source) => SourceError::Io {
            path: path.to_path_buf(),
            source,
        },
        CsvReadError::InvalidUtf8 { line, byte_offset } => SourceError::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
            byte_offset,
        },
        CsvReadError::TooLarge { line, limit } => SourceError::RecordTooLarge {
            path: path.to_path_buf(),
            line,
            limit,
        },
    })
}

impl<R: BufRead> Iterator for CsvSource<R> {
    type Item = Result<SourceRecord, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            match read(&mut self.reader, &self.path) {
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Ok(None) => {
                    self.finished = true;
                    return None;
                }
                // Blank lines are skipped (and, as in ELSPETH, do not count as rows).
                Ok(Some(rec)) if rec.fields.is_empty() => continue,
                Ok(Some(rec)) => return Some(Ok(self.make_record(rec))),
            }
        }
    }
}

impl<R: BufRead> std::iter::FusedIterator for CsvSource<R> {}
