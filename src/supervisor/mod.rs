//! The supervisor: starts the stack's services in dependency order, keeps them alive, and is the
//! only writer of their state in the registry.
//!
//! - [`spawn`]: the long-lived spawner thread and the pre-exec setup of every child.
//! - [`launch`]: a service's spec turned into a command line and an environment.
//! - [`instance`]: the actor owning one child process, its pipes and its stop sequence.
//! - [`degraded`]: when bad frames make an instance degraded, and when it is healthy again.
//! - [`limits`]: a service's resource limits, set before exec and named in exit reasons.
//! - [`restart`]: backoff, the restart intensity limit and the long backoff after it.
//! - [`replicas`]: which replicas a scale-in removes.
//! - [`backlog_alert`]: when a backlog raises an alert, and when it is steady again.
//! - [`autoscale`]: how many replicas hold a service's backlog target.
//! - [`procs`]: the process table as `/proc` shows it.
//! - [`strays`]: killing what a service left behind outside its process group.
//! - [`snapshot`]: the read model ([`ConsoleView`](crate::api::ConsoleView)) of this supervisor.
//! - `command`: an operator's [`Command`], as typed on the `:` line and in the admin API.
//! - `core`: the actor that owns every decision; [`Supervisor`] is the handle to it.
//!
//! Everything the supervisor decides becomes an [`Event`](crate::event::Event) on the lifecycle
//! channel.

pub mod autoscale;
pub mod backlog_alert;
mod command;
mod core;
pub mod degraded;
pub mod huge_pages;
pub mod instance;
pub mod launch;
pub mod limits;
pub mod probe;
pub mod procs;
pub mod replicas;
pub mod restart;
pub mod snapshot;
pub mod spawn;
mod stdout;
pub mod strays;

use std::{path::PathBuf, sync::Arc, time::Duration};

use switchboard_protocol::{Body, Hello, Status};
use tokio::sync::{mpsc, oneshot};

pub use self::{
    command::{Command, CommandError},
    launch::LaunchContext,
};
use crate::{
    audit::AuditLog,
    event::EventSender,
    logs::LogStore,
    monitor::{
        metrics::{self, SharedMetrics},
        resources,
    },
    registry::{ExitStatus, InstanceId, SharedRegistry},
    router::Router,
    stack::Stack,
};

/// What an instance task reports to the supervisor.
#[derive(Debug)]
pub enum InstanceEvent {
    Hello {
        id: InstanceId,
        hello: Hello,
    },
    Ready {
        id: InstanceId,
    },
    Hung {
        id: InstanceId,
        silent_for: Duration,
    },
    /// The liveness probe failed `failures` times in a row: the group is being SIGKILLed.
    ProbeFailed {
        id: InstanceId,
        probe: String,
        failures: u32,
        error: String,
    },
    /// The heartbeat has been still for half its timeout (`stale`), or moves again.
    Stale {
        id: InstanceId,
        stale: bool,
        silent_for: Duration,
    },
    /// A step of the stop sequence; `forced` when it escalates.
    Signalled {
        id: InstanceId,
        signal: &'static str,
        forced: bool,
    },
    /// Bad frames came in a burst: the instance is degraded (see [`degraded`]).
    BadFrames {
        id: InstanceId,
        count: u64,
    },
    /// A degraded instance went a quiet window without a bad frame.
    Recovered {
        id: InstanceId,
    },
    JobResult {
        id: InstanceId,
        status: Status,
        body: Body,
    },
    Exited {
        id: InstanceId,
        status: ExitStatus,
    },
}

/// What a command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    /// A job run was started with this run number.
    JobRun(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no service named `{0}`")]
    UnknownService(String),
    #[error("`{0}` is not a job")]
    NotAJob(String),
    #[error("`{0}` is a job: run it instead")]
    IsAJob(String),
    #[error("job `{0}` is already running")]
    AlreadyRunning(String),
    #[error("replicas must be between 1 and {max}, not {asked}")]
    BadReplicas { asked: u32, max: u32 },
    #[error("bad job parameters: {0}")]
    BadParams(String),
    #[error("the console is shutting down")]
    ShuttingDown,
    /// A service on another host, which no agent reached in time.
    #[error("host `{0}` cannot be reached (is its agent running?)")]
    HostUnreachable(String),
    /// The agent of a service's host refused the command.
    #[error("on host `{host}`: {message}")]
    OnHost { host: String, message: String },
}

/// How the console carries out a command for a service on another host: it sends it to that
/// host's agent (see `hosts::remote`). The supervisor knows only this seam.
pub trait RemoteControl: Send + Sync {
    fn command(
        &self,
        host: String,
        command: Command,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Reply, ControlError>> + Send>>;
}

pub const MAX_REPLICAS: u32 = 1000;

/// How the supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Instances that had to be signalled (SIGTERM or SIGKILL) to stop.
    pub forced: Vec<String>,
    /// Processes left behind by services (outside their process groups), killed at the end.
    pub strays: Vec<u32>,
}

impl ShutdownReport {
    pub fn clean(&self) -> bool {
        self.forced.is_empty()
    }
}

struct Request {
    command: Command,
    reply: oneshot::Sender<Result<Reply, ControlError>>,
}

enum Message {
    /// Start the stack's services. Sent once, after the caller has subscribed to what it wants
    /// to watch, so it sees the very first events.
    Begin,
    Command(Request),
    Shutdown,
    /// An instance on another host changed state: local services waiting on it may start.
    RemoteChanged,
}

/// Commands waiting for the supervisor. Senders wait when it is full: commands come from people
/// and scripts, and the supervisor answers each in microseconds.
const COMMAND_QUEUE: usize = 256;
/// Reports from instance tasks. Instance tasks wait when it is full: these reports (exits above
/// all) must not be lost.
const INSTANCE_EVENT_QUEUE: usize = 4096;

/// Handle to a running supervisor. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    messages: mpsc::Sender<Message>,
    registry: SharedRegistry,
    events: EventSender,
    logs: Arc<LogStore>,
    router: Router,
    stack: Arc<Stack>,
    metrics: SharedMetrics,
    audit: Option<AuditLog>,
    own_usage: resources::Usage,
    /// Where commands for services on other hosts go; unset without `[nats]`.
    remote: Arc<std::sync::OnceLock<Arc<dyn RemoteControl>>>,
}

/// Settings of a supervisor that do not come from the stack file.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// The executable that runs builtins (`EXE service NAME`).
    pub builtin_exe: PathBuf,
    /// Write per-service log files under the run directory.
    pub log_files: bool,
}

impl SupervisorOptions {
    pub fn from_current_exe() -> std::io::Result<Self> {
        Ok(SupervisorOptions {
            builtin_exe: std::env::current_exe()?,
            log_files: true,
        })
    }
}

/// What the rest of the console reads, each shared with the supervisor's own task. Read-only
/// handles: the supervisor alone decides what runs, and it is told through
/// [`command`](Supervisor::command) and [`shutdown`](Supervisor::shutdown).
impl Supervisor {
    /// Every service and instance, as the supervisor last set them.
    pub fn registry(&self) -> &SharedRegistry {
        &self.registry
    }

    /// Lifecycle events; `subscribe()` for a receiver.
    pub fn events(&self) -> &EventSender {
        &self.events
    }

    /// Every service's recent log lines.
    pub fn logs(&self) -> &Arc<LogStore> {
        &self.logs
    }

    /// Routes requests and events to instances (the gateway's way in).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The stack as loaded.
    pub fn stack(&self) -> &Arc<Stack> {
        &self.stack
    }

    /// Per-service figures, sampled from the segments.
    pub fn metrics(&self) -> &SharedMetrics {
        &self.metrics
    }

    /// Where operator actions and refused calls are recorded; `None` when the file cannot be
    /// opened (said in the log at start).
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The console's own CPU and memory.
    pub fn own_usage(&self) -> &resources::Usage {
        &self.own_usage
    }
}

impl Supervisor {
    /// Starts the supervisor; the stack's services start on [`begin`](Self::begin). The returned
    /// task ends, with its report, once [`shutdown`](Self::shutdown) has stopped every process.
    pub fn start(
        stack: Stack,
        options: SupervisorOptions,
    ) -> std::io::Result<(Supervisor, tokio::task::JoinHandle<ShutdownReport>)> {
        let stack = Arc::new(stack);
        let logs = LogStore::new(
            options
                .log_files
                .then(|| stack.run_dir.join("logs"))
                .as_deref(),
        );
        let events = crate::event::channel();
        let registry: SharedRegistry = Arc::new(std::sync::RwLock::new(
            crate::registry::Registry::new(stack.name.clone(), &stack.services),
        ));
        let audit = match AuditLog::open(&stack.run_dir.join("audit.jsonl")) {
            Ok(audit) => Some(audit),
            Err(err) => {
                tracing::warn!(cause = %err, "no audit log");
                None
            }
        };
        let router = Router::new(registry.clone(), &stack, events.clone(), audit.clone());
        let (messages, inbox) = mpsc::channel(COMMAND_QUEUE);
        let (instance_tx, instance_rx) = mpsc::channel(INSTANCE_EVENT_QUEUE);
        let metrics = metrics::start(
            Arc::downgrade(&registry),
            Box::new(router.calls_made()),
            Box::new(router.oldest_waits()),
        );
        let core = core::Core::new(
            stack.clone(),
            registry.clone(),
            events.clone(),
            logs.clone(),
            router.clone(),
            spawn::Spawner::start()?,
            LaunchContext::for_stack(&stack, options.builtin_exe),
            instance_tx,
            core::Observers {
                metrics: metrics.clone(),
                audit: audit.clone(),
            },
        );
        let task = tokio::spawn(core.run(inbox, instance_rx));
        let own_usage = resources::start(Arc::downgrade(&registry));
        Ok((
            Supervisor {
                messages,
                registry,
                events,
                logs,
                router,
                stack,
                metrics,
                audit,
                own_usage,
                remote: Arc::default(),
            },
            task,
        ))
    }

    /// Starts the stack's services in dependency order. Subscribe to events and logs first.
    pub async fn begin(&self) {
        let _ = self.messages.send(Message::Begin).await;
    }

    pub async fn command(&self, command: Command) -> Result<Reply, ControlError> {
        // A breaker lives in this console's router, wherever its service runs.
        let forwarded = !matches!(command, Command::ResetBreaker(_));
        if let Some(spec) = self.stack.service(command.target())
            && self.stack.is_remote(spec)
            && forwarded
        {
            let host = self.stack.host_of(spec).to_string();
            return match self.remote.get() {
                Some(remote) => remote.command(host, command).await,
                None => Err(ControlError::HostUnreachable(host)),
            };
        }
        let (reply, answer) = oneshot::channel();
        self.messages
            .send(Message::Command(Request { command, reply }))
            .await
            .map_err(|_| ControlError::ShuttingDown)?;
        answer.await.map_err(|_| ControlError::ShuttingDown)?
    }

    /// Runs `command` and writes it, with its outcome and who asked (`actor`), to the audit
    /// log.
    pub async fn command_audited(
        &self,
        command: Command,
        actor: &str,
    ) -> Result<Reply, ControlError> {
        let (action, target) = command.describe();
        let result = self.command(command).await;
        if let Some(audit) = &self.audit {
            let outcome = match &result {
                Ok(_) => "ok".to_string(),
                Err(err) => err.to_string(),
            };
            audit.record(actor, action, &target, &outcome);
        }
        tracing::info!(actor, action, %target, ok = result.is_ok(), "operator command");
        result
    }

    /// A snapshot of everything the console shows but the logs; `started` is when the console
    /// started (for its uptime).
    pub fn view(&self, started: std::time::Instant) -> crate::api::ConsoleView {
        snapshot::snapshot(self, started)
    }

    /// Sends commands for services on other hosts through `remote`. Set once.
    pub fn set_remote_control(&self, remote: Arc<dyn RemoteControl>) {
        let _ = self.remote.set(remote);
    }

    /// An instance on another host changed state: local services waiting on it may start.
    /// Never waits: when the queue is full the word is dropped, and the supervisor's
    /// once-a-second look at what waits starts it (a supervisor that is stopping starts
    /// nothing).
    pub fn remote_changed(&self) {
        let _ = self.messages.try_send(Message::RemoteChanged);
    }

    /// Stops every service in reverse dependency order. Returns at once; await the task
    /// returned by [`start`](Self::start) for completion.
    pub async fn shutdown(&self) {
        let _ = self.messages.send(Message::Shutdown).await;
    }
}
