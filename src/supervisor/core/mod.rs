//! The supervisor's actor: one task that owns every lifecycle decision, so that no two
//! decisions about one service can race.
//!
//! The actor is one struct, [`Core`], whose `impl` is spread over files by concern (child
//! modules see its private fields):
//!
//! - this file: the state [`Core`] owns, its construction, [`Core::run`] (the select loop) and
//!   the helpers every concern uses (`index_of`, `emit`, `set_state`).
//! - `start`: start-up in dependency order, and spawning one replica's process.
//! - `commands`: an operator's commands (start, stop, restart, kill, scale, run a job).
//! - `events`: what instances report (hello, ready, hung, exited, ...) and the restarts
//!   that follow.
//! - `shutdown`: stopping the whole stack in reverse dependency order.
//! - `watch`: backlog alerts and autoscaling, once a second.

mod commands;
mod events;
mod shutdown;
mod start;
mod watch;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::{task::TaskTracker, time::DelayQueue};

use super::{
    ControlError, InstanceEvent, LaunchContext, Message, ShutdownReport, instance::Control,
    restart::RestartTracker, spawn::Spawner, strays::Sweeper,
};
use crate::{
    audit::AuditLog,
    event::{Event, EventKind, EventSender},
    logs::{LogStore, Stream},
    monitor::metrics::{self, SharedMetrics},
    registry::{self, InstanceId, InstanceState, SharedRegistry},
    router::Router,
    stack::Stack,
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
    /// Each service's place in the stack's start order, by index: worked out once, used
    /// after every start and exit.
    start_rank: Vec<usize>,
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
    /// For each service, the services that depend on it: shutdown stops them first.
    dependents: Vec<Vec<usize>>,
    report: ShutdownReport,
    /// The sampler's figures, for the backlog watch.
    metrics: SharedMetrics,
    /// Where autoscaling decisions are recorded.
    audit: Option<AuditLog>,
    watch: watch::Watch,
}

/// Extra parts the core reads beyond its own: the sampler and the audit log.
pub(super) struct Observers {
    pub metrics: SharedMetrics,
    pub audit: Option<AuditLog>,
}

/// Each service's place in `stack`'s start order, by index.
fn start_rank(stack: &Stack) -> Vec<usize> {
    let mut rank = vec![0; stack.services.len()];
    for (place, index) in stack.start_order_indices().into_iter().enumerate() {
        rank[index] = place;
    }
    rank
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
        observers: Observers,
    ) -> Self {
        let sweeper = Sweeper::start(spawner.children());
        let dependents = shutdown::dependents(&stack);
        Core {
            start_rank: start_rank(&stack),
            stack,
            registry,
            events,
            logs,
            router,
            spawner,
            launch,
            sweeper,
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
            dependents,
            report: ShutdownReport::default(),
            metrics: observers.metrics,
            audit: observers.audit,
            watch: watch::Watch::default(),
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
        let mut watch_ticks = tokio::time::interval(metrics::SAMPLE_EVERY);
        watch_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = watch_ticks.tick(), if !self.shutting_down => {
                    self.watch_backlogs().await;
                    // A dependency on another host is met when its agent says so; should the
                    // word have been lost (see `Supervisor::remote_changed`), this is late
                    // by a second at most. Free when nothing waits.
                    self.start_pending().await;
                }
                message = messages.recv(), if !self.shutting_down => match message {
                    Some(Message::Begin) => self.begin().await,
                    Some(Message::Command(request)) => self.command(request).await,
                    Some(Message::Shutdown) | None => self.begin_shutdown(),
                    Some(Message::RemoteChanged) => self.start_pending().await,
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
}
