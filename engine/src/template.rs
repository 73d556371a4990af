//! Jinja templates for prompts, URLs and request bodies (minijinja), rendered the way
//! ELSPETH's Jinja2 renders them (ELSPETH-CONFIG §9.2): sandboxed, an undefined variable
//! is an error, no autoescaping, one trailing newline dropped, and every value printed as
//! Python's `str()` would print it (`1.0`, `None`, `True`, `{'a': 1}`).

use crate::formats::python::py_str;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use std::fmt::Write as _;

/// Work one rendering may do (minijinja's fuel: roughly instructions). Ample for any
/// prompt; it stops a template such as `{% for i in range(10**9) %}` from hanging a row.
const FUEL: u64 = 5_000_000;

const NAME: &str = "template";

/// A compiled template. Cheap to share between threads.
pub struct Template {
    env: Environment<'static>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template")
    }
}

impl Template {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str) -> Result<Template, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        // minijinja, like Jinja2, drops one trailing newline unless told to keep it.
        env.set_fuel(Some(FUEL));
        env.set_formatter(|out, _state, value| {
            let json = serde_json::to_value(value).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string())
            })?;
            out.write_str(&py_str(&json)).map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        });
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| describe(&e))?;
        Ok(Template { env })
    }

    /// Renders with `context` (an object: `row`, `lookup`, ...).
    pub fn render(&self, context: &Value) -> Result<String, String> {
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(context)))
            .map_err(|e| describe(&e))
    }
}

/// minijinja's message with the line it points at, without its debug dump.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(detail) = e.detail() {
        let _ = write!(s, ": {detail}");
    }
    if let Some(line) = e.line() {
        let _ = write!(s, " (line {line})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, ctx: Value) -> Result<String, String> {
        Template::new(src)?.render(&ctx)
    }

    #[test]
    fn values_print_as_python_str() {
        let ctx = json!({"row": {"f": 1.0, "i": 3, "n": null, "b": true, "s": "x<&>", "d": {"a": [1, 'c'.to_string()]}}});
        assert_eq!(
            render(
                "{{ row.f }} {{ row.i }} {{ row.n }} {{ row.b }} {{ row.s }} {{ row.d }}",
                ctx
            )
            .unwrap(),
            "1.0 3 None True x<&> {'a': [1, 'c']}"
        );
    }

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(render("a\n\n", json!({})).unwrap(), "a\n");
        assert_eq!(render("a\n", json!({})).unwrap(), "a");
    }

    #[test]
    fn undefined_is_an_error_and_syntax_errors_name_the_line() {
        let e = render("hi {{ row.missing }}", json!({"row": {}})).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        let e = Template::new("ok\n{{ row.x ").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let e = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            json!({}),
        )
        .unwrap_err();
        assert!(e.contains("fuel"), "{e}");
    }

    #[test]
    fn urls_can_encode_values() {
        assert_eq!(
            render(
                "/q?x={{ row.s | urlencode }}",
                json!({"row": {"s": "a b&c"}})
            )
            .unwrap(),
            "/q?x=a%20b%26c"
        );
    }

    #[test]
    fn row_order_is_kept_when_iterating() {
        assert_eq!(
            render(
                "{% for k in row %}{{ k }},{% endfor %}",
                json!({"row": {"z": 1, "a": 2}})
            )
            .unwrap(),
            "z,a,"
        );
    }
}
