//! The console's side of NATS, started with the stack: one connection, shared by the link to
//! the other hosts ([`super::remote`]) and the durable topics ([`super::durable`]).

use tokio::task::JoinHandle;

use super::{ConnectError, durable::DurableError};
use crate::supervisor::Supervisor;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Durable(#[from] DurableError),
}

/// The console's NATS tasks; [`stop`](Self::stop) ends them.
pub struct Linked {
    tasks: Vec<JoinHandle<()>>,
}

impl Linked {
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Connects the console to the stack's NATS server when it needs one (services on other
/// hosts, durable topics), and starts what uses it.
pub async fn start(supervisor: &Supervisor) -> Result<Option<Linked>, LinkError> {
    let stack = supervisor.stack().clone();
    let Some(nats) = &stack.nats else {
        return Ok(None);
    };
    let durable = stack.topics.iter().any(|t| t.durable);
    if stack.remote_hosts().is_empty() && !durable {
        return Ok(None);
    }
    let client = super::connect(nats, &stack.name, stack.console_host()).await?;
    let mut tasks: Vec<JoinHandle<()>> = super::durable::start(supervisor, client.clone()).await?;
    tasks.extend(super::remote::start(supervisor, &client).await?);
    Ok(Some(Linked { tasks }))
}
