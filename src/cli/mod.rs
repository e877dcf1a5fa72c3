//! The command line: `switchboard [FILE]`, `up` (`-d`), `down`, `attach`, `check`, `init`, `run`,
//! the client commands for a running instance (`ps`, `restart`, `stop`, `start`, `kill`,
//! `reset-breaker`, `scale`, `logs`), and the hidden `service NAME` that runs a builtin.
//!
//! - `up`: the console, headless, detached; `down` and `attach`.
//! - `job`: `run JOB`.
//! - `bench`: `bench` and `bench --check`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    client::{self, Client, ClientError, Target},
    gateway::Bind,
    stack::{self, Stack},
};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A process supervisor and service orchestrator with a terminal console",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Stack file to run (default: the built-in demo stack).
    pub file: Option<PathBuf>,
    /// Run without the terminal UI.
    #[arg(long)]
    pub headless: bool,
    /// Delete the stack's data directory before starting (resets the demo data).
    #[arg(long)]
    pub fresh: bool,
    /// Where the HTTP gateway listens (ADDR like 127.0.0.1:8787, port 0 for any), or `off`.
    #[arg(long, value_name = "ADDR|off")]
    pub gateway: Option<Bind>,
}

/// How the client commands find a running instance.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The stack file the instance runs (default: the built-in demo stack); its run directory
    /// holds gateway.json and the token. (No `-f`: `logs -f` means follow.)
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The gateway's address, instead of RUN_DIR/gateway.json.
    #[arg(long)]
    pub address: Option<SocketAddr>,
    /// The admin token, instead of SWITCHBOARD_TOKEN (or the stack's token_env) or
    /// RUN_DIR/token.
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a stack (the built-in demo stack when no file is given).
    Up {
        file: Option<PathBuf>,
        /// Run without the terminal UI: print lifecycle events and prefixed logs.
        #[arg(long)]
        headless: bool,
        /// Start in the background, in a session of its own, output in RUN_DIR/console.log;
        /// return once every service is ready. `switchboard attach` shows it.
        #[arg(long, short, conflicts_with = "headless")]
        detach: bool,
        /// Delete the stack's data directory before starting.
        #[arg(long)]
        fresh: bool,
        /// Where the HTTP gateway listens (ADDR, port 0 for any), or `off`.
        #[arg(long, value_name = "ADDR|off")]
        gateway: Option<Bind>,
        /// The detached instance itself (what `up -d` starts).
        #[arg(long, hide = true)]
        daemon: bool,
    },
    /// Stop a running instance gracefully (every service, in dependency order) and wait for it.
    Down {
        /// The stack file the instance runs (default: the built-in demo stack).
        file: Option<PathBuf>,
        /// The instance's TCP gateway, instead of its local socket.
        #[arg(long)]
        address: Option<SocketAddr>,
        /// The admin token, for --address.
        #[arg(long)]
        token: Option<String>,
    },
    /// Open the full console on a running instance (`up -d`, or a console that detached).
    Attach {
        /// The stack file the instance runs (default: the built-in demo stack).
        file: Option<PathBuf>,
        /// The instance's TCP gateway (e.g. through `ssh -L`), instead of its local socket.
        #[arg(long)]
        address: Option<SocketAddr>,
        /// The admin token, for --address.
        #[arg(long)]
        token: Option<String>,
        /// Look, never act: every action is refused.
        #[arg(long)]
        read_only: bool,
    },
    /// Validate a stack file; report every error as FILE:LINE:COL: message.
    Check { file: Option<PathBuf> },
    /// Write the demo stack to ./stack.toml to start from.
    Init {
        /// Overwrite an existing stack.toml.
        #[arg(long)]
        force: bool,
    },
    /// Run a job and print its progress and result: on the running instance of the stack when
    /// there is one, else in a stack of its own (the job, what it depends on and calls).
    Run {
        job: String,
        /// Stack file (default: the built-in demo stack).
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// The running instance's gateway address (implies running it there).
        #[arg(long)]
        address: Option<SocketAddr>,
        /// The admin token of the running instance.
        #[arg(long)]
        token: Option<String>,
        /// Always start a stack of its own, even when an instance is running.
        #[arg(long, conflicts_with = "address")]
        standalone: bool,
        /// Job parameters: one JSON value, or KEY=VALUE pairs.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// List the services of a running instance.
    Ps {
        #[command(flatten)]
        remote: Remote,
    },
    /// Rolling restart of a service of a running instance.
    Restart {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a service of a running instance.
    Stop {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a stopped service of a running instance.
    Start {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// SIGKILL a service's processes (its restart policy then applies).
    Kill {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Close the circuit breaker in front of a service by hand (calls go through again).
    ResetBreaker {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Set the number of replicas of a service of a running instance.
    Scale {
        name: String,
        replicas: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a service's recent log lines; -f keeps following them.
    Logs {
        name: String,
        /// How many recent lines.
        #[arg(long, short = 'n', default_value_t = 100)]
        tail: usize,
        /// Keep printing new lines until interrupted.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Measure this machine: routing against pipe baselines, pub/sub fan-out, restart latency,
    /// hang detection, the console's CPU, render time, gateway HTTP, 10/100/500 idle services,
    /// an attached console, and routing beside two services flooding their logs.
    Bench {
        /// Only these measurements (routing, fanout, gateway, restart, hang, idle, render, scale,
        /// attach, noisy, growth, hosts);
        /// default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Restarts (and hangs, at most 10) to measure.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Seconds to measure the console's CPU over.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Stack to measure the console's CPU with (default: the demo stack).
        #[arg(long)]
        stack: Option<PathBuf>,
        /// What sends the gateway's HTTP load: the built-in client, or wrk (must be on PATH;
        /// scripts/bench-gateway.sh installs it).
        #[arg(long, value_enum, default_value_t = crate::bench::gateway::HttpLoad::Builtin)]
        http_load: crate::bench::gateway::HttpLoad,
        /// Keep-alive connections the gateway's HTTP load is sent over.
        #[arg(long, default_value_t = crate::bench::gateway::DEFAULT_CONNECTIONS,
              value_parser = clap::value_parser!(u16).range(1..=1024))]
        http_connections: u16,
        /// A short run of the routing, gateway, restart, hang and render measurements that
        /// exits 1, naming the figure, when one is worse than half its README target.
        #[arg(long, conflicts_with_all = ["only", "json", "stack"])]
        check: bool,
        /// Measure `scale` and `growth` at this many services only (default: each of their
        /// sizes), e.g. to profile one of them.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
        size: Option<u16>,
    },
    /// Run one host's services of a stack for a console on another host (the stack's `[nats]`
    /// links them; services say where they run with `host = "NAME"`).
    Agent {
        /// This host's name, as the stack's services name it in `host`.
        #[arg(long)]
        host: String,
        /// The stack file (the same one the console runs).
        file: PathBuf,
    },
    /// A peer process for the pipe baselines of `bench`.
    #[command(hide = true)]
    BenchPeer { args: Vec<String> },
    /// Run a builtin service over stdin/stdout (what the console spawns).
    #[command(hide = true)]
    Service { name: String },
}

mod bench;
mod job;
mod up;

pub use self::job::job_params;

pub fn run(cli: Cli) -> ExitCode {
    if !matches!(
        cli.command,
        Some(Cmd::Service { .. } | Cmd::BenchPeer { .. })
    ) {
        crate::supervisor::huge_pages::turn_off_for_console();
    }
    match cli.command {
        Some(Cmd::Service { name }) => crate::builtin::run(&name),
        Some(Cmd::BenchPeer { args }) => match crate::bench::routing::peer(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench-peer: {err}");
                ExitCode::FAILURE
            }
        },
        Some(Cmd::Check { file }) => check(file.as_deref()),
        Some(Cmd::Agent { host, file }) => up::agent(&host, &file),
        Some(Cmd::Init { force }) => init(force),
        Some(command @ (Cmd::Up { .. } | Cmd::Down { .. } | Cmd::Attach { .. })) => {
            instance_command(command)
        }
        Some(Cmd::Run {
            job,
            file,
            address,
            token,
            standalone,
            args,
        }) => {
            if standalone {
                job::run_job(&job, file.as_deref(), &args)
            } else {
                job::run_job_somewhere(&job, file, address, token, &args)
            }
        }
        Some(
            command @ (Cmd::Ps { .. }
            | Cmd::Restart { .. }
            | Cmd::Stop { .. }
            | Cmd::Start { .. }
            | Cmd::Kill { .. }
            | Cmd::ResetBreaker { .. }
            | Cmd::Scale { .. }
            | Cmd::Logs { .. }),
        ) => client_command(command),
        Some(command @ Cmd::Bench { .. }) => bench::command(command),
        None => up::up(&up::Up {
            file: cli.file,
            mode: up::Mode::from_flags(false, false, cli.headless),
            fresh: cli.fresh,
            gateway: cli.gateway,
        }),
    }
}

/// `up`, `down` and `attach`: starting, stopping and opening an instance of a stack.
fn instance_command(command: Cmd) -> ExitCode {
    match command {
        Cmd::Up {
            file,
            headless,
            detach,
            fresh,
            gateway,
            daemon,
        } => up::up(&up::Up {
            file,
            mode: up::Mode::from_flags(daemon, detach, headless),
            fresh,
            gateway,
        }),
        Cmd::Down {
            file,
            address,
            token,
        } => up::down(&Remote {
            file,
            address,
            token,
        }),
        Cmd::Attach {
            file,
            address,
            token,
            read_only,
        } => up::attach(
            &Remote {
                file,
                address,
                token,
            },
            read_only,
        ),
        // `run` sends only the commands above here.
        _ => ExitCode::FAILURE,
    }
}

/// `ps`, `restart`, `stop`, `start`, `kill`, `reset-breaker`, `scale` and `logs`: a running
/// instance's client.
fn client_command(command: Cmd) -> ExitCode {
    match command {
        Cmd::Ps { remote } => with_client(&remote, |c| async move {
            client::commands::ps(&c).await.map(|()| true)
        }),
        Cmd::Restart { name, remote } => action(&remote, "restart", &name),
        Cmd::Stop { name, remote } => action(&remote, "stop", &name),
        Cmd::Start { name, remote } => action(&remote, "start", &name),
        Cmd::Kill { name, remote } => action(&remote, "kill", &name),
        Cmd::ResetBreaker { name, remote } => action(&remote, "breaker/reset", &name),
        Cmd::Scale {
            name,
            replicas,
            remote,
        } => with_client(&remote, |c| async move {
            client::commands::scale(&c, &name, replicas)
                .await
                .map(|()| true)
        }),
        Cmd::Logs {
            name,
            tail,
            follow,
            remote,
        } => with_client(&remote, |c| async move {
            client::commands::logs(&c, &name, tail, follow)
                .await
                .map(|()| true)
        }),
        // `run` sends only the commands above here.
        _ => ExitCode::FAILURE,
    }
}

/// Runs a client command against the running instance `remote` points at.
pub(super) fn with_client<F, Fut>(remote: &Remote, command: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<bool, ClientError>>,
{
    let Some(stack) = load(remote.file.as_deref()) else {
        return ExitCode::FAILURE;
    };
    init_console_logging();
    let target = match Target::find(&stack, remote.address, remote.token.clone()) {
        Ok(target) => target,
        Err(err) => {
            eprintln!("switchboard: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let client = Client::new(target).named(crate::client::who("cli"));
    match runtime.block_on(command(client)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("switchboard: {err}");
            ExitCode::FAILURE
        }
    }
}

fn action(remote: &Remote, action: &'static str, name: &str) -> ExitCode {
    let name = name.to_string();
    with_client(remote, |c| async move {
        client::commands::action(&c, action, &name)
            .await
            .map(|()| true)
    })
}

/// Loads the stack file, or the demo stack when none is given; prints diagnostics on failure.
pub(super) fn load(file: Option<&Path>) -> Option<Stack> {
    let loaded = match file {
        Some(path) => stack::load(path),
        None => stack::demo(),
    };
    match loaded {
        Ok(stack) => Some(stack),
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            eprintln!(
                "switchboard: {} error{} in the stack file",
                diagnostics.len(),
                if diagnostics.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}

fn check(file: Option<&Path>) -> ExitCode {
    let Some(stack) = load(file) else {
        return ExitCode::FAILURE;
    };
    let shown = file.map_or_else(|| "<demo>".to_string(), |f| f.display().to_string());
    for warning in stack::programs::missing(&stack) {
        println!("{shown}: warning: {warning}");
    }
    println!(
        "{}: ok: stack `{}`, {} services, start order: {}",
        file.map_or_else(|| "<demo>".to_string(), |f| f.display().to_string()),
        stack.name,
        stack.services.len(),
        stack.start_order().join(" → ")
    );
    ExitCode::SUCCESS
}

fn init(force: bool) -> ExitCode {
    let path = Path::new("stack.toml");
    if path.exists() && !force {
        eprintln!("switchboard: stack.toml exists; use --force to overwrite it");
        return ExitCode::FAILURE;
    }
    match std::fs::write(path, stack::DEMO_TOML) {
        Ok(()) => {
            println!("switchboard: wrote stack.toml; run it with `switchboard stack.toml`");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("switchboard: cannot write stack.toml: {err}");
            ExitCode::FAILURE
        }
    }
}

pub(super) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .thread_name("switchboard")
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            eprintln!("switchboard: cannot start the runtime: {err}");
            None
        }
    }
}

pub(super) fn init_console_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(super) fn init_file_logging(run_dir: &Path) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = std::fs::create_dir_all(run_dir);
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("console.log"))
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}
