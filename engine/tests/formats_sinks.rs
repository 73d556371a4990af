//! CSV and JSON sinks: byte-exact golden outputs (derived from ELSPETH-CONFIG §8), durability
//! and resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use attest_engine::formats::{
    CsvSink, CsvSinkOptions, DurablePoint, FieldSpec, FieldType, HeaderMode, JsonFormat, JsonSink,
    JsonSinkOptions, Schema, SinkError, WriteMode,
};
use attest_engine::value::Row;
use proptest::prelude::*;
use serde_json::{json, Value};

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

fn read(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => panic!("not utf-8: {e}"),
        },
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

fn ok<T>(r: Result<T, SinkError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn csv_sink(path: &Path, schema: Schema) -> CsvSink {
    ok(CsvSink::new(CsvSinkOptions::new(path, schema)))
}

fn json_sink(path: &Path, indent: Option<i64>) -> JsonSink {
    let mut o = JsonSinkOptions::new(path, Schema::observed());
    o.indent = indent;
    ok(JsonSink::new(o))
}

/// The durable point a file's current content stands for.
fn point_of(path: &Path, rows: u64) -> DurablePoint {
    let bytes = std::fs::read(path).unwrap_or_default();
    DurablePoint {
        bytes: bytes.len() as u64,
        rows,
        hash: *blake3::hash(&bytes).as_bytes(),
    }
}

fn write_all_csv(sink: &mut CsvSink, rows: &[Value]) {
    for r in rows {
        ok(sink.write_row(&row(r.clone())));
    }
}

// --- CSV --------------------------------------------------------------------------------

#[test]
fn csv_observed_golden() {
    let dir = tmp();
    let path = dir.path().join("out.csv");
    let mut sink = csv_sink(&path, Schema::observed());
    write_all_csv(
        &mut sink,
        &[
            json!({"id": 1, "name": "Ann", "score": 1.0, "ok": true, "note": null}),
            json!({"id": 2, "name": "B, \"Bob\"", "score": 1e16, "ok": false, "note": "multi\nline"}),
            json!({"id": 3, "name": "Zoë", "score": 1e-5}),
            json!({"name": " sp ", "note": {"prompt_tokens": 3, "completion_tokens": 4}, "id": -0.0}),
            json!({"id": 123456789012345.6_f64, "score": 0.0001, "note": ["a", 1, null, true]}),
        ],
    );
    let info = ok(sink.finish());
    let want = "id,name,score,ok,note\r\n\
                1,Ann,1.0,True,\r\n\
                2,\"B, \"\"Bob\"\"\",1e+16,False,\"multi\nline\"\r\n\
                3,Zoë,1e-05,,\r\n\
                -0.0, sp ,,,\"{'prompt_tokens': 3, 'completion_tokens': 4}\"\r\n\
                123456789012345.6,,0.0001,,\"['a', 1, None, True]\"\r\n";
    assert_eq!(read(&path), want);
    let info = info.unwrap_or_else(|| panic!("a file was written"));
    assert_eq!(info.rows, 5);
    assert_eq!(info.size, want.len() as u64);
    assert_eq!(info.content_hash, *blake3::hash(want.as_bytes()).as_bytes());
    assert_eq!(info.path, path);
}

#[test]
fn csv_key_outside_header_is_a_row_error() {
    let dir = tmp();
    let path = dir.path().join("out.csv");
    let mut sink = csv_sink(&path, Schema::observed());
    ok(sink.write_row(&row(json!({"a": 1}))));
    let err = sink.write_row(&row(json!({"a": 2, "b": 3})));
    match &err {
        Err(e @ SinkError::UnknownField { row: 2, field, .. }) => {
            assert_eq!(field, "b");
            assert!(e.is_row_error());
            assert!(e.to_string().contains("out.csv"), "{e}");
        }
        other => panic!("expected an unknown-field error, got {other:?}"),
    }
    ok(sink.write_row(&row(json!({"a": 4}))));
    ok(sink.finish());
    assert_eq!(read(&path), "a\r\n1\r\n4\r\n");
}

#[test]
fn csv_single_empty_cell_rows() {
    let dir = tmp();
    let path = dir.path().join("out.csv");
    let mut sink = csv_sink(&path, Schema::observed());
    write_all_csv(
        &mut sink,
        &[
            json!({"x": ""}),
            json!({"x": null}),
            json!({}),
            json!({"x": "v"}),
        ],
    );
    ok(sink.finish());
    assert_eq!(read(&path), "x\r\n\"\"\r\n\"\"\r\n\"\"\r\nv\r\n");
}

#[test]
fn csv_fixed_and_flexible_columns() {
    let dir = tmp();
    let fields = vec![
        FieldSpec::new("id", FieldType::Int, false),
        FieldSpec::new("label", FieldType::Str, true),
    ];
    let path = dir.path().join("fixed.csv");
    let mut sink = csv_sink(&path, Schema::fixed(fields.clone()));
    ok(sink.write_row(&row(json!({"id": 1}))));
    assert!(matches!(
        sink.write_row(&row(json!({"id": 2, "extra": 1}))),
        Err(SinkError::UnknownField { .. })
    ));
    assert!(matches!(
        sink.write_row(&row(json!({"label": "no id"}))),
        Err(SinkError::MissingField { row: 2, .. })
    ));
    ok(sink.write_row(&row(json!({"label": "b", "id": 2}))));
    ok(sink.finish());
    assert_eq!(read(&path), "id,label\r\n1,\r\n2,b\r\n");

    let path = dir.path().join("flex.csv");
    let mut sink = csv_sink(&path, Schema::flexible(fields));
    write_all_csv(
        &mut sink,
        &[
            json!({"z": "first", "id": 1, "a": true}),
            json!({"id": 2, "a": 2.5}),
        ],
    );
    ok(sink.finish());
    assert_eq!(read(&path), "id,label,z,a\r\n1,,first,True\r\n2,,,2.5\r\n");
}

#[test]
fn csv_headers_original_and_custom() {
    let dir = tmp();
    let path = dir.path().join("orig.csv");
    let mut opts = CsvSinkOptions::new(&path, Schema::observed());
    opts.headers = HeaderMode::Original(BTreeMap::from([
        ("full_name".to_string(), "Full Name ".to_string()),
        ("amount".to_string(), "Amount, USD".to_string()),
    ]));
    let mut sink = ok(CsvSink::new(opts));
    ok(sink.write_row(&row(json!({"full_name": "Ann", "amount": 3, "added": "x"}))));
    ok(sink.finish());
    assert_eq!(
        read(&path),
        "Full Name ,\"Amount, USD\",added\r\nAnn,3,x\r\n"
    );

    let path = dir.path().join("custom.csv");
    let mut opts = CsvSinkOptions::new(&path, Schema::observed());
    opts.headers = HeaderMode::Custom(BTreeMap::from([("a".to_string(), "Alpha".to_string())]));
    opts.delimiter = '\t';
    let mut sink = ok(CsvSink::new(opts));
    ok(sink.write_row(&row(json!({"a": "1\t2", "b": "x,y"}))));
    ok(sink.finish());
    assert_eq!(read(&path), "Alpha\tb\r\n\"1\t2\"\tx,y\r\n");
}

#[test]
fn csv_sink_without_rows_creates_nothing_and_keeps_existing_files() {
    let dir = tmp();
    let path = dir.path().join("never.csv");
    let mut sink = csv_sink(&path, Schema::observed());
    assert_eq!(ok(sink.flush_durable()), DurablePoint::empty());
    assert!(ok(sink.finish()).is_none());
    assert!(!path.exists());

    let path = dir.path().join("existing.csv");
    if let Err(e) = std::fs::write(&path, "old\r\n") {
        panic!("{e}");
    }
    let sink = csv_sink(&path, Schema::observed());
    assert!(ok(sink.finish()).is_none());
    assert_eq!(read(&path), "old\r\n");

    // A row that is refused does not create the file either.
    let path = dir.path().join("refused.csv");
    let mut sink = csv_sink(
        &path,
        Schema::fixed(vec![FieldSpec::new("id", FieldType::Int, false)]),
    );
    assert!(sink.write_row(&row(json!({"x": 1}))).is_err());
    assert!(ok(sink.finish()).is_none());
    assert!(!path.exists());
}

#[test]
fn csv_append_reuses_existing_header() {
    let dir = tmp();
    let path = dir.path().join("app.csv");
    if let Err(e) = std::fs::write(&path, "Name,id\r\nold,0\r\n") {
        panic!("{e}");
    }
    let mut opts = CsvSinkOptions::new(&path, Schema::observed());
    opts.mode = WriteMode::Append;
    opts.headers = HeaderMode::Original(BTreeMap::from([("name".to_string(), "Name".to_string())]));
    let mut sink = ok(CsvSink::new(opts.clone()));
    assert_eq!(ok(sink.flush_durable()), point_of(&path, 0));
    assert_eq!(point_of(&path, 0).bytes, 16);
    ok(sink.write_row(&row(json!({"id": 1, "name": "new"}))));
    assert!(matches!(
        sink.write_row(&row(json!({"other": 1}))),
        Err(SinkError::UnknownField { .. })
    ));
    let info = ok(sink.finish()).unwrap_or_else(|| panic!("written"));
    assert_eq!(read(&path), "Name,id\r\nold,0\r\nnew,1\r\n");
    assert_eq!(info.rows, 1);

    // Append to a missing file behaves like write.
    let fresh = dir.path().join("fresh.csv");
    opts.path = fresh.clone();
    let mut sink = ok(CsvSink::new(opts));
    ok(sink.write_row(&row(json!({"name": "n", "id": 1}))));
    ok(sink.finish());
    assert_eq!(read(&fresh), "Name,id\r\nn,1\r\n");
}

#[test]
fn csv_append_checks_header_against_schema() {
    let dir = tmp();
    let path = dir.path().join("app.csv");
    if let Err(e) = std::fs::write(&path, "b,a\r\n") {
        panic!("{e}");
    }
    let fields = vec![
        FieldSpec::new("a", FieldType::Str, false),
        FieldSpec::new("b", FieldType::Str, false),
    ];
    let mut opts = CsvSinkOptions::new(&path, Schema::fixed(fields.clone()));
    opts.mode = WriteMode::Append;
    let mut sink = ok(CsvSink::new(opts.clone()));
    assert!(matches!(
        sink.write_row(&row(json!({"a": "1", "b": "2"}))),
        Err(SinkError::HeaderMismatch { .. })
    ));
    // Not a row error: the sink is done.
    assert!(matches!(
        sink.write_row(&row(json!({"a": "1", "b": "2"}))),
        Err(SinkError::Failed { .. })
    ));
    assert!(sink.finish().is_err());
    assert_eq!(read(&path), "b,a\r\n");
    // Flexible only needs the declared fields somewhere in the header.
    opts.schema = Schema::flexible(fields);
    let mut sink = ok(CsvSink::new(opts));
    ok(sink.write_row(&row(json!({"a": "1", "b": "2"}))));
    ok(sink.finish());
    assert_eq!(read(&path), "b,a\r\n2,1\r\n");
}

#[test]
fn csv_resume_cuts_the_torn_tail() {
    let dir = tmp();
    let path = dir.path().join("out.csv");
    let opts = CsvSinkOptions::new(&path, Schema::observed());
    let mut sink = ok(CsvSink::new(opts.clone()));
    write_all_csv(
        &mut sink,
        &[json!({"id": 1, "v": "a"}), json!({"id": 2, "v": "b"})],
    );
    let point = ok(sink.flush_durable());
    assert_eq!(point, point_of(&path, 2));
    assert_eq!(point.bytes, 16);
    ok(sink.write_row(&row(json!({"id": 3, "v": "c"}))));
    drop(sink); // a crash after a write that was never made durable
                // ...and a torn half row on top.
    let mut torn = read(&path);
    torn.push_str("4,\"unfinish");
    if let Err(e) = std::fs::write(&path, torn) {
        panic!("{e}");
    }
    let mut sink = ok(CsvSink::open_resume(opts, point));
    assert_eq!(sink.rows(), 2);
    assert_eq!(
        sink.columns().map(<[String]>::to_vec),
        Some(vec!["id".to_string(), "v".to_string()])
    );
    ok(sink.write_row(&row(json!({"id": 3, "v": "c"}))));
    assert!(sink.write_row(&row(json!({"nope": 1}))).is_err());
    let info = ok(sink.finish()).unwrap_or_else(|| panic!("written"));
    assert_eq!(read(&path), "id,v\r\n1,a\r\n2,b\r\n3,c\r\n");
    assert_eq!(info.rows, 3);
}

#[test]
fn csv_resume_before_any_durable_row() {
    let dir = tmp();
    // Append mode: the content that was there before the run is restored exactly.
    let path = dir.path().join("app.csv");
    if let Err(e) = std::fs::write(&path, "a\r\n1\r\n") {
        panic!("{e}");
    }
    let mut opts = CsvSinkOptions::new(&path, Schema::observed());
    opts.mode = WriteMode::Append;
    let mut sink = ok(CsvSink::new(opts.clone()));
    let point = ok(sink.flush_durable());
    ok(sink.write_row(&row(json!({"a": 2}))));
    drop(sink);
    assert_eq!(read(&path), "a\r\n1\r\n2\r\n");
    let mut sink = ok(CsvSink::open_resume(opts, point));
    assert_eq!(read(&path), "a\r\n1\r\n");
    ok(sink.write_row(&row(json!({"a": 3}))));
    ok(sink.finish());
    assert_eq!(read(&path), "a\r\n1\r\n3\r\n");
}

#[test]
fn csv_resume_detects_a_shortened_file() {
    let dir = tmp();
    let path = dir.path().join("out.csv");
    if let Err(e) = std::fs::write(&path, "a\r\n") {
        panic!("{e}");
    }
    let opts = CsvSinkOptions::new(&path, Schema::observed());
    assert!(matches!(
        CsvSink::open_resume(
            opts,
            DurablePoint {
                bytes: 100,
                rows: 3,
                hash: [0; 32],
            }
        ),
        Err(SinkError::Resume { .. })
    ));
}

// --- JSON -------------------------------------------------------------------------------

#[test]
fn jsonl_golden() {
    let dir = tmp();
    let path = dir.path().join("out.jsonl");
    let mut sink = json_sink(&path, Some(4)); // indent is ignored for JSONL, as in ELSPETH
    assert_eq!(sink.format(), JsonFormat::Lines);
    ok(sink.write_row(&row(json!({
        "id": 1, "name": "Zoë 😀", "f": 1e-5, "g": 1e16, "h": -0.0, "n": null,
        "l": [1, 2.5, "x"], "d": {"k": true}, "q": "say \"hi\"\n", "big": u64::MAX
    }))));
    ok(sink.write_row(&row(json!({}))));
    ok(sink.finish());
    assert_eq!(
        read(&path),
        "{\"id\": 1, \"name\": \"Zo\\u00eb \\ud83d\\ude00\", \"f\": 1e-05, \"g\": 1e+16, \
         \"h\": -0.0, \"n\": null, \"l\": [1, 2.5, \"x\"], \"d\": {\"k\": true}, \
         \"q\": \"say \\\"hi\\\"\\n\", \"big\": 18446744073709551615}\n{}\n"
    );
}

#[test]
fn json_array_golden_and_valid_at_each_durable_point() {
    let dir = tmp();
    let path = dir.path().join("out.json");
    let mut sink = json_sink(&path, None);
    assert_eq!(sink.format(), JsonFormat::Array);
    ok(sink.write_row(&row(json!({"a": 1}))));
    let p1 = ok(sink.flush_durable());
    assert_eq!(read(&path), "[{\"a\": 1}]");
    assert_eq!(p1, point_of(&path, 1));
    assert_eq!(p1.bytes, 10);
    ok(sink.write_row(&row(json!({"a": 2, "b": [1.0]}))));
    ok(sink.write_row(&row(json!({"a": 3}))));
    let p2 = ok(sink.flush_durable());
    assert_eq!(
        read(&path),
        "[{\"a\": 1}, {\"a\": 2, \"b\": [1.0]}, {\"a\": 3}]"
    );
    assert_eq!(p2.rows, 3);
    // A second flush with nothing new changes nothing.
    assert_eq!(ok(sink.flush_durable()), p2);
    let info = ok(sink.finish()).unwrap_or_else(|| panic!("written"));
    let want = "[{\"a\": 1}, {\"a\": 2, \"b\": [1.0]}, {\"a\": 3}]";
    assert_eq!(read(&path), want);
    assert_eq!(info.content_hash, *blake3::hash(want.as_bytes()).as_bytes());
    assert_eq!(info.size, want.len() as u64);
}

#[test]
fn json_array_indent_golden() {
    let dir = tmp();
    let path = dir.path().join("out.json");
    let mut sink = json_sink(&path, Some(2));
    ok(sink.write_row(&row(json!({"a": 1, "b": {"c": [1, 2]}, "e": []}))));
    ok(sink.flush_durable());
    ok(sink.write_row(&row(json!({"a": "é"}))));
    ok(sink.finish());
    assert_eq!(
        read(&path),
        "[\n  {\n    \"a\": 1,\n    \"b\": {\n      \"c\": [\n        1,\n        2\n      ]\n    },\n    \"e\": []\n  },\n  {\n    \"a\": \"\\u00e9\"\n  }\n]"
    );

    let path = dir.path().join("zero.json");
    let mut sink = json_sink(&path, Some(0));
    ok(sink.write_row(&row(json!({"a": 1}))));
    ok(sink.write_row(&row(json!({"a": 2}))));
    ok(sink.finish());
    assert_eq!(read(&path), "[\n{\n\"a\": 1\n},\n{\n\"a\": 2\n}\n]");
}

#[test]
fn json_array_resume() {
    for indent in [None, Some(2)] {
        let dir = tmp();
        let path = dir.path().join("out.json");
        let mut opts = JsonSinkOptions::new(&path, Schema::observed());
        opts.indent = indent;
        let mut sink = ok(JsonSink::new(opts.clone()));
        ok(sink.write_row(&row(json!({"a": 1}))));
        ok(sink.write_row(&row(json!({"a": 2}))));
        let point = ok(sink.flush_durable());
        ok(sink.write_row(&row(json!({"a": "lost"}))));
        drop(sink); // crash: the closing bracket was overwritten by ", {..."
        let mut sink = ok(JsonSink::open_resume(opts.clone(), point));
        ok(sink.write_row(&row(json!({"a": 3}))));
        ok(sink.finish());

        let mut clean = ok(JsonSink::new(JsonSinkOptions {
            path: dir.path().join("clean.json"),
            ..opts
        }));
        for a in [1, 2, 3] {
            ok(clean.write_row(&row(json!({ "a": a }))));
        }
        ok(clean.finish());
        assert_eq!(
            read(&path),
            read(&dir.path().join("clean.json")),
            "indent {indent:?}"
        );
    }
}

#[test]
fn jsonl_append_and_resume() {
    let dir = tmp();
    let path = dir.path().join("out.jsonl");
    if let Err(e) = std::fs::write(&path, "{\"old\": true}\n") {
        panic!("{e}");
    }
    let mut opts = JsonSinkOptions::new(&path, Schema::observed());
    opts.mode = WriteMode::Append;
    let mut sink = ok(JsonSink::new(opts.clone()));
    ok(sink.write_row(&row(json!({"n": 1}))));
    let point = ok(sink.flush_durable());
    assert_eq!(point, point_of(&path, 1));
    assert_eq!(point.bytes, 23);
    ok(sink.write_row(&row(json!({"n": "lost"}))));
    drop(sink);
    let mut sink = ok(JsonSink::open_resume(opts, point));
    ok(sink.write_row(&row(json!({"n": 2}))));
    ok(sink.finish());
    assert_eq!(read(&path), "{\"old\": true}\n{\"n\": 1}\n{\"n\": 2}\n");
}

#[test]
fn json_write_mode_truncates_at_first_row_only() {
    let dir = tmp();
    let path = dir.path().join("out.jsonl");
    if let Err(e) = std::fs::write(&path, "{\"old\": true}\n") {
        panic!("{e}");
    }
    let sink = json_sink(&path, None);
    assert!(ok(sink.finish()).is_none());
    assert_eq!(read(&path), "{\"old\": true}\n");
    let mut sink = json_sink(&path, None);
    ok(sink.write_row(&row(json!({"new": 1}))));
    ok(sink.finish());
    assert_eq!(read(&path), "{\"new\": 1}\n");
    assert!(!dir.path().join("none.json").exists());
}

#[test]
fn json_headers_rename_keys_and_collisions_refuse_the_row() {
    let dir = tmp();
    let path = dir.path().join("out.jsonl");
    let mut opts = JsonSinkOptions::new(&path, Schema::observed());
    opts.headers = HeaderMode::Custom(BTreeMap::from([("a".to_string(), "b".to_string())]));
    let mut sink = ok(JsonSink::new(opts));
    ok(sink.write_row(&row(json!({"z": 0, "a": 1}))));
    match sink.write_row(&row(json!({"a": 1, "b": 2}))) {
        Err(e @ SinkError::KeyCollision { .. }) => {
            assert!(e.is_row_error());
            assert!(e.to_string().contains("'a' and 'b'"), "{e}");
        }
        other => panic!("expected a collision, got {other:?}"),
    }
    ok(sink.finish());
    assert_eq!(read(&path), "{\"z\": 0, \"b\": 1}\n");
}

#[test]
fn json_required_fields_and_append_array_config() {
    let dir = tmp();
    let path = dir.path().join("out.json");
    let mut opts = JsonSinkOptions::new(
        &path,
        Schema::fixed(vec![FieldSpec::new("id", FieldType::Int, false)]),
    );
    let mut sink = ok(JsonSink::new(opts.clone()));
    assert!(matches!(
        sink.write_row(&row(json!({"x": 1}))),
        Err(SinkError::MissingField { .. })
    ));
    // Fixed mode does not reject extra keys in JSON.
    ok(sink.write_row(&row(json!({"id": 1, "x": 1}))));
    ok(sink.finish());
    assert_eq!(read(&path), "[{\"id\": 1, \"x\": 1}]");
    opts.mode = WriteMode::Append;
    assert!(matches!(JsonSink::new(opts), Err(SinkError::Config { .. })));
}

// --- round trip ---------------------------------------------------------------------------

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ,\"\r\n;\t']{0,8}",
        any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the cells hold, the csv crate reads the sink's file back to the same cells.
    #[test]
    fn csv_output_reparses_to_the_same_cells(
        ncols in 1usize..4,
        rows in proptest::collection::vec(proptest::collection::vec(cell(), 3), 1..6),
    ) {
        let dir = tmp();
        let path: PathBuf = dir.path().join("p.csv");
        let names: Vec<String> = (0..ncols).map(|i| format!("c{i}")).collect();
        let mut sink = csv_sink(&path, Schema::observed());
        for r in &rows {
            let mut m = Row::new();
            for (name, v) in names.iter().zip(r) {
                m.insert(name.clone(), Value::String(v.clone()));
            }
            sink.write_row(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        sink.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let bytes = std::fs::read(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
        let mut back = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| TestCaseError::fail(e.to_string()))?;
            back.push(rec.iter().map(str::to_string).collect::<Vec<_>>());
        }
        let mut want = vec![names.clone()];
        for r in &rows {
            want.push(r[..ncols].to_vec());
        }
        // The csv crate strips a BOM at the very start of the file; ours never starts with one
        // because the header comes first.
        prop_assert_eq!(back, want);
    }
}

#[test]
fn io_errors_name_the_file_and_end_the_sink() {
    let dir = tmp();
    let path = dir.path().join("no-such-dir").join("out.csv");
    let mut sink = csv_sink(&path, Schema::observed());
    match sink.write_row(&row(json!({"a": 1}))) {
        Err(e @ SinkError::Io { .. }) => {
            assert!(!e.is_row_error());
            assert!(e.to_string().contains("no-such-dir"), "{e}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(
        sink.write_row(&row(json!({"a": 1}))),
        Err(SinkError::Failed { .. })
    ));
    let mut sink = json_sink(&dir.path().join("missing").join("out.json"), None);
    assert!(matches!(
        sink.write_row(&row(json!({"a": 1}))),
        Err(SinkError::Io { .. })
    ));
}

// --- crash and resume, any format ---------------------------------------------------------

/// The sink kinds a resume must handle: their framing differs (a CSV header, JSON lines, a
/// JSON array whose closing bracket is rewritten at every durable point).
#[derive(Clone, Copy, Debug)]
enum Kind {
    Csv,
    Jsonl,
    Array,
    ArrayIndented,
}

enum AnySink {
    Csv(CsvSink),
    Json(JsonSink),
}

impl AnySink {
    fn write(&mut self, r: &Row) -> Result<(), SinkError> {
        match self {
            AnySink::Csv(s) => s.write_row(r),
            AnySink::Json(s) => s.write_row(r),
        }
    }
    fn flush(&mut self) -> Result<DurablePoint, SinkError> {
        match self {
            AnySink::Csv(s) => s.flush_durable(),
            AnySink::Json(s) => s.flush_durable(),
        }
    }
    fn finish(self) -> Result<(), SinkError> {
        match self {
            AnySink::Csv(s) => s.finish().map(|_| ()),
            AnySink::Json(s) => s.finish().map(|_| ()),
        }
    }
}

fn any_sink(kind: Kind, path: &Path, resume: Option<DurablePoint>) -> Result<AnySink, SinkError> {
    match kind {
        Kind::Csv => {
            let o = CsvSinkOptions::new(path, Schema::observed());
            Ok(AnySink::Csv(match resume {
                None => CsvSink::new(o)?,
                Some(p) => CsvSink::open_resume(o, p)?,
            }))
        }
        Kind::Jsonl | Kind::Array | Kind::ArrayIndented => {
            let mut o = JsonSinkOptions::new(path, Schema::observed());
            o.format = Some(match kind {
                Kind::Jsonl => JsonFormat::Lines,
                _ => JsonFormat::Array,
            });
            if let Kind::ArrayIndented = kind {
                o.indent = Some(2);
            }
            Ok(AnySink::Json(match resume {
                None => JsonSink::new(o)?,
                Some(p) => JsonSink::open_resume(o, p)?,
            }))
        }
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Csv),
        Just(Kind::Jsonl),
        Just(Kind::Array),
        Just(Kind::ArrayIndented)
    ]
}

fn rows_of(values: &[(i64, String)]) -> Vec<Row> {
    values
        .iter()
        .map(|(n, s)| row(json!({"n": n, "s": s})))
        .collect()
}

/// Writes `rows[..crash_at]`, making the sink durable after each row whose index is in
/// `flush_after`, then "crashes" (drops the sink) and tears the file with `torn` bytes.
/// Returns the last durable point, as the ledger would have recorded it.
fn crash(
    kind: Kind,
    path: &Path,
    rows: &[Row],
    flush_after: &[usize],
    crash_at: usize,
    torn: &[u8],
) -> Result<DurablePoint, TestCaseError> {
    let fail = |e: SinkError| TestCaseError::fail(e.to_string());
    let mut sink = any_sink(kind, path, None).map_err(fail)?;
    let mut point = DurablePoint::empty();
    for (i, r) in rows[..crash_at].iter().enumerate() {
        sink.write(r).map_err(fail)?;
        if flush_after.contains(&i) {
            point = sink.flush().map_err(fail)?;
        }
    }
    drop(sink);
    if path.exists() && !torn.is_empty() {
        let mut bytes = std::fs::read(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        bytes.extend_from_slice(torn);
        std::fs::write(path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    Ok(point)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Whatever was written and torn after the last durable point, resuming from it and
    /// writing the remaining rows gives exactly the bytes of an uninterrupted run.
    #[test]
    fn resume_from_any_durable_point_gives_the_uninterrupted_bytes(
        kind in kind(),
        values in proptest::collection::vec((any::<i64>(), "[a-z,\"\n ]{0,6}"), 1..12),
        flush_after in proptest::collection::vec(0usize..12, 0..4),
        crash_frac in 0.0f64..=1.0,
        torn in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let rows = rows_of(&values);
        let crash_at = ((rows.len() as f64) * crash_frac) as usize;
        let dir = tmp();
        let clean = dir.path().join("clean.out");
        let mut sink = any_sink(kind, &clean, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &rows {
            sink.write(r).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        sink.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;

        let path = dir.path().join("crashed.out");
        let point = crash(kind, &path, &rows, &flush_after, crash_at, &torn)?;
        let mut sink = any_sink(kind, &path, Some(point)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for r in &rows[point.rows as usize..] {
            sink.write(r).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        sink.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(std::fs::read(&path).ok(), std::fs::read(&clean).ok());
    }

    /// A durable prefix changed behind the sink's back (one byte altered, or the file cut
    /// short or removed) is refused, never repaired or written over. Only a JSON array's
    /// closing bracket is exempt: the next row legitimately overwrites it, so a resume
    /// writes it back whatever the file holds there.
    #[test]
    fn resume_refuses_a_changed_durable_prefix(
        kind in kind(),
        values in proptest::collection::vec((any::<i64>(), "[a-z]{0,4}"), 1..8),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        how in 0u8..3,
    ) {
        let rows = rows_of(&values);
        let dir = tmp();
        let path = dir.path().join("out");
        let point = crash(kind, &path, &rows, &[rows.len() - 1], rows.len(), b"")?;
        let mut bytes = std::fs::read(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bytes.len() as u64, point.bytes);
        let body = bytes.len() - closing_len(kind);
        match how {
            0 => {
                let i = at.index(body);
                bytes[i] ^= flip;
                std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            1 => {
                bytes.truncate(at.index(body));
                std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            _ => std::fs::remove_file(&path).map_err(|e| TestCaseError::fail(e.to_string()))?,
        }
        let before = std::fs::read(&path).ok();
        match any_sink(kind, &path, Some(point)) {
            Err(e @ SinkError::Resume { .. }) => {
                prop_assert!(e.to_string().contains("out"), "{}", e);
            }
            Err(other) => return Err(TestCaseError::fail(format!("wrong error: {other}"))),
            Ok(_) => return Err(TestCaseError::fail("a changed file was accepted")),
        }
        prop_assert_eq!(std::fs::read(&path).ok(), before, "the refused file was changed");
    }
}

/// Bytes of the closing bracket a durable JSON array ends with.
fn closing_len(kind: Kind) -> usize {
    match kind {
        Kind::Csv | Kind::Jsonl => 0,
        Kind::Array => 1,
        Kind::ArrayIndented => 2,
    }
}

#[test]
fn resume_writes_back_an_overwritten_closing_bracket() {
    for kind in [Kind::Array, Kind::ArrayIndented] {
        let dir = tmp();
        let path = dir.path().join("out.json");
        let rows = rows_of(&[(1, "a".into()), (2, "b".into())]);
        let point = match crash(kind, &path, &rows, &[1], 2, b"") {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let durable = read(&path);
        // What the next row leaves when the crash comes right after it cut the bracket.
        let cut = &durable[..durable.len() - closing_len(kind)];
        if let Err(e) = std::fs::write(&path, cut) {
            panic!("{e}");
        }
        let sink = ok(any_sink(kind, &path, Some(point)));
        assert_eq!(read(&path), durable, "{kind:?}");
        ok(sink.finish());
        assert_eq!(read(&path), durable, "{kind:?}");
    }
}
