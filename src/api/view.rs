//! What the console shows, as plain data: the service table, each service's detail, routed
//! calls and log lines. The local console, an attached console, the admin API and the CLI all
//! read these types and nothing else.
//!
//! The JSON shape is stable (see [`super`]): times are whole milliseconds (`uptime_ms`,
//! `at_ms`), states are lower-case words, and no field uses a Rust-only shape.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::millis;
use crate::registry::InstanceState;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsoleView {
    pub stack: String,
    /// How long the console has run (whole seconds, in milliseconds).
    #[serde(rename = "uptime_ms", with = "millis::duration")]
    pub uptime: Duration,
    /// The HTTP gateway's address, when it runs.
    pub gateway: Option<String>,
    /// The address the stack file asked the gateway to listen on, when it was taken and the
    /// stack runs without one (a second stack on 8787): the header says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_taken: Option<String>,
    /// Where this view comes from, for the header: `None` for the console's own supervisor,
    /// else the instance an attached console shows and whether its link is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<AttachedView>,
    pub console_cpu: f32,
    pub console_rss: u64,
    pub services: Vec<ServiceRow>,
    /// Recent routed calls, filled only while the console shows them (the calls overlay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<HopView>,
    /// Totals of the routes those calls took, since the console started (same condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteView>,
}

/// What an attached console shows about its link to the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedView {
    /// The instance: a socket path or an address.
    pub to: String,
    /// Whether the link is up; when it is not, what the view shows is as of the last update.
    pub connected: bool,
    /// Actions are refused (`attach --read-only`).
    pub read_only: bool,
    /// Why the link is down and when it is tried again, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One route's totals: every call from `from` to `to.method` the router saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub from: String,
    pub to: String,
    pub method: String,
    pub requests: u64,
    pub errors: u64,
    /// Upper bound of the latency bucket holding the 99th percentile.
    pub p99_us: Option<u64>,
}

/// One routed call, as the router traced it: who called what, how long it took, how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopView {
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub trace: u64,
    pub from: String,
    pub to: String,
    pub method: String,
    pub latency_us: u64,
    /// The error code (`timeout`, `circuit_open`, ...); none for success.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRow {
    pub name: String,
    /// The host it runs on, when not the console's own (`host = "NAME"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub job: bool,
    pub state: InstanceState,
    pub ready: u32,
    pub replicas: u32,
    pub pid: Option<u32>,
    #[serde(rename = "uptime_ms", with = "millis::option")]
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub cpu: f32,
    pub rss: u64,
    pub request_rate: f64,
    /// Events taken per second: a subscriber's work, which `request_rate` does not count.
    #[serde(default)]
    pub event_rate: f64,
    /// Requests this service made through the console per second (its outgoing calls).
    #[serde(default)]
    pub call_rate: f64,
    pub error_rate: f64,
    pub p99_us: Option<u64>,
    #[serde(rename = "heartbeat_age_ms", with = "millis::option")]
    pub heartbeat_age: Option<Duration>,
    pub breaker: String,
    /// While the breaker is open: how long until it lets a probe through (whole seconds,
    /// rounded up).
    #[serde(
        default,
        rename = "breaker_cooldown_ms",
        with = "millis::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_cooldown: Option<Duration>,
    /// Some replica's heartbeat has been still for half its timeout (it is declared hung at
    /// the full timeout).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Failed, and tried again in this long (the soonest of its replicas; whole seconds,
    /// rounded up). `None` while not failed, or failed for good.
    #[serde(
        default,
        rename = "retry_in_ms",
        with = "millis::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_in: Option<Duration>,
    pub version: Option<String>,
    pub rate_history: Vec<u64>,
    pub tasks: Vec<TaskView>,
    pub depends_on: Vec<DependencyView>,
    pub calls: Vec<String>,
    pub waiting_on: Vec<String>,
    /// Recent exits, newest first.
    pub exits: Vec<ExitView>,
    pub runs: Vec<RunView>,
    /// Each replica, in replica order (the row above sums them up).
    #[serde(default)]
    pub instances: Vec<ReplicaView>,
    /// The work waiting inside the service, all replicas together.
    #[serde(default)]
    pub backlog: BacklogView,
}

/// A service's backlog as the table shows it (see `docs/backlog.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacklogView {
    /// Items waiting.
    #[serde(default)]
    pub waiting: u64,
    /// The service publishes it (else the console derived it from the requests it routed).
    #[serde(default)]
    pub published: bool,
    /// How long the oldest item has waited; `None` when nothing waits or nobody says.
    #[serde(
        default,
        rename = "oldest_age_ms",
        with = "millis::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_age: Option<Duration>,
    /// `rising`, `falling` or `flat`, over the last few seconds.
    #[serde(default = "flat")]
    pub trend: String,
    /// Items per second it grew by over its alert window, while it grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_per_s: Option<f64>,
    /// Its autoscaling range, when the stack sets one: (min, max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<(u32, u32)>,
}

fn flat() -> String {
    "flat".into()
}

impl Default for BacklogView {
    fn default() -> Self {
        BacklogView {
            waiting: 0,
            published: false,
            oldest_age: None,
            trend: flat(),
            growth_per_s: None,
            autoscale: None,
        }
    }
}

/// A dependency and the condition it waits for (`started`, `ready`, `completed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyView {
    pub name: String,
    pub condition: String,
}

/// One exit of a replica: how long ago, and how it ended (`exit 1`, `signal 9`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    #[serde(rename = "ago_ms", with = "millis::duration")]
    pub ago: Duration,
    pub replica: u32,
    pub status: String,
}

/// One replica of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub replica: u32,
    pub state: InstanceState,
    pub pid: Option<u32>,
    #[serde(rename = "uptime_ms", with = "millis::option")]
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub cpu: f32,
    pub rss: u64,
    /// Its heartbeat has been still for half its timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// Failed, and tried again in this long.
    #[serde(
        default,
        rename = "retry_in_ms",
        with = "millis::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_in: Option<Duration>,
    /// The work waiting inside this replica, so a console can show which one is behind.
    #[serde(default)]
    pub backlog: ReplicaBacklogView,
}

/// One replica's backlog: what it publishes, else what the console derives from the requests
/// routed to it and not answered. Requests held while the service restarts belong to no
/// replica: they count in the service's [`BacklogView`] only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaBacklogView {
    /// Items waiting.
    #[serde(default)]
    pub waiting: u64,
    /// The replica publishes it.
    #[serde(default)]
    pub published: bool,
    /// How long its oldest item has waited; `None` when nothing waits or nobody says.
    #[serde(
        default,
        rename = "oldest_age_ms",
        with = "millis::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_age: Option<Duration>,
}

impl ServiceRow {
    /// A row with nothing measured and nothing running: a start for literals that set what
    /// they need (`ServiceRow { pid: Some(7), ..ServiceRow::new("echo", state) }`).
    pub fn new(name: &str, state: InstanceState) -> ServiceRow {
        ServiceRow {
            name: name.into(),
            host: None,
            job: false,
            state,
            ready: 0,
            replicas: 1,
            pid: None,
            uptime: None,
            restarts: 0,
            cpu: 0.0,
            rss: 0,
            request_rate: 0.0,
            event_rate: 0.0,
            call_rate: 0.0,
            error_rate: 0.0,
            p99_us: None,
            heartbeat_age: None,
            breaker: "closed".into(),
            breaker_cooldown: None,
            stale: false,
            retry_in: None,
            version: None,
            rate_history: Vec::new(),
            tasks: Vec::new(),
            depends_on: Vec::new(),
            calls: Vec::new(),
            waiting_on: Vec::new(),
            exits: Vec::new(),
            runs: Vec::new(),
            instances: Vec::new(),
            backlog: BacklogView::default(),
        }
    }
}

impl ReplicaView {
    /// A replica with nothing measured: a start for literals that set what they need
    /// (`ReplicaView { pid: Some(7), ..ReplicaView::new(0, state) }`), so a field added later
    /// changes one place.
    pub fn new(replica: u32, state: InstanceState) -> ReplicaView {
        ReplicaView {
            replica,
            state,
            pid: None,
            uptime: None,
            restarts: 0,
            cpu: 0.0,
            rss: 0,
            stale: false,
            retry_in: None,
            backlog: ReplicaBacklogView::default(),
        }
    }
}

/// One task slot of a replica's segment: a progress bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub replica: u32,
    pub label: String,
    pub done: u64,
    pub total: u64,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub run: u64,
    /// Its parameters as JSON text (empty for the stack file's).
    pub params: String,
    #[serde(rename = "duration_ms", with = "millis::option")]
    pub duration: Option<Duration>,
    /// `None` while it runs; then its result or its error.
    #[serde(with = "outcome")]
    pub outcome: Option<Result<String, String>>,
}

/// One log line of a service (or the console's own line about it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogView {
    /// Increases by one per line across the console: a gap is a line not sent.
    pub seq: u64,
    #[serde(rename = "at_ms", with = "millis::system_time")]
    pub at: SystemTime,
    pub service: String,
    pub replica: u32,
    /// A line the console wrote about the service (spawned, exited), not the service itself.
    pub console: bool,
    /// Written to stderr (a plain program's other stream; all of a protocol service's log).
    #[serde(default)]
    pub stderr: bool,
    pub text: String,
}

/// A run's outcome as `{"ok": true, "result": "…"}` or `{"ok": false, "error": "…"}`, and
/// `null` while it runs.
mod outcome {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Outcome {
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }

    pub fn serialize<S: Serializer>(
        value: &Option<Result<String, String>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value
            .as_ref()
            .map(|outcome| match outcome {
                Ok(result) => Outcome {
                    ok: true,
                    result: Some(result.clone()),
                    error: None,
                },
                Err(error) => Outcome {
                    ok: false,
                    result: None,
                    error: Some(error.clone()),
                },
            })
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Result<String, String>>, D::Error> {
        Ok(
            Option::<Outcome>::deserialize(deserializer)?.map(|o| match o.ok {
                true => Ok(o.result.unwrap_or_default()),
                false => Err(o.error.unwrap_or_default()),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_from_before_its_backlog_reads_with_none_waiting() {
        // What a console of the same API version wrote before replicas had a backlog.
        let old = r#"{"replica":1,"state":"ready","pid":7,"uptime_ms":1000,"restarts":0,
            "cpu":0.5,"rss":1024}"#;
        let replica: ReplicaView = serde_json::from_str(old).expect("an older replica reads");
        assert_eq!(replica.backlog, ReplicaBacklogView::default());

        let behind = ReplicaView {
            backlog: ReplicaBacklogView {
                waiting: 3,
                published: false,
                oldest_age: Some(Duration::from_millis(2500)),
            },
            ..replica
        };
        let json = serde_json::to_value(&behind).expect("serialises");
        assert_eq!(
            json["backlog"],
            serde_json::json!({"waiting": 3, "published": false, "oldest_age_ms": 2500})
        );
        let back: ReplicaView = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, behind);
    }
}
