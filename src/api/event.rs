//! A lifecycle event as the read model carries it: what the headless output prints, the
//! admin API's event stream sends, and the console turns into alerts.

use serde::{Deserialize, Serialize};

use super::millis;
use crate::event::{Event, EventKind};

/// One lifecycle event as JSON: the `data` of an SSE event whose name is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub service: String,
    pub replica: Option<u32>,
    /// `state`, `spawned`, `exited`, `restart_scheduled`, `hang_detected`, `heartbeat`, `gave_up`,
    /// `job_started`, `job_finished`, `signalled`, `breaker`, `alert`, `backlog` or `autoscale`.
    pub kind: String,
    /// For `state`: the states before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The event as the headless output prints it.
    pub text: String,
    /// What happened, without the service's name (`exited (exit 1)`).
    #[serde(default)]
    pub detail: String,
    /// Whether the operator should look at it (the console lists it under alerts).
    #[serde(default)]
    pub alert: bool,
    /// The kind of this service's alerts that this event resolves (`breaker` when a breaker
    /// closes, `gave_up` when a replica is ready again, `backlog` when a backlog is steady
    /// again): the console marks them resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolves: Option<String>,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        let (kind, from, to) = match &event.kind {
            EventKind::State { from, to } => (
                "state",
                Some(from.as_str().to_string()),
                Some(to.as_str().to_string()),
            ),
            EventKind::Spawned { .. } => ("spawned", None, None),
            EventKind::Exited { .. } => ("exited", None, None),
            EventKind::RestartScheduled { .. } => ("restart_scheduled", None, None),
            EventKind::HangDetected { .. } => ("hang_detected", None, None),
            EventKind::ProbeFailed { .. } => ("probe_failed", None, None),
            EventKind::Heartbeat { .. } => ("heartbeat", None, None),
            EventKind::GaveUp { .. } => ("gave_up", None, None),
            EventKind::JobStarted { .. } => ("job_started", None, None),
            EventKind::JobFinished { .. } => ("job_finished", None, None),
            EventKind::Signalled { .. } => ("signalled", None, None),
            EventKind::Breaker { .. } => ("breaker", None, None),
            EventKind::Alert { .. } => ("alert", None, None),
            EventKind::Backlog { .. } => ("backlog", None, None),
            EventKind::Autoscaled { .. } => ("autoscale", None, None),
        };
        EventView {
            at_ms: millis::since_epoch(event.at),
            service: event.service.clone(),
            replica: event.replica,
            kind: kind.to_string(),
            from,
            to,
            text: event.to_string(),
            detail: event.kind.to_string(),
            alert: event.is_alert(),
            resolves: event.resolves().map(str::to_string),
        }
    }
}
