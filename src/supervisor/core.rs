//! The supervisor's actor: one task that owns every lifecycle decision, so that no two
//! decisions about one service can race.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use futures::StreamExt;
use switchboard_protocol::{Body, Welcome, segment::create_segment};
use tokio::sync::mpsc;
use tokio_util::{task::TaskTracker, time::DelayQueue};

use super::{
    Command, ControlError, InstanceEvent, LaunchContext, MAX_REPLICAS, Message, Reply, Request,
    ShutdownReport,
    instance::{BAD_FRAME_ALERT, Control, InstanceTask},
    restart::{Decision, RestartTracker},
    spawn::Spawner,
    strays::Sweeper,
};
use crate::{
    event::{Event, EventKind, EventSender},
    logs::{LogStore, Stream},
    registry::{
        self, EXITS_KEPT, ExitStatus, Instance, InstanceHandle, InstanceId, InstanceState,
        JOB_RUNS_KEPT, JobRun, SharedRegistry,
    },
    router::Router,
    stack::{Condition, RestartPolicy, ServiceKind, Stack},
};

/// Frames queued for one instance's stdin. When full, the instance is congested: the router
/// answers `overloaded` rather than wait.
pub const INBOX: usize = 1024;

/// A replica slot: (service index, replica index).
type Slot = (usize, u32);

/// Why the supervisor stopped an instance, which decides what follows its exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Stay stopped.
    Stop,
    /// Start again at once (a restart or the next step of a rolling restart).
    Replace,
    /// Scaled away: remove the slot.
    Remove,
}

pub(super) struct Core {
    stack: Arc<Stack>,
    registry: SharedRegistry,
    events: EventSender,
    logs: Arc<LogStore>,
    router: Router,
    spawner: Spawner,
    launch: LaunchContext,
    sweeper: Sweeper,
    instance_tx: mpsc::Sender<InstanceEvent>,
    tasks: TaskTracker,
    controls: HashMap<Slot, mpsc::Sender<Control>>,
    intents: HashMap<Slot, Intent>,
    trackers: HashMap<Slot, RestartTracker>,
    restarts_due: DelayQueue<(Slot, u64)>,
    /// Wanted services held back by their dependencies, by index.
    pending: BTreeSet<usize>,
    /// Replicas still to be replaced by a rolling restart, per service.
    rollouts: HashMap<usize, VecDeque<u32>>,
    /// The number of the last run of each job.
    job_runs: HashMap<usize, u64>,
    generation: u64,
    shutting_down: bool,
    report: ShutdownReport,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        stack: Arc<Stack>,
        registry: SharedRegistry,
        events: EventSender,
        logs: Arc<LogStore>,
        router: Router,
        spawner: Spawner,
        launch: LaunchContext,
        instance_tx: mpsc::Sender<InstanceEvent>,
    ) -> Self {
        Core {
            stack,
            registry,
            events,
            logs,
            router,
            spawner,
            launch,
            sweeper: Sweeper::start(),
            instance_tx,
            tasks: TaskTracker::new(),
            controls: HashMap::new(),
            intents: HashMap::new(),
            trackers: HashMap::new(),
            restarts_due: DelayQueue::new(),
            pending: BTreeSet::new(),
            rollouts: HashMap::new(),
            job_runs: HashMap::new(),
            generation: 0,
            shutting_down: false,
            report: ShutdownReport::default(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        mut instance_events: mpsc::Receiver<InstanceEvent>,
    ) -> ShutdownReport {
        for dir in [&self.stack.data_dir, &self.stack.run_dir] {
            if let Err(err) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), cause = %err, "cannot create directory");
            }
        }
        loop {
            tokio::select! {
                message = messages.recv(), if !self.shutting_down => match message {
                    Some(Message::Begin) => self.begin().await,
                    Some(Message::Command(request)) => self.command(request).await,
                    Some(Message::Shutdown) | None => self.begin_shutdown(),
                },
                Some(event) = instance_events.recv() => self.instance_event(event).await,
                Some(due) = self.restarts_due.next(), if !self.restarts_due.is_empty() => {
                    let (slot, generation) = due.into_inner();
                    self.restart_due(slot, generation).await;
                }
            }
            if self.shutting_down {
                self.advance_shutdown();
                if self.controls.is_empty() {
                    break;
                }
            }
        }
        // Refuse whatever commands are still queued.
        messages.close();
        while let Ok(message) = messages.try_recv() {
            if let Message::Command(request) = message {
                let _ = request.reply.send(Err(ControlError::ShuttingDown));
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
        // Every instance is reaped: whatever still carries this supervisor's lineage is a stray.
        self.report.strays = self.sweeper.finish().await;
        if !self.report.strays.is_empty() {
            tracing::warn!(pids = ?self.report.strays, "killed processes left behind by services");
        }
        self.report
    }

    /// Marks every service (and autostart job) wanted and starts what its dependencies allow.
    async fn begin(&mut self) {
        let stack = self.stack.clone();
        for name in stack.start_order() {
            let Some(index) = self.index_of(name) else {
                continue;
            };
            let spec = &stack.services[index];
            if spec.kind == ServiceKind::Service || stack.is_autostart(name) {
                registry::write(&self.registry).services[index].wanted = true;
                self.pending.insert(index);
            }
        }
        self.start_pending().await;
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.stack.services.iter().position(|s| s.name == name)
    }

    fn emit(&self, service: usize, replica: Option<u32>, kind: EventKind) {
        let name = &self.stack.services[service].name;
        let event = Event::new(name, replica, kind);
        let line: Arc<str> = Arc::from(name.as_str());
        self.logs.push(
            &line,
            replica.unwrap_or(0),
            Stream::Console,
            event.kind.to_string(),
        );
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Sets an instance's state and announces the transition.
    fn set_state(&self, id: InstanceId, to: InstanceState) {
        let from = {
            let mut registry = registry::write(&self.registry);
            let Some(instance) = registry.instance_mut(id) else {
                return;
            };
            std::mem::replace(&mut instance.state, to)
        };
        if from != to {
            self.emit(id.service, Some(id.replica), EventKind::State { from, to });
        }
    }

    // ----- starting -------------------------------------------------------------------------

    /// Starts every pending service whose dependencies are met, in start order.
    async fn start_pending(&mut self) {
        loop {
            let mut started_any = false;
            let stack = self.stack.clone();
            for name in stack.start_order() {
                let Some(index) = self.index_of(name) else {
                    continue;
                };
                if !self.pending.contains(&index) {
                    continue;
                }
                let unmet = self.unmet_dependencies(index);
                if unmet.is_empty() {
                    self.pending.remove(&index);
                    registry::write(&self.registry).services[index]
                        .waiting_on
                        .clear();
                    if stack.services[index].kind == ServiceKind::Job {
                        let _ = self.run_job(index, None).await;
                    } else {
                        self.start_service(index).await;
                    }
                    started_any = true;
                } else {
                    registry::write(&self.registry).services[index].waiting_on = unmet;
                }
            }
            if !started_any {
                return;
            }
        }
    }

    fn unmet_dependencies(&self, index: usize) -> Vec<String> {
        let registry = registry::read(&self.registry);
        self.stack.services[index]
            .depends_on
            .iter()
            .filter(|dependency| {
                let Some(service) = registry.service(&dependency.name) else {
                    return true;
                };
                let met = match dependency.condition {
                    Condition::Started => service
                        .instances
                        .iter()
                        .any(|i| i.state.has_process() || i.state == InstanceState::Exited),
                    Condition::Ready => service.ready_instances() > 0,
                    Condition::Completed => service
                        .runs
                        .back()
                        .is_some_and(|run| run.exit.as_ref().is_some_and(ExitStatus::success)),
                };
                !met
            })
            .map(|dependency| dependency.name.clone())
            .collect()
    }

    /// Brings every replica of a service up.
    async fn start_service(&mut self, index: usize) {
        let replicas = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.wanted = true;
            service.replicas
        };
        for replica in 0..replicas {
            let running = {
                let registry = registry::read(&self.registry);
                registry.services[index]
                    .instances
                    .get(replica as usize)
                    .is_some_and(|i| i.state.has_process())
            };
            if !running {
                self.spawn_instance((index, replica), String::new(), false)
                    .await;
            }
        }
    }

    /// Spawns the process for a replica slot. `restart` counts it as a restart.
    async fn spawn_instance(&mut self, slot: Slot, params: String, restart: bool) {
        let (index, replica) = slot;
        let spec = self.stack.services[index].clone();
        self.generation += 1;
        let id = InstanceId {
            service: index,
            replica,
            generation: self.generation,
        };
        {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            while service.instances.len() <= replica as usize {
                let replica = service.instances.len() as u32;
                service.instances.push(Instance::new(InstanceId {
                    service: index,
                    replica,
                    generation: 0,
                }));
            }
            let instance = &mut service.instances[replica as usize];
            let restarts = instance.restarts + u32::from(restart);
            let mut fresh = Instance::new(id);
            fresh.restarts = restarts;
            fresh.state = instance.state;
            fresh.last_exit = instance.last_exit.take();
            *instance = fresh;
        }

        let segment = if spec.protocol {
            match create_segment(&spec.name) {
                Ok((fd, reader)) => Some((fd, reader)),
                Err(err) => {
                    tracing::warn!(service = %spec.name, cause = %err, "no metrics segment");
                    None
                }
            }
        } else {
            None
        };
        let (segment_fd, segment_reader) = match segment {
            Some((fd, reader)) => (Some(fd), Some(reader)),
            None => (None, None),
        };
        let lineage = self.sweeper.lineage();
        let command = self.launch.command(&spec, replica, segment_fd, &lineage);
        let child = match self.spawner.spawn(command).await {
            Ok(child) => child,
            Err(err) => {
                self.emit(
                    index,
                    Some(replica),
                    EventKind::Alert {
                        message: format!("cannot spawn: {err}"),
                    },
                );
                // Treated like a crash so backoff and the intensity limit apply.
                let _ = self
                    .instance_tx
                    .send(InstanceEvent::Exited {
                        id,
                        status: ExitStatus::SpawnFailed(err.to_string()),
                    })
                    .await;
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        let (inbox_tx, inbox_rx) = crate::transport::inbox(INBOX);
        let (control_tx, control_rx) = mpsc::channel(8);
        let handle = Arc::new(InstanceHandle {
            id,
            service: Arc::from(spec.name.as_str()),
            pid,
            link: Arc::new(inbox_tx),
            segment: segment_reader,
            outstanding: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            congested: AtomicBool::new(false),
            routable: AtomicBool::new(false),
            subscriptions: RwLock::new(Vec::new()),
        });
        {
            let mut registry = registry::write(&self.registry);
            if let Some(instance) = registry.instance_mut(id) {
                instance.pid = Some(pid);
                instance.started = Some(Instant::now());
                instance.started_at = Some(SystemTime::now());
                instance.handle = Some(handle.clone());
            }
        }
        self.controls.insert(slot, control_tx);
        self.emit(index, Some(replica), EventKind::Spawned { pid });
        self.set_state(id, InstanceState::Starting);

        let heartbeat_timeout = spec.heartbeat_timeout.filter(|_| spec.protocol);
        let heartbeat_ms = heartbeat_timeout
            .map(|t| (t.as_millis() / 5).clamp(20, 1000) as u32)
            .unwrap_or(1000);
        let task = InstanceTask {
            handle,
            child,
            inbox: Some(inbox_rx),
            control: control_rx,
            events: self.instance_tx.clone(),
            logs: self.logs.clone(),
            router: self.router.clone(),
            protocol: spec.protocol,
            ready_line: spec.ready_line.clone(),
            welcome: Welcome {
                protocol_version: switchboard_protocol::PROTOCOL_VERSION,
                service: spec.name.clone(),
                instance: replica,
                heartbeat_ms,
                settings: spec.settings.clone(),
                params,
            },
            heartbeat_timeout,
            lineage,
            sweeper: self.sweeper.clone(),
        };
        self.tasks.spawn(task.run());
        // A plain program with no ready line is ready once it runs.
        if !spec.protocol && spec.ready_line.is_none() {
            self.set_state(id, InstanceState::Ready);
        }
    }

    // ----- commands -------------------------------------------------------------------------

    async fn command(&mut self, request: Request) {
        let result = self.execute(request.command).await;
        let _ = request.reply.send(result);
    }

    async fn execute(&mut self, command: Command) -> Result<Reply, ControlError> {
        let name = match &command {
            Command::Start(n)
            | Command::Stop(n)
            | Command::Restart(n)
            | Command::Kill(n)
            | Command::Scale(n, _)
            | Command::RunJob(n, _) => n.clone(),
        };
        let index = self
            .index_of(&name)
            .ok_or_else(|| ControlError::UnknownService(name.clone()))?;
        let is_job = self.stack.services[index].kind == ServiceKind::Job;
        match command {
            Command::Start(_) if is_job => self.run_job(index, None).await,
            Command::Start(_) => {
                self.forgive(index);
                self.pending.remove(&index);
                self.start_service(index).await;
                Ok(Reply::Done)
            }
            Command::Stop(_) => {
                self.stop_service(index, Intent::Stop);
                Ok(Reply::Done)
            }
            Command::Restart(_) if is_job => {
                let params = registry::read(&self.registry).services[index]
                    .runs
                    .back()
                    .map(|run| run.params.clone());
                self.run_job(index, params).await
            }
            Command::Restart(_) => {
                self.rolling_restart(index).await;
                Ok(Reply::Done)
            }
            Command::Kill(_) => {
                for (slot, control) in &self.controls {
                    if slot.0 == index {
                        let _ = control.try_send(Control::Kill);
                    }
                }
                Ok(Reply::Done)
            }
            Command::Scale(_, _) if is_job => Err(ControlError::IsAJob(name)),
            Command::Scale(_, replicas) => {
                if replicas == 0 || replicas > MAX_REPLICAS {
                    return Err(ControlError::BadReplicas {
                        asked: replicas,
                        max: MAX_REPLICAS,
                    });
                }
                self.scale(index, replicas).await;
                Ok(Reply::Done)
            }
            Command::RunJob(_, _) if !is_job => Err(ControlError::NotAJob(name)),
            Command::RunJob(_, params) => self.run_job(index, params).await,
        }
    }

    /// An operator's start or restart forgives past failures.
    fn forgive(&mut self, index: usize) {
        for (slot, tracker) in &mut self.trackers {
            if slot.0 == index {
                tracker.reset();
            }
        }
    }

    fn stop_service(&mut self, index: usize, intent: Intent) {
        self.pending.remove(&index);
        self.rollouts.remove(&index);
        let grace = self.stack.services[index].shutdown_grace;
        let waiting: Vec<InstanceId> = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.wanted = false;
            service.waiting_on.clear();
            service
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Backoff)
                .map(|i| i.id)
                .collect()
        };
        // Instances waiting out a backoff have no process: they are simply stopped.
        for id in waiting {
            self.set_state(id, InstanceState::Stopped);
        }
        let slots: Vec<Slot> = self
            .controls
            .keys()
            .filter(|slot| slot.0 == index)
            .copied()
            .collect();
        for slot in slots {
            self.stop_instance(slot, grace, intent);
        }
    }

    fn stop_instance(&mut self, slot: Slot, grace: std::time::Duration, intent: Intent) {
        let Some(control) = self.controls.get(&slot) else {
            return;
        };
        if let Some(current) = self.intents.get_mut(&slot) {
            // Already stopping; a stronger intent (Remove, Stop) wins over Replace.
            if intent != Intent::Replace {
                *current = intent;
            }
            return;
        }
        let _ = control.try_send(Control::Stop { grace });
        self.intents.insert(slot, intent);
        let id = registry::read(&self.registry)
            .services
            .get(slot.0)
            .and_then(|s| s.instances.get(slot.1 as usize))
            .map(|i| i.id);
        if let Some(id) = id {
            self.set_state(id, InstanceState::Stopping);
        }
    }

    async fn rolling_restart(&mut self, index: usize) {
        self.forgive(index);
        let running: Vec<u32> = {
            let registry = registry::read(&self.registry);
            registry.services[index]
                .instances
                .iter()
                .filter(|i| i.state.has_process())
                .map(|i| i.id.replica)
                .collect()
        };
        if running.is_empty() {
            self.pending.remove(&index);
            self.start_service(index).await;
            return;
        }
        let mut queue: VecDeque<u32> = running.into();
        if let Some(first) = queue.pop_front() {
            let grace = self.stack.services[index].shutdown_grace;
            self.stop_instance((index, first), grace, Intent::Replace);
        }
        self.rollouts.insert(index, queue);
    }

    /// Moves a rolling restart on once the replica it replaced is ready.
    fn continue_rollout(&mut self, index: usize) {
        let Some(queue) = self.rollouts.get_mut(&index) else {
            return;
        };
        let next = queue.pop_front();
        if queue.is_empty() && next.is_none() {
            self.rollouts.remove(&index);
            return;
        }
        if let Some(replica) = next {
            let grace = self.stack.services[index].shutdown_grace;
            self.stop_instance((index, replica), grace, Intent::Replace);
        }
    }

    async fn scale(&mut self, index: usize, replicas: u32) {
        let (current, wanted) = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            let current = service.replicas;
            service.replicas = replicas;
            (current, service.wanted)
        };
        if replicas > current && wanted {
            for replica in current..replicas {
                self.spawn_instance((index, replica), String::new(), false)
                    .await;
            }
        }
        let grace = self.stack.services[index].shutdown_grace;
        for replica in replicas..current {
            if self.controls.contains_key(&(index, replica)) {
                self.stop_instance((index, replica), grace, Intent::Remove);
            }
        }
        self.trim_slots(index);
    }

    /// Drops replica slots beyond the wanted count that have no process any more.
    fn trim_slots(&mut self, index: usize) {
        let mut registry = registry::write(&self.registry);
        let service = &mut registry.services[index];
        while service.instances.len() > service.replicas as usize
            && service
                .instances
                .last()
                .is_some_and(|i| !i.state.has_process())
        {
            service.instances.pop();
        }
    }

    async fn run_job(
        &mut self,
        index: usize,
        params: Option<String>,
    ) -> Result<Reply, ControlError> {
        if self.controls.contains_key(&(index, 0)) {
            return Err(ControlError::AlreadyRunning(
                self.stack.services[index].name.clone(),
            ));
        }
        let params = params.unwrap_or_else(|| self.stack.services[index].params.clone());
        if !params.trim().is_empty() {
            serde_json::from_str::<serde_json::Value>(&params)
                .map_err(|err| ControlError::BadParams(err.to_string()))?;
        }
        let run = {
            let counter = self.job_runs.entry(index).or_insert(0);
            *counter += 1;
            *counter
        };
        {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.wanted = true;
            if service.runs.len() == JOB_RUNS_KEPT {
                service.runs.pop_front();
            }
            service.runs.push_back(JobRun {
                run,
                params: params.clone(),
                started_at: SystemTime::now(),
                duration: None,
                exit: None,
                result: None,
            });
        }
        self.emit(index, None, EventKind::JobStarted { run });
        self.spawn_instance((index, 0), params, false).await;
        Ok(Reply::JobRun(run))
    }

    // ----- reports from instances -----------------------------------------------------------

    async fn instance_event(&mut self, event: InstanceEvent) {
        match event {
            InstanceEvent::Hello { id, hello } => {
                let mut registry = registry::write(&self.registry);
                if let Some(instance) = registry.instance_mut(id) {
                    instance.version = Some(hello.version);
                    instance.protocol_version = Some(hello.protocol_version);
                    instance.methods = hello.methods;
                }
            }
            InstanceEvent::Ready { id } => {
                let starting = registry::read(&self.registry)
                    .instance(id)
                    .is_some_and(|i| i.state == InstanceState::Starting);
                if starting {
                    // Garbage written before the handshake flags it as garbage after would.
                    let flagged = registry::read(&self.registry)
                        .instance(id)
                        .and_then(|i| i.handle.as_ref())
                        .is_some_and(|h| h.bad_frames.load(Ordering::Relaxed) >= BAD_FRAME_ALERT);
                    let state = if flagged {
                        InstanceState::Degraded
                    } else {
                        InstanceState::Ready
                    };
                    self.set_state(id, state);
                    // Requests and events held while it was down go to it now.
                    self.router
                        .service_ready(&self.stack.services[id.service].name);
                    self.continue_rollout(id.service);
                    self.start_pending().await;
                }
            }
            InstanceEvent::Hung { id, silent_for } => {
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::HangDetected { silent_for },
                );
            }
            InstanceEvent::Signalled { id, signal } => {
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::Signalled { signal },
                );
                if self.shutting_down {
                    self.report.forced.push(format!(
                        "{}#{} ({signal})",
                        self.stack.services[id.service].name, id.replica
                    ));
                }
            }
            InstanceEvent::BadFrames { id, count } => {
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::Alert {
                        message: format!("{count} bad frames on stdout"),
                    },
                );
                let ready = registry::read(&self.registry)
                    .instance(id)
                    .is_some_and(|i| i.state == InstanceState::Ready);
                if ready {
                    self.set_state(id, InstanceState::Degraded);
                }
            }
            InstanceEvent::JobResult { id, status, body } => {
                let result = match status {
                    switchboard_protocol::Status::Ok => Ok(match body {
                        Body::Json(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                        Body::Postcard(bytes) => format!("<{} postcard bytes>", bytes.len()),
                        Body::Empty => String::new(),
                    }),
                    switchboard_protocol::Status::Error(err) => {
                        Err(format!("{}: {}", err.code, err.message))
                    }
                };
                let mut registry = registry::write(&self.registry);
                if let Some(run) = registry
                    .services
                    .get_mut(id.service)
                    .and_then(|s| s.runs.back_mut())
                {
                    run.result = Some(result);
                }
            }
            InstanceEvent::Exited { id, status } => self.exited(id, status).await,
        }
    }

    async fn exited(&mut self, id: InstanceId, status: ExitStatus) {
        let slot = (id.service, id.replica);
        let (uptime, is_current) = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[id.service];
            if service.exits.len() == EXITS_KEPT {
                service.exits.pop_front();
            }
            service
                .exits
                .push_back((SystemTime::now(), id.replica, status.clone()));
            match service.instances.get_mut(id.replica as usize) {
                Some(instance) if instance.id.generation == id.generation => {
                    instance.last_exit = Some(status.clone());
                    instance.pid = None;
                    instance.handle = None;
                    (
                        instance.started.map(|s| s.elapsed()).unwrap_or_default(),
                        true,
                    )
                }
                _ => (Default::default(), false),
            }
        };
        if !is_current {
            return;
        }
        self.controls.remove(&slot);
        self.emit(
            id.service,
            Some(id.replica),
            EventKind::Exited {
                status: status.clone(),
            },
        );
        let spec = self.stack.services[id.service].clone();
        let success = status.success();
        if spec.kind == ServiceKind::Job {
            self.finish_job_run(id, &status, uptime);
        }
        let intent = self.intents.remove(&slot);
        match intent {
            Some(Intent::Stop) => self.set_state(id, InstanceState::Stopped),
            Some(Intent::Remove) => {
                self.set_state(id, InstanceState::Stopped);
                self.trim_slots(id.service);
            }
            Some(Intent::Replace) if !self.shutting_down => {
                self.set_state(id, InstanceState::Stopped);
                self.spawn_instance(slot, String::new(), true).await;
            }
            _ if self.shutting_down => self.set_state(id, InstanceState::Stopped),
            _ => {
                let wanted = registry::read(&self.registry).services[id.service].wanted;
                let restart = wanted
                    && match spec.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => !success,
                        RestartPolicy::Never => false,
                    };
                let settled = if success {
                    InstanceState::Exited
                } else {
                    InstanceState::Crashed
                };
                self.set_state(id, settled);
                if restart {
                    let decision = self.trackers.entry(slot).or_default().on_failure(
                        Instant::now(),
                        uptime,
                        &spec.backoff,
                        &spec.restart_limit,
                        fastrand::f64(),
                    );
                    match decision {
                        Decision::RestartAfter { delay, attempt } => {
                            self.set_state(id, InstanceState::Backoff);
                            self.emit(
                                id.service,
                                Some(id.replica),
                                EventKind::RestartScheduled { attempt, delay },
                            );
                            self.restarts_due.insert((slot, id.generation), delay);
                        }
                        Decision::GiveUp { restarts, window } => {
                            self.set_state(id, InstanceState::Failed);
                            self.emit(
                                id.service,
                                Some(id.replica),
                                EventKind::GaveUp { restarts, window },
                            );
                        }
                    }
                }
            }
        }
        self.start_pending().await;
    }

    fn finish_job_run(&self, id: InstanceId, status: &ExitStatus, uptime: std::time::Duration) {
        let (run, ok) = {
            let mut registry = registry::write(&self.registry);
            let Some(run) = registry
                .services
                .get_mut(id.service)
                .and_then(|s| s.runs.back_mut())
            else {
                return;
            };
            run.duration = Some(uptime);
            run.exit = Some(status.clone());
            if run.result.is_none() {
                run.result = Some(if status.success() {
                    Ok(String::new())
                } else {
                    Err(status.to_string())
                });
            }
            let ok = status.success() && run.result.as_ref().is_some_and(Result::is_ok);
            (run.run, ok)
        };
        self.emit(id.service, None, EventKind::JobFinished { run, ok });
    }

    async fn restart_due(&mut self, slot: Slot, generation: u64) {
        let still_waiting = {
            let registry = registry::read(&self.registry);
            let service = &registry.services[slot.0];
            service.wanted
                && service.instances.get(slot.1 as usize).is_some_and(|i| {
                    i.id.generation == generation && i.state == InstanceState::Backoff
                })
        };
        if still_waiting && !self.shutting_down {
            self.spawn_instance(slot, String::new(), true).await;
        }
    }

    // ----- shutdown -------------------------------------------------------------------------

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        tracing::info!("shutting down the stack");
        self.shutting_down = true;
        self.pending.clear();
        self.rollouts.clear();
        let waiting: Vec<InstanceId> = {
            let mut registry = registry::write(&self.registry);
            registry
                .services
                .iter_mut()
                .flat_map(|s| {
                    s.wanted = false;
                    s.waiting_on.clear();
                    s.instances.iter()
                })
                .filter(|i| i.state == InstanceState::Backoff)
                .map(|i| i.id)
                .collect()
        };
        for id in waiting {
            self.set_state(id, InstanceState::Stopped);
        }
    }

    /// Stops, in reverse dependency order, every service none of whose dependents still runs.
    fn advance_shutdown(&mut self) {
        let running: BTreeSet<usize> = self.controls.keys().map(|slot| slot.0).collect();
        let stack = self.stack.clone();
        for &index in &running {
            let name = &stack.services[index].name;
            let dependents_running = stack.services.iter().enumerate().any(|(other, spec)| {
                running.contains(&other) && spec.depends_on.iter().any(|d| &d.name == name)
            });
            if !dependents_running {
                let grace = stack.services[index].shutdown_grace;
                let slots: Vec<Slot> = self
                    .controls
                    .keys()
                    .filter(|slot| slot.0 == index)
                    .copied()
                    .collect();
                for slot in slots {
                    self.stop_instance(slot, grace, Intent::Stop);
                }
            }
        }
    }
}
