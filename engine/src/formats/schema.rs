//! Plain schema types for sources and sinks.
//!
//! The configuration loader parses `schema: {mode, fields}` and converts into these; they are
//! kept free of parsing concerns so the formats module does not depend on the loader.

/// A declared field type (`str int float bool any`, ELSPETH-CONFIG §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    Str,
    Int,
    Float,
    Bool,
    Any,
}

impl FieldType {
    /// The name as written in a field spec (`int`, `str`, ...), used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Str => "str",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Any => "any",
        }
    }
}

/// One declared field: `"name: type"` or, with `optional`, `"name: type?"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: String,
    pub ty: FieldType,
    /// `?` in the spec: the field may be missing or null (a missing one is filled with null).
    pub optional: bool,
}

impl FieldSpec {
    pub fn new(name: impl Into<String>, ty: FieldType, optional: bool) -> Self {
        FieldSpec {
            name: name.into(),
            ty,
            optional,
        }
    }
}

/// How strictly rows must match the declared fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaMode {
    /// Exactly the declared fields: extras and missing required fields are rejected.
    Fixed,
    /// At least the declared fields; extras are kept after them.
    Flexible,
    /// No declared fields; rows pass untouched (apart from type lock-in).
    Observed,
}

/// A schema: a mode and the declared fields in declaration order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    pub mode: SchemaMode,
    pub fields: Vec<FieldSpec>,
}

impl Schema {
    /// An observed schema (no declared fields).
    pub fn observed() -> Self {
        Schema {
            mode: SchemaMode::Observed,
            fields: Vec::new(),
        }
    }

    pub fn fixed(fields: Vec<FieldSpec>) -> Self {
        Schema {
            mode: SchemaMode::Fixed,
            fields,
        }
    }

    pub fn flexible(fields: Vec<FieldSpec>) -> Self {
        Schema {
            mode: SchemaMode::Flexible,
            fields,
        }
    }

    /// The declared field of that name, if any.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}
