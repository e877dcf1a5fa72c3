//! `switchboard agent --host NAME [FILE]`: runs host NAME's services of a stack under the same
//! supervisor as the console's, so restarts, backoff, hang detection, limits and logs stay on
//! that host, and bridges them to the console over NATS ([`crate::hosts::agent`]).
//!
//! Its run directory is `RUN_DIR/hosts/NAME` ([`Stack::for_host`]), so a console and its
//! agents can share a machine (the tests do).

use std::{sync::Arc, time::SystemTime};

use crate::{
    app::{App, AppError, headless, signals::Signals},
    gateway::Bind,
    hosts::{
        ConnectError,
        agent::{AgentUplink, StatusPublisher, control, downlink, forward_logs},
        subjects::Subjects,
    },
    stack::Stack,
    supervisor::{ShutdownReport, SupervisorOptions},
};

/// How long a stopping agent tries to tell the console it leaves.
const FAREWELL: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the stack has no [nats] table: an agent reaches the console through NATS")]
    NoNats,
    #[error("`{0}` is the console's own host: run the console there, not an agent")]
    ConsoleHost(String),
    #[error("no service of the stack runs on host `{host}` (hosts: {hosts})")]
    UnknownHost { host: String, hosts: String },
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the agent of host `{host}` is already running as pid {pid}; stop it first (SIGTERM)")]
    AlreadyRunning { host: String, pid: u32 },
    #[error(transparent)]
    App(AppError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the agent of `host` until SIGINT or SIGTERM, then stops its services and tells the
/// console it left.
pub async fn run(
    stack: Stack,
    host: &str,
    options: SupervisorOptions,
) -> Result<ShutdownReport, AgentError> {
    let nats = stack.nats.clone().ok_or(AgentError::NoNats)?;
    if host == stack.console_host() {
        return Err(AgentError::ConsoleHost(host.to_string()));
    }
    let hosts = stack.remote_hosts();
    if !hosts.iter().any(|h| h == host) {
        return Err(AgentError::UnknownHost {
            host: host.to_string(),
            hosts: hosts.join(", "),
        });
    }
    let client = crate::hosts::connect(&nats, &stack.name, host).await?;
    let subjects = Subjects::new(&stack.name);
    let mut signals = Signals::install().map_err(AgentError::Signals)?;
    let app = App::start(stack.for_host(host), options, Bind::Off)
        .await
        .map_err(|err| match err {
            // The console's words (attach, down) do not fit an agent.
            AppError::AlreadyRunning { pid, .. } => AgentError::AlreadyRunning {
                host: host.to_string(),
                pid,
            },
            other => AgentError::App(other),
        })?;
    let supervisor = app.supervisor.clone();
    let boot = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let uplink = AgentUplink::start(client.clone(), subjects.up(host), boot);
    supervisor.router().set_uplink(Arc::new(uplink.clone()));
    let status = StatusPublisher {
        client: client.clone(),
        subject: subjects.status(host),
        registry: supervisor.registry().clone(),
        boot,
    };
    let bridge = [
        tokio::spawn(downlink(
            client.clone(),
            subjects.down(host),
            supervisor.registry().clone(),
            uplink.clone(),
        )),
        tokio::spawn(status.clone().run(supervisor.clone())),
        tokio::spawn(control(
            client.clone(),
            subjects.control(host),
            supervisor.clone(),
        )),
        tokio::spawn(forward_logs(
            client.clone(),
            subjects.logs(host),
            supervisor.logs().clone(),
        )),
    ];
    let events = supervisor.events().subscribe();
    let logs = supervisor.logs().subscribe();
    app.begin().await;
    headless::print_line(&format!(
        "switchboard agent: host `{host}` of stack `{}`, {} services, pid {}, NATS {}",
        stack.name,
        supervisor.stack().services.len(),
        std::process::id(),
        nats.url
    ));
    let report = headless::watch(app, events, Some(logs), &mut signals).await;
    for task in bridge {
        task.abort();
    }
    // The console hears the agent left, rather than waiting to find it unreachable; within a
    // bound, since the server may be gone (the client would wait for it for good).
    let farewell = async {
        status.publish(true).await;
        let _ = client.flush().await;
    };
    if tokio::time::timeout(FAREWELL, farewell).await.is_err() {
        tracing::warn!(
            "the NATS server did not take the agent's farewell; the console will find the host unreachable"
        );
    }
    report.map_err(AgentError::App)
}
