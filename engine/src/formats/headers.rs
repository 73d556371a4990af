//! CSV header normalization and field-name resolution (ELSPETH-CONFIG §3).
//!
//! Headers become identifiers: NFC, trim, lower-case, each run of non-word characters → `_`,
//! collapse `_`, strip outer `_`, prefix `_` if digit-first, suffix `_` on Python keywords.
//! "Word" is Python's `re` `\w`: Unicode letters and numbers (general categories L* and N*)
//! and `_` — notably *not* combining marks, which Rust's `char::is_alphanumeric` would accept.
//! The original header text is kept so sinks can write it back (`headers: original`).

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

use super::python::py_strip;

/// Python 3.12's `keyword.kwlist` (hard keywords). `False`/`None`/`True` cannot survive
/// lower-casing, and soft keywords (`match`, `case`, `type`, `_`) are not in the list.
const PYTHON_KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Python's `keyword.iskeyword` for a lower-case name.
pub fn is_python_keyword(name: &str) -> bool {
    PYTHON_KEYWORDS.contains(&name)
}

/// Python's `str.isidentifier()`: XID_Start or `_`, then XID_Continue.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c == '_' || unicode_ident::is_xid_start(c) => {
            chars.all(unicode_ident::is_xid_continue)
        }
        _ => false,
    }
}

/// Python `re`'s `\w` in a str pattern: alphanumeric (letters and numbers) or `_`.
fn is_word_char(c: char) -> bool {
    c == '_'
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
        )
}

/// Normalize one header to an identifier. The error names the header text.
pub fn normalize_header(raw: &str) -> Result<String, String> {
    let nfc: String = raw.nfc().collect();
    let lowered = py_strip(&nfc).to_lowercase();
    let mut collapsed = String::with_capacity(lowered.len());
    for c in lowered.chars() {
        // Non-word runs become one `_`, and `_` runs collapse: both reduce to "never push
        // `_` after `_`".
        let c = if is_word_char(c) { c } else { '_' };
        if c == '_' && collapsed.ends_with('_') {
            continue;
        }
        collapsed.push(c);
    }
    let stripped = collapsed.trim_matches('_');
    let mut name = String::with_capacity(stripped.len() + 2);
    // Python's `isdigit()` covers decimal digits and digit-like numbers such as `²`; the
    // latter can never end in a valid identifier, so the prefix only matters for Nd.
    if stripped.chars().next().is_some_and(|c| {
        matches!(
            c.general_category(),
            GeneralCategory::DecimalNumber | GeneralCategory::OtherNumber
        )
    }) {
        name.push('_');
    }
    name.push_str(stripped);
    if is_python_keyword(&name) {
        name.push('_');
    }
    if name.is_empty() {
        return Err(format!("header {raw:?} normalizes to an empty name"));
    }
    if !is_identifier(&name) {
        return Err(format!(
            "header {raw:?} normalizes to {name:?}, which is not a valid identifier"
        ));
    }
    Ok(name)
}

/// One column: the text the file (or `columns`) gave it and the field name rows use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedField {
    pub original: String,
    pub name: String,
}

/// The columns of a CSV source, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderResolution {
    pub fields: Vec<ResolvedField>,
}

impl HeaderResolution {
    /// Final field names in column order.
    pub fn names(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.clone()).collect()
    }

    /// The original header text of a field, if the field came from this source.
    pub fn original_of(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.original.as_str())
    }

    /// Field name → original header text, for a sink's `headers: original`.
    pub fn original_names(&self) -> std::collections::BTreeMap<String, String> {
        self.fields
            .iter()
            .map(|f| (f.name.clone(), f.original.clone()))
            .collect()
    }
}

/// Resolve field names from the file's header row (normalized) or from `columns`
/// (verbatim), then apply `field_mapping` (effective name → new name).
pub fn resolve_headers(
    raw_headers: Option<&[String]>,
    columns: Option<&[String]>,
    field_mapping: &[(String, String)],
) -> Result<HeaderResolution, String> {
    let mut fields: Vec<ResolvedField> = match (columns, raw_headers) {
        (Some(cols), _) => {
            for c in cols {
                if !is_identifier(c) || is_python_keyword(c) {
                    return Err(format!(
                        "column name {c:?} in `columns` must be an identifier and not a Python keyword"
                    ));
                }
            }
            cols.iter()
                .map(|c| ResolvedField {
                    original: c.clone(),
                    name: c.clone(),
                })
                .collect()
        }
        (None, Some(raw)) => raw
            .iter()
            .map(|h| {
                normalize_header(h).map(|name| ResolvedField {
                    original: h.clone(),
                    name,
                })
            })
            .collect::<Result<_, _>>()?,
        (None, None) => return Err("neither a header row nor `columns` was given".to_string()),
    };
    if let Some(msg) = collisions(&fields, "after normalization") {
        return Err(msg);
    }
    if !field_mapping.is_empty() {
        let missing: Vec<&str> = field_mapping
            .iter()
            .filter(|(from, _)| !fields.iter().any(|f| f.name == *from))
            .map(|(from, _)| from.as_str())
            .collect();
        if !missing.is_empty() {
            let available: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            return Err(format!(
                "field_mapping keys not found in headers: {missing:?}; available: {available:?}"
            ));
        }
        for f in &mut fields {
            if let Some((_, to)) = field_mapping.iter().find(|(from, _)| *from == f.name) {
                f.name = to.clone();
            }
        }
        if let Some(msg) = collisions(&fields, "after field_mapping") {
            return Err(msg);
        }
    }
    Ok(HeaderResolution { fields })
}

/// A message naming every pair of columns that ended with the same name, if any.
fn collisions(fields: &[ResolvedField], stage: &str) -> Option<String> {
    let mut details = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        // Report each name once, at its first column.
        if fields[..i].iter().any(|g| g.name == f.name) {
            continue;
        }
        let same: Vec<String> = fields
            .iter()
            .enumerate()
            .filter(|(_, g)| g.name == f.name)
            .map(|(j, g)| format!("column {} ({:?})", j + 1, g.original))
            .collect();
        if same.len() > 1 {
            details.push(format!("{:?} <- {}", f.name, same.join(", ")));
        }
    }
    if details.is_empty() {
        None
    } else {
        Some(format!(
            "duplicate field name {stage}: {}",
            details.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        match normalize_header(s) {
            Ok(n) => n,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    #[test]
    fn spec_examples() {
        assert_eq!(norm("Full Name "), "full_name");
        assert_eq!(norm("Score!!"), "score");
        assert_eq!(norm("class"), "class_");
        assert_eq!(norm("\u{feff}id"), "id");
    }

    #[test]
    fn more_rules() {
        assert_eq!(norm("CaSE Study1 !!!! xx!"), "case_study1_xx");
        assert_eq!(norm("1st place"), "_1st_place");
        assert_eq!(norm("__a__b__"), "a_b");
        assert_eq!(norm("None"), "none");
        assert_eq!(norm("True"), "true");
        assert_eq!(norm("IF"), "if_");
        assert_eq!(norm("from"), "from_");
        assert_eq!(norm("match"), "match");
        assert_eq!(norm("Café"), "café");
        // NFC composes e + combining acute into é before anything else.
        assert_eq!(norm("Cafe\u{301}"), "café");
        assert_eq!(norm("naïve-value (EUR)"), "naïve_value_eur");
        assert_eq!(norm("日本 語"), "日本_語");
        assert_eq!(norm("٣abc"), "_٣abc");
    }

    #[test]
    fn combining_marks_are_not_word_characters() {
        // Devanagari vowel signs are marks (Mc/Mn): Python's \w does not match them.
        assert_eq!(norm("हिन्दी"), "ह_न_द");
    }

    #[test]
    fn empty_and_invalid_are_errors_naming_the_header() {
        let e = normalize_header("!!!").err().unwrap_or_default();
        assert!(e.contains("\"!!!\""), "{e}");
        assert!(normalize_header("   ").is_err());
        assert!(normalize_header("").is_err());
        // `²` is a number but not an identifier character: Python rejects the result too.
        assert!(normalize_header("x²").is_err());
    }

    #[test]
    fn collisions_are_fatal_and_named() {
        let raw = vec!["Name".to_string(), "name ".to_string(), "id".to_string()];
        let e = resolve_headers(Some(&raw), None, &[])
            .err()
            .unwrap_or_default();
        assert!(e.contains("\"name\""), "{e}");
        assert!(e.contains("column 1 (\"Name\")"), "{e}");
        assert!(e.contains("column 2 (\"name \")"), "{e}");
    }

    #[test]
    fn mapping_and_originals() {
        let raw = vec!["Full Name".to_string(), "Age".to_string()];
        let r = resolve_headers(
            Some(&raw),
            None,
            &[("age".to_string(), "years".to_string())],
        );
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.names(), vec!["full_name", "years"]);
        assert_eq!(r.original_of("years"), Some("Age"));
        let bad = resolve_headers(Some(&raw), None, &[("nope".to_string(), "x".to_string())]);
        assert!(bad.err().unwrap_or_default().contains("nope"));
        let clash = resolve_headers(
            Some(&raw),
            None,
            &[("age".to_string(), "full_name".to_string())],
        );
        assert!(clash.err().unwrap_or_default().contains("field_mapping"));
    }

    #[test]
    fn columns_are_verbatim() {
        let cols = vec!["Id".to_string(), "name".to_string()];
        let r = resolve_headers(None, Some(&cols), &[]).map(|r| r.names());
        assert_eq!(r, Ok(vec!["Id".to_string(), "name".to_string()]));
        let dup = vec!["a".to_string(), "a".to_string()];
        assert!(resolve_headers(None, Some(&dup), &[]).is_err());
        let kw = vec!["class".to_string()];
        assert!(resolve_headers(None, Some(&kw), &[]).is_err());
    }
}
