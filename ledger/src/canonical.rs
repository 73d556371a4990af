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
    write_value(&mut out, value).map_err(NonFiniteAt::into_error)?;
    Ok(out)
}

/// The canonical bytes of an object given as its map (a row), without wrapping it in a
/// `Value` first.
pub fn object_to_canonical_bytes(
    map: &serde_json::Map<String, Value>,
) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(64);
    write_object(&mut out, map).map_err(NonFiniteAt::into_error)?;
    Ok(out)
}

/// blake3 of the canonical bytes.
pub fn hash_value(value: &Value) -> Result<Hash32, CanonicalError> {
    Ok(Hash32::of(&to_canonical_bytes(value)?))
}

/// Where a non-finite number was met, innermost step first (`.key`, `[3]`). The path is
/// built only on the way out of an error: every row of a run is canonicalised (twice, by
/// the source reader and the worker), and building the path of every value it visits
/// cost more than writing the value.
struct NonFiniteAt(Vec<String>);

impl NonFiniteAt {
    fn into_error(self) -> CanonicalError {
        let mut path = String::from("$");
        for step in self.0.iter().rev() {
            path.push_str(step);
        }
        CanonicalError::NonFinite { path }
    }

    fn within(mut self, step: String) -> NonFiniteAt {
        self.0.push(step);
        self
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), NonFiniteAt> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_display(out, i);
            } else if let Some(u) = n.as_u64() {
                write_display(out, u);
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                write_float(out, f).map_err(|()| NonFiniteAt(Vec::new()))?;
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item).map_err(|e| e.within(format!("[{i}]")))?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map)?,
    }
    Ok(())
}

fn write_object(
    out: &mut Vec<u8>,
    map: &serde_json::Map<String, Value>,
) -> Result<(), NonFiniteAt> {
    // Sorted as pairs, so no value is looked up again by its key.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, key);
        out.push(b':');
        write_value(out, value).map_err(|e| e.within(format!(".{key}")))?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends `value`'s `Display` form without an intermediate `String`.
fn write_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// A float's `{:e}` form, formatted on the stack: the longest (`-2.2250738585072014e-308`)
/// is 24 bytes.
struct FloatBuf {
    bytes: [u8; 32],
    len: usize,
}

impl std::fmt::Write for FloatBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dest = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Floats: the shortest round-trip digits, always with a fraction or an exponent so a float
/// never reads as an integer. `Err` for NaN and infinities.
fn write_float(out: &mut Vec<u8>, f: f64) -> Result<(), ()> {
    if !f.is_finite() {
        return Err(());
    }
    // Rust's `{:e}` gives the shortest round-trip mantissa and a plain exponent ("1.5e20",
    // "1e0", "1e-7"); normalise it to one form: mantissa always has a fraction, exponent
    // signed, and no exponent at all when it is zero.
    let mut buf = FloatBuf {
        bytes: [0; 32],
        len: 0,
    };
    if std::fmt::Write::write_fmt(&mut buf, format_args!("{f:e}")).is_err() {
        // Cannot happen (the buffer holds any f64); the allocating form is still right.
        return write_float_parts(out, format!("{f:e}").as_bytes());
    }
    write_float_parts(out, &buf.bytes[..buf.len])
}

/// Writes the canonical form of a float given in Rust's `{:e}` form.
fn write_float_parts(out: &mut Vec<u8>, sci: &[u8]) -> Result<(), ()> {
    let (mantissa, exp) = match sci.iter().position(|&b| b == b'e') {
        Some(at) => (&sci[..at], &sci[at + 1..]),
        None => (sci, &b"0"[..]),
    };
    out.extend_from_slice(mantissa);
    if !mantissa.contains(&b'.') {
        out.extend_from_slice(b".0");
    }
    if exp != b"0" {
        out.push(b'e');
        match exp.strip_prefix(b"-") {
            Some(digits) => {
                out.push(b'-');
                out.extend_from_slice(digits);
            }
            None => {
                out.push(b'+');
                out.extend_from_slice(exp);
            }
        }
    }
    Ok(())
}

/// A JSON string, escaping only `"`, `\` and control characters. It works on bytes: every
/// byte of a multi-byte UTF-8 character is 0x80 or above, so none of them is ever escaped,
/// and runs that need no escape are copied whole.
fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let control;
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0..=0x1f => {
                control = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ];
                &control
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
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
        assert!(write_float(&mut out, f64::INFINITY).is_err());
        assert!(write_float(&mut out, f64::NAN).is_err());
    }

    /// The error names where the number is, though the path is only built on the way out.
    #[test]
    fn non_finite_error_names_its_path() {
        let mut out = Vec::new();
        let at = write_float(&mut out, f64::NEG_INFINITY)
            .map_err(|()| NonFiniteAt(Vec::new()))
            .map_err(|e| {
                e.within("[2]".into())
                    .within(".b".into())
                    .within(".a".into())
            });
        assert_eq!(
            at.map_err(NonFiniteAt::into_error),
            Err(CanonicalError::NonFinite {
                path: "$.a.b[2]".into()
            })
        );
    }

    /// Every kind of character a string can hold, escaped as the reference escapes it.
    #[test]
    fn strings_escape_quotes_backslashes_and_controls_only() {
        let s: String = (0u32..0x80)
            .filter_map(char::from_u32)
            .chain("é€😀\u{7f}\u{2028}".chars())
            .collect();
        let mut fast = Vec::new();
        write_string(&mut fast, &s);
        assert_eq!(fast, reference::string(&s));
        assert!(String::from_utf8(fast)
            .unwrap()
            .starts_with(r#""\u0000\u0001"#));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
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

    /// The canonical form as first written (a `String` per number and per character, the
    /// key path built for every value): the bytes every stored hash was made from. The
    /// faster writer above must give exactly these bytes.
    mod reference {
        use serde_json::Value;

        pub fn value(out: &mut Vec<u8>, v: &Value) {
            match v {
                Value::Null => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        out.extend_from_slice(i.to_string().as_bytes());
                    } else if let Some(u) = n.as_u64() {
                        out.extend_from_slice(u.to_string().as_bytes());
                    } else {
                        float(out, n.as_f64().unwrap());
                    }
                }
                Value::String(s) => out.extend_from_slice(&string(s)),
                Value::Array(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        value(out, item);
                    }
                    out.push(b']');
                }
                Value::Object(map) => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                    out.push(b'{');
                    for (i, key) in keys.into_iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&string(key));
                        out.push(b':');
                        value(out, &map[key]);
                    }
                    out.push(b'}');
                }
            }
        }

        fn float(out: &mut Vec<u8>, f: f64) {
            let s = format!("{f:e}");
            let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
            let exp: i32 = exp.parse().unwrap();
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
        }

        pub fn string(s: &str) -> Vec<u8> {
            let mut out = vec![b'"'];
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
            out
        }
    }

    proptest! {
        /// The writer gives byte for byte the form every recorded hash was made from.
        #[test]
        fn canonical_bytes_are_the_reference_bytes(v in arb_value()) {
            let mut expected = Vec::new();
            reference::value(&mut expected, &v);
            prop_assert_eq!(to_canonical_bytes(&v).unwrap(), expected.clone());
            if let Value::Object(map) = &v {
                prop_assert_eq!(object_to_canonical_bytes(map).unwrap(), expected);
            }
        }

        /// Floats of every magnitude, including subnormals and the extremes.
        #[test]
        fn floats_are_the_reference_form(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            prop_assume!(f.is_finite());
            let (mut fast, mut expected) = (Vec::new(), Vec::new());
            write_float(&mut fast, f).unwrap();
            reference::value(&mut expected, &json!(f));
            prop_assert_eq!(fast, expected);
        }

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
