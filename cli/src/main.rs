use clap::Parser;

/// attest: an auditable data-pipeline engine with a hash-chained ledger.
#[derive(Parser)]
#[command(name = "attest", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
