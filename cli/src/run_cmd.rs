//! `attest run`: load, check, open, execute, report.

use crate::commands::DEFAULT_LEDGER;
use crate::exit::{Code, Failure};
use attest_engine::run::{execute, RunOptions, RunStatus, RunSummary};
use attest_ledger::{Ledger, RunStart};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub fn run(pipeline: &Path, ledger_dir: Option<PathBuf>, json: bool) -> Result<Code, Failure> {
    let loaded =
        attest_engine::build::load(pipeline, &|k| std::env::var(k).ok()).map_err(|errors| {
            Failure::bad_input(format!(
                "{}\n{}: {} error(s); nothing was run",
                errors.join("\n"),
                pipeline.display(),
                errors.len()
            ))
        })?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let plan = attest_engine::build::plan(&loaded.config)
        .map_err(|e| Failure::bad_input(format!("{}: {e}", pipeline.display())))?;
    // Inputs and outputs are opened before the run is recorded: a missing input file is a
    // usage error, not a failed run.
    let (source, sinks) = attest_engine::open::open(&loaded.config).map_err(Failure::bad_input)?;
    let dir = ledger_dir
        .or_else(|| loaded.config.ledger.path.clone().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER));
    let ledger = Ledger::open(&dir)?;

    let (opts, bar) = run_options(&loaded.config, json);
    let started_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let summary = execute(
        &plan,
        source,
        sinks,
        &ledger,
        RunStart {
            config: loaded.text.clone(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms,
        },
        opts,
    )
    .map_err(|e| Failure::run_failed(e.to_string()))?;
    Ok(conclude(&summary, &dir, bar, json))
}

/// Ctrl-C handling, the progress spinner and the worker count, shared by `run` and
/// `resume`.
pub(crate) fn run_options(
    config: &attest_engine::config::PipelineConfig,
    json: bool,
) -> (RunOptions, Option<indicatif::ProgressBar>) {
    let interrupt = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupt.clone();
        // A second Ctrl-C is not special: the run is already stopping as fast as it can
        // without losing finished rows.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} rows written  {per_sec}  {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let progress: Option<Box<dyn Fn(u64) + Send>> = bar
        .clone()
        .map(|b| Box::new(move |n| b.set_position(n)) as Box<dyn Fn(u64) + Send>);
    let workers = config
        .concurrency
        .max_workers
        .map(|n| n as usize)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
    (
        RunOptions {
            workers,
            interrupt,
            progress,
            ..RunOptions::default()
        },
        bar,
    )
}

/// Records the head, prints the summary and gives the exit code of a run that ended.
pub(crate) fn conclude(
    summary: &RunSummary,
    dir: &Path,
    bar: Option<indicatif::ProgressBar>,
    json: bool,
) -> Code {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let head = attest_ledger::verify::Head {
        count: summary.events,
        hash: summary.head,
    };
    // The run is recorded whatever happens here: a heads log that cannot be written is
    // worth a warning, not a failed run.
    let heads_log = crate::heads::record(dir, &summary.run_id, head, summary.status.name())
        .map_err(|e| {
            eprintln!(
                "attest: warning: could not append the run's head to {}: {e}",
                dir.join(crate::heads::HEADS_LOG).display()
            )
        })
        .ok();
    report(summary, dir, heads_log.as_deref(), json);
    let code = match summary.status {
        // Every row is accounted for, but some failed because a service did not answer:
        // the run did not do its work (a dead endpoint is bad input, not a success).
        RunStatus::Completed if summary.unanswered.rows > 0 => Code::RunFailed,
        RunStatus::Completed => Code::Ok,
        RunStatus::Interrupted => Code::Interrupted,
        RunStatus::Failed => Code::RunFailed,
    };
    // The summary (stdout) is the run's record; why it failed also goes to stderr, where
    // a script or a log collector looks for errors.
    if matches!(code, Code::RunFailed) {
        eprintln!(
            "attest: run {} failed: {}",
            summary.run_id,
            failure_reason(summary).map_or("see the summary", String::as_str)
        );
    }
    code
}

/// What stopped a failed run, or else the first unanswered call's error.
fn failure_reason(s: &RunSummary) -> Option<&String> {
    s.error.as_ref().or(s.unanswered.first.as_ref())
}

fn report(s: &RunSummary, ledger: &Path, heads_log: Option<&Path>, json: bool) {
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.rows as f64 / secs
    } else {
        0.0
    };
    if json {
        let sinks: serde_json::Map<String, serde_json::Value> = s
            .sinks
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let v = serde_json::json!({
            "run_id": s.run_id.as_str(),
            "status": s.status.name(),
            "rows": s.rows,
            "sinks": sinks,
            "quarantined": s.quarantined,
            "failed": s.failed,
            "discarded": s.discarded,
            "unanswered": s.unanswered.rows,
            "elapsed_ms": s.elapsed.as_millis() as u64,
            "events": s.events,
            "head": format!("{}:{}", s.events, s.head),
            "heads_log": heads_log.map(|p| p.display().to_string()),
            "error": failure_reason(s),
        });
        println!("{v}");
        return;
    }
    println!("run {} {}", s.run_id, s.status.name());
    // Values line up in one column however long a sink's name is.
    let width = s
        .sinks
        .iter()
        .map(|(name, _)| name.chars().count() + 3)
        .max()
        .unwrap_or(0)
        .max(12);
    let line = |label: &str, value: &dyn std::fmt::Display| {
        println!("  {label:<width$} {value}");
    };
    line("rows in", &s.rows);
    for (name, n) in &s.sinks {
        line(&format!("-> {name}"), n);
    }
    line("quarantined", &s.quarantined);
    line("failed", &s.failed);
    if s.discarded > 0 {
        line("discarded", &s.discarded);
    }
    line("elapsed", &format!("{secs:.2}s ({rate:.0} rows/s)"));
    line(
        "ledger",
        &format!("{} ({} events)", ledger.display(), s.events),
    );
    line("head", &format!("{}:{}", s.events, s.head));
    if let Some(p) = heads_log {
        line(
            "heads log",
            &format!("{} (keep a copy outside the ledger)", p.display()),
        );
    }
    if s.unanswered.rows > 0 {
        line(
            "unanswered",
            &format!(
                "{} (rows failed: an external service gave no usable answer)",
                s.unanswered.rows
            ),
        );
    }
    if let Some(e) = failure_reason(s) {
        line("error", e);
    }
    match s.status {
        RunStatus::Interrupted => println!(
            "interrupted: resume with `attest resume {} --ledger {}`",
            s.run_id,
            ledger.display()
        ),
        RunStatus::Failed => {}
        RunStatus::Completed => println!(
            "verify with `attest replay --ledger {} --run {}`",
            ledger.display(),
            s.run_id
        ),
    }
}
