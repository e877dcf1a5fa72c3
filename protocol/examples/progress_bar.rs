//! Launches a job with no console running and draws its progress as a live bar, from its
//! segment, through [`switchboard_protocol::launcher`].
//!
//! With the C conformance job (any job of any SDK works the same way):
//!
//! ```text
//! gcc -std=c99 -I sdks/c sdks/c/examples/conformance_job.c -o /tmp/job
//! cargo run -p switchboard-protocol --example progress_bar -- /tmp/job '{"steps": 20}'
//! ```

use std::{io::Write, process::ExitCode};

use switchboard_protocol::{
    launcher::{Change, Launcher},
    segment::TaskRecord,
};

const WIDTH: usize = 30;

/// `label [#########.....]  done/total` for one task.
fn bar(task: &TaskRecord) -> String {
    let filled = if task.total == 0 {
        0
    } else {
        (task.done.min(task.total) as usize * WIDTH) / task.total as usize
    };
    format!(
        "{:<20} [{}{}] {}/{}",
        task.label,
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        task.done,
        task.total
    )
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: progress_bar JOB [PARAMS_JSON]");
        return ExitCode::FAILURE;
    };
    let params = args.next().unwrap_or_default();
    let job = match Launcher::new(program)
        .name("conformance")
        .params(params)
        .heartbeat_ms(200)
        .spawn()
    {
        Ok(job) => job,
        Err(err) => {
            eprintln!("progress_bar: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    for change in job.changes() {
        match change {
            Change::Progress(tasks) => {
                if let Some(task) = tasks.first() {
                    // `\r` redraws the line in a terminal; piped, each update is its own line.
                    let _ = write!(out, "\r{}", bar(task));
                    let _ = out.flush();
                }
            }
            Change::Result(Ok(json)) => {
                let _ = writeln!(out, "\nresult: {json}");
            }
            Change::Result(Err(err)) => {
                let _ = writeln!(out, "\nfailed: {}: {}", err.code, err.message);
            }
            Change::Exited(_) => break,
            Change::Hello { .. } | Change::Ready => {}
        }
    }
    let exit = job.wait();
    let _ = writeln!(out, "\nexit: {}", exit.status);
    if exit.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
