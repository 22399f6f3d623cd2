//! The `watchkeeper` binary: parses the command line and hands over to the agent library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = agent::cli::Cli::parse();
    ExitCode::from(agent::cli::main(cli))
}
