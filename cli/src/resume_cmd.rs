//! `attest resume RUN_ID`: continue a run that was interrupted (Ctrl-C) or that died
//! (SIGKILL, power loss). Every check comes before anything is changed: the run, the
//! pipeline, the input, then the sinks' files; only then is the resume recorded.

use crate::commands::DEFAULT_LEDGER;
use crate::exit::{Code, Failure};
use crate::run_cmd::{conclude, run_options};
use attest_engine::run::resume::{self, ResumeError};
use attest_ledger::Ledger;
use std::path::{Path, PathBuf};

pub fn resume(
    run: &str,
    ledger_dir: Option<PathBuf>,
    pipeline: Option<&Path>,
    json: bool,
) -> Result<Code, Failure> {
    let env = |k: &str| std::env::var(k).ok();
    // With --pipeline, its ledger section names the ledger like `attest run`'s does.
    let from_file = pipeline
        .map(|p| attest_engine::build::load(p, &env).map_err(|e| not_loaded(p, e)))
        .transpose()?;
    let dir = ledger_dir
        .or_else(|| {
            from_file
                .as_ref()
                .and_then(|l| l.config.ledger.path.clone().map(PathBuf::from))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LEDGER));
    if !dir.join("db").exists() {
        return Err(Failure::bad_input(format!(
            "no ledger at {} (use --ledger DIR to name one)",
            dir.display()
        )));
    }
    // Exclusive: a run another process is still executing cannot be resumed here.
    let ledger = Ledger::open(&dir)?;
    let run = crate::commands::resolve_run(&ledger, run)?;

    // Without --pipeline, the configuration the run recorded when it started.
    let (loaded, origin) = match from_file {
        Some(l) => (
            l,
            format!(
                "with {}",
                pipeline.map_or_else(String::new, |p| p.display().to_string())
            ),
        ),
        None => {
            let (hash, bytes) = resume::recorded_config(&ledger, &run).map_err(refused)?;
            let Some(bytes) = bytes else {
                return Err(Failure::bad_input(format!(
                    "the configuration run {run} started with (payload {hash}) was purged from \
                     the ledger; give the pipeline file with --pipeline FILE"
                )));
            };
            let name = PathBuf::from(format!("{run} (recorded configuration)"));
            let l = attest_engine::build::load_text(bytes, &name, &env)
                .map_err(|e| not_loaded(&name, e))?;
            (
                l,
                "with the configuration recorded in the ledger".to_string(),
            )
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let plan = attest_engine::build::plan(&loaded.config)
        .map_err(|e| Failure::bad_input(format!("{}: {e}", loaded.config.file)))?;
    let stopped = resume::find_stop(&plan, &ledger, &run).map_err(refused)?;
    let source = attest_engine::open::open_source(&loaded.config).map_err(Failure::bad_input)?;
    let prepared = resume::prepare(&plan, &ledger, stopped, source.source).map_err(refused)?;
    let sinks = attest_engine::open::open_sinks(
        &loaded.config,
        &source.names,
        Some(&prepared.stopped.points),
    )
    .map_err(|e| Failure {
        code: if e.changed_outside {
            Code::Integrity
        } else {
            Code::BadInput
        },
        message: e.message,
    })?;
    if !json {
        eprintln!(
            "resuming run {run} {origin}: {} of {} rows read are done",
            prepared.stopped.released, prepared.stopped.ingested
        );
    }
    let (opts, bar) = run_options(&loaded.config, json);
    let summary = resume::resume(&plan, &ledger, prepared, sinks, opts)
        .map_err(|e| Failure::run_failed(e.to_string()))?;
    Ok(conclude(&summary, &dir, bar, json))
}

fn not_loaded(file: &Path, errors: Vec<String>) -> Failure {
    Failure::bad_input(format!(
        "{}\n{}: {} error(s); nothing was resumed",
        errors.join("\n"),
        file.display(),
        errors.len()
    ))
}

fn refused(e: ResumeError) -> Failure {
    match e {
        ResumeError::Refused(m) => Failure::bad_input(m),
        ResumeError::Ledger(e) => e.into(),
    }
}
