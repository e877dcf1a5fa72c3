//! The stack as the rest of the console sees it: validated, with defaults filled in and paths
//! resolved.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// What the console tells every process it starts, through its environment: which service and
/// replica it is, its directories, the segment's descriptor, its lineage. A stack's `env` and
/// `env_file` may not set them (the console's value would win, and the service be misled about
/// which it is).
pub const CONSOLE_ENV: &[&str] = &[
    "SWITCHBOARD_SERVICE",
    "SWITCHBOARD_INSTANCE",
    "SWITCHBOARD_PROTOCOL",
    "SWITCHBOARD_DATA_DIR",
    "SWITCHBOARD_STACK_DIR",
    "SWITCHBOARD_SEGMENT_FD",
    "SWITCHBOARD_RUN_DIR",
    "SWITCHBOARD_LINEAGE",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: String,
    /// The file it came from; `None` for the embedded demo.
    pub source: Option<PathBuf>,
    /// Relative paths in the file are relative to this directory.
    pub base_dir: PathBuf,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub gateway: GatewaySpec,
    pub console: ConsoleSpec,
    /// `[nats]`: how the stack's hosts reach each other; `None` when every service runs
    /// beside the console.
    pub nats: Option<super::hosts::NatsSpec>,
    /// `[topics."PATTERN"]`: topics whose events are kept (durable, through `[nats]`).
    pub topics: Vec<super::hosts::TopicSpec>,
    /// In declaration order.
    pub services: Vec<ServiceSpec>,
}

/// `[console]`: how the console behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSpec {
    pub on_hangup: OnHangup,
    /// What a headless console prints of the services' log lines, all services together.
    pub output_budget: LogBudget,
}

impl Default for ConsoleSpec {
    fn default() -> Self {
        ConsoleSpec {
            on_hangup: OnHangup::default(),
            output_budget: LogBudget::HEADLESS_OUTPUT,
        }
    }
}

/// A rate of log lines: at most `lines` lines and `bytes` bytes of text a second, with bursts of
/// up to one second's worth. Lines beyond it are dropped and counted, never queued: a service
/// that logs faster than anyone can read must not cost the console more than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    pub lines: u32,
    pub bytes: u64,
}

impl LogBudget {
    /// The fewest bytes a second a budget may allow: the longest line the console keeps (longer
    /// ones are cut; `logs::line_codec::MAX_LINE`, checked there), so every line can be kept.
    pub const MIN_BYTES: u64 = 8 * 1024;
    /// Every service's budget unless its `log_budget` says otherwise: far above what a person
    /// reads, and two floods at this rate cost the console a few percent of a core.
    pub const SERVICE: LogBudget = LogBudget {
        lines: 2000,
        bytes: 1 << 20,
    };
    /// What a headless console prints, all services together, unless `[console]` says
    /// otherwise.
    pub const HEADLESS_OUTPUT: LogBudget = LogBudget {
        lines: 5000,
        bytes: 2 << 20,
    };
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::SERVICE
    }
}

/// What the console does when its terminal goes away (a dropped SSH session).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnHangup {
    /// Go on supervising headless, to be attached to later.
    #[default]
    Detach,
    /// Stop every service gracefully, in dependency order, and exit.
    Stop,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySpec {
    /// Where it listens; `None` for `bind = "off"` (no gateway, as `--gateway off`).
    pub bind: Option<SocketAddr>,
    pub token_env: Option<String>,
    pub request_timeout: Duration,
    pub body_limit: usize,
    pub routes: Vec<RouteSpec>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 8787))),
            token_env: None,
            request_timeout: Duration::from_secs(10),
            body_limit: 1024 * 1024,
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Upper case: GET, POST, PUT, PATCH, DELETE.
    pub method: String,
    /// Starts with `/`; `{param}` segments allowed.
    pub path: String,
    pub service: String,
    pub call_method: String,
    /// The method answers with a stream, sent as server-sent events or NDJSON.
    pub stream: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub program: Program,
    /// The env file's variables first, then `env`, which overrides them.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub kind: ServiceKind,
    pub depends_on: Vec<Dependency>,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub restart_limit: RestartLimit,
    /// `None`: no heartbeat check.
    pub heartbeat_timeout: Option<Duration>,
    /// How long a protocol service may take to shake hands before the heartbeat check starts
    /// anyway: the check counts from the handshake, which tells the service its heartbeat
    /// period.
    pub startup_timeout: Duration,
    /// Each step of the stop sequence waits this long (`shutdown_grace`, or `stop_grace`).
    pub shutdown_grace: Duration,
    /// What asks a plain program to stop; a protocol service is sent Shutdown first.
    pub stop_signal: StopSignal,
    pub replicas: u32,
    pub calls: Vec<String>,
    pub ready_line: Option<String>,
    /// Speaks the switchboard protocol over stdio.
    pub protocol: bool,
    pub settings: Vec<(String, String)>,
    /// Jobs: default parameters (JSON text, empty for none).
    pub params: String,
    pub autostart: bool,
    /// The circuit breaker that guards calls to this service.
    pub breaker: BreakerSpec,
    /// The log lines kept of this service (stdout and stderr, all replicas together).
    pub log_budget: LogBudget,
    /// Resource limits set on each of its processes before exec.
    pub limits: ResourceLimits,
    /// A liveness check run from the console (`probe = { … }`); mostly for plain programs,
    /// which have no heartbeat.
    pub probe: Option<ProbeSpec>,
    /// When its backlog raises an alert, and the bound past which callers are turned away.
    pub backlog: super::BacklogSpec,
    /// Replicas added and removed to hold a backlog target; `None`: `replicas` stays as set.
    pub autoscale: Option<super::AutoscaleSpec>,
    /// The host it runs on (`host = "NAME"`); `None`: the console's own.
    pub host: Option<String>,
}

/// `probe = { http | tcp | command, every, timeout, failures }`: a liveness check, as Docker's
/// `HEALTHCHECK` and Kubernetes' probes. `failures` failed checks in a row are treated as a
/// hang: the process group is SIGKILLed and the restart policy decides what follows. A plain
/// program without `ready_line` is ready at its first passing check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub check: ProbeCheck,
    /// From the end of one check to the start of the next.
    pub every: Duration,
    /// The most one check may take; longer is a failure.
    pub timeout: Duration,
    /// Failed checks in a row that make a hang.
    pub failures: u32,
}

impl ProbeSpec {
    pub const EVERY: Duration = Duration::from_secs(5);
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    pub const FAILURES: u32 = 3;
}

/// What one probe check does; it passes when…
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// …a `GET` of this `http://` URL answers 2xx or 3xx.
    Http { url: String },
    /// …a TCP connection to this `host:port` opens.
    Tcp { address: String },
    /// …this program exits 0: a string runs with `sh -c`, a list as the program and its
    /// arguments. In the service's environment and working directory.
    Command { argv: Vec<String> },
}

impl std::fmt::Display for ProbeCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeCheck::Http { url } => write!(f, "GET {url}"),
            ProbeCheck::Tcp { address } => write!(f, "tcp {address}"),
            ProbeCheck::Command { argv } => write!(f, "command `{}`", argv.join(" ")),
        }
    }
}

/// `limits = { … }`: resource limits the console sets with `setrlimit` in each process of the
/// service before it execs, soft and hard alike, so the service cannot raise them. `None`
/// leaves the console's own limit, inherited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `memory`: the address space (`RLIMIT_AS`), in bytes.
    pub memory: Option<u64>,
    /// `open_files`: the most file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// `cpu_time`: CPU seconds (`RLIMIT_CPU`), whole seconds, rounded up.
    pub cpu_time: Option<u64>,
    /// `core = false`: no core dumps (`RLIMIT_CORE` 0). `true` or unset: inherited.
    pub core: Option<bool>,
}

impl ResourceLimits {
    pub fn is_empty(&self) -> bool {
        *self == ResourceLimits::default()
    }
}

/// The signal that asks a plain program to stop (`stop_signal`), as supervisord's
/// `stopsignal` and Docker's `STOPSIGNAL` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopSignal {
    #[default]
    Term,
    Int,
    Quit,
    Hup,
    Usr1,
    Usr2,
}

impl StopSignal {
    pub const ALL: [StopSignal; 6] = [
        StopSignal::Term,
        StopSignal::Int,
        StopSignal::Quit,
        StopSignal::Hup,
        StopSignal::Usr1,
        StopSignal::Usr2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::Hup => "SIGHUP",
            StopSignal::Usr1 => "SIGUSR1",
            StopSignal::Usr2 => "SIGUSR2",
        }
    }

    pub fn number(self) -> i32 {
        match self {
            StopSignal::Term => libc::SIGTERM,
            StopSignal::Int => libc::SIGINT,
            StopSignal::Quit => libc::SIGQUIT,
            StopSignal::Hup => libc::SIGHUP,
            StopSignal::Usr1 => libc::SIGUSR1,
            StopSignal::Usr2 => libc::SIGUSR2,
        }
    }

    /// `"TERM"`, `"SIGTERM"`, any case.
    pub fn parse(text: &str) -> Option<StopSignal> {
        let upper = text.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        StopSignal::ALL
            .into_iter()
            .find(|signal| &signal.name()[3..] == bare)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSpec {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// Failure ratio over `window` that opens it, once `min_requests` were seen.
    pub ratio: f64,
    pub min_requests: u32,
    pub window: Duration,
    /// How long it stays open before letting a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerSpec {
    fn default() -> Self {
        BreakerSpec {
            failures: 5,
            ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A service compiled into the switchboard binary, run as `switchboard service NAME`.
    Builtin(String),
    Command {
        command: String,
        args: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    Service,
    /// Runs to completion, reporting progress, and hands back a result.
    Job,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The dependency's process exists.
    Started,
    /// The dependency said Ready (or printed its ready line).
    Ready,
    /// The dependency is a job whose last run succeeded.
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction of the delay that is randomised away: 0.2 means 80–100% of the delay.
    pub jitter: f64,
    /// A run at least this long resets the backoff to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (from 0), without jitter, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.min(1000) as i32);
        let seconds = self.initial.as_secs_f64() * factor;
        if !seconds.is_finite() || seconds >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(seconds)
        }
    }

    /// The delay with jitter: `sample` in [0, 1) takes away up to `jitter` of it, so restarts of
    /// many replicas spread out instead of arriving together.
    pub fn jittered(&self, attempt: u32, sample: f64) -> Duration {
        let keep = 1.0 - self.jitter.clamp(0.0, 1.0) * sample.clamp(0.0, 1.0);
        self.delay(attempt).mul_f64(keep)
    }
}

/// The restart intensity limit: at most `count` restarts within `window`, then the service is
/// failed, and `then` says what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    pub count: u32,
    pub window: Duration,
    pub then: AfterLimit,
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit {
            count: 5,
            window: Duration::from_secs(60),
            then: AfterLimit::default(),
        }
    }
}

/// What follows the restart intensity limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLimit {
    /// Try again after `after`, doubling with each limit reached again, up to `max`: what broke
    /// it (a dependency, a full disk) may have been fixed meanwhile, and nobody may be watching.
    Retry { after: Duration, max: Duration },
    /// Stay failed until an operator starts or restarts it.
    StayFailed,
}

impl Default for AfterLimit {
    fn default() -> Self {
        AfterLimit::Retry {
            after: Duration::from_secs(30),
            max: Duration::from_secs(300),
        }
    }
}

impl AfterLimit {
    /// The wait before the next try after the limit was reached `times` times in a row
    /// (from 0); `None` to stay failed.
    pub fn retry_in(&self, times: u32) -> Option<Duration> {
        match *self {
            AfterLimit::StayFailed => None,
            AfterLimit::Retry { after, max } => Some(
                after
                    .checked_mul(1u32.checked_shl(times.min(31)).unwrap_or(u32::MAX))
                    .unwrap_or(max)
                    .min(max),
            ),
        }
    }
}

impl Stack {
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Names in an order where every service comes after what it depends on; otherwise the
    /// declaration order. (A validated stack has no cycles; any left over go last.)
    ///
    /// Each step takes the first-declared service whose dependencies are all placed, so a
    /// service starts as soon as it can rather than waiting for a whole "layer" to finish.
    pub fn start_order(&self) -> Vec<&str> {
        self.start_order_indices()
            .into_iter()
            .map(|i| self.services[i].name.as_str())
            .collect()
    }

    /// [`Stack::start_order`] as indices into `services`. Linear in services and dependencies
    /// (the supervisor walks it after every start and exit, so a quadratic order cost seconds
    /// at 1,000 services): the services whose dependencies are all placed wait in a min-heap,
    /// whose smallest index is the first-declared one.
    pub fn start_order_indices(&self) -> Vec<usize> {
        use std::{
            cmp::Reverse,
            collections::{BinaryHeap, HashMap},
        };
        let by_name: HashMap<&str, usize> = self
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        // Per service: dependencies not placed yet (unknown names count as placed), and who
        // waits on it, once per naming.
        let mut unmet = vec![0usize; self.services.len()];
        let mut waiting: Vec<Vec<usize>> = vec![Vec::new(); self.services.len()];
        for (i, service) in self.services.iter().enumerate() {
            for dependency in &service.depends_on {
                if let Some(&on) = by_name.get(dependency.name.as_str()) {
                    unmet[i] += 1;
                    waiting[on].push(i);
                }
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = (0..self.services.len())
            .filter(|&i| unmet[i] == 0)
            .map(Reverse)
            .collect();
        let mut placed = vec![false; self.services.len()];
        let mut order = Vec::with_capacity(self.services.len());
        while let Some(Reverse(next)) = ready.pop() {
            placed[next] = true;
            order.push(next);
            for &after in &waiting[next] {
                unmet[after] -= 1;
                if unmet[after] == 0 {
                    ready.push(Reverse(after));
                }
            }
        }
        // A cycle (or a service naming itself) leaves its members unplaced: last, in order.
        order.extend((0..self.services.len()).filter(|&i| !placed[i]));
        order
    }

    /// Whether a job runs at stack start: `autostart`, or something depends on it.
    pub fn is_autostart(&self, name: &str) -> bool {
        self.service(name).is_some_and(|s| {
            s.kind == ServiceKind::Job
                && (s.autostart
                    || self
                        .services
                        .iter()
                        .any(|other| other.depends_on.iter().any(|d| d.name == name)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
            reset_after: Duration::from_secs(10),
        };
        assert_eq!(backoff.delay(0), Duration::from_millis(100));
        assert_eq!(backoff.delay(3), Duration::from_millis(800));
        assert_eq!(backoff.delay(4), Duration::from_secs(1));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(backoff.jittered(0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff.jittered(0, 1.0), Duration::from_millis(50));
    }

    #[test]
    fn the_retry_after_the_limit_doubles_up_to_its_max() {
        let retry = AfterLimit::default();
        let secs = |times| retry.retry_in(times).map(|d: Duration| d.as_secs());
        assert_eq!(
            [secs(0), secs(1), secs(3), secs(4)],
            [30, 60, 240, 300].map(Some)
        );
        assert_eq!(secs(u32::MAX), Some(300));
        assert_eq!(AfterLimit::StayFailed.retry_in(0), None);
    }
}
