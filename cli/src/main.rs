//! `attest`: run audited pipelines, verify their ledgers, explain any output row.

mod commands;
mod exit;
mod render;
mod run_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// attest: an auditable data-pipeline engine. Every decision a pipeline makes is recorded
/// in a hash-chained ledger that can be verified (`replay`) and queried (`lineage`).
#[derive(Parser)]
#[command(name = "attest", version, about, long_about = None, propagate_version = true)]
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
    /// Verify a run's audit trail: chain, sequence, projections, payloads
    Replay {
        #[command(flatten)]
        ledger: LedgerArg,
        #[command(flatten)]
        run: RunArg,
        /// Only verify the ledger (re-execution is not available yet, so this is implied)
        #[arg(long)]
        verify_only: bool,
        /// A head kept outside the ledger, as COUNT:HASH (from `attest run`'s output)
        #[arg(long, value_name = "COUNT:HASH")]
        expect_head: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Explain how a row came to be: source row, every node, call, route and outcome
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
    /// List the plugins this build supports
    Plugins,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            pipeline,
            ledger,
            json,
        } => commands::run(&pipeline, ledger.ledger, json),
        Command::Validate { pipeline } => commands::validate(&pipeline),
        Command::Runs { ledger, json } => commands::runs(ledger.ledger, json),
        Command::Replay {
            ledger,
            run,
            verify_only: _,
            expect_head,
            json,
        } => commands::replay(ledger.ledger, &run.run, expect_head.as_deref(), json),
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
