//! The registry: every service of the stack and its running instances. It is the single source
//! of truth that the console UI, the gateway's admin API and the router read.
//!
//! Only the supervisor changes a service's or an instance's state; instance tasks update the
//! fast-moving numbers (heartbeat, frame counters) through atomics on the [`InstanceHandle`].

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use crate::{
    stack::{ServiceKind, ServiceSpec},
    transport::{Link, Segment},
};

/// Identifies one instance across restarts: `generation` grows with every spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    /// Index of the service in the stack's declaration order.
    pub service: usize,
    pub replica: u32,
    pub generation: u64,
}

/// The lifecycle state of one instance (and, summarised, of a service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Spawned, handshake or ready line not yet seen.
    Starting,
    Ready,
    /// Running but unhealthy: a burst of bad frames on its stdout, until a quiet window
    /// passes (see `supervisor/degraded.rs`). Routed to only when no healthy replica is.
    Degraded,
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Exited with status 0 (a job that completed, or a service that chose to exit).
    Exited,
    /// Exited abnormally; a restart may follow.
    Crashed,
    /// Waiting out the backoff before the next restart.
    Backoff,
    /// Gave up: the restart intensity limit was reached. Tried again after a long backoff
    /// (`Instance::retry_at`), unless the stack says to stay failed until an operator acts.
    Failed,
    /// On another host whose agent has gone silent: its process may well run, but nothing
    /// can reach it (see `hosts::remote`).
    Unreachable,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Degraded => "degraded",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Exited => "exited",
            InstanceState::Crashed => "crashed",
            InstanceState::Backoff => "backoff",
            InstanceState::Failed => "failed",
            InstanceState::Unreachable => "unreachable",
        }
    }

    /// Whether a process exists for an instance in this state.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            InstanceState::Starting
                | InstanceState::Ready
                | InstanceState::Degraded
                | InstanceState::Stopping
        )
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// The console could not spawn it at all.
    SpawnFailed(String),
    /// The program is missing or not executable: retrying cannot help, so it is not retried.
    CannotStart(String),
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Code(0))
    }

    pub fn from_std(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitStatus::Code(code),
            (None, Some(signal)) => ExitStatus::Signal(signal),
            (None, None) => ExitStatus::Code(-1),
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit {code}"),
            ExitStatus::Signal(signal) => write!(f, "signal {signal}"),
            ExitStatus::SpawnFailed(why) => write!(f, "spawn failed: {why}"),
            ExitStatus::CannotStart(why) => write!(f, "cannot start: {why}"),
        }
    }
}

/// One past exit of a replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitRecord {
    pub at: SystemTime,
    pub replica: u32,
    pub status: ExitStatus,
    /// What the service's resource limits have to do with it, when anything (see
    /// `supervisor/limits.rs`).
    pub reason: Option<String>,
}

impl std::fmt::Display for ExitRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{}: {reason}", self.status),
            None => write!(f, "{}", self.status),
        }
    }
}

/// What the router and the monitors hold on a live instance. Cheap to share.
pub struct InstanceHandle {
    pub id: InstanceId,
    /// Shared, so that routing can record it per message without allocating.
    pub service: Arc<str>,
    pub pid: u32,
    /// How the router reaches the instance: today its stdin pipe, through a bounded inbox and
    /// its writer task. When it is full the instance is congested and the router answers its
    /// callers `overloaded` instead of waiting.
    pub link: Arc<dyn Link>,
    pub segment: Option<Segment>,
    /// Requests routed to this instance and not answered yet.
    pub outstanding: AtomicU64,
    pub bad_frames: AtomicU64,
    /// Degraded (see `supervisor/degraded.rs`): the router prefers healthy replicas.
    pub degraded: AtomicBool,
    pub congested: AtomicBool,
    /// Whether the instance takes requests (Ready and not draining).
    pub routable: AtomicBool,
    /// Topic patterns the instance subscribed to.
    pub subscriptions: RwLock<Vec<String>>,
}

impl InstanceHandle {
    /// A new instance's handle, nothing counted yet, not routable until it says Ready.
    pub fn new(
        id: InstanceId,
        service: &str,
        pid: u32,
        link: Arc<dyn Link>,
        segment: Option<Segment>,
    ) -> InstanceHandle {
        InstanceHandle {
            id,
            service: Arc::from(service),
            pid,
            link,
            segment,
            outstanding: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            congested: AtomicBool::new(false),
            routable: AtomicBool::new(false),
            subscriptions: RwLock::new(Vec::new()),
        }
    }

    pub fn is_routable(&self) -> bool {
        self.routable.load(Ordering::Acquire)
    }

    /// Items waiting in this instance: what it publishes in its segment, else what the
    /// console sees of it ([`derived_waiting`](Self::derived_waiting)).
    pub fn waiting(&self) -> u64 {
        match self.segment.as_ref().and_then(|s| s.backlog()) {
            Some(published) => published.waiting,
            None => self.derived_waiting(),
        }
    }

    /// The backlog of an instance that publishes none: requests routed to it and not
    /// answered yet (those in its inbox among them), or the frames in its inbox when more
    /// (events queued there are not requests).
    pub fn derived_waiting(&self) -> u64 {
        let outstanding = self.outstanding.load(Ordering::Relaxed);
        outstanding.max(self.link.queued() as u64)
    }
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// One replica slot of a service.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: InstanceId,
    pub state: InstanceState,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub protocol_version: Option<u32>,
    pub methods: Vec<String>,
    pub started_at: Option<SystemTime>,
    pub started: Option<Instant>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    /// When the console last saw the heartbeat counter move (console clock).
    pub heartbeat_moved: Option<Instant>,
    pub cpu_percent: f32,
    pub rss_bytes: u64,
    pub handle: Option<Arc<InstanceHandle>>,
    /// Failed, with another try due then (the long backoff after the intensity limit).
    pub retry_at: Option<Instant>,
    /// Its heartbeat has been still for over half its timeout: it may be hung, and is
    /// declared so at the full timeout.
    pub stale: bool,
}

impl Instance {
    pub fn new(id: InstanceId) -> Self {
        Instance {
            id,
            state: InstanceState::Stopped,
            pid: None,
            version: None,
            protocol_version: None,
            methods: Vec::new(),
            started_at: None,
            started: None,
            restarts: 0,
            last_exit: None,
            heartbeat_moved: None,
            cpu_percent: 0.0,
            rss_bytes: 0,
            handle: None,
            retry_at: None,
            stale: false,
        }
    }

    pub fn uptime(&self) -> Option<Duration> {
        self.state
            .has_process()
            .then(|| self.started.map(|s| s.elapsed()))
            .flatten()
    }
}

/// One finished or running run of a job. Serializable: an agent reports its jobs' runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRun {
    pub run: u64,
    pub params: String,
    pub started_at: SystemTime,
    pub duration: Option<Duration>,
    pub exit: Option<ExitStatus>,
    /// The job's result: the JSON body of its JobResult frame, or its error.
    pub result: Option<Result<String, String>>,
}

/// How many past runs of each job are kept.
pub const JOB_RUNS_KEPT: usize = 20;
/// How many past exits of each service are kept.
pub const EXITS_KEPT: usize = 20;

/// A service of the stack and its instances.
#[derive(Debug, Clone)]
pub struct Service {
    pub index: usize,
    pub spec: Arc<ServiceSpec>,
    /// Whether the operator (or the stack) wants it running.
    pub wanted: bool,
    pub replicas: u32,
    pub instances: Vec<Instance>,
    /// Recent exits, newest last.
    pub exits: VecDeque<ExitRecord>,
    pub runs: VecDeque<JobRun>,
    /// Wanted, but held back until these dependencies meet their conditions.
    pub waiting_on: Vec<String>,
    /// Requests the router holds for it while it restarts (written by the router, read by
    /// the backlog sampler): work that waits for the service outside any replica.
    pub held_requests: Arc<AtomicU64>,
    /// On another host, whose agent is unreachable: its callers are answered `unavailable`
    /// at once, not held for it.
    pub unreachable: bool,
    /// Runs on another host (see `hosts::remote`): its pids are that host's, so the console
    /// neither samples nor signals them; its figures come from its agent.
    pub remote: bool,
}

impl Service {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn is_job(&self) -> bool {
        self.spec.kind == ServiceKind::Job
    }

    /// The state shown for the service as a whole: the most urgent of its instances'.
    pub fn state(&self) -> InstanceState {
        use InstanceState::*;
        let states: Vec<InstanceState> = self.instances.iter().map(|i| i.state).collect();
        for urgent in [
            Unreachable,
            Failed,
            Crashed,
            Backoff,
            Degraded,
            Starting,
            Stopping,
        ] {
            if states.contains(&urgent) {
                return urgent;
            }
        }
        if states.contains(&Ready) {
            Ready
        } else if states.contains(&Exited) {
            Exited
        } else {
            Stopped
        }
    }

    pub fn restarts(&self) -> u32 {
        self.instances.iter().map(|i| i.restarts).sum()
    }

    /// Whether a request for the service is worth holding until an instance is ready: it is
    /// wanted, and some replica is starting, restarting, in backoff or not started yet, rather
    /// than exited, crashed for good (`restart = "never"`) or failed.
    pub fn coming_back(&self) -> bool {
        use InstanceState::*;
        self.wanted
            && !self.unreachable
            && (self.instances.is_empty()
                || self
                    .instances
                    .iter()
                    .any(|i| !matches!(i.state, Crashed | Exited | Failed | Unreachable)))
    }

    /// The instance of replica number `replica`. Replica numbers are names, not positions:
    /// scaling in may remove any replica, so the numbers left can have gaps.
    pub fn replica(&self, replica: u32) -> Option<&Instance> {
        self.instances.iter().find(|i| i.id.replica == replica)
    }

    pub fn replica_mut(&mut self, replica: u32) -> Option<&mut Instance> {
        self.instances.iter_mut().find(|i| i.id.replica == replica)
    }

    /// The smallest replica number no instance holds, for a new replica.
    pub fn free_replica(&self) -> u32 {
        (0..)
            .find(|n| self.replica(*n).is_none())
            .unwrap_or(u32::MAX)
    }

    /// The instance of `replica`, added (in replica order) when there is none.
    pub fn replica_entry(&mut self, replica: u32) -> &mut Instance {
        let at = self
            .instances
            .iter()
            .position(|i| i.id.replica >= replica)
            .unwrap_or(self.instances.len());
        if self
            .instances
            .get(at)
            .is_none_or(|i| i.id.replica != replica)
        {
            self.instances.insert(
                at,
                Instance::new(InstanceId {
                    service: self.index,
                    replica,
                    generation: 0,
                }),
            );
        }
        &mut self.instances[at]
    }

    pub fn ready_instances(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.state == InstanceState::Ready)
            .count()
    }
}

/// The registry proper.
#[derive(Debug, Default)]
pub struct Registry {
    pub stack_name: String,
    pub services: Vec<Service>,
    /// Looked up for every routed request: hashed (foldhash, as the router's maps), not a
    /// `BTreeMap`, whose search compares the name with a dozen others at 500 services, each
    /// a string of its own to fetch from memory.
    by_name: HashMap<String, usize, foldhash::fast::RandomState>,
}

impl Registry {
    pub fn new(stack_name: String, specs: &[ServiceSpec]) -> Self {
        let services: Vec<Service> = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| Service {
                index,
                spec: Arc::new(spec.clone()),
                wanted: false,
                replicas: spec.replicas,
                instances: Vec::new(),
                exits: VecDeque::new(),
                runs: VecDeque::new(),
                waiting_on: Vec::new(),
                held_requests: Arc::default(),
                unreachable: false,
                remote: false,
            })
            .collect();
        let by_name = services
            .iter()
            .map(|s| (s.spec.name.clone(), s.index))
            .collect();
        Registry {
            stack_name,
            services,
            by_name,
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.index_of(name).map(|i| &self.services[i])
    }

    pub fn instance(&self, id: InstanceId) -> Option<&Instance> {
        self.services
            .get(id.service)?
            .replica(id.replica)
            .filter(|i| i.id.generation == id.generation)
    }

    pub fn instance_mut(&mut self, id: InstanceId) -> Option<&mut Instance> {
        self.services
            .get_mut(id.service)?
            .replica_mut(id.replica)
            .filter(|i| i.id.generation == id.generation)
    }

    /// Pids of every live process of this host, for the resource sampler.
    pub fn pids(&self) -> Vec<u32> {
        self.services
            .iter()
            .filter(|s| !s.remote)
            .flat_map(|s| s.instances.iter())
            .filter(|i| i.state.has_process())
            .filter_map(|i| i.pid)
            .collect()
    }
}

/// The registry as shared between the supervisor (writer) and everyone else (readers). Locks
/// are held only for short, non-async sections.
pub type SharedRegistry = Arc<RwLock<Registry>>;

/// Reads the registry, tolerating a poisoned lock: a panicking reader cannot leave it half
/// written, and the console must stay up.
pub fn read(registry: &SharedRegistry) -> std::sync::RwLockReadGuard<'_, Registry> {
    registry
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn write(registry: &SharedRegistry) -> std::sync::RwLockWriteGuard<'_, Registry> {
    registry
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
