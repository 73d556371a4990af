//! Shared by the source targets: the first input byte picks the schema and options, so one
//! corpus explores every validation path.

use attest_engine::formats::{FieldSpec, FieldType, Schema};

pub fn schema(selector: u8) -> Schema {
    let fields = vec![
        FieldSpec::new("id", FieldType::Int, false),
        FieldSpec::new("name", FieldType::Str, selector & 0x10 != 0),
        FieldSpec::new("amount", FieldType::Float, true),
        FieldSpec::new("ok", FieldType::Bool, selector & 0x20 != 0),
        FieldSpec::new("meta", FieldType::Any, true),
    ];
    match selector % 3 {
        0 => Schema::observed(),
        1 => Schema::fixed(fields),
        _ => Schema::flexible(fields),
    }
}
