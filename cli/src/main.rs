//! `attest`: run audited pipelines, verify their ledgers, explain any output row.

mod allocator;
mod commands;
mod exit;
mod export_cmd;
mod heads;
mod purge_cmd;
mod render;
mod replay_cmd;
mod resume_cmd;
mod run_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// attest: an auditable data-pipeline engine. Every decision a pipeline makes is recorded
/// in a hash-chained ledger that can be verified (`replay`) and queried (`lineage`).
#[derive(Parser)]
#[command(
    name = "attest",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Exit codes: 0 success (quarantined rows are a success); 1 the run failed; \
                  2 bad usage, configuration or input; 3 interrupted, resumable; \
                  4 an audit-integrity violation (tampering, a replay divergence).\n\
                  Start with `attest validate PIPELINE.yaml`, then `attest run PIPELINE.yaml`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the ledger lives. Defaults to the pipeline's `ledger.path`, else `./attest-ledger`.
#[derive(clap::Args, Clone, Debug)]
pub struct LedgerArg {
    /// Ledger directory [default: ./attest-ledger]
    #[arg(long, value_name = "DIR")]
    pub ledger: Option<PathBuf>,
}

/// Which run: an id, or `latest` (the default).
#[derive(clap::Args, Clone, Debug)]
pub struct RunArg {
    /// Run id, or `latest`
    #[arg(long = "run", value_name = "ID|latest", default_value = "latest")]
    pub run: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, recording every decision in the ledger
    Run {
        /// The pipeline file (YAML)
        pipeline: PathBuf,
        #[command(flatten)]
        ledger: LedgerArg,
        /// Print one JSON object instead of the summary
        #[arg(long)]
        json: bool,
    },
    /// Continue a run that was interrupted (Ctrl-C, exit 3) or that died (crash, power loss)
    Resume {
        /// Run id, or `latest`
        #[arg(value_name = "RUN_ID|latest")]
        run: String,
        #[command(flatten)]
        ledger: LedgerArg,
        /// The pipeline file, checked against the run [default: the configuration the run
        /// recorded when it started]
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Print one JSON object instead of the summary
        #[arg(long)]
        json: bool,
    },
    /// Check a pipeline file and report every error found, with file, line and column
    Validate {
        /// The pipeline file (YAML)
        pipeline: PathBuf,
    },
    /// List the runs in a ledger
    Runs {
        #[command(flatten)]
        ledger: LedgerArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Verify a run's record, then re-execute it and compare every result with the record
    ///
    /// Verification checks the chain, the sequence, the projections and the payloads.
    /// Re-execution runs the recorded configuration (or --pipeline FILE) over the recorded
    /// source rows, writing nothing, and reports the first divergence with its code, seq,
    /// node and token. Exit 0 when consistent (also when a recorded purge left nothing to
    /// re-execute), 4 on an integrity failure or a divergence, 2 when the run cannot be
    /// re-executed. See docs/replay.md.
    Replay {
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(flatten)]
        run: RunArg,
        /// Only verify the ledger; do not re-execute
        #[arg(long)]
        verify_only: bool,
        /// Re-execute this pipeline file instead of the recorded configuration ("would this
        /// changed pipeline have decided the same?"); its nodes and wiring must be the run's
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// A head kept outside the ledger: COUNT:HASH (as `attest run` prints it), a bare
        /// HASH, or a head file from `attest head --sign-key`
        #[arg(long, value_name = "COUNT:HASH|HASH|FILE")]
        expect_head: Option<String>,
        /// The public key (PEM) that must have signed the --expect-head file
        #[arg(long, value_name = "FILE")]
        verify_key: Option<PathBuf>,
        /// A head of the ledger's purge log kept outside it, as COUNT:HASH (from `attest purge`)
        #[arg(long, value_name = "COUNT:HASH")]
        expect_purge_head: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Explain how a row came to be: source row, every node, call, route and outcome
    #[command(after_help = "Examples:\n  \
        attest lineage --row 42                     source row 42 of the latest run\n  \
        attest lineage --output flagged:0           the first row written to sink `flagged`\n  \
        attest lineage --row 42 --format dot | dot -Tsvg > row42.svg")]
    Lineage {
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(flatten)]
        run: RunArg,
        /// Source row index (from 0)
        #[arg(long, value_name = "N", group = "target")]
        row: Option<u64>,
        /// Token id
        #[arg(long, value_name = "ID", group = "target")]
        token: Option<String>,
        /// The N-th row (from 0) written to sink SINK
        #[arg(long, value_name = "SINK:N", group = "target")]
        output: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value = "text")]
        format: render::LineageFormat,
    },
    /// Print a run's head (event count and last hash), or make a head file, signed with --sign-key
    Head {
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(flatten)]
        run: RunArg,
        /// Sign the head (after verifying the run) with this ed25519 private key (PKCS#8 PEM)
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
        /// Write a head file (signed with --sign-key) to FILE, after verifying the run
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Make an ed25519 key pair for signing heads: FILE (private) and FILE.pub (public)
    Keygen {
        /// Where to write the private key; the public key goes to FILE.pub
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Export a run's chain (jsonl, checkable with verify-export) or OpenLineage events
    Export {
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(flatten)]
        run: RunArg,
        /// The file to write
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Output format
        #[arg(long, value_enum, default_value = "jsonl")]
        format: export_cmd::ExportFormat,
    },
    /// Check a jsonl export without the ledger: chain, sequence, rules, manifest
    VerifyExport {
        /// The export file
        file: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Purge payload bytes of old finished runs, recording the purge in the ledger
    Purge {
        #[command(flatten)]
        ledger: LedgerArg,
        /// Purge payloads (rows, values, call bodies); hashes and configurations stay
        #[arg(long)]
        payloads: bool,
        /// Only finished runs started more than DAYS days ago
        #[arg(long, value_name = "DAYS")]
        older_than: u64,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the plugins this build supports
    Plugins,
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`attest runs | head -1`) would
/// panic. Restore the Unix default: the process ends quietly when its reader goes away.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    allocator::configure();
    restore_sigpipe();
    let cli = Cli::parse();
    // Only a run holds the memory budget (docs/benchmarks.md); every other command is
    // short and faster with mimalloc's default purge delay.
    if !matches!(cli.command, Command::Run { .. } | Command::Resume { .. }) {
        allocator::purge_lazily();
    }
    let result = match cli.command {
        Command::Run {
            pipeline,
            ledger,
            json,
        } => commands::run(&pipeline, ledger.ledger, json),
        Command::Resume {
            run,
            ledger,
            pipeline,
            json,
        } => resume_cmd::resume(&run, ledger.ledger, pipeline.as_deref(), json),
        Command::Validate { pipeline } => commands::validate(&pipeline),
        Command::Runs { ledger, json } => commands::runs(ledger.ledger, json),
        Command::Replay {
            ledger,
            run,
            verify_only,
            pipeline,
            expect_head,
            verify_key,
            expect_purge_head,
            json,
        } => commands::replay(
            ledger.ledger,
            &run.run,
            expect_head.as_deref(),
            verify_key.as_deref(),
            expect_purge_head.as_deref(),
            &replay_cmd::Reexec {
                skip: verify_only,
                pipeline: pipeline.as_deref(),
            },
            json,
        ),
        Command::Head {
            ledger,
            run,
            sign_key,
            out,
            json,
        } => heads::head(
            ledger.ledger,
            &run.run,
            sign_key.as_deref(),
            out.as_deref(),
            json,
        ),
        Command::Keygen { out } => heads::keygen(&out),
        Command::Export {
            ledger,
            run,
            out,
            format,
        } => export_cmd::export(ledger.ledger, &run.run, &out, format),
        Command::VerifyExport { file, json } => export_cmd::verify_export(&file, json),
        Command::Purge {
            ledger,
            payloads,
            older_than,
            json,
        } => purge_cmd::purge(ledger.ledger, payloads, older_than, json),
        Command::Lineage {
            ledger,
            run,
            row,
            token,
            output,
            format,
        } => commands::lineage(ledger.ledger, &run.run, row, token, output, format),
        Command::Plugins => commands::plugins(),
    };
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("attest: {}", e.message);
            e.code.into()
        }
    }
}
