//! `switchboard run JOB`: on the running instance of the stack when there is one, else in a
//! stack of its own (the job, what it depends on and what it calls).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use super::{Remote, init_console_logging, load, runtime, with_client};
use crate::{
    app::headless,
    client,
    logs::line_codec::visible,
    registry::{self, InstanceState},
    supervisor::{Command, Reply, Supervisor, SupervisorOptions},
};

/// `switchboard run`: on the running instance when there is one (or `--address` is given),
/// else in a stack of its own.
pub(super) fn run_job_somewhere(
    job: &str,
    file: Option<PathBuf>,
    address: Option<SocketAddr>,
    token: Option<String>,
    args: &[String],
) -> ExitCode {
    let Some(stack) = load(file.as_deref()) else {
        return ExitCode::FAILURE;
    };
    if address.is_none() && client::discover(&stack.run_dir).is_none() {
        return run_job(job, file.as_deref(), args);
    }
    let params = match job_params(args) {
        Ok(params) => params,
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::FAILURE;
        }
    };
    let remote = Remote {
        file,
        address,
        token,
    };
    let job = job.to_string();
    with_client(&remote, |c| async move {
        eprintln!(
            "switchboard: running `{job}` on the instance at {}",
            c.target.address
        );
        client::commands::run(&c, &job, params.as_deref()).await
    })
}

/// Job parameters from the command line: one JSON value, or KEY=VALUE pairs as an object.
pub fn job_params(args: &[String]) -> Result<Option<String>, String> {
    match args {
        [] => Ok(None),
        [one] if serde_json::from_str::<serde_json::Value>(one).is_ok() => Ok(Some(one.clone())),
        pairs => {
            let mut object = serde_json::Map::new();
            for pair in pairs {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(format!("`{pair}` is neither JSON nor KEY=VALUE"));
                };
                let value = serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
                object.insert(key.to_string(), value);
            }
            Ok(Some(serde_json::Value::Object(object).to_string()))
        }
    }
}

pub(super) fn run_job(job: &str, file: Option<&Path>, args: &[String]) -> ExitCode {
    let Some(stack) = load(file) else {
        return ExitCode::FAILURE;
    };
    let Some(stack) = headless::stack_for_job(&stack, job) else {
        eprintln!(
            "switchboard: no job named `{job}` in stack `{}`",
            stack.name
        );
        return ExitCode::FAILURE;
    };
    let params = match job_params(args) {
        Ok(params) => params,
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_console_logging();
    let (Ok(options), Some(runtime)) = (SupervisorOptions::from_current_exe(), runtime()) else {
        return ExitCode::FAILURE;
    };
    let job = job.to_string();
    runtime.block_on(async move {
        let (supervisor, task) = match Supervisor::start(stack, options) {
            Ok(started) => started,
            Err(err) => {
                eprintln!("switchboard: {err}");
                return ExitCode::FAILURE;
            }
        };
        supervisor.begin().await;
        let ok = tokio::select! {
            ok = watch_job(&supervisor, &job, params) => ok,
            () = headless::termination_signal() => false,
        };
        supervisor.shutdown().await;
        let _ = task.await;
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

/// Starts a run of `job` and prints its progress until it ends; returns whether it succeeded.
async fn watch_job(supervisor: &Supervisor, job: &str, params: Option<String>) -> bool {
    let run = match supervisor
        .command(Command::RunJob(job.to_string(), params))
        .await
    {
        Ok(Reply::JobRun(run)) => run,
        Ok(Reply::Done) => 0,
        Err(err) => {
            eprintln!("switchboard: {err}");
            return false;
        }
    };
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (progress, finished) = {
            let registry = registry::read(supervisor.registry());
            let Some(service) = registry.service(job) else {
                return false;
            };
            let progress = service
                .instances
                .first()
                .and_then(|i| i.handle.as_ref())
                .and_then(|h| h.segment.as_ref())
                .map(|segment| {
                    segment
                        .read()
                        .tasks
                        .iter()
                        .map(|t| format!("{} {}/{}", t.label, t.done, t.total))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let finished = service
                .runs
                .iter()
                .find(|r| r.run == run)
                .filter(|r| r.exit.is_some())
                .cloned();
            let state = service.state();
            (
                progress,
                finished.or_else(|| {
                    (state == InstanceState::Failed).then(|| service.runs.back().cloned())?
                }),
            )
        };
        if !progress.is_empty() && progress != last {
            println!("{job} #{run}: {}", visible(&progress));
            last = progress;
        }
        if let Some(finished) = finished {
            match finished.result {
                Some(Ok(result)) => {
                    println!("{job} #{run}: done: {}", visible(&result.to_string()));
                    return finished.exit.as_ref().is_some_and(|e| e.success());
                }
                Some(Err(err)) => {
                    println!("{job} #{run}: failed: {}", visible(&err.to_string()));
                    return false;
                }
                None => return false,
            }
        }
    }
}
