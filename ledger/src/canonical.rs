//! Canonical hashing of values.
//!
//! A value is hashed in exactly one byte form, so the same value always has the same hash
//! whichever process or platform produced it: JSON with object keys sorted (by their UTF-8
//! bytes), no whitespace, strings escaped minimally (only `"`, `\` and control characters,
//! the latter as `\u00XX`), integers in plain decimal, floats as the shortest decimal that
//! round-trips with an exponent form that is fixed (`1.0`, `1.5e+20`, `-0.0`). Integers and
//! floats stay distinct (`1` and `1.0` hash differently) because sinks print them
//! differently. NaN and infinities cannot be hashed. An empty object is a value like any
//! other: `{}` has a hash, and it is not the hash of "absent" (which has none).

use crate::ids::Hash32;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("a number that is NaN or infinite cannot be hashed (at {path})")]
    NonFinite { path: String },
}

/// The canonical bytes of `value`.
pub fn to_canonical_bytes(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, value, &mut String::from("$"))?;
    Ok(out)
}

/// The canonical bytes of an object given as its map (a row), without wrapping it in a
/// `Value` first.
pub fn object_to_canonical_bytes(
    map: &serde_json::Map<String, Value>,
) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(64);
    write_object(&mut out, map, &mut String::from("$"))?;
    Ok(out)
}

/// blake3 of the canonical bytes.
pub fn hash_value(value: &Value) -> Result<Hash32, CanonicalError> {
    Ok(Hash32::of(&to_canonical_bytes(value)?))
}

fn write_value(out: &mut Vec<u8>, value: &Value, path: &mut String) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                write_float(out, f, path)?;
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                write_value(out, item, path)?;
                path.truncate(len);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map, path)?,
    }
    Ok(())
}

fn write_object(
    out: &mut Vec<u8>,
    map: &serde_json::Map<String, Value>,
    path: &mut String,
) -> Result<(), CanonicalError> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    out.push(b'{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        let len = path.len();
        path.push('.');
        path.push_str(key);
        write_value(out, &map[key], path)?;
        path.truncate(len);
    }
    out.push(b'}');
    Ok(())
}

/// Floats: the shortest round-trip digits, always with a fraction or an exponent so a float
/// never reads as an integer.
fn write_float(out: &mut Vec<u8>, f: f64, path: &str) -> Result<(), CanonicalError> {
    if !f.is_finite() {
        return Err(CanonicalError::NonFinite {
            path: path.to_string(),
        });
    }
    // Rust's `{:e}` gives the shortest round-trip mantissa and a plain exponent ("1.5e20",
    // "1e0"); normalise it to one form: mantissa always has a fraction, exponent signed.
    let s = format!("{f:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    if exp == 0 {
        out.extend_from_slice(mantissa.as_bytes());
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        out.extend_from_slice(format!("{mantissa}e{sign}{}", exp.abs()).as_bytes());
    }
    Ok(())
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_canonical_bytes(v).unwrap()).unwrap()
    }

    #[test]
    fn keys_are_sorted_and_whitespace_free() {
        let v = json!({"b": 1, "a": [true, null, "x\"y"], "c": {"z": 1, "y": 2}});
        assert_eq!(
            canon(&v),
            r#"{"a":[true,null,"x\"y"],"b":1,"c":{"y":2,"z":1}}"#
        );
    }

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":2,"x":1}"#).unwrap();
        assert_eq!(hash_value(&a).unwrap(), hash_value(&b).unwrap());
    }

    #[test]
    fn one_number_form() {
        assert_eq!(canon(&json!(1)), "1");
        assert_eq!(canon(&json!(1.0)), "1.0");
        assert_eq!(canon(&json!(-0.0)), "-0.0");
        assert_eq!(canon(&json!(1.5e20)), "1.5e+20");
        assert_eq!(canon(&json!(1e-7)), "1.0e-7");
        assert_eq!(canon(&json!(0.1)), "1.0e-1");
        assert_ne!(
            hash_value(&json!(1)).unwrap(),
            hash_value(&json!(1.0)).unwrap()
        );
        // Two spellings of one float parse to the same value and so to one form.
        let a: Value = serde_json::from_str("100.0").unwrap();
        let b: Value = serde_json::from_str("1e2").unwrap();
        assert_eq!(canon(&a), canon(&b));
    }

    #[test]
    fn empty_is_not_absent() {
        let empty_obj = hash_value(&json!({})).unwrap();
        assert_ne!(empty_obj, hash_value(&Value::Null).unwrap());
        assert_ne!(empty_obj, hash_value(&json!([])).unwrap());
        assert_ne!(empty_obj, Hash32::of(b""));
    }

    #[test]
    fn non_finite_is_rejected() {
        // serde_json refuses to build NaN numbers, so reach it through a float that a
        // caller might construct by arithmetic on parsed input.
        let n = serde_json::Number::from_f64(f64::NAN);
        assert!(n.is_none());
        let mut out = Vec::new();
        assert!(write_float(&mut out, f64::INFINITY, "$.x").is_err());
        assert!(write_float(&mut out, f64::NAN, "$.x").is_err());
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The canonical form is valid JSON that parses back to the same value, and
        /// canonicalising is idempotent.
        #[test]
        fn canonical_form_round_trips(v in arb_value()) {
            let bytes = to_canonical_bytes(&v).unwrap();
            let back: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(to_canonical_bytes(&back).unwrap(), bytes);
        }
    }
}
