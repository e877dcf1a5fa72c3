//! The agent's side of the bridge to the console (`switchboard agent --host NAME [FILE]`,
//! which runs host NAME's services under the same supervisor as the console's:
//! `app::agent`).
//!
//! - up: every frame its services write goes to the console ([`AgentUplink`]), and so does
//!   each exit;
//! - down: frames from the console are written to the instance they name, if it is still the
//!   same process (same generation); a request for one that is gone or full is answered
//!   `unavailable` or `overloaded` at once, from here;
//! - status: its instances twice a second and at every lifecycle event;
//! - logs: its services' log lines, as kept here (within each service's log budget);
//! - control: commands from the console, carried out by its supervisor.
//!

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use switchboard_protocol::{Envelope, ErrorCode, Kind};
use tokio::sync::mpsc;

use super::wire::{
    ControlReply, Down, HostStatus, InstanceKey, LogBatch, RESULT_REPORTED, RUNS_REPORTED,
    RemoteInstance, RemoteLogLine, UpRef,
};
use crate::{
    logs::LogStore,
    registry::{self, InstanceHandle, JobRun, SharedRegistry},
    router::{Uplink, error_answer},
    supervisor::{Command, Reply, Supervisor},
    transport::SendError,
};

/// Frames queued for the console before a service's request is refused `overloaded` (and
/// other frames dropped and counted).
pub const UP_QUEUE: usize = 8192;
/// How often the agent publishes its status when nothing changes: five times within the
/// console's [`UNREACHABLE_AFTER`](super::remote::UNREACHABLE_AFTER), so one late or lost
/// status is no alarm.
pub const STATUS_EVERY: Duration = Duration::from_millis(500);

/// The agent's router's way up: frames are encoded where they were read and queued for one
/// publisher task.
#[derive(Clone)]
pub struct AgentUplink {
    tx: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
    boot: u64,
}

impl AgentUplink {
    /// The uplink of the agent run `boot` (see [`HostStatus::boot`]).
    pub fn start(client: async_nats::Client, subject: String, boot: u64) -> AgentUplink {
        let (tx, rx) = mpsc::channel(UP_QUEUE);
        tokio::spawn(publish(client, subject, rx));
        AgentUplink {
            tx,
            dropped: Arc::default(),
            boot,
        }
    }

    fn key_of(&self, handle: &InstanceHandle) -> InstanceKey {
        InstanceKey {
            service: handle.service.to_string(),
            replica: handle.id.replica,
            boot: self.boot,
            generation: handle.id.generation,
        }
    }

    /// Frames dropped because the way up was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, message: &UpRef<'_>) -> Result<(), mpsc::error::TrySendError<Bytes>> {
        match postcard::to_allocvec(message) {
            Ok(bytes) => self.tx.try_send(Bytes::from(bytes)),
            Err(err) => {
                tracing::warn!(cause = %err, "cannot encode a frame for the console");
                Ok(())
            }
        }
    }

    /// Answers `request`, which came down for `key`, with an error from here.
    fn refuse(&self, key: &InstanceKey, request: &Envelope, code: ErrorCode, message: &str) {
        let answer = error_answer(request.id, request.trace, code, message);
        let _ = self.send(&UpRef::Frame {
            key,
            envelope: &answer,
        });
    }
}

impl Uplink for AgentUplink {
    fn frame(&self, from: &InstanceHandle, envelope: &Envelope) {
        let key = self.key_of(from);
        if self
            .send(&UpRef::Frame {
                key: &key,
                envelope,
            })
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if envelope.kind == Kind::Request {
                let answer = error_answer(
                    envelope.id,
                    envelope.trace,
                    ErrorCode::Overloaded,
                    "the agent's way to the console is full",
                );
                let _ = from.link.try_send(&answer);
            }
        }
    }

    fn gone(&self, gone: &InstanceHandle) {
        let key = self.key_of(gone);
        if let Err(mpsc::error::TrySendError::Full(bytes)) = self.send(&UpRef::Gone { key: &key }) {
            // An exit must not be lost: its callers would wait out their deadlines.
            let tx = self.tx.clone();
            tokio::spawn(async move { tx.send(bytes).await });
        }
    }
}

async fn publish(client: async_nats::Client, subject: String, mut rx: mpsc::Receiver<Bytes>) {
    let subject = async_nats::Subject::from(subject);
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        for frame in batch.drain(..) {
            if let Err(err) = client.publish(subject.clone(), frame).await {
                tracing::debug!(%subject, cause = %err, "cannot publish a frame up");
            }
        }
    }
}

/// Frames from the console, to the instances they name.
pub async fn downlink(
    client: async_nats::Client,
    subject: String,
    registry: SharedRegistry,
    uplink: AgentUplink,
) {
    let mut messages = match client.subscribe(subject.clone()).await {
        Ok(messages) => messages,
        Err(err) => {
            tracing::error!(%subject, cause = %err, "cannot subscribe: no frames will reach this host's services");
            return;
        }
    };
    while let Some(message) = messages.next().await {
        let Ok(Down { key, envelope }) = postcard::from_bytes::<Down>(&message.payload) else {
            tracing::warn!(%subject, bytes = message.payload.len(), "malformed frame from the console, skipped");
            continue;
        };
        let handle = {
            let registry = registry::read(&registry);
            registry
                .service(&key.service)
                .and_then(|s| s.replica(key.replica))
                .filter(|i| i.id.generation == key.generation && key.boot == uplink.boot)
                .and_then(|i| i.handle.clone())
        };
        let refusal = match handle.map(|h| h.link.try_send(&envelope)) {
            Some(Ok(())) => continue,
            None | Some(Err(SendError::Closed | SendError::Draining)) => {
                (ErrorCode::Unavailable, "the instance is gone")
            }
            Some(Err(SendError::Full)) => (ErrorCode::Overloaded, "the instance's inbox is full"),
            Some(Err(SendError::TooLarge)) => {
                (ErrorCode::BadRequest, "the frame is over the frame limit")
            }
        };
        if envelope.kind == Kind::Request {
            uplink.refuse(&key, &envelope, refusal.0, refusal.1);
        }
    }
}

/// Publishes the agent's instances.
#[derive(Clone)]
pub struct StatusPublisher {
    pub client: async_nats::Client,
    pub subject: String,
    pub registry: SharedRegistry,
    /// See [`HostStatus::boot`].
    pub boot: u64,
}

impl StatusPublisher {
    /// Every [`STATUS_EVERY`], and soon after each lifecycle event (events coming together
    /// make one status).
    pub async fn run(self, supervisor: Supervisor) {
        let mut events = supervisor.events().subscribe();
        let mut every = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                event = events.recv() => {
                    if matches!(event, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    while events.try_recv().is_ok() {}
                }
            }
            // The console shows this host's CPU and memory: the sampler must keep going
            // (it samples only while someone looks, and the looking is done elsewhere).
            supervisor.own_usage().looked_at();
            self.publish(false).await;
        }
    }

    pub async fn publish(&self, leaving: bool) {
        let status = HostStatus {
            boot: self.boot,
            agent_pid: std::process::id(),
            leaving,
            instances: if leaving {
                Vec::new()
            } else {
                instances(&self.registry, self.boot)
            },
            runs: if leaving {
                Vec::new()
            } else {
                runs(&self.registry)
            },
        };
        match postcard::to_allocvec(&status) {
            Ok(bytes) => {
                if let Err(err) = self
                    .client
                    .publish(self.subject.clone(), Bytes::from(bytes))
                    .await
                {
                    tracing::debug!(cause = %err, "cannot publish the host's status");
                }
            }
            Err(err) => tracing::warn!(cause = %err, "cannot encode the host's status"),
        }
    }
}

/// The recent runs of every job of the agent, results cut to [`RESULT_REPORTED`].
fn runs(registry: &SharedRegistry) -> Vec<(String, Vec<JobRun>)> {
    let registry = registry::read(registry);
    registry
        .services
        .iter()
        .filter(|s| s.is_job())
        .map(|service| {
            let skip = service.runs.len().saturating_sub(RUNS_REPORTED);
            let runs = service
                .runs
                .iter()
                .skip(skip)
                .cloned()
                .map(|mut run| {
                    if let Some(Ok(text) | Err(text)) = &mut run.result
                        && text.len() > RESULT_REPORTED
                    {
                        text.truncate(text.floor_char_boundary(RESULT_REPORTED));
                        text.push_str(" …(cut)");
                    }
                    run
                })
                .collect();
            (service.name().to_string(), runs)
        })
        .collect()
}

/// Every instance of the agent's services, as the console shows it.
fn instances(registry: &SharedRegistry, boot: u64) -> Vec<RemoteInstance> {
    let registry = registry::read(registry);
    registry
        .services
        .iter()
        .flat_map(|service| {
            service.instances.iter().map(|i| RemoteInstance {
                key: InstanceKey {
                    service: service.name().to_string(),
                    replica: i.id.replica,
                    boot,
                    generation: i.id.generation,
                },
                state: i.state,
                pid: i.pid.filter(|_| i.state.has_process()),
                routable: i.handle.as_ref().is_some_and(|h| h.is_routable()),
                version: i.version.clone(),
                methods: i.methods.clone(),
                topics: i
                    .handle
                    .as_ref()
                    .and_then(|h| h.subscriptions.read().ok().map(|t| t.clone()))
                    .unwrap_or_default(),
                restarts: i.restarts,
                uptime_ms: i.uptime().map(|u| u.as_millis() as u64),
                heartbeat_age_ms: i.heartbeat_moved.map(|at| at.elapsed().as_millis() as u64),
                cpu_percent: i.cpu_percent,
                rss_bytes: i.rss_bytes,
                last_exit: i.last_exit.as_ref().map(ToString::to_string),
                snapshot: i
                    .handle
                    .as_ref()
                    .filter(|_| i.state.has_process())
                    .and_then(|h| h.segment.as_ref())
                    .map(crate::transport::Segment::read),
            })
        })
        .collect()
}

/// Lines forwarded in one message, at most.
const LOG_BATCH: usize = 256;
/// How long a line waits for others to share its message.
const LOG_LINGER: Duration = Duration::from_millis(50);

/// Forwards the log lines of this host's services to the console, in batches.
pub async fn forward_logs(client: async_nats::Client, subject: String, logs: Arc<LogStore>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut feed = logs.subscribe();
    loop {
        let mut batch = LogBatch::default();
        // The first line, however long it takes; then what comes within the linger.
        let linger = tokio::time::sleep(LOG_LINGER);
        tokio::pin!(linger);
        let mut started = false;
        while batch.lines.len() < LOG_BATCH {
            let line = if started {
                tokio::select! {
                    line = feed.recv() => line,
                    () = &mut linger => break,
                }
            } else {
                feed.recv().await
            };
            match line {
                Ok(line) => {
                    if !started {
                        started = true;
                        linger
                            .as_mut()
                            .reset(tokio::time::Instant::now() + LOG_LINGER);
                    }
                    batch.lines.push(RemoteLogLine {
                        service: line.service.to_string(),
                        replica: line.replica,
                        stream: line.stream,
                        text: line.text.clone(),
                    });
                }
                Err(RecvError::Lagged(missed)) => batch.lost += missed,
                Err(RecvError::Closed) => return,
            }
        }
        match postcard::to_allocvec(&batch) {
            Ok(bytes) => {
                if let Err(err) = client.publish(subject.clone(), Bytes::from(bytes)).await {
                    tracing::debug!(cause = %err, "cannot forward log lines");
                }
            }
            Err(err) => tracing::warn!(cause = %err, "cannot encode log lines"),
        }
    }
}

/// Commands from the console (in the text form of [`Command`]), carried out here and
/// answered with a [`ControlReply`].
pub async fn control(client: async_nats::Client, subject: String, supervisor: Supervisor) {
    let mut requests = match client.subscribe(subject.clone()).await {
        Ok(requests) => requests,
        Err(err) => {
            tracing::error!(%subject, cause = %err, "cannot subscribe: the console cannot control this host");
            return;
        }
    };
    while let Some(request) = requests.next().await {
        let Some(reply_to) = request.reply else {
            continue;
        };
        let (client, supervisor) = (client.clone(), supervisor.clone());
        tokio::spawn(async move {
            let reply = match std::str::from_utf8(&request.payload)
                .map_err(|_| "not text".to_string())
                .and_then(|text| Command::from_str(text).map_err(|e| e.to_string()))
            {
                Ok(command) => match supervisor.command_audited(command, "console").await {
                    Ok(Reply::Done) => ControlReply::Done,
                    Ok(Reply::JobRun(run)) => ControlReply::JobRun(run),
                    Err(err) => ControlReply::Refused(err.to_string()),
                },
                Err(why) => ControlReply::Refused(why),
            };
            if let Ok(bytes) = postcard::to_allocvec(&reply) {
                let _ = client.publish(reply_to, Bytes::from(bytes)).await;
            }
        });
    }
}
