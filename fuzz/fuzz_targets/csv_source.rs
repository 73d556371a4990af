//! The CSV source on arbitrary bytes: header resolution, quoting, line breaks, UTF-8
//! checks and schema validation. Every input gives records or an error naming the file —
//! never a panic, and never more memory than the record limit allows.
#![no_main]

use attest_engine::formats::{CsvSource, CsvSourceOptions};
use libfuzzer_sys::fuzz_target;

#[path = "shapes.rs"]
mod shapes;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut options = CsvSourceOptions::new("fuzz.csv", shapes::schema(selector));
    options.delimiter = [',', ';', '\t', '|'][usize::from(selector >> 6)];
    options.skip_rows = u64::from((selector >> 2) & 1);
    if selector & 0x08 != 0 {
        options.columns = Some(vec!["id".into(), "name".into(), "amount".into()]);
    }
    if selector & 0x02 != 0 {
        options.field_mapping = vec![("name".into(), "customer".into())];
    }
    // Small enough that the limit itself is exercised.
    options.max_record_bytes = 4096;
    let Ok(source) = CsvSource::from_reader(body, options) else {
        return;
    };
    let mut last_index = None;
    for record in source {
        match record {
            Ok(r) => {
                // Row indexes count up from 0 without gaps.
                assert_eq!(r.row_index, last_index.map_or(0, |i| i + 1));
                last_index = Some(r.row_index);
            }
            Err(e) => {
                assert!(e.to_string().starts_with("fuzz.csv"), "{e}");
            }
        }
    }
});
