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

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::StreamExt;
use switchboard_protocol::{Envelope, ErrorCode, Kind, Status};

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
    supervisor.set_remote_control(Arc::new(Commands {
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

    async fn up(&mut self, host: &str, up: Up) {
        self.heard(host);
        match up {
            Up::Frame { key, mut envelope } => {
                let Some(index) = self.service_of(host, &key.service) else {
                    return;
                };
                if let Kind::Hello(hello) = &envelope.kind {
                    let Some(handle) = self.adopt(host, index, &key, None) else {
                        return;
                    };
                    set_topics(&self.supervisor, &handle, hello.topics.clone());
                    let mut registry = registry::write(self.supervisor.registry());
                    if let Some(instance) = registry.instance_mut(handle.id) {
                        instance.version = Some(hello.version.clone());
                        instance.protocol_version = Some(hello.protocol_version);
                        instance.methods = hello.methods.clone();
                    }
                    return;
                }
                let Some(handle) = self.tracked(host, index, &key) else {
                    self.refuse_unknown(host, &key, &envelope);
                    return;
                };
                self.frame(&handle, &mut envelope).await;
            }
            Up::Gone { key } => {
                let Some(index) = self.service_of(host, &key.service) else {
                    return;
                };
                if self.tracked(host, index, &key).is_some() {
                    self.retire(host, index, key.replica, None);
                }
            }
        }
    }

    /// A frame from an adopted instance: what the console acts on, or what it routes.
    async fn frame(&mut self, handle: &Arc<InstanceHandle>, envelope: &mut Envelope) {
        match &envelope.kind {
            Kind::Ready => self.routable(handle, true, true).await,
            Kind::Subscribe | Kind::Unsubscribe => {
                let mut topics = handle
                    .subscriptions
                    .read()
                    .map(|t| t.clone())
                    .unwrap_or_default();
                if envelope.kind == Kind::Subscribe {
                    if !topics.iter().any(|t| *t == envelope.destination) {
                        topics.push(envelope.destination.to_string());
                    }
                } else {
                    topics.retain(|t| *t != envelope.destination);
                }
                set_topics(&self.supervisor, handle, topics);
            }
            // A remote job's result: its agent records it (jobs run where their host is).
            Kind::JobResult(_) => {}
            _ => self
                .supervisor
                .router()
                .route(handle, envelope, Instant::now()),
        }
    }

    /// A request from an instance the console does not know (yet): answered `unavailable`,
    /// down the way it came, rather than left to time out.
    fn refuse_unknown(&self, host: &str, key: &InstanceKey, envelope: &Envelope) {
        if envelope.kind != Kind::Request {
            return;
        }
        if let Some(entry) = self.hosts.get(host) {
            let answer = Envelope {
                correlation: envelope.id,
                trace: envelope.trace,
                kind: Kind::Response(Status::error(
                    ErrorCode::Unavailable,
                    "the console has not adopted this instance yet",
                )),
                ..Envelope::default()
            };
            let _ = entry.down.link(key.clone()).try_send(&answer);
        }
    }

    fn tracked(&self, host: &str, index: usize, key: &InstanceKey) -> Option<Arc<InstanceHandle>> {
        self.hosts
            .get(host)?
            .tracked
            .get(&(index, key.replica))
            .filter(|t| t.generation == key.generation && t.boot == key.boot)
            .map(|t| t.handle.clone())
    }

    /// The console's handle on `key`: the one it has, or a new one (retiring the replica's
    /// previous process). `None` for a replica number no service can have (an agent is not
    /// trusted to keep within [`MAX_REPLICAS`]), or a host the console does not link to.
    ///
    /// Its segment is relayed when it speaks the protocol: adopted at its Hello, or listed
    /// with a snapshot.
    fn adopt(
        &mut self,
        host: &str,
        index: usize,
        key: &InstanceKey,
        status: Option<&RemoteInstance>,
    ) -> Option<Arc<InstanceHandle>> {
        if let Some(handle) = self.tracked(host, index, key) {
            return Some(handle);
        }
        if key.replica >= MAX_REPLICAS || !self.hosts.contains_key(host) {
            tracing::warn!(%host, service = %key.service, replica = key.replica, "an instance the console cannot take; ignored");
            return None;
        }
        self.retire(host, index, key.replica, None);
        let generation = self.next_generation;
        self.next_generation += 1;
        let id = InstanceId {
            service: index,
            replica: key.replica,
            generation,
        };
        let entry = self.hosts.get_mut(host)?;
        let handle = Arc::new(InstanceHandle {
            id,
            service: Arc::from(key.service.as_str()),
            pid: status.and_then(|s| s.pid).unwrap_or(0),
            link: Arc::new(entry.down.link(key.clone())),
            segment: status
                .is_none_or(|s| s.snapshot.is_some())
                .then(Segment::relayed),
            outstanding: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            congested: AtomicBool::new(false),
            routable: AtomicBool::new(false),
            subscriptions: RwLock::new(Vec::new()),
        });
        entry.tracked.insert(
            (index, key.replica),
            Tracked {
                boot: key.boot,
                generation: key.generation,
                handle: handle.clone(),
            },
        );
        let from = {
            let mut registry = registry::write(self.supervisor.registry());
            let service = &mut registry.services[index];
            let instance = service.replica_entry(key.replica);
            let mut fresh = Instance::new(id);
            fresh.restarts = instance.restarts;
            fresh.state = status.map_or(InstanceState::Starting, |s| s.state);
            fresh.started = Some(Instant::now());
            fresh.started_at = Some(SystemTime::now());
            fresh.handle = Some(handle.clone());
            std::mem::replace(instance, fresh).state
        };
        let to = status.map_or(InstanceState::Starting, |s| s.state);
        self.state_event(index, key.replica, from, to);
        Some(handle)
    }

    /// The console lets go of `replica`'s process: nothing more is routed to it, and its
    /// callers are answered `unavailable` now. `to` is the state it is shown in, when known.
    fn retire(&mut self, host: &str, index: usize, replica: u32, to: Option<InstanceState>) {
        let why = match to {
            Some(InstanceState::Unreachable) => format!(
                "host `{host}` is unreachable with the request in flight to `{}`",
                self.stack.services[index].name
            ),
            _ => format!(
                "`{}` (on host `{host}`) exited with the request in flight",
                self.stack.services[index].name
            ),
        };
        let Some(tracked) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.tracked.remove(&(index, replica)))
        else {
            return;
        };
        tracked.handle.routable.store(false, Ordering::Release);
        self.supervisor
            .router()
            .instance_lost(&tracked.handle, &why);
        let from = {
            let mut registry = registry::write(self.supervisor.registry());
            registry.instance_mut(tracked.handle.id).map(|instance| {
                instance.handle = None;
                let from = instance.state;
                if let Some(to) = to {
                    instance.state = to;
                }
                from
            })
        };
        if let (Some(from), Some(to)) = (from, to) {
            self.state_event(index, replica, from, to);
        }
    }

    /// The instance takes requests now, or no longer does; with `set_state`, it is shown
    /// ready (or starting) too, else its status says how it is.
    async fn routable(&mut self, handle: &Arc<InstanceHandle>, routable: bool, set_state: bool) {
        let was = handle.routable.swap(routable, Ordering::AcqRel);
        if was == routable {
            return;
        }
        let service = handle.service.clone();
        if set_state {
            let to = if routable {
                InstanceState::Ready
            } else {
                InstanceState::Starting
            };
            let from = {
                let mut registry = registry::write(self.supervisor.registry());
                registry
                    .instance_mut(handle.id)
                    .map(|i| std::mem::replace(&mut i.state, to))
            };
            if let Some(from) = from {
                self.state_event(handle.id.service, handle.id.replica, from, to);
            }
        }
        if routable {
            // As for a local instance: the breaker first, then what was held for it.
            self.supervisor.router().breaker_target_ready(&service);
            self.supervisor.router().service_ready(&service);
            self.supervisor.remote_changed();
        }
    }

    async fn status(&mut self, host: &str, status: HostStatus) {
        self.heard(host);
        let Some(entry) = self.hosts.get_mut(host) else {
            return;
        };
        let restarted = std::mem::replace(&mut entry.boot, status.boot) != status.boot;
        // Processes of an earlier run of the agent are gone (its keeper ended them), and so
        // is everything when it leaves.
        let stale: Vec<(usize, u32)> = entry
            .tracked
            .iter()
            .filter(|(_, t)| status.leaving || t.boot != status.boot)
            .map(|(slot, _)| *slot)
            .collect();
        for (index, replica) in stale {
            self.retire(host, index, replica, Some(InstanceState::Stopped));
        }
        if status.leaving {
            self.alert(host, format!("the agent of host `{host}` stopped"));
            let mut registry = registry::write(self.supervisor.registry());
            for service in registry.services.iter_mut() {
                if self.stack.host_of(&service.spec) == host {
                    service.instances.clear();
                }
            }
            return;
        }
        let listed: Vec<(usize, u32)> = status
            .instances
            .iter()
            .filter_map(|i| Some((self.service_of(host, &i.key.service)?, i.key.replica)))
            .collect();
        for instance in &status.instances {
            let Some(index) = self.service_of(host, &instance.key.service) else {
                continue;
            };
            self.instance_status(host, index, instance).await;
        }
        // Replicas the agent no longer has (scaled in, or a run of the agent ago).
        let gone: Vec<(usize, u32)> = {
            let registry = registry::read(self.supervisor.registry());
            registry
                .services
                .iter()
                .filter(|s| self.stack.host_of(&s.spec) == host)
                .flat_map(|s| s.instances.iter().map(move |i| (s.index, i.id.replica)))
                .filter(|slot| !listed.contains(slot))
                .collect()
        };
        for (index, replica) in gone {
            self.retire(host, index, replica, None);
            let mut registry = registry::write(self.supervisor.registry());
            registry.services[index]
                .instances
                .retain(|i| i.id.replica != replica);
        }
        let mut registry = registry::write(self.supervisor.registry());
        for service in registry.services.iter_mut() {
            if self.stack.host_of(&service.spec) == host {
                service.replicas = service.instances.len().max(1) as u32;
            }
        }
        if restarted {
            // Run numbers start over with the agent: its earlier runs must not be taken for
            // the new ones.
            for service in registry.services.iter_mut() {
                if self.stack.host_of(&service.spec) == host {
                    service.runs.clear();
                }
            }
        }
        for (job, runs) in status.runs {
            let Some(index) = self.service_of(host, &job) else {
                continue;
            };
            let service = &mut registry.services[index];
            // The console keeps what it saw before, the agent the newest.
            let newest: Vec<u64> = runs.iter().map(|r| r.run).collect();
            service.runs.retain(|r| !newest.contains(&r.run));
            service.runs.extend(runs.into_iter().take(RUNS_REPORTED));
            service.runs.make_contiguous().sort_by_key(|r| r.run);
            while service.runs.len() > registry::JOB_RUNS_KEPT {
                service.runs.pop_front();
            }
        }
    }

    /// One instance as its agent reports it: adopted while it has a process, let go when not.
    async fn instance_status(&mut self, host: &str, index: usize, status: &RemoteInstance) {
        let key = &status.key;
        if key.replica >= MAX_REPLICAS {
            return;
        }
        let handle = if status.state.has_process() {
            self.adopt(host, index, key, Some(status))
        } else {
            self.retire(host, index, key.replica, None);
            None
        };
        if let Some(handle) = &handle
            && let (Some(segment), Some(snapshot)) = (&handle.segment, &status.snapshot)
        {
            segment.relay(snapshot.clone());
        }
        let now = Instant::now();
        let from = {
            let mut registry = registry::write(self.supervisor.registry());
            let service = &mut registry.services[index];
            let instance = service.replica_entry(key.replica);
            if handle.is_none() {
                instance.handle = None;
                instance.id.generation = 0;
            }
            instance.pid = status.pid;
            instance.restarts = status.restarts;
            instance.version.clone_from(&status.version);
            instance.methods.clone_from(&status.methods);
            instance.cpu_percent = status.cpu_percent;
            instance.rss_bytes = status.rss_bytes;
            instance.started = status
                .uptime_ms
                .and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
            instance.heartbeat_moved = status
                .heartbeat_age_ms
                .and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
            std::mem::replace(&mut instance.state, status.state)
        };
        self.state_event(index, key.replica, from, status.state);
        // After the registry shows its state: the services waiting on it look there.
        if let Some(handle) = &handle {
            set_topics(&self.supervisor, handle, status.topics.clone());
            self.routable(handle, status.routable, false).await;
        }
        if from != status.state {
            self.supervisor.remote_changed();
        }
    }

    /// Log lines of `host`'s services, kept as their own: made visible and cut to the longest
    /// line, as the console's own ingest does (an agent is not trusted to have done it).
    fn logs(&mut self, host: &str, batch: LogBatch) {
        let store = self.supervisor.logs().clone();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        for line in batch.lines {
            if self.service_of(host, &line.service).is_none() {
                continue;
            }
            let name = names
                .entry(line.service.clone())
                .or_insert_with(|| Arc::from(line.service.as_str()))
                .clone();
            let mut text = line_codec::visible(&line.text);
            if text.len() > line_codec::MAX_LINE {
                text.truncate(text.floor_char_boundary(line_codec::MAX_LINE));
            }
            store.push(&name, line.replica, line.stream, text);
        }
        if batch.lost > 0 {
            tracing::warn!(%host, lost = batch.lost, "log lines of another host were lost on the way");
        }
    }

    /// Hosts not heard for [`UNREACHABLE_AFTER`] (counted from the console's start for one
    /// never heard) become unreachable.
    fn check_silence(&mut self) {
        let silent: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.reachable)
            .filter(|(_, h)| h.heard.unwrap_or(self.started).elapsed() > UNREACHABLE_AFTER)
            .map(|(name, _)| name.clone())
            .collect();
        for host in silent {
            let Some(entry) = self.hosts.get_mut(&host) else {
                continue;
            };
            entry.reachable = false;
            let slots: Vec<(usize, u32)> = entry.tracked.keys().copied().collect();
            for (index, replica) in slots {
                self.retire(&host, index, replica, Some(InstanceState::Unreachable));
            }
            self.set_unreachable(&host, true);
            let silent_for = UNREACHABLE_AFTER.as_secs_f64();
            self.alert(
                &host,
                format!("host `{host}` is unreachable: its agent has not been heard for {silent_for:.1} s"),
            );
        }
    }

    /// Marks every service of `host` (un)reachable: the router answers their callers
    /// `unavailable` at once rather than hold their requests.
    fn set_unreachable(&self, host: &str, unreachable: bool) {
        let mut registry = registry::write(self.supervisor.registry());
        for service in registry.services.iter_mut() {
            if self.stack.host_of(&service.spec) == host {
                service.unreachable = unreachable;
                if unreachable {
                    for instance in &mut service.instances {
                        instance.state = InstanceState::Unreachable;
                    }
                }
            }
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

/// Commands for services of other hosts, sent to their agents.
struct Commands {
    client: async_nats::Client,
    subjects: Subjects,
}

impl RemoteControl for Commands {
    fn command(
        &self,
        host: String,
        command: Command,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Reply, ControlError>> + Send>> {
        let client = self.client.clone();
        let subject = self.subjects.control(&host);
        Box::pin(async move {
            let text = Bytes::from(command.to_string());
            let answer = tokio::time::timeout(COMMAND_TIMEOUT, client.request(subject, text))
                .await
                .map_err(|_| ControlError::HostUnreachable(host.clone()))?
                .map_err(|_| ControlError::HostUnreachable(host.clone()))?;
            match postcard::from_bytes::<ControlReply>(&answer.payload) {
                Ok(ControlReply::Done) => Ok(Reply::Done),
                Ok(ControlReply::JobRun(run)) => Ok(Reply::JobRun(run)),
                Ok(ControlReply::Refused(message)) => Err(ControlError::OnHost { host, message }),
                Err(_) => Err(ControlError::OnHost {
                    host,
                    message: "the agent's answer is malformed".to_string(),
                }),
            }
        })
    }
}
