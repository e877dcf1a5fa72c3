//! Starting and stopping a stack, once, for every front end: the local console, headless
//! mode, a detached instance (`up -d`) and `bench`. Each calls [`App::start`], subscribes to
//! what it wants to watch, calls [`App::begin`], and ends with [`App::stop`].
//!
//! - [`agent`]: `switchboard agent`, which runs one host's services for a console elsewhere.
//! - [`headless`]: no UI: lifecycle events (and logs) printed, for servers, CI and daemons.
//! - [`log_output`]: the service log lines headless prints, within the output budget.
//! - [`console`]: the local console: the UI on this terminal, over this process's stack.
//! - [`detach`]: `up -d`, and a console that leaves its terminal but goes on supervising.
//! - [`keeper`]: the parent process that ends whatever the console leaves when it dies.
//! - [`signals`]: SIGINT, SIGTERM and SIGHUP.

pub mod agent;
pub mod console;
pub mod detach;
pub mod headless;
pub mod keeper;
pub mod log_output;
pub mod signals;

use tokio::task::JoinHandle;

use crate::lock::{InstanceLock, LockError};
use crate::{
    event::{Event, EventKind},
    gateway::{AdminSocket, Bind, Gateway, GatewayError, Started},
    stack::Stack,
    supervisor::{
        ShutdownReport, Supervisor, SupervisorOptions,
        strays::{self, Leftover},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(
        "stack `{stack}` is already running as pid {pid}: attach to it with `switchboard attach{hint}`, or stop it with `switchboard down{hint}`"
    )]
    AlreadyRunning {
        stack: String,
        pid: u32,
        /// The stack file argument the commands need (empty for the demo stack).
        hint: String,
    },
    #[error(transparent)]
    Lock(LockError),
    #[error("cannot start the supervisor: {0}")]
    Supervisor(std::io::Error),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("the supervisor failed: {0}")]
    Crashed(String),
    #[error(transparent)]
    Hosts(#[from] crate::hosts::LinkError),
}

/// A running stack: its supervisor, its HTTP gateway and its admin socket.
pub struct App {
    pub supervisor: Supervisor,
    task: JoinHandle<ShutdownReport>,
    /// The supervisor's report, once its task has ended.
    report: Option<Result<ShutdownReport, String>>,
    gateway: Option<Gateway>,
    /// Why there is no gateway though the stack file asked for one: its address, taken, and
    /// the sentence that says so.
    gateway_problem: Option<(std::net::SocketAddr, String)>,
    socket: Option<AdminSocket>,
    /// The link to the stack's other hosts and durable topics, when it has any (see
    /// [`crate::hosts`]).
    hosts: Option<crate::hosts::Linked>,
    /// Processes of an earlier run of the stack, stopped at start; announced at
    /// [`begin`](Self::begin), when the front end listens.
    leftovers: Vec<Leftover>,
    _lock: InstanceLock,
}

impl App {
    /// Takes the stack's instance lock, starts the supervisor (no service yet: see
    /// [`begin`](Self::begin)), the gateway asked for by `bind`, and the admin socket.
    pub async fn start(
        stack: Stack,
        options: SupervisorOptions,
        bind: Bind,
    ) -> Result<App, AppError> {
        let lock = InstanceLock::acquire(&stack.run_dir).map_err(|err| match err {
            LockError::Held(pid) => AppError::AlreadyRunning {
                hint: stack
                    .source
                    .as_ref()
                    .map_or(String::new(), |f| format!(" {}", f.display())),
                stack: stack.name.clone(),
                pid,
            },
            other => AppError::Lock(other),
        })?;
        // Holding the lock: nothing of this stack that runs now belongs to a live console.
        let run_dir = stack.run_dir.clone();
        let leftovers = tokio::task::spawn_blocking(move || strays::stop_leftovers(&run_dir))
            .await
            .unwrap_or_default();
        // Before any service starts: from here on the keeper's death ends the stack.
        keeper::watch();
        let (supervisor, task) = Supervisor::start(stack, options).map_err(AppError::Supervisor)?;
        let hosts = match crate::hosts::start(&supervisor).await {
            Ok(hosts) => hosts,
            Err(err) => {
                supervisor.shutdown().await;
                let _ = task.await;
                return Err(err.into());
            }
        };
        let started = async {
            let (gateway, gateway_problem) = match Gateway::start(&supervisor, bind).await? {
                Started::On(gateway) => (Some(gateway), None),
                Started::Off => (None, None),
                Started::Taken { address, problem } => (None, Some((address, problem))),
            };
            let for_view = match &gateway_problem {
                Some((address, _)) => Err(*address),
                None => Ok(gateway.as_ref().map(Gateway::address)),
            };
            let socket = AdminSocket::start(&supervisor, for_view).await?;
            Ok::<_, GatewayError>((gateway, gateway_problem, socket))
        };
        match started.await {
            Ok((gateway, gateway_problem, socket)) => Ok(App {
                supervisor,
                task,
                report: None,
                gateway,
                gateway_problem,
                socket,
                hosts,
                leftovers,
                _lock: lock,
            }),
            Err(err) => {
                if let Some(hosts) = &hosts {
                    hosts.stop();
                }
                // No service was started yet; stop the supervisor's own tasks before failing.
                supervisor.shutdown().await;
                let _ = task.await;
                Err(err.into())
            }
        }
    }

    pub fn gateway(&self) -> Option<&Gateway> {
        self.gateway.as_ref()
    }

    /// Why the stack runs without the gateway its file asked for, if it does.
    pub fn gateway_problem(&self) -> Option<&str> {
        self.gateway_problem
            .as_ref()
            .map(|(_, problem)| problem.as_str())
    }

    /// The stack file's gateway address when it was taken.
    pub fn gateway_taken(&self) -> Option<std::net::SocketAddr> {
        self.gateway_problem.as_ref().map(|(address, _)| *address)
    }

    pub fn socket(&self) -> Option<&AdminSocket> {
        self.socket.as_ref()
    }

    /// Starts the stack's services in dependency order, after saying what was left of an
    /// earlier run.
    pub async fn begin(&self) {
        if !self.leftovers.is_empty() {
            let list: Vec<String> = self.leftovers.iter().map(ToString::to_string).collect();
            let message = format!(
                "stopped {} process(es) left running by an earlier run of this stack: {}",
                self.leftovers.len(),
                list.join(", ")
            );
            tracing::warn!(leftovers = ?list, "stopped processes of an earlier run");
            // No receiver is fine: nobody is watching.
            let _ = self.supervisor.events().send(Event::new(
                "switchboard",
                None,
                EventKind::Alert { message },
            ));
        }
        // Loud, not only in the log: a second stack on the same machine would otherwise run
        // without a gateway and nobody would know why its HTTP routes do not answer.
        if let Some((_, problem)) = &self.gateway_problem {
            let _ = self.supervisor.events().send(Event::new(
                "switchboard",
                None,
                EventKind::Alert {
                    message: problem.clone(),
                },
            ));
        }
        self.supervisor.begin().await;
    }

    /// Resolves when the supervisor has ended by itself (every service stopped through the
    /// admin API's `down`, or it failed); then call [`stop`](Self::stop) for the report.
    pub async fn ended(&mut self) {
        if self.report.is_none() {
            let report = (&mut self.task).await.map_err(|err| err.to_string());
            self.report = Some(report);
        }
    }

    /// Stops the gateway and the socket first (no new requests for services that are
    /// stopping), then every service gracefully, and waits for all of it.
    pub async fn stop(self) -> Result<ShutdownReport, AppError> {
        if let Some(gateway) = self.gateway {
            gateway.stop().await;
        }
        if let Some(socket) = self.socket {
            socket.stop().await;
        }
        if let Some(hosts) = &self.hosts {
            hosts.stop();
        }
        self.supervisor.shutdown().await;
        let report = match self.report {
            Some(report) => report,
            None => self.task.await.map_err(|err| err.to_string()),
        };
        report.map_err(AppError::Crashed)
    }
}
