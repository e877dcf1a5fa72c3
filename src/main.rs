//! The `switchboard` binary: parse the command line, run, exit.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = switchboard::cli::Cli::parse();
    switchboard::cli::run(cli)
}
