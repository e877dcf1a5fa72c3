//! The console's view of the stack's other hosts: it adopts their instances into the registry,
//! routes their frames, and notices when an agent goes silent.
//!
//! The supervisor writes the state of this host's services; this task writes that of the
//! services of other hosts, as their agents report it. An instance is adopted when its Hello
//! comes up, or from a status that lists it (a console that restarts adopts what the agents
//! run, without restarting anything). It gets an [`InstanceHandle`] whose link is a
//! [`NatsLink`](super::link::NatsLink), so the router reaches it as it reaches any other instance.
//!
//! An agent not heard for [`UNREACHABLE_AFTER`] is unreachable: its instances are shown
//! `unreachable`, and their callers are answered `unavailable` at once (in flight and from
//! then on), not held. When it is heard again, its instances are adopted as they are.
//!
//! - this file: the tracker task and what every part uses (which host and service a
//!   message speaks for, events and alerts);
//! - `frames`: frames from an agent's instances: adoption at Hello, readiness, subscriptions,
//!   the rest routed; letting an instance go;
//! - `status`: an agent's status, its log lines, and its silence;
//! - `commands`: commands for another host's services, sent to its agent.

mod commands;
mod frames;
mod status;

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::StreamExt;
use switchboard_protocol::{Envelope, ErrorCode, Kind};

use super::{
    ConnectError,
    link::DownQueue,
    subjects::Subjects,
    wire::{ControlReply, HostStatus, InstanceKey, LogBatch, RUNS_REPORTED, RemoteInstance, Up},
};
use crate::{
    event::{Event, EventKind},
    logs::line_codec,
    registry::{self, Instance, InstanceHandle, InstanceId, InstanceState},
    stack::Stack,
    supervisor::{Command, ControlError, MAX_REPLICAS, RemoteControl, Reply, Supervisor},
    transport::{Link, Segment},
};

/// How long an agent may go unheard before its host is unreachable: five status periods.
/// Checked every [`CHECK_EVERY`], so a host that goes silent is shown unreachable within
/// 2.6 s of its last status, under the 3 s the console promises.
pub const UNREACHABLE_AFTER: Duration = Duration::from_millis(2500);
/// How often silence is checked for.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a command for another host waits for its agent's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Console generations of remote instances start here, clear of the supervisor's own.
const FIRST_REMOTE_GENERATION: u64 = 1 << 40;

/// Links the console to the stack's other hosts, when it has any: adopts their instances and
/// sends commands for them to their agents. Returns the task, which runs until the console
/// ends.
pub async fn start(
    supervisor: &Supervisor,
    client: &async_nats::Client,
) -> Result<Option<tokio::task::JoinHandle<()>>, ConnectError> {
    let stack = supervisor.stack().clone();
    let hosts = stack.remote_hosts();
    if hosts.is_empty() {
        return Ok(None);
    }
    {
        let mut registry = registry::write(supervisor.registry());
        for service in registry.services.iter_mut() {
            service.remote = stack.is_remote(&service.spec);
        }
    }
    let client = client.clone();
    let subjects = Subjects::new(&stack.name);
    let up = subscribe(&client, subjects.every_up()).await?;
    let status = subscribe(&client, subjects.every_status()).await?;
    let logs = subscribe(&client, subjects.every_logs()).await?;
    supervisor.set_remote_control(Arc::new(commands::Commands {
        client: client.clone(),
        subjects: subjects.clone(),
    }));
    let started = Instant::now();
    let hosts = hosts
        .into_iter()
        .map(|name| {
            let down = DownQueue::start(client.clone(), subjects.down(&name));
            let host = Host {
                down,
                heard: None,
                boot: 0,
                reachable: true,
                tracked: HashMap::new(),
            };
            (name, host)
        })
        .collect();
    let tracker = Tracker {
        stack,
        supervisor: supervisor.clone(),
        subjects,
        hosts,
        next_generation: FIRST_REMOTE_GENERATION,
        started,
    };
    Ok(Some(tokio::spawn(tracker.run(up, status, logs))))
}

async fn subscribe(
    client: &async_nats::Client,
    subject: String,
) -> Result<async_nats::Subscriber, ConnectError> {
    client
        .subscribe(subject)
        .await
        .map_err(|err| ConnectError::Subscribe(err.to_string()))
}

/// One other host, as the console knows it.
struct Host {
    down: DownQueue,
    heard: Option<Instant>,
    /// The agent run last heard from (see [`HostStatus::boot`]).
    boot: u64,
    reachable: bool,
    /// Its adopted instances, by (service index, replica).
    tracked: HashMap<(usize, u32), Tracked>,
}

struct Tracked {
    /// The agent's run and generation of the process.
    boot: u64,
    generation: u64,
    handle: Arc<InstanceHandle>,
}

struct Tracker {
    stack: Arc<Stack>,
    supervisor: Supervisor,
    subjects: Subjects,
    hosts: HashMap<String, Host>,
    next_generation: u64,
    started: Instant,
}

impl Tracker {
    async fn run(
        mut self,
        mut up: async_nats::Subscriber,
        mut status: async_nats::Subscriber,
        mut logs: async_nats::Subscriber,
    ) {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                Some(message) = up.next() => {
                    let Some(host) = self.host_named(&message.subject) else { continue };
                    match postcard::from_bytes::<Up>(&message.payload) {
                        Ok(up) => self.up(&host, up).await,
                        Err(err) => tracing::warn!(%host, cause = %err, "malformed frame from an agent, skipped"),
                    }
                }
                Some(message) = status.next() => {
                    let Some(host) = self.host_named(&message.subject) else { continue };
                    match postcard::from_bytes::<HostStatus>(&message.payload) {
                        Ok(status) => self.status(&host, status).await,
                        Err(err) => tracing::warn!(%host, cause = %err, "malformed status from an agent, skipped"),
                    }
                }
                Some(message) = logs.next() => {
                    let Some(host) = self.host_named(&message.subject) else { continue };
                    match postcard::from_bytes::<LogBatch>(&message.payload) {
                        Ok(batch) => self.logs(&host, batch),
                        Err(err) => tracing::warn!(%host, cause = %err, "malformed log lines from an agent, skipped"),
                    }
                }
                _ = check.tick() => self.check_silence(),
                else => return,
            }
        }
    }

    /// The host a subject is from, when it is one of the stack's other hosts.
    fn host_named(&self, subject: &str) -> Option<String> {
        let host = self.subjects.host_of(subject)?;
        self.hosts.contains_key(host).then(|| host.to_string())
    }

    /// The index of `service` when it is a service of `host` (an agent speaks only for its
    /// own services).
    fn service_of(&self, host: &str, service: &str) -> Option<usize> {
        let index = self.stack.services.iter().position(|s| s.name == service)?;
        if self.stack.host_of(&self.stack.services[index]) == host {
            Some(index)
        } else {
            tracing::warn!(%host, %service, "an agent spoke for a service of another host; ignored");
            None
        }
    }

    fn heard(&mut self, host: &str) {
        let Some(entry) = self.hosts.get_mut(host) else {
            return;
        };
        entry.heard = Some(Instant::now());
        if !entry.reachable {
            entry.reachable = true;
            self.alert(host, format!("host `{host}` is reachable again"));
            self.set_unreachable(host, false);
        }
    }

    fn state_event(&self, index: usize, replica: u32, from: InstanceState, to: InstanceState) {
        if from != to {
            let name = &self.stack.services[index].name;
            let _ = self.supervisor.events().send(Event::new(
                name,
                Some(replica),
                EventKind::State { from, to },
            ));
        }
    }

    fn alert(&self, host: &str, message: String) {
        tracing::info!(%host, "{message}");
        for service in self
            .stack
            .services
            .iter()
            .filter(|s| self.stack.host_of(s) == host)
        {
            let _ = self.supervisor.events().send(Event::new(
                &service.name,
                None,
                EventKind::Alert {
                    message: message.clone(),
                },
            ));
        }
    }
}

/// Records the topics an instance subscribes to, for the router and the console.
fn set_topics(supervisor: &Supervisor, handle: &InstanceHandle, topics: Vec<String>) {
    let changed = handle
        .subscriptions
        .read()
        .map(|t| *t != topics)
        .unwrap_or(true);
    if changed {
        supervisor
            .router()
            .subscriptions_changed(&handle.service, handle.id.replica, &topics);
        if let Ok(mut subscriptions) = handle.subscriptions.write() {
            *subscriptions = topics;
        }
    }
}
