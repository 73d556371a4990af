//! Rendering lineage and summaries for people (text) and programs (JSON).

use attest_ledger::lineage::{Lineage, StateLineage, TokenLineage};
use std::fmt::Write;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineageFormat {
    /// For a person at a terminal
    Text,
    /// One JSON object, in the stable schema of docs/lineage-json.md
    Json,
    /// Graphviz: source rows, tokens, states, calls, routes and outcomes
    Dot,
    /// A Mermaid flowchart of the same graph
    Mermaid,
}

/// One graph both `dot` and `mermaid` draw: nodes (id, label, shape) and labelled edges.
struct Graph {
    nodes: Vec<(String, String, Shape)>,
    edges: Vec<(String, String, String)>,
}

#[derive(Clone, Copy)]
enum Shape {
    Row,
    Token,
    State,
    Call,
    Outcome,
}

fn graph(l: &Lineage) -> Graph {
    let mut g = Graph {
        nodes: Vec::new(),
        edges: Vec::new(),
    };
    for r in &l.source_rows {
        let id = format!("row{}", r.row);
        g.nodes
            .push((id.clone(), format!("source row {}", r.row), Shape::Row));
        let token = attest_ledger::TokenId::for_row(r.row);
        g.edges
            .push((id, format!("tok_{token}"), "ingested".into()));
    }
    for t in &l.tokens {
        let tid = format!("tok_{}", t.token);
        g.nodes.push((
            tid.clone(),
            format!("token {} ({})", t.token, t.origin),
            Shape::Token,
        ));
        for p in &t.parents {
            g.edges
                .push((format!("tok_{p}"), tid.clone(), t.origin.clone()));
        }
        let mut prev = tid.clone();
        for s in &t.states {
            let sid = format!("st_{}", s.state);
            g.nodes.push((
                sid.clone(),
                format!("{} #{}: {}", s.node, s.attempt, s.status),
                Shape::State,
            ));
            let label = t
                .routes
                .iter()
                .find(|r| r.node == s.node && r.attempt == s.attempt)
                .map(|r| format!("route {}", r.label))
                .unwrap_or_default();
            g.edges.push((prev.clone(), sid.clone(), String::new()));
            for c in &s.calls {
                let cid = format!("{sid}_call{}", c.index);
                g.nodes.push((
                    cid.clone(),
                    format!("call {} {}: {}", c.index, c.kind, c.status),
                    Shape::Call,
                ));
                g.edges.push((sid.clone(), cid, String::new()));
            }
            prev = sid;
            if !label.is_empty() {
                g.edges
                    .push((prev.clone(), format!("out_{}", t.token), label));
            }
        }
        if let Some(o) = &t.outcome {
            let oid = format!("out_{}", t.token);
            let label = match (&o.sink, o.ordinal) {
                (Some(s), Some(n)) => format!("{}: {s} row {n}", o.outcome),
                _ => o.outcome.clone(),
            };
            g.nodes.push((oid.clone(), label, Shape::Outcome));
            if !g.edges.iter().any(|(_, to, _)| to == &oid) {
                g.edges.push((prev, oid, String::new()));
            }
        }
    }
    g
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn lineage_dot(l: &Lineage) -> String {
    let g = graph(l);
    let mut o =
        String::from("digraph lineage {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
    for (id, label, shape) in &g.nodes {
        let shape = match shape {
            Shape::Row => "note",
            Shape::Token => "box",
            Shape::State => "ellipse",
            Shape::Call => "hexagon",
            Shape::Outcome => "cylinder",
        };
        let _ = writeln!(
            o,
            "  \"{}\" [label=\"{}\", shape={shape}];",
            dot_escape(id),
            dot_escape(label)
        );
    }
    for (a, b, label) in &g.edges {
        if label.is_empty() {
            let _ = writeln!(o, "  \"{}\" -> \"{}\";", dot_escape(a), dot_escape(b));
        } else {
            let _ = writeln!(
                o,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                dot_escape(a),
                dot_escape(b),
                dot_escape(label)
            );
        }
    }
    o.push_str("}\n");
    o
}

/// Mermaid ids allow letters, digits and `_` only.
fn mermaid_id(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

pub fn lineage_mermaid(l: &Lineage) -> String {
    let g = graph(l);
    let mut o = String::from("flowchart LR\n");
    for (id, label, shape) in &g.nodes {
        let (open, close) = match shape {
            Shape::Row => ("[/", "/]"),
            Shape::Token => ("[", "]"),
            Shape::State => ("(", ")"),
            Shape::Call => ("{{", "}}"),
            Shape::Outcome => ("[(", ")]"),
        };
        let _ = writeln!(
            o,
            "  {}{open}\"{}\"{close}",
            mermaid_id(id),
            mermaid_text(label)
        );
    }
    for (a, b, label) in &g.edges {
        if label.is_empty() {
            let _ = writeln!(o, "  {} --> {}", mermaid_id(a), mermaid_id(b));
        } else {
            let _ = writeln!(
                o,
                "  {} -->|\"{}\"| {}",
                mermaid_id(a),
                mermaid_text(label),
                mermaid_id(b)
            );
        }
    }
    o
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

fn compact(v: &Option<serde_json::Value>) -> String {
    match v {
        None => "(payload not present)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 200 {
                let cut: String = s.chars().take(200).collect();
                format!("{cut}…")
            } else {
                s
            }
        }
    }
}

pub fn lineage_text(l: &Lineage) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "lineage of {} in run {} (token {})",
        l.query, l.run, l.focus
    );
    for r in &l.source_rows {
        let _ = writeln!(
            o,
            "\nsource row {} from {} (hash {})",
            r.row,
            r.source,
            short(&r.hash)
        );
        let _ = writeln!(o, "  value: {}", compact(&r.value));
        if let Some(e) = &r.validation_error {
            let _ = writeln!(o, "  validation error: {e}");
        }
    }
    for t in &l.tokens {
        token_text(&mut o, t);
    }
    for b in &l.batches {
        let _ = writeln!(
            o,
            "\nbatch {} at {} ({}): {} member(s), trigger {}",
            b.batch,
            b.node,
            b.status,
            b.members.len(),
            b.trigger.as_deref().unwrap_or("-")
        );
        for s in &b.states {
            state_text(&mut o, s);
        }
    }
    for a in &l.artifacts {
        let _ = writeln!(
            o,
            "\nartifact {} -> {} ({} rows, {} bytes, hash {})",
            a.sink,
            a.path,
            a.rows,
            a.size,
            short(&a.content_hash)
        );
    }
    if !l.truncated.is_empty() {
        let _ = writeln!(o, "\n{} more token(s) not expanded", l.truncated.len());
    }
    o
}

fn token_text(o: &mut String, t: &TokenLineage) {
    let origin = match &t.origin_detail {
        Some(d) => format!("{} {d}", t.origin),
        None => t.origin.clone(),
    };
    let _ = writeln!(o, "\ntoken {} ({origin})", t.token);
    if !t.parents.is_empty() {
        let _ = writeln!(o, "  parents: {}", t.parents.join(", "));
    }
    for s in &t.states {
        state_text(o, s);
    }
    for r in &t.routes {
        let _ = writeln!(
            o,
            "  route at {}: {:?} -> {}",
            r.node,
            r.label,
            r.to.join(", ")
        );
    }
    if !t.batches.is_empty() {
        let _ = writeln!(o, "  batches: {}", t.batches.join(", "));
    }
    match &t.outcome {
        Some(out) => {
            let mut line = format!("  outcome: {}", out.outcome);
            if let (Some(s), Some(n)) = (&out.sink, out.ordinal) {
                let _ = write!(line, " -> {s} row {n}");
            }
            if let Some(d) = &out.detail {
                let _ = write!(line, " ({d})");
            }
            let _ = writeln!(o, "{line}");
        }
        None => {
            let _ = writeln!(o, "  outcome: none yet");
        }
    }
}

fn state_text(o: &mut String, s: &StateLineage) {
    let _ = writeln!(
        o,
        "  {} attempt {}: {} in {} us",
        s.node, s.attempt, s.status, s.duration_us
    );
    let _ = writeln!(o, "    in  {} {}", short(&s.input_hash), compact(&s.input));
    if let Some(h) = &s.output_hash {
        let _ = writeln!(o, "    out {} {}", short(h), compact(&s.output));
    }
    if let Some(e) = &s.error {
        let _ = writeln!(o, "    error: {e}");
    }
    if let Some(p) = &s.pool {
        let _ = writeln!(
            o,
            "    pool: {} capacity retries, peak delay {} us, throttled {} us",
            p.capacity_retries, p.peak_delay_us, p.throttled_us
        );
    }
    for c in &s.calls {
        let _ = writeln!(
            o,
            "    call {} {}{}: {}{} request {} response {}",
            c.index,
            c.kind,
            c.served
                .as_deref()
                .map(|t| format!(" for {t}"))
                .unwrap_or_default(),
            c.status,
            c.http_status.map(|s| format!(" {s}")).unwrap_or_default(),
            short(&c.request_hash),
            c.response_hash.as_deref().map(short).unwrap_or("-")
        );
        if let Some(e) = &c.error {
            let _ = writeln!(o, "      error: {e}");
        }
    }
    if s.other_calls > 0 {
        let _ = writeln!(
            o,
            "    ({} more call(s) of this state served other members)",
            s.other_calls
        );
    }
}

/// Milliseconds since the Unix epoch as an ISO 8601 UTC timestamp (to the second).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use attest_ledger::lineage::*;

    fn fork_lineage() -> Lineage {
        let state = |node: &str, token: &str| StateLineage {
            state: format!("{token}@{node}#1"),
            node: node.into(),
            attempt: 1,
            status: "completed".into(),
            error: None,
            input_hash: "00".repeat(32),
            output_hash: None,
            input: None,
            output: None,
            duration_us: 1,
            opened_seq: 1,
            closed_seq: Some(2),
            calls: vec![CallLineage {
                index: 0,
                kind: "llm".into(),
                served: None,
                request_hash: "11".repeat(32),
                response_hash: None,
                status: "responded".into(),
                http_status: Some(200),
                error: None,
                latency_us: Some(5),
                request: None,
                response: None,
            }],
            other_calls: 0,
            pool: None,
        };
        let token =
            |id: &str, origin: &str, parents: Vec<String>, outcome: &str, sink: Option<&str>| {
                TokenLineage {
                    token: id.into(),
                    row: Some(0),
                    origin: origin.into(),
                    origin_detail: None,
                    parents,
                    children: vec![],
                    states: vec![state("gate", id)],
                    routes: vec![],
                    batches: vec![],
                    outcome: Some(OutcomeLineage {
                        outcome: outcome.into(),
                        sink: sink.map(String::from),
                        ordinal: sink.map(|_| 0),
                        detail: None,
                        seq: 9,
                    }),
                }
            };
        Lineage {
            run: "r".into(),
            query: "row 0".into(),
            focus: "t0".into(),
            source_rows: vec![SourceRow {
                row: 0,
                source: "source".into(),
                hash: "22".repeat(32),
                value: None,
                validation_error: None,
                seq: 3,
            }],
            tokens: vec![
                token("t0", "source", vec![], "forked", None),
                token("t0.a", "fork", vec!["t0".into()], "completed", Some("a")),
                token("t0.b", "fork", vec!["t0".into()], "completed", Some("b")),
            ],
            batches: vec![],
            artifacts: vec![],
            truncated: vec![],
        }
    }

    #[test]
    fn dot_draws_every_branch_state_call_and_outcome() {
        let dot = super::lineage_dot(&fork_lineage());
        assert!(dot.starts_with("digraph lineage {"));
        assert!(
            dot.contains("\"row0\" -> \"tok_t0\" [label=\"ingested\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"tok_t0\" -> \"tok_t0.a\" [label=\"fork\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("\"tok_t0\" -> \"tok_t0.b\" [label=\"fork\"];"),
            "{dot}"
        );
        assert!(
            dot.contains(
                "\"st_t0.b@gate#1_call0\" [label=\"call 0 llm: responded\", shape=hexagon];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains("[label=\"completed: b row 0\", shape=cylinder]"),
            "{dot}"
        );
        assert!(dot.trim_end().ends_with('}'));
    }

    #[test]
    fn mermaid_ids_are_plain_and_edges_resolve_to_declared_nodes() {
        let m = super::lineage_mermaid(&fork_lineage());
        assert!(m.starts_with("flowchart LR\n"));
        let declared: Vec<&str> = m
            .lines()
            .skip(1)
            .filter(|l| !l.contains("-->"))
            .map(|l| l.trim().split(['[', '(', '{']).next().unwrap())
            .collect();
        for line in m.lines().filter(|l| l.contains("-->")) {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (from, to) = (parts[0], parts[parts.len() - 1]);
            assert!(declared.contains(&from), "{from} undeclared in\n{m}");
            assert!(declared.contains(&to), "{to} undeclared in\n{m}");
            assert!(from
                .chars()
                .chain(to.chars())
                .all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
        assert!(m.contains("tok_t0 -->|\"fork\"| tok_t0_a"), "{m}");
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_437_528_780), "2026-11-23T12:38:48Z");
    }
}
