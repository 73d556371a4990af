//! Pipeline configuration: the YAML settings file, read into typed structures.

#![allow(dead_code)] // Filled in by the following commits.

mod decode;
mod env;
mod error;
mod graph;
mod names;
mod schema;
mod yaml;
