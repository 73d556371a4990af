//! Tests of the whole language through the public API.
