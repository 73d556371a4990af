//! Re-execution: running a recorded run again and comparing it with the record.
//!
//! The recorded configuration (or, for "would this changed pipeline have decided the
//! same?", another pipeline with the same topology) runs through the same executor as
//! `attest run` ([`crate::run::execute`]), with:
//!
//! - a source that hands on the recorded source rows ([`source`]);
//! - the pipeline's own sinks writing into a scratch directory ([`sinks`]);
//! - a scratch ledger ([`attest_ledger::scratch`]) that applies the integrity rules in
//!   memory, stores nothing, and passes every event to the comparison ([`compare`]).
//!
//! The record is read first ([`record`]), every event that states a result keyed by the
//! ids it is about; each re-executed event is matched with it as the scratch ledger accepts
//! it. The first divergence in the record's order is reported with its code, seq, node and
//! token. `docs/replay.md` is the user's description.
//!
//! External calls are answered from the record by (state, call index), never sent
//! ([`calls`]). Re-execution is made deterministic: retries do not wait, and batches and
//! coalesce groups are not flushed by their timers (only by count, condition and end of
//! source), since a timer fires with the clock, which re-execution cannot replay.

mod calls;
pub mod compare;
pub mod detail;
mod record;
mod sinks;
mod source;

pub use compare::{Comparison, Divergence, DivergenceCode};
pub use record::Recorder;

use crate::build;
use crate::config::PipelineConfig;
use crate::plan::{NodeExec, Plan};
use crate::run::{execute, RunOptions, RunStatus};
use attest_ledger::{FinalStatus, Ledger, LedgerError, NodeId, NodeKind, RunId, RunStart};
use compare::Leniency;
use serde::Serialize;
use source::{RecordedSource, Unavailable};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builds the executable plan from a configuration: [`build::plan`] unless a caller
/// re-executes with a plan of its own making (tests change one to see what diverges).
pub type PlanBuilder<'a> = dyn Fn(&PipelineConfig) -> Result<Plan, String> + 'a;

/// How to re-execute.
pub struct ReexecOptions<'a> {
    /// Re-execute this pipeline file instead of the recorded configuration (`attest
    /// replay --pipeline`). Its topology (node names, kinds and wiring) must be the
    /// recorded run's.
    pub pipeline: Option<&'a Path>,
    /// `${VAR}` expansion in the configuration: the recorded text keeps the references,
    /// never their values.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Worker threads; the configuration's `max_workers`, else one per core.
    pub workers: Option<usize>,
    /// Builds the plan; `None` is [`build::plan`].
    pub plan: Option<&'a PlanBuilder<'a>>,
}

impl<'a> ReexecOptions<'a> {
    /// The recorded configuration, `${VAR}` from `env`, the default plan.
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>) -> ReexecOptions<'a> {
        ReexecOptions {
            pipeline: None,
            env,
            workers: None,
            plan: None,
        }
    }
}

/// Why re-execution could not start. None of these says anything about the record's
/// integrity: they are usage or configuration problems (exit 2 from the command line).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Topology(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("re-execution could not start: {0}")]
    Start(String),
}

/// Re-execution could not be done because what it needs is not in the ledger (a recorded
/// purge removed the source rows' payloads). Verification is unaffected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotReexecuted {
    /// Why, for the first row that could not be read.
    pub reason: String,
    /// Source rows that cannot be read (at most [`LISTED`]).
    pub rows: Vec<u64>,
    pub rows_total: u64,
    /// The states that could not be re-executed: every state of the run, since the rows
    /// flow through shared sinks, batches and coalesces (at most [`LISTED`], in seq order).
    pub states: Vec<String>,
    pub states_total: u64,
}

/// Most rows and states a [`NotReexecuted`] names.
pub const LISTED: usize = 1000;

/// What re-execution found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reexecution {
    /// The pipeline file re-executed instead of the recorded configuration.
    pub pipeline: Option<String>,
    /// `None` when nothing could be re-executed.
    pub comparison: Option<Comparison>,
    pub not_reexecuted: Option<NotReexecuted>,
    /// Set when the record stops early (a failed or interrupted run): what re-execution did
    /// beyond it is not compared.
    pub partial: Option<String>,
    /// Record events that state a result (what the comparison covers).
    pub record_events: u64,
    pub elapsed: Duration,
}

impl Reexecution {
    /// The first divergence, if any.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.comparison.as_ref().and_then(|c| c.first.as_ref())
    }
}

/// Re-executes `run` and compares it with the record. The ledger should have been
/// verified first: re-execution trusts the record it reads.
pub fn reexecute(
    ledger: &Ledger,
    run: &RunId,
    opts: &ReexecOptions<'_>,
) -> Result<Reexecution, ReplayError> {
    let started = Instant::now();
    let recorder = Recorder::read(ledger, run)?;
    reexecute_recorded(ledger, run, recorder, opts, started)
}

/// As [`reexecute`], with the record already gathered (by verification's walk, see
/// [`Recorder`]); `started` is when gathering it began.
pub fn reexecute_recorded(
    ledger: &Ledger,
    run: &RunId,
    recorder: Recorder,
    opts: &ReexecOptions<'_>,
    started: Instant,
) -> Result<Reexecution, ReplayError> {
    let Recorder {
        recorded,
        expected: comparator,
    } = recorder;
    if recorded.events == 0 {
        return Err(ReplayError::Start(format!("run {run} has no record")));
    }
    let record_events = comparator.expected_len() as u64;

    let loaded = load_config(ledger, run, &recorded, opts)?;
    let config = &loaded.config;
    let mut plan = match opts.plan {
        Some(builder) => builder(config),
        None => build::plan(config),
    }
    .map_err(|e| ReplayError::Config(format!("{}: {e}", config.file)))?;
    if opts.pipeline.is_some() {
        check_topology(&plan, &recorded)?;
    }
    make_deterministic(&mut plan);

    let dir = tempfile::Builder::new()
        .prefix("attest-replay-")
        .tempdir()
        .map_err(|e| ReplayError::Start(format!("cannot make a scratch directory: {e}")))?;
    let scratch_sinks = sinks::open(config, dir.path()).map_err(ReplayError::Start)?;
    let finished = recorded.finished;
    let partial = match finished {
        Some(FinalStatus::Completed) => None,
        Some(FinalStatus::Failed) => Some("the run failed".to_string()),
        None => Some("the run did not finish".to_string()),
    };
    let mut comparator = comparator.with_leniency(Leniency {
        ignore_extras: partial.is_some(),
        rows_only: scratch_sinks.rows_only,
        sink_paths: scratch_sinks.paths,
    });
    comparator.start_observing();
    let comparator = Arc::new(Mutex::new(Some(comparator)));
    let observer = {
        let comparator = comparator.clone();
        Box::new(move |_: &RunId, _: u64, event: &attest_ledger::Event| {
            if let Ok(mut c) = comparator.lock() {
                if let Some(c) = c.as_mut() {
                    c.observe(event);
                }
            }
        })
    };
    let unavailable = Arc::new(Mutex::new(None));
    // A run that failed stopped reading somewhere; its rows are followed by the same kind
    // of end, so that re-execution also fails instead of flushing what the run left.
    let fail_at_end = (finished == Some(FinalStatus::Failed))
        .then(|| "the recorded run failed after its last recorded row".to_string());
    let source = RecordedSource::new(
        ledger,
        run,
        recorded.rows.clone(),
        config,
        fail_at_end,
        unavailable.clone(),
    );
    // Every call is answered from the record; nothing is sent.
    let calls = Arc::new(calls::RecordedCalls::new(ledger.clone(), run.clone()));
    let summary = {
        let scratch = Ledger::scratch(observer)?;
        let workers = opts
            .workers
            .or(config.concurrency.max_workers.map(|n| n as usize))
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
        // A run that did not finish stopped after its last recorded row, leaving batches
        // and coalesce groups as they were: re-execution stops the same way, once every
        // recorded row is through, instead of flushing them at the end of the source.
        let stop = Arc::new(AtomicBool::new(false));
        let progress = finished.is_none().then(|| {
            let stop = stop.clone();
            let rows = recorded.rows.len() as u64;
            Box::new(move |released: u64| {
                if released >= rows {
                    stop.store(true, Ordering::SeqCst);
                }
            }) as Box<dyn Fn(u64) + Send>
        });
        execute(
            &plan,
            Box::new(source),
            scratch_sinks.sinks,
            &scratch,
            RunStart {
                config: loaded.text.clone(),
                engine_version: env!("CARGO_PKG_VERSION").to_string(),
                started_at_ms: recorded.started_at_ms,
            },
            RunOptions {
                workers,
                interrupt: stop,
                progress,
                calls: calls.clone(),
                interrupted: Arc::new(recorded.interrupted.clone()),
            },
        )
        .map_err(|e| ReplayError::Start(e.to_string()))?
    };
    // The scratch ledger is gone: its writer has observed every event.
    let comparator = comparator
        .lock()
        .ok()
        .and_then(|mut c| c.take())
        .ok_or_else(|| ReplayError::Start("the comparison was lost".into()))?;
    let pipeline = opts.pipeline.map(|p| p.display().to_string());
    let unavailable = unavailable.lock().ok().and_then(|mut u| u.take());
    if let Some(first) = unavailable {
        return Ok(Reexecution {
            pipeline,
            comparison: None,
            not_reexecuted: Some(not_reexecuted(ledger, run, &recorded, first)?),
            partial,
            record_events,
            elapsed: started.elapsed(),
        });
    }
    // The first divergence's recorded side is read back from the log (the comparison
    // holds digests); a read error shows as an event that could not be read back.
    let mut comparison = comparator.finish(&mut |seq| ledger.event_at(run, seq).ok().flatten());
    // A call the record could not answer stopped the re-execution: it is the divergence to
    // report, and so is a re-execution that failed as a whole (not a row) for another
    // reason; what it then did not produce follows from either.
    if let Some(d) = calls.divergence(ledger, run)? {
        comparison.divergences += 1;
        comparison.first = Some(d);
    } else if summary.status == RunStatus::Failed && finished == Some(FinalStatus::Completed) {
        comparison.divergences += 1;
        comparison.first = Some(Divergence {
            code: DivergenceCode::RunDiverged,
            seq: Some(recorded.events.saturating_sub(1)),
            node: None,
            token: None,
            expected: "completed".into(),
            found: format!(
                "failed: {}",
                summary.error.as_deref().unwrap_or("(no error recorded)")
            ),
            message: "the re-executed run failed".into(),
        });
    }
    drop(dir);
    Ok(Reexecution {
        pipeline,
        comparison: Some(comparison),
        not_reexecuted: None,
        partial,
        record_events,
        elapsed: started.elapsed(),
    })
}

/// The configuration to re-execute: the recorded one, or the `--pipeline` file.
fn load_config(
    ledger: &Ledger,
    run: &RunId,
    recorded: &record::Recorded,
    opts: &ReexecOptions<'_>,
) -> Result<build::Loaded, ReplayError> {
    let errors = |what: String, errors: Vec<String>| {
        ReplayError::Config(format!(
            "{}\n{what}: {} error(s); nothing was re-executed",
            errors.join("\n"),
            errors.len()
        ))
    };
    match opts.pipeline {
        Some(path) => {
            build::load(path, opts.env).map_err(|e| errors(path.display().to_string(), e))
        }
        None => {
            let text = ledger.payload(&recorded.config_hash)?.ok_or_else(|| {
                // Purges keep configurations, and verification checks this payload first.
                ReplayError::Config(format!(
                    "run {run}: the recorded configuration ({}) is not in the ledger",
                    recorded.config_hash
                ))
            })?;
            let name = format!("(configuration recorded by run {run})");
            build::load_text(text, Path::new(&name), opts.env).map_err(|e| errors(name, e))
        }
    }
}

/// Retries do not wait, and timers do not flush: see the module documentation.
fn make_deterministic(plan: &mut Plan) {
    plan.retry.initial_delay = 0.0;
    plan.retry.max_delay = 0.0;
    for node in &mut plan.nodes {
        match &mut node.exec {
            NodeExec::Aggregation { trigger, .. } => trigger.timeout = None,
            NodeExec::Coalesce { timeout, .. } => *timeout = None,
            _ => {}
        }
    }
}

/// A `--pipeline` must have the recorded run's nodes (names and kinds) and edges, so that
/// its states, routes and tokens have the same ids and compare one for one.
fn check_topology(plan: &Plan, recorded: &record::Recorded) -> Result<(), ReplayError> {
    let mut nodes: BTreeSet<(String, String)> = BTreeSet::new();
    nodes.insert((plan.source.id.to_string(), kind(NodeKind::Source)));
    for n in &plan.nodes {
        nodes.insert((n.id.to_string(), kind(n.kind)));
    }
    for s in &plan.sinks {
        nodes.insert((s.id.to_string(), kind(NodeKind::Sink)));
    }
    let recorded_nodes: BTreeSet<(String, String)> = recorded
        .nodes
        .iter()
        .map(|(n, k)| (n.to_string(), kind(*k)))
        .collect();
    let edge = |(f, t, l): &(NodeId, NodeId, String)| format!("{f} -[{l}]-> {t}");
    let edges: BTreeSet<String> = plan.edges.iter().map(edge).collect();
    let recorded_edges: BTreeSet<String> = recorded.edges.iter().map(edge).collect();
    let mut problems = Vec::new();
    for (n, k) in recorded_nodes.difference(&nodes) {
        problems.push(format!("the run has {k} `{n}`, the pipeline does not"));
    }
    for (n, k) in nodes.difference(&recorded_nodes) {
        problems.push(format!("the pipeline has {k} `{n}`, the run does not"));
    }
    for e in recorded_edges.difference(&edges) {
        problems.push(format!("the run has edge {e}, the pipeline does not"));
    }
    for e in edges.difference(&recorded_edges) {
        problems.push(format!("the pipeline has edge {e}, the run does not"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ReplayError::Topology(format!(
            "the pipeline's topology differs from the recorded run's, so their decisions \
             cannot be compared one for one:\n  {}",
            problems.join("\n  ")
        )))
    }
}

fn kind(k: NodeKind) -> String {
    format!("{k:?}").to_lowercase()
}

/// Names what could not be re-executed: the rows that cannot be read, and every state.
fn not_reexecuted(
    ledger: &Ledger,
    run: &RunId,
    recorded: &record::Recorded,
    first: Unavailable,
) -> Result<NotReexecuted, ReplayError> {
    let mut rows = Vec::new();
    let mut rows_total = 0u64;
    for (i, info) in recorded.rows.iter().enumerate() {
        let present = ledger.payload(&info.payload)?.is_some()
            && match &info.detail {
                Some((d, _)) => ledger.payload(d)?.is_some(),
                None => true,
            };
        if !present || i as u64 == first.row {
            rows_total += 1;
            if rows.len() < LISTED {
                rows.push(i as u64);
            }
        }
    }
    let mut states: Vec<String> = Vec::new();
    let mut states_total = 0u64;
    ledger.for_each_event(run, |_, event| {
        if let attest_ledger::Event::StateOpened { state, .. } = event {
            states_total += 1;
            if states.len() < LISTED {
                states.push(state.to_string());
            }
        }
        Ok(())
    })?;
    Ok(NotReexecuted {
        reason: format!("source row {}: {}", first.row, first.reason),
        rows,
        rows_total,
        states,
        states_total,
    })
}
