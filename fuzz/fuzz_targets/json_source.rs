//! The JSON source on arbitrary bytes, as an array document (with and without data_key)
//! and as JSONL. Every input gives records (a bad document as one quarantined record) or
//! an error naming the file — never a panic or a stack overflow on deep nesting.
#![no_main]

use attest_engine::formats::{JsonFormat, JsonSource, JsonSourceOptions};
use libfuzzer_sys::fuzz_target;

#[path = "shapes.rs"]
mod shapes;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut options = JsonSourceOptions::new("fuzz.json", shapes::schema(selector));
    options.format = Some(if selector & 0x40 != 0 {
        JsonFormat::Lines
    } else {
        JsonFormat::Array
    });
    if selector & 0xc0 == 0x80 {
        options.data_key = Some("data".into());
    }
    options.max_line_bytes = 4096;
    let Ok(source) = JsonSource::from_reader(body, options) else {
        return;
    };
    let mut last_index = None;
    for record in source {
        match record {
            Ok(r) => {
                assert_eq!(r.row_index, last_index.map_or(0, |i| i + 1));
                last_index = Some(r.row_index);
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.json"), "{e}");
            }
        }
    }
});
