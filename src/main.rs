//! The `switchboard` binary: parse the command line, run, exit.

use clap::Parser;

// The router and the codec allocate a few small objects per message; mimalloc makes that about
// a quarter cheaper than glibc's allocator (protocol/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = switchboard::cli::Cli::parse();
    switchboard::cli::run(cli)
}
