//! The services compiled into the switchboard binary. A stack names them with
//! `builtin = "NAME"`, and the console spawns them as `switchboard service NAME`, so that
//! `cargo run` builds everything the demo needs.

use std::time::Duration;

/// Names accepted by `builtin = "…"`.
pub const BUILTINS: &[&str] = switchboard_services::NAMES;

/// Runs builtin `name` over stdin/stdout until it is told to stop. Returns the process exit code.
pub fn run(name: &str) -> std::process::ExitCode {
    switchboard_protocol::sdk::logging::init();
    // One thread: a message then never hops between threads inside the service, which is most
    // of a round trip's cost on a small machine. Handlers that block must use spawn_blocking.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(switchboard_services::run(name));
    // stdin is read on a blocking thread that cannot be interrupted; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(cause = %err, service = name, "service failed");
            std::process::ExitCode::FAILURE
        }
    }
}
