//! CSV and JSON sources end to end, through files on disk.

use std::path::{Path, PathBuf};

use attest_engine::formats::{
    CsvSource, CsvSourceOptions, FieldSpec, FieldType, JsonFormat, JsonSource, JsonSourceOptions,
    Outcome, RawRecord, Schema, SourceError, SourceRecord,
};
use attest_engine::value::Row;
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, bytes) {
        panic!("write {}: {e}", path.display());
    }
    path
}

fn row(v: Value) -> Row {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

fn csv_records(opts: CsvSourceOptions) -> Vec<SourceRecord> {
    let src = match CsvSource::open(opts) {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    };
    src.map(|r| match r {
        Ok(r) => r,
        Err(e) => panic!("read: {e}"),
    })
    .collect()
}

fn json_records(opts: JsonSourceOptions) -> Vec<SourceRecord> {
    let src = match JsonSource::open(opts) {
        Ok(s) => s,
        Err(e) => panic!("open: {e}"),
    };
    src.map(|r| match r {
        Ok(r) => r,
        Err(e) => panic!("read: {e}"),
    })
    .collect()
}

fn valid(r: &SourceRecord) -> &Row {
    match &r.outcome {
        Outcome::Valid(row) => row,
        other => panic!("expected a valid row, got {other:?}"),
    }
}

fn quarantined(r: &SourceRecord) -> (&Row, &str) {
    match &r.outcome {
        Outcome::Quarantined { row, error } => (row, error.as_str()),
        other => panic!("expected a quarantined row, got {other:?}"),
    }
}

// --- CSV --------------------------------------------------------------------------------

#[test]
fn csv_header_normalization_bom_crlf() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.csv",
        b"\xef\xbb\xbfFull Name ,Score!!,class\r\nAnn,10,a\r\n\r\nBob,7,b\r\n",
    );
    let src = match CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(src.headers().names(), vec!["full_name", "score", "class_"]);
    // The original text is kept verbatim, BOM included (ELSPETH reads utf-8, not utf-8-sig).
    assert_eq!(
        src.headers().original_of("full_name"),
        Some("\u{feff}Full Name ")
    );
    assert_eq!(src.headers().original_of("class_"), Some("class"));
    let recs: Vec<SourceRecord> = src.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        valid(&recs[0]),
        &row(json!({"full_name": "Ann", "score": "10", "class_": "a"}))
    );
    assert_eq!((recs[0].row_index, recs[0].line), (0, 2));
    // The blank line 3 is skipped and not counted as a row.
    assert_eq!((recs[1].row_index, recs[1].line), (1, 4));
    assert_eq!(
        recs[1].raw,
        RawRecord::Cells(vec!["Bob".into(), "7".into(), "b".into()])
    );
}

#[test]
fn csv_ragged_rows_are_quarantined_like_elspeth() {
    let dir = tmp();
    let path = write(dir.path(), "in.csv", b"a,b\n1,2\n1,2,3\n\nx\n4,5\n");
    let recs = csv_records(CsvSourceOptions::new(&path, Schema::observed()));
    assert_eq!(recs.len(), 4);
    let (q, err) = quarantined(&recs[1]);
    assert_eq!(
        q,
        &row(json!({"__raw_line__": "1,2,3", "__line_number__": 3, "__row_number__": 2}))
    );
    assert_eq!(err, "CSV parse error at line 3: expected 2 fields, got 3");
    let (q, err) = quarantined(&recs[2]);
    assert_eq!(
        q,
        &row(json!({"__raw_line__": "x", "__line_number__": 5, "__row_number__": 3}))
    );
    assert_eq!(err, "CSV parse error at line 5: expected 2 fields, got 1");
    assert_eq!(valid(&recs[3]), &row(json!({"a": "4", "b": "5"})));
    // Keys of the quarantine row are in ELSPETH's order.
    let keys: Vec<&str> = quarantined(&recs[1]).0.keys().map(String::as_str).collect();
    assert_eq!(keys, ["__raw_line__", "__line_number__", "__row_number__"]);
}

#[test]
fn csv_ragged_raw_line_uses_the_delimiter() {
    let dir = tmp();
    let path = write(dir.path(), "in.csv", b"a;b\n1;2;3\n");
    let mut opts = CsvSourceOptions::new(&path, Schema::observed());
    opts.delimiter = ';';
    let recs = csv_records(opts);
    assert_eq!(
        quarantined(&recs[0]).0.get("__raw_line__"),
        Some(&json!("1;2;3"))
    );
}

#[test]
fn csv_line_endings_and_multiline_fields() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.csv",
        b"id,text\r1,\"two\r\nlines\"\n2,\"a,\"\"b\"\"\"\r\n3,plain",
    );
    let recs = csv_records(CsvSourceOptions::new(&path, Schema::observed()));
    let got: Vec<(u64, Row)> = recs.iter().map(|r| (r.line, valid(r).clone())).collect();
    assert_eq!(
        got,
        vec![
            (3, row(json!({"id": "1", "text": "two\r\nlines"}))),
            (4, row(json!({"id": "2", "text": "a,\"b\""}))),
            (5, row(json!({"id": "3", "text": "plain"}))),
        ]
    );
}

#[test]
fn csv_invalid_utf8_is_an_error_naming_file_and_line() {
    let dir = tmp();
    let path = write(dir.path(), "bad.csv", b"a,b\n1,2\n3,\xff\xfe\n5,6\n");
    let mut src = match CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(src.next(), Some(Ok(_))));
    match src.next() {
        Some(Err(e @ SourceError::InvalidUtf8 { line: 3, .. })) => {
            let text = e.to_string();
            assert!(text.contains("bad.csv:3"), "{text}");
        }
        other => panic!("expected invalid UTF-8 at line 3, got {other:?}"),
    }
    assert!(src.next().is_none(), "reading stops after the error");
}

#[test]
fn csv_invalid_utf8_in_header() {
    let dir = tmp();
    let path = write(dir.path(), "bad.csv", b"a,\xc3\n1,2\n");
    match CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())) {
        Err(SourceError::InvalidUtf8 { line: 1, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn csv_duplicate_and_empty_headers_are_fatal() {
    let dir = tmp();
    let path = write(dir.path(), "dup.csv", b"Name,id,NAME \n1,2,3\n");
    match CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())) {
        Err(e @ SourceError::Header { line: 1, .. }) => {
            let text = e.to_string();
            assert!(text.contains("dup.csv:1"), "{text}");
            assert!(
                text.contains("\"Name\"") && text.contains("\"NAME \""),
                "{text}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("expected an error"),
    }
    let path = write(dir.path(), "empty.csv", b"id,???\n1,2\n");
    match CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())) {
        Err(e @ SourceError::Header { .. }) => {
            assert!(e.to_string().contains("\"???\""), "{e}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn csv_skip_rows_columns_and_mapping() {
    let dir = tmp();
    // skip_rows counts parsed records: the preamble is one quoted record spanning two lines.
    let path = write(
        dir.path(),
        "in.csv",
        b"\"# exported\nby tool\"\nID,Full Name\n1,Ann\n",
    );
    let mut opts = CsvSourceOptions::new(&path, Schema::observed());
    opts.skip_rows = 1;
    opts.field_mapping = vec![("full_name".into(), "name".into())];
    let src = match CsvSource::open(opts) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(src.headers().names(), vec!["id", "name"]);
    assert_eq!(src.headers().original_of("name"), Some("Full Name"));
    let recs: Vec<SourceRecord> = src.map(|r| r.unwrap_or_else(|e| panic!("{e}"))).collect();
    assert_eq!(valid(&recs[0]), &row(json!({"id": "1", "name": "Ann"})));
    assert_eq!(recs[0].line, 4);

    // Headerless: names verbatim; a BOM stays in the first cell, as in ELSPETH.
    let path = write(dir.path(), "nohdr.csv", b"\xef\xbb\xbf1,Ann\n2,Bob\n");
    let mut opts = CsvSourceOptions::new(&path, Schema::observed());
    opts.columns = Some(vec!["id".into(), "name".into()]);
    let recs = csv_records(opts);
    assert_eq!(
        valid(&recs[0]),
        &row(json!({"id": "\u{feff}1", "name": "Ann"}))
    );
    assert_eq!(recs.len(), 2);
}

#[test]
fn csv_empty_file_and_skip_past_end_give_no_rows() {
    let dir = tmp();
    let path = write(dir.path(), "empty.csv", b"");
    assert!(csv_records(CsvSourceOptions::new(&path, Schema::observed())).is_empty());
    let path = write(dir.path(), "short.csv", b"a\n");
    let mut opts = CsvSourceOptions::new(&path, Schema::observed());
    opts.skip_rows = 5;
    assert!(csv_records(opts).is_empty());
}

#[test]
fn csv_blank_header_line_is_refused() {
    let dir = tmp();
    let path = write(dir.path(), "blank.csv", b"\na,b\n1,2\n");
    assert!(matches!(
        CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())),
        Err(SourceError::Header { line: 1, .. })
    ));
}

#[test]
fn csv_schema_coercion_and_quarantine_raw_rows() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.csv",
        b"id,score,ok,note,extra\n 7 ,1_000.5,yes,,x\n1.5,2,maybe,n,y\n",
    );
    let schema = Schema::flexible(vec![
        FieldSpec::new("id", FieldType::Int, false),
        FieldSpec::new("score", FieldType::Float, false),
        FieldSpec::new("ok", FieldType::Bool, false),
        FieldSpec::new("note", FieldType::Str, true),
        FieldSpec::new("missing", FieldType::Int, true),
    ]);
    let recs = csv_records(CsvSourceOptions::new(&path, schema));
    let first = valid(&recs[0]);
    assert_eq!(
        first,
        &row(
            json!({"id": 7, "score": 1000.5, "ok": true, "note": "", "missing": null, "extra": "x"})
        )
    );
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(keys, ["id", "score", "ok", "note", "missing", "extra"]);
    let (raw, err) = quarantined(&recs[1]);
    assert_eq!(
        raw,
        &row(json!({"id": "1.5", "score": "2", "ok": "maybe", "note": "n", "extra": "y"}))
    );
    assert!(err.contains("field 'id'") && err.contains("'1.5'"), "{err}");
    assert!(
        err.contains("field 'ok'") && err.contains("'maybe'"),
        "{err}"
    );
}

#[test]
fn csv_ten_megabyte_field() {
    let dir = tmp();
    let big = "z".repeat(10 * 1024 * 1024);
    let path = write(
        dir.path(),
        "big.csv",
        format!("id,blob\n1,\"{big}\"\n").as_bytes(),
    );
    let recs = csv_records(CsvSourceOptions::new(&path, Schema::observed()));
    assert_eq!(valid(&recs[0]).get("blob"), Some(&Value::String(big)));
}

#[test]
fn csv_missing_file_names_it() {
    let dir = tmp();
    let path = dir.path().join("nope.csv");
    match CsvSource::open(CsvSourceOptions::new(&path, Schema::observed())) {
        Err(e @ SourceError::Io { .. }) => assert!(e.to_string().contains("nope.csv")),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("expected an error"),
    }
}

// --- JSON -------------------------------------------------------------------------------

#[test]
fn json_array_with_data_key_and_lines() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.json",
        b"{\"meta\": 1, \"rows\": [\n  {\"id\": 1, \"id\": 2, \"n\": 1.0},\n  [1, 2],\n  {\"id\": 3}\n]}",
    );
    let mut opts = JsonSourceOptions::new(&path, Schema::observed());
    opts.data_key = Some("rows".into());
    let recs = json_records(opts);
    assert_eq!(recs.len(), 3);
    assert_eq!(valid(&recs[0]), &row(json!({"id": 2, "n": 1.0})));
    assert_eq!(recs[0].line, 2);
    let (raw, err) = quarantined(&recs[1]);
    assert_eq!(raw, &row(json!({"_raw": [1, 2]})));
    assert!(err.contains("list"), "{err}");
    assert_eq!((recs[2].row_index, recs[2].line), (2, 4));
}

#[test]
fn json_array_problems_are_one_quarantine_row() {
    let dir = tmp();
    let path = write(dir.path(), "bad.json", b"[{\"a\": 1},\n {\"a\": NaN}]");
    let recs = json_records(JsonSourceOptions::new(&path, Schema::observed()));
    assert_eq!(recs.len(), 1);
    let (raw, err) = quarantined(&recs[0]);
    assert_eq!(
        raw.get("file_path"),
        Some(&json!(path.display().to_string()))
    );
    assert!(raw.contains_key("parse_error"));
    assert!(err.starts_with("JSON parse error at line 2 col "), "{err}");
    assert!(err.contains("NaN"), "{err}");

    let path = write(dir.path(), "obj.json", b"{\"a\": 1}");
    let recs = json_records(JsonSourceOptions::new(&path, Schema::observed()));
    assert_eq!(recs.len(), 1);
    let (raw, err) = quarantined(&recs[0]);
    assert_eq!(err, "Expected JSON array, got dict");
    assert_eq!(
        raw.get("structure_error"),
        Some(&json!("Expected JSON array, got dict"))
    );

    let mut opts = JsonSourceOptions::new(&path, Schema::observed());
    opts.data_key = Some("rows".into());
    let recs = json_records(opts);
    assert_eq!(
        quarantined(&recs[0]).1,
        "data_key 'rows' not found in JSON object. Available keys: ['a']"
    );
}

#[test]
fn jsonl_bad_lines_are_quarantined_and_reading_goes_on() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.jsonl",
        b"{\"a\": 1}\r\n\n  {\"a\": Infinity}  \n{oops\r{\"a\": 2}\n",
    );
    let recs = json_records(JsonSourceOptions::new(&path, Schema::observed()));
    assert_eq!(recs.len(), 4);
    assert_eq!((valid(&recs[0]), recs[0].line), (&row(json!({"a": 1})), 1));
    let (raw, err) = quarantined(&recs[1]);
    assert_eq!(
        raw,
        &row(json!({"__raw_line__": "{\"a\": Infinity}", "__line_number__": 3}))
    );
    assert!(err.starts_with("JSON parse error at line 3:"), "{err}");
    let (raw, _) = quarantined(&recs[2]);
    assert_eq!(
        raw,
        &row(json!({"__raw_line__": "{oops", "__line_number__": 4}))
    );
    assert_eq!(
        (valid(&recs[3]), recs[3].line, recs[3].row_index),
        (&row(json!({"a": 2})), 5, 3)
    );
}

#[test]
fn json_format_detection_and_options() {
    assert_eq!(JsonFormat::detect(Path::new("x.jsonl")), JsonFormat::Lines);
    assert_eq!(JsonFormat::detect(Path::new("x.json")), JsonFormat::Array);
    assert_eq!(JsonFormat::detect(Path::new("x.JSONL")), JsonFormat::Array);
    assert_eq!(
        JsonFormat::detect(Path::new("x.jsonl.gz")),
        JsonFormat::Array
    );
    assert_eq!(JsonFormat::detect(Path::new(".jsonl")), JsonFormat::Array);
    let dir = tmp();
    let path = write(dir.path(), "in.jsonl", b"{}\n");
    let mut opts = JsonSourceOptions::new(&path, Schema::observed());
    opts.data_key = Some("rows".into());
    assert!(matches!(
        JsonSource::open(opts),
        Err(SourceError::Config { .. })
    ));
}

#[test]
fn json_coercion_and_lock_in() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.jsonl",
        b"{\"id\": \"5\", \"v\": 1}\n{\"id\": 2.0, \"v\": 1.5}\n{\"id\": true, \"v\": null}\n",
    );
    let schema = Schema::flexible(vec![FieldSpec::new("id", FieldType::Int, false)]);
    let recs = json_records(JsonSourceOptions::new(&path, schema));
    assert_eq!(valid(&recs[0]), &row(json!({"id": 5, "v": 1})));
    // v was locked to int by the first valid row: 1.5 is quarantined (validated row kept).
    let (raw, err) = quarantined(&recs[1]);
    assert_eq!(raw, &row(json!({"id": 2, "v": 1.5})));
    assert!(err.contains("field 'v'"), "{err}");
    assert_eq!(valid(&recs[2]), &row(json!({"id": 1, "v": null})));
}

#[test]
fn jsonl_invalid_utf8_is_an_error_with_line() {
    let dir = tmp();
    let path = write(dir.path(), "in.jsonl", b"{}\n{\"a\": \"\xff\"}\n");
    let mut src = match JsonSource::open(JsonSourceOptions::new(&path, Schema::observed())) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(src.next(), Some(Ok(_))));
    match src.next() {
        Some(Err(e @ SourceError::InvalidUtf8 { line: 2, .. })) => {
            assert!(e.to_string().contains("in.jsonl:2"), "{e}");
        }
        other => panic!("expected invalid UTF-8, got {other:?}"),
    }
    assert!(src.next().is_none());
}

#[test]
fn csv_record_limit_stops_reading_with_the_line() {
    let dir = tmp();
    let path = write(
        dir.path(),
        "in.csv",
        b"a,b\n1,2\n3,\"never closed\n4,5\n6,7\n",
    );
    let mut opts = CsvSourceOptions::new(&path, Schema::observed());
    opts.max_record_bytes = 12;
    let mut src = match CsvSource::open(opts) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert!(matches!(src.next(), Some(Ok(_))));
    match src.next() {
        Some(Err(e @ SourceError::RecordTooLarge { .. })) => {
            assert!(e.to_string().contains("in.csv:"), "{e}");
        }
        other => panic!("expected a size error, got {other:?}"),
    }
    assert!(src.next().is_none());
}

#[test]
fn csv_delimiter_cannot_be_a_quote() {
    let dir = tmp();
    let path = write(dir.path(), "in.csv", b"a\n");
    let mut opts = CsvSourceOptions::new(&path, Schema::observed());
    opts.delimiter = '"';
    assert!(matches!(
        CsvSource::open(opts),
        Err(SourceError::Config { .. })
    ));
}
