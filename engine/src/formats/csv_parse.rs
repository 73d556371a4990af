//! CSV records exactly as Python's `csv.reader` (default dialect, `strict=False`) reads them.
//!
//! Why not the `csv` crate: its parser matches these lenient rules on field contents (the
//! tests cross-check the two), but it cannot reproduce what ELSPETH reports around them. It
//! strips a leading UTF-8 BOM (ELSPETH keeps it: with `columns` the BOM is part of the first
//! cell), counts lines by `\n` only and reports where a record starts (ELSPETH's
//! `reader.line_num` counts `\r`-terminated lines too and names the line where a record
//! ends), and takes only single-byte delimiters (Python takes any character). So this is
//! Python's state machine, run over physical lines like Python runs it:
//!
//! * quote `"` only at the start of a field; `""` inside quotes is one `"`; after a closing
//!   quote any other character continues the field unquoted (`1,"2"x` → `2x`);
//! * quoted fields span lines; an unterminated quote runs to the end of the file;
//! * `\r\n`, `\n`, `\r` end records; a blank line is an empty record (callers skip it);
//! * values are never trimmed.

use std::io::{self, BufRead};

use super::lines::{LineRead, PhysicalLines};

const QUOTE: char = '"';

/// One parsed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvRecord {
    /// The fields; empty for a blank line.
    pub fields: Vec<String>,
    /// Physical line on which the record ends (Python's `reader.line_num` after reading it).
    pub line: u64,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum CsvReadError {
    Io(io::Error),
    /// The bytes of this physical line are not UTF-8.
    InvalidUtf8 {
        line: u64,
        byte_offset: usize,
    },
    /// A record grew past the configured limit (usually an unterminated quote).
    TooLarge {
        line: u64,
        limit: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    QuoteInQuotedField,
    /// After a line break outside quotes: only more line-break characters can follow on
    /// this physical line.
    EatCrnl,
}

/// Streams records from a reader; memory is bounded by the largest record.
pub struct CsvRecordReader<R> {
    lines: PhysicalLines<R>,
    delimiter: char,
    max_record_bytes: usize,
    line_no: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> CsvRecordReader<R> {
    /// `delimiter` must not be `"`, `\r` or `\n` (the caller validates options).
    pub fn new(reader: R, delimiter: char, max_record_bytes: usize) -> Self {
        CsvRecordReader {
            lines: PhysicalLines::new(reader),
            delimiter,
            max_record_bytes,
            line_no: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    /// Physical lines read so far.
    pub fn line(&self) -> u64 {
        self.line_no
    }

    /// The next record, `Ok(None)` at the end of the input. After an error it keeps
    /// returning `Ok(None)`: the rest of the file cannot be trusted.
    pub fn next_record(&mut self) -> Result<Option<CsvRecord>, CsvReadError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_record();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_record(&mut self) -> Result<Option<CsvRecord>, CsvReadError> {
        let mut state = State::StartRecord;
        let mut fields: Vec<String> = Vec::new();
        let mut field = String::new();
        let mut record_bytes = 0usize;
        loop {
            let limit = self.max_record_bytes.saturating_sub(record_bytes);
            match self
                .lines
                .next_line(&mut self.buf, limit)
                .map_err(CsvReadError::Io)?
            {
                LineRead::Eof => {
                    // Python returns what it has only if a field is in progress or a quote
                    // is open; records otherwise always end at a line end.
                    if !field.is_empty() || state == State::InQuotedField {
                        fields.push(field);
                        return Ok(Some(CsvRecord {
                            fields,
                            line: self.line_no,
                        }));
                    }
                    return Ok(None);
                }
                LineRead::TooLong => {
                    return Err(CsvReadError::TooLarge {
                        line: self.line_no + 1,
                        limit: self.max_record_bytes,
                    })
                }
                LineRead::Line => {}
            }
            self.line_no += 1;
            record_bytes += self.buf.len();
            let text = std::str::from_utf8(&self.buf).map_err(|e| CsvReadError::InvalidUtf8 {
                line: self.line_no,
                byte_offset: e.valid_up_to(),
            })?;
            for c in text.chars() {
                state = step(state, c, self.delimiter, &mut fields, &mut field);
            }
            state = end_of_line(state, &mut fields, &mut field);
            if state == State::StartRecord {
                return Ok(Some(CsvRecord {
                    fields,
                    line: self.line_no,
                }));
            }
        }
    }
}

fn is_line_break(c: char) -> bool {
    c == '\n' || c == '\r'
}

fn save(fields: &mut Vec<String>, field: &mut String) {
    fields.push(std::mem::take(field));
}

/// One character of Python's `parse_process_char`.
fn step(
    state: State,
    c: char,
    delimiter: char,
    fields: &mut Vec<String>,
    field: &mut String,
) -> State {
    match state {
        State::StartRecord => {
            if is_line_break(c) {
                State::EatCrnl
            } else {
                step(State::StartField, c, delimiter, fields, field)
            }
        }
        State::StartField => {
            if is_line_break(c) {
                save(fields, field);
                State::EatCrnl
            } else if c == QUOTE {
                State::InQuotedField
            } else if c == delimiter {
                save(fields, field);
                State::StartField
            } else {
                field.push(c);
                State::InField
            }
        }
        State::InField => {
            if is_line_break(c) {
                save(fields, field);
                State::EatCrnl
            } else if c == delimiter {
                save(fields, field);
                State::StartField
            } else {
                field.push(c);
                State::InField
            }
        }
        State::InQuotedField => {
            if c == QUOTE {
                State::QuoteInQuotedField
            } else {
                field.push(c);
                State::InQuotedField
            }
        }
        State::QuoteInQuotedField => {
            if c == QUOTE {
                field.push(QUOTE);
                State::InQuotedField
            } else if c == delimiter {
                save(fields, field);
                State::StartField
            } else if is_line_break(c) {
                save(fields, field);
                State::EatCrnl
            } else {
                // Lenient: text after a closing quote continues the field.
                field.push(c);
                State::InField
            }
        }
        // Physical lines end at their first line break, so only the rest of a `\r\n` can
        // follow here; anything else is kept rather than lost.
        State::EatCrnl => {
            if is_line_break(c) {
                State::EatCrnl
            } else {
                step(State::StartField, c, delimiter, fields, field)
            }
        }
    }
}

/// Python's `parse_process_char(EOL)` at the end of each physical line.
fn end_of_line(state: State, fields: &mut Vec<String>, field: &mut String) -> State {
    match state {
        State::StartRecord | State::EatCrnl => State::StartRecord,
        State::StartField | State::InField | State::QuoteInQuotedField => {
            save(fields, field);
            State::StartRecord
        }
        State::InQuotedField => State::InQuotedField,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::BufReader;

    fn parse(input: &str) -> Vec<(Vec<String>, u64)> {
        parse_bytes(input.as_bytes(), ',', 3)
    }

    fn parse_bytes(input: &[u8], delim: char, cap: usize) -> Vec<(Vec<String>, u64)> {
        let mut r = CsvRecordReader::new(BufReader::with_capacity(cap, input), delim, usize::MAX);
        let mut out = Vec::new();
        while let Ok(Some(rec)) = r.next_record() {
            out.push((rec.fields, rec.line));
        }
        out
    }

    fn rec(fields: &[&str], line: u64) -> (Vec<String>, u64) {
        (fields.iter().map(|s| s.to_string()).collect(), line)
    }

    #[test]
    fn basic_and_line_ends() {
        assert_eq!(
            parse("a,b\r\nc,d\ne,f\rg,h"),
            vec![
                rec(&["a", "b"], 1),
                rec(&["c", "d"], 2),
                rec(&["e", "f"], 3),
                rec(&["g", "h"], 4)
            ]
        );
    }

    #[test]
    fn blank_lines_are_empty_records() {
        assert_eq!(
            parse("a\n\n\r\nb\n"),
            vec![rec(&["a"], 1), rec(&[], 2), rec(&[], 3), rec(&["b"], 4)]
        );
    }

    #[test]
    fn quotes() {
        assert_eq!(parse("1,\"2\"x\n"), vec![rec(&["1", "2x"], 1)]);
        assert_eq!(parse("\"a\"\"b\",c\n"), vec![rec(&["a\"b", "c"], 1)]);
        assert_eq!(parse("a\"b,c\n"), vec![rec(&["a\"b", "c"], 1)]);
        assert_eq!(parse("\"\"\n"), vec![rec(&[""], 1)]);
        assert_eq!(parse(" \"a\"\n"), vec![rec(&[" \"a\""], 1)]);
    }

    #[test]
    fn quoted_fields_span_lines_and_report_the_end_line() {
        assert_eq!(
            parse("id,text\n1,\"line one\r\nline two\rthree\"\n2,x\n"),
            vec![
                rec(&["id", "text"], 1),
                rec(&["1", "line one\r\nline two\rthree"], 4),
                rec(&["2", "x"], 5)
            ]
        );
    }

    #[test]
    fn unterminated_quote_runs_to_eof() {
        assert_eq!(parse("a,\"bc\nd,e\n"), vec![rec(&["a", "bc\nd,e\n"], 2)]);
    }

    #[test]
    fn trailing_delimiters_and_no_final_newline() {
        assert_eq!(
            parse("a,\n,\nx"),
            vec![rec(&["a", ""], 1), rec(&["", ""], 2), rec(&["x"], 3)]
        );
    }

    #[test]
    fn bom_is_kept() {
        assert_eq!(parse("\u{feff}a,b\n"), vec![rec(&["\u{feff}a", "b"], 1)]);
    }

    #[test]
    fn other_delimiters() {
        assert_eq!(
            parse_bytes("a;b,c\n".as_bytes(), ';', 4),
            vec![rec(&["a", "b,c"], 1)]
        );
        assert_eq!(
            parse_bytes("a§b\n".as_bytes(), '§', 4),
            vec![rec(&["a", "b"], 1)]
        );
        assert_eq!(
            parse_bytes("a\tb\n".as_bytes(), '\t', 4),
            vec![rec(&["a", "b"], 1)]
        );
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let mut r = CsvRecordReader::new(BufReader::new(&b"a\nb\n\xffc\n"[..]), ',', usize::MAX);
        assert!(matches!(r.next_record(), Ok(Some(_))));
        assert!(matches!(r.next_record(), Ok(Some(_))));
        match r.next_record() {
            Err(CsvReadError::InvalidUtf8 { line, byte_offset }) => {
                assert_eq!((line, byte_offset), (3, 0));
            }
            other => panic!("expected invalid UTF-8, got {other:?}"),
        }
        assert!(matches!(r.next_record(), Ok(None)));
    }

    #[test]
    fn record_limit() {
        let mut data = b"\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 1000));
        let mut r = CsvRecordReader::new(BufReader::with_capacity(16, &data[..]), ',', 100);
        assert!(matches!(
            r.next_record(),
            Err(CsvReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn ten_megabyte_field() {
        let big = "y".repeat(10 * 1024 * 1024);
        let input = format!("a,b\n1,\"{big}\"\n2,{big}\n");
        let mut r = CsvRecordReader::new(BufReader::new(input.as_bytes()), ',', usize::MAX);
        let mut sizes = Vec::new();
        while let Ok(Some(rec)) = r.next_record() {
            sizes.push(rec.fields.iter().map(String::len).collect::<Vec<_>>());
        }
        assert_eq!(
            sizes,
            vec![vec![1, 1], vec![1, big.len()], vec![1, big.len()]]
        );
    }

    proptest! {
        // The csv crate implements the same lenient grammar; on input without a leading BOM
        // (which it strips) the two must agree on every record's fields. Blank records are
        // skipped by both.
        #[test]
        fn agrees_with_csv_crate(input in "[a-c,\"\r\n ]{0,40}") {
            prop_assume!(!input.is_empty());
            let ours: Vec<Vec<String>> = parse_bytes(input.as_bytes(), ',', 5)
                .into_iter()
                .map(|(f, _)| f)
                .filter(|f| !f.is_empty())
                .collect();
            let mut theirs = Vec::new();
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(input.as_bytes());
            for rec in rdr.records() {
                let rec = rec.map_err(|e| TestCaseError::fail(e.to_string()))?;
                theirs.push(rec.iter().map(str::to_string).collect::<Vec<_>>());
            }
            prop_assert_eq!(ours, theirs);
        }
    }
}
