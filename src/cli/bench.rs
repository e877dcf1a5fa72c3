//! `switchboard bench` and `bench --check`: measuring this machine (see [`crate::bench`]).

use std::{path::Path, process::ExitCode, time::Duration};

use super::{Cmd, init_console_logging, runtime};
use crate::supervisor::SupervisorOptions;

/// `bench` and `bench --check`.
pub(super) fn command(command: Cmd) -> ExitCode {
    match command {
        Cmd::Bench { check: true, .. } => bench_check(),
        Cmd::Bench {
            only,
            rounds,
            idle_secs,
            json,
            stack,
            http_load,
            http_connections,
            check: false,
            size,
        } => bench(
            &only,
            size.map(usize::from),
            rounds,
            idle_secs,
            json,
            stack.as_deref(),
            crate::bench::gateway::LoadClient {
                sender: http_load,
                connections: usize::from(http_connections),
            },
        ),
        // `run` sends only `bench` here.
        _ => ExitCode::FAILURE,
    }
}

/// `switchboard bench --check` (see `bench::check`).
fn bench_check() -> ExitCode {
    init_console_logging();
    let (Ok(mut options), Some(runtime)) = (SupervisorOptions::from_current_exe(), runtime())
    else {
        return ExitCode::FAILURE;
    };
    options.log_files = false;
    let verdicts = runtime.block_on(crate::bench::check::run(&options));
    if crate::bench::check::report(&verdicts) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn bench(
    only: &[String],
    size: Option<usize>,
    rounds: usize,
    idle_secs: u64,
    json: bool,
    stack: Option<&Path>,
    http_load: crate::bench::gateway::LoadClient,
) -> ExitCode {
    let mut selection = match crate::bench::Selection::from_names(only) {
        Ok(selection) => selection,
        Err(unknown) => {
            eprintln!(
                "switchboard bench: no measurement `{unknown}` (choose from {})",
                crate::bench::Selection::NAMES.join(", ")
            );
            return ExitCode::from(2);
        }
    };
    selection.http_load = http_load;
    selection.size = size;
    if http_load.sender == crate::bench::gateway::HttpLoad::Wrk
        && !crate::bench::gateway::wrk_found()
    {
        eprintln!("switchboard bench: --http-load wrk needs wrk on PATH (apt-get install wrk)");
        return ExitCode::from(2);
    }
    init_console_logging();
    let (Ok(mut options), Some(runtime)) = (SupervisorOptions::from_current_exe(), runtime())
    else {
        return ExitCode::FAILURE;
    };
    options.log_files = false;
    let figures = runtime.block_on(crate::bench::run(
        stack,
        selection,
        options,
        rounds.max(1),
        Duration::from_secs(idle_secs.max(1)),
    ));
    if json {
        match serde_json::to_string_pretty(&figures) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("switchboard: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        crate::bench::print_table(&figures);
    }
    ExitCode::SUCCESS
}
