//! `switchboard [FILE]` and `up`: the console, headless mode, and a detached instance
//! (`up -d`); `down` and `attach` for an instance that runs.

use std::{
    ffi::OsString,
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use hyper::Method;

use super::{Remote, init_console_logging, init_file_logging, load, runtime, with_client};
use crate::{
    api::ConsoleView,
    app::headless,
    app::{self, detach, keeper},
    client::{Client, ClientError, Target},
    gateway::Bind,
    lock,
    registry::InstanceState,
    stack::Stack,
    supervisor::SupervisorOptions,
};

/// How `up` runs the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The console UI on this terminal (headless when stdout is not one).
    Console,
    Headless,
    /// `up -d`: start a daemon and return once the stack is ready.
    Detach,
    /// The daemon `up -d` starts.
    Daemon,
}

impl Mode {
    /// From `up`'s flags: `--daemon` (internal), `-d`, `--headless`.
    pub fn from_flags(daemon: bool, detach: bool, headless: bool) -> Mode {
        if daemon {
            Mode::Daemon
        } else if detach {
            Mode::Detach
        } else if headless {
            Mode::Headless
        } else {
            Mode::Console
        }
    }
}

#[derive(Debug, Clone)]
pub struct Up {
    pub file: Option<PathBuf>,
    pub mode: Mode,
    pub fresh: bool,
    pub gateway: Option<Bind>,
}

/// How long `up -d` waits for the stack to be ready before it leaves it starting.
const READY_WAIT: Duration = Duration::from_secs(120);
/// How long a service may stay crashed or exited, with no restart coming, before `up -d`
/// says the stack cannot start.
const STAYS_DOWN: Duration = Duration::from_secs(2);
/// How long `down` waits for the instance to stop.
const DOWN_WAIT: Duration = Duration::from_secs(120);

pub fn up(up: &Up) -> ExitCode {
    let mut mode = up.mode;
    if mode == Mode::Console && !std::io::stdout().is_terminal() {
        eprintln!("switchboard: stdout is not a terminal; running headless");
        mode = Mode::Headless;
    }
    if mode == Mode::Detach {
        let Some(stack) = prepare(up) else {
            return ExitCode::FAILURE;
        };
        return start_daemon(up, &stack);
    }
    // Forked before the runtime or any thread exists (see `hold_terminal`); without it the
    // console still runs, it just cannot give the shell back when it detaches. Before the
    // stack is even read, too: whatever the parents hold stays in their memory for good.
    let foreground = match mode {
        Mode::Console => match detach::hold_terminal() {
            Ok(foreground) => Some(foreground),
            Err(err) => {
                eprintln!(
                    "switchboard: cannot fork ({err}); `q` then `d` will not free this shell"
                );
                None
            }
        },
        _ => None,
    };
    // Also before any thread: the keeper ends whatever the console leaves if it dies.
    let foreground = match keeper::keep(foreground) {
        Ok(foreground) => foreground,
        Err((err, foreground)) => {
            eprintln!(
                "switchboard: cannot start the keeper process ({err}); if this console is killed, its services' children may outlive it"
            );
            foreground
        }
    };
    let Some(stack) = prepare(up) else {
        return ExitCode::FAILURE;
    };
    let bind = up.gateway.unwrap_or_default();
    if mode == Mode::Console {
        // Never log to the screen the UI owns.
        init_file_logging(&stack.run_dir);
    } else {
        init_console_logging();
    }
    let options = match SupervisorOptions::from_current_exe() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("switchboard: cannot find my own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let outcome = match mode {
        Mode::Console => runtime.block_on(app::console::run(stack, options, bind, foreground)),
        Mode::Daemon => runtime.block_on(headless::run(
            stack,
            options,
            bind,
            headless::Output::Events,
        )),
        _ => runtime.block_on(headless::run(
            stack,
            options,
            bind,
            headless::Output::EventsAndLogs,
        )),
    };
    match outcome {
        Ok(report) if report.clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(err) => {
            use std::io::Write;
            // The terminal may be gone by now.
            let _ = writeln!(std::io::stderr(), "switchboard: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `switchboard agent --host NAME FILE`: host NAME's services, until SIGINT or SIGTERM.
pub fn agent(host: &str, file: &Path) -> ExitCode {
    // Before any thread, as for the console: if the agent dies, its services go with it.
    if let Err((err, ())) = keeper::keep(()) {
        eprintln!(
            "switchboard agent: cannot start the keeper process ({err}); if this agent is killed, its services' children may outlive it"
        );
    }
    let Some(stack) = load(Some(file)) else {
        return ExitCode::FAILURE;
    };
    init_console_logging();
    let options = match SupervisorOptions::from_current_exe() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("switchboard agent: cannot find my own executable: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(app::agent::run(stack, host, options)) {
        Ok(report) if report.clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(err) => {
            eprintln!("switchboard agent: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The stack, checked for a running instance (which owns its data directory) and, with
/// `--fresh`, with its data directory emptied. `None` once the reason is printed.
fn prepare(up: &Up) -> Option<Stack> {
    let stack = load(up.file.as_deref())?;
    if let Some(pid) = lock::holder(&stack.run_dir) {
        let file = file_arg(up.file.as_deref());
        eprintln!(
            "switchboard: stack `{}` is already running as pid {pid}: attach to it with `switchboard attach{file}`, or stop it with `switchboard down{file}`",
            stack.name
        );
        return None;
    }
    if up.fresh
        && let Err(err) = std::fs::remove_dir_all(&stack.data_dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!(
            "switchboard: cannot reset {}: {err}",
            stack.data_dir.display()
        );
        return None;
    }
    Some(stack)
}

/// ` FILE` when a stack file was given, for the commands a message suggests.
fn file_arg(file: Option<&Path>) -> String {
    file.map_or(String::new(), |f| format!(" {}", f.display()))
}

/// `up -d`: starts the daemon, then waits until every service is ready (or the stack cannot
/// start, which it reports).
fn start_daemon(up: &Up, stack: &Stack) -> ExitCode {
    init_console_logging();
    let mut child = match detach::spawn_daemon(&daemon_args(up), &stack.run_dir) {
        Ok(child) => child,
        Err(err) => {
            eprintln!("switchboard: cannot start in the background: {err}");
            return ExitCode::FAILURE;
        }
    };
    let log = stack.run_dir.join(detach::CONSOLE_LOG);
    let file = file_arg(up.file.as_deref());
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(wait_until_ready(&mut child, stack, &log, &file)) {
        Ok(view) => {
            // The console, which holds the lock, is the keeper's child (`app::keeper`).
            let pid = lock::holder(&stack.run_dir).unwrap_or(child.id());
            println!(
                "switchboard: stack `{}` is up in the background as pid {pid}, {} services ready{}",
                stack.name,
                view.services.iter().filter(|s| !s.job).count(),
                view.gateway
                    .as_ref()
                    .map_or(String::new(), |g| format!(", gateway http://{g}")),
            );
            println!("  attach: switchboard attach{file}");
            println!("  stop:   switchboard down{file}");
            println!("  log:    {}", log.display());
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("switchboard: {why}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon's command line: `up --daemon [FILE] [--gateway ...]`.
fn daemon_args(up: &Up) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["up".into(), "--daemon".into()];
    if let Some(file) = &up.file {
        // The daemon runs in the same directory, but say where the file is whatever it does.
        args.push(
            std::path::absolute(file)
                .unwrap_or_else(|_| file.clone())
                .into(),
        );
    }
    match up.gateway {
        Some(Bind::Off) => args.extend(["--gateway".into(), "off".into()]),
        Some(Bind::At(address)) => {
            args.extend(["--gateway".into(), address.to_string().into()]);
        }
        Some(Bind::FromStack) | None => {}
    }
    args
}

/// Waits until every service of the daemon's stack is ready; an error says why it will not
/// be (the daemon exited, a service cannot start, or [`READY_WAIT`] passed).
async fn wait_until_ready(
    child: &mut std::process::Child,
    stack: &Stack,
    log: &Path,
    file: &str,
) -> Result<ConsoleView, String> {
    let started = Instant::now();
    // Since when each service has been down without a restart coming (crashed or exited and
    // left there by its restart policy): briefly is normal between a crash and its backoff.
    let mut down_since: std::collections::HashMap<String, Instant> = Default::default();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the instance exited ({status}) before it was ready; its last lines:\n{}",
                tail(log, 15)
            ));
        }
        if let Some(view) = instance_view(stack).await {
            if let Some(failed) = stuck(&view, &mut down_since) {
                let why = failed
                    .exits
                    .first()
                    .map_or(String::new(), |e| format!(" (last exit: {})", e.status));
                return Err(format!(
                    "service `{}` failed to start{why}; the rest keeps running: `switchboard attach{file}` to look, `switchboard down{file}` to stop",
                    failed.name
                ));
            }
            if ready(&view) {
                return Ok(view);
            }
        }
        if started.elapsed() > READY_WAIT {
            return Err(format!(
                "not every service was ready after {}s; it keeps starting: `switchboard attach{file}` to watch",
                READY_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A service (not a job) that will not come up: failed, or down with no restart coming for
/// longer than [`STAYS_DOWN`]. `down_since` carries the down times from one look to the next.
fn stuck<'v>(
    view: &'v ConsoleView,
    down_since: &mut std::collections::HashMap<String, Instant>,
) -> Option<&'v crate::api::ServiceRow> {
    let down =
        |state: InstanceState| matches!(state, InstanceState::Crashed | InstanceState::Exited);
    down_since.retain(|name, _| {
        view.services
            .iter()
            .any(|s| &s.name == name && down(s.state))
    });
    for service in view.services.iter().filter(|s| !s.job && down(s.state)) {
        down_since
            .entry(service.name.clone())
            .or_insert_with(Instant::now);
    }
    view.services.iter().filter(|s| !s.job).find(|s| {
        s.state == InstanceState::Failed
            || down_since
                .get(&s.name)
                .is_some_and(|at| at.elapsed() > STAYS_DOWN)
    })
}

/// Every service (not job) has all its replicas ready.
fn ready(view: &ConsoleView) -> bool {
    view.services
        .iter()
        .filter(|s| !s.job)
        .all(|s| s.state == InstanceState::Ready && s.ready == s.replicas)
}

/// The running instance's view over its socket, once it answers.
async fn instance_view(stack: &Stack) -> Option<ConsoleView> {
    let target = Target::find(stack, None, None).ok()?;
    Client::new(target)
        .json(Method::GET, "/admin/services", None::<&()>)
        .await
        .ok()
}

/// The last `n` lines of a file, indented.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `switchboard down`: asks the instance to stop every service and waits until it has.
pub fn down(remote: &Remote) -> ExitCode {
    let Some(stack) = load(remote.file.as_deref()) else {
        return ExitCode::FAILURE;
    };
    let run_dir = stack.run_dir.clone();
    let remote_address = remote.address;
    with_client(remote, |client| async move {
        let pid = lock::holder(&run_dir);
        let _: crate::gateway::admin::Done = client
            .json(Method::POST, "/admin/shutdown", None::<&()>)
            .await?;
        eprintln!(
            "switchboard: stopping stack `{}`{}…",
            stack.name,
            pid.map_or(String::new(), |p| format!(" (pid {p})"))
        );
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let gone = match remote_address {
                // A local instance is gone when it lets go of its lock.
                None => lock::holder(&run_dir).is_none(),
                Some(_) => matches!(
                    client.send(Method::GET, "/healthz", None).await,
                    Err(ClientError::Connect { .. })
                ),
            };
            if gone {
                eprintln!("switchboard: stopped");
                return Ok(true);
            }
            if started.elapsed() > DOWN_WAIT {
                eprintln!(
                    "switchboard: still stopping after {}s; see {}",
                    DOWN_WAIT.as_secs(),
                    run_dir.join(detach::CONSOLE_LOG).display()
                );
                return Ok(false);
            }
        }
    })
}

/// `switchboard attach`: the full console over a running instance.
pub fn attach(remote: &Remote, read_only: bool) -> ExitCode {
    let Some(stack) = load(remote.file.as_deref()) else {
        return ExitCode::FAILURE;
    };
    if !std::io::stdout().is_terminal() {
        eprintln!("switchboard: attach needs a terminal");
        return ExitCode::FAILURE;
    }
    let target = match Target::find(&stack, remote.address, remote.token.clone()) {
        Ok(target) => target,
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_file_logging(&stack.run_dir.join("attach"));
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let exit = runtime.block_on(crate::attach::run(target, read_only));
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "switchboard: {exit}");
    ExitCode::SUCCESS
}
