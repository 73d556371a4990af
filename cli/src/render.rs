//! Rendering lineage and summaries for people (text) and programs (JSON).

use attest_ledger::lineage::{Lineage, StateLineage, TokenLineage};
use std::fmt::Write;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineageFormat {
    Text,
    Json,
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
    for c in &s.calls {
        let _ = writeln!(
            o,
            "    call {} {}: {}{} request {} response {}",
            c.index,
            c.kind,
            c.status,
            c.http_status.map(|s| format!(" {s}")).unwrap_or_default(),
            short(&c.request_hash),
            c.response_hash.as_deref().map(short).unwrap_or("-")
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
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_437_528_780), "2026-11-23T12:38:48Z");
    }
}
