//! Lifecycle events: every state transition the supervisor makes, on one bounded broadcast
//! channel that the console UI, the headless printer, the logs and the gateway's event stream
//! consume.
//!
//! The channel keeps the newest [`EVENT_BUFFER`] events. A consumer that falls further behind
//! loses the oldest and is told how many (`RecvError::Lagged`); the registry still holds the
//! current state, so nothing a consumer *shows* is lost, only intermediate transitions.

use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::registry::{ExitStatus, InstanceState};

pub const EVENT_BUFFER: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: SystemTime,
    pub service: String,
    pub replica: Option<u32>,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    State {
        from: InstanceState,
        to: InstanceState,
    },
    Spawned {
        pid: u32,
    },
    Exited {
        status: ExitStatus,
    },
    RestartScheduled {
        attempt: u32,
        delay: Duration,
    },
    HangDetected {
        silent_for: Duration,
    },
    /// The liveness probe failed `failures` times in a row: treated as a hang.
    ProbeFailed {
        probe: String,
        failures: u32,
        error: String,
    },
    /// The heartbeat has been still for half its timeout (`stale`: it is declared hung at the
    /// full timeout), or moves again.
    Heartbeat {
        stale: bool,
        silent_for: Duration,
    },
    /// The restart intensity limit was reached; the service is failed, and tried again after
    /// `retry_in` (`None`: until an operator acts).
    GaveUp {
        restarts: u32,
        window: Duration,
        retry_in: Option<Duration>,
    },
    JobStarted {
        run: u64,
    },
    JobFinished {
        run: u64,
        ok: bool,
    },
    /// Escalation in the stop sequence: "SIGTERM" or "SIGKILL" sent to the process group.
    Signalled {
        signal: &'static str,
    },
    /// A circuit breaker changed state: "open", "half-open" or "closed".
    Breaker {
        state: &'static str,
    },
    /// Something the operator should look at.
    Alert {
        message: String,
    },
    /// The service's backlog grows past its alert window, or its oldest item is past its
    /// bound (`alert`, with what and how fast); or it is steady again (resolves that alert).
    Backlog {
        alert: bool,
        message: String,
    },
    /// Autoscaling changed the service's replicas, and why.
    Autoscaled {
        from: u32,
        to: u32,
        reason: String,
    },
}

impl Event {
    pub fn new(service: &str, replica: Option<u32>, kind: EventKind) -> Self {
        Event {
            at: SystemTime::now(),
            service: service.to_owned(),
            replica,
            kind,
        }
    }

    /// Whether this event should raise an alert for the operator.
    pub fn is_alert(&self) -> bool {
        matches!(
            self.kind,
            EventKind::GaveUp { .. }
                | EventKind::HangDetected { .. }
                | EventKind::ProbeFailed { .. }
                | EventKind::Alert { .. }
                | EventKind::Backlog { alert: true, .. }
                | EventKind::JobFinished { ok: false, .. }
                | EventKind::Breaker { state: "open" }
        )
    }
}

impl Event {
    /// The kind of alert (as the read model's `EventView::kind` names it) this event
    /// resolves for its service (and its replica, when it names one): a breaker closing
    /// resolves its opening, and a replica ready again the failure that gave up on it (it
    /// came back on the retry after the intensity limit, or an operator started it).
    pub fn resolves(&self) -> Option<&'static str> {
        match self.kind {
            EventKind::Breaker { state: "closed" } => Some("breaker"),
            EventKind::Backlog { alert: false, .. } => Some("backlog"),
            EventKind::State {
                to: InstanceState::Ready,
                ..
            } => Some("gave_up"),
            _ => None,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventKind::State { from, to } => write!(f, "{from} → {to}"),
            EventKind::Spawned { pid } => write!(f, "spawned pid {pid}"),
            EventKind::Exited { status } => write!(f, "exited ({status})"),
            // `attempt` counts failures without a healthy run between them, from 0; the RST
            // column counts every restart, the operator's too. Saying which this is keeps
            // `restart #0` beside RST 2 from reading as a contradiction.
            EventKind::RestartScheduled { attempt, delay } => write!(
                f,
                "restart in {}ms (failure {} in a row)",
                delay.as_millis(),
                attempt.saturating_add(1)
            ),
            EventKind::HangDetected { silent_for } => write!(
                f,
                "hung: no heartbeat for {}ms, restarting",
                silent_for.as_millis()
            ),
            EventKind::ProbeFailed {
                probe,
                failures,
                error,
            } => write!(
                f,
                "hung: probe failed {failures} times in a row ({probe}: {error}), restarting"
            ),
            EventKind::Heartbeat {
                stale: true,
                silent_for,
            } => write!(f, "heartbeat stale: still for {}ms", silent_for.as_millis()),
            EventKind::Heartbeat { stale: false, .. } => write!(f, "heartbeat moves again"),
            EventKind::GaveUp {
                restarts,
                window,
                retry_in,
            } => {
                write!(
                    f,
                    "failed: {restarts} restarts within {}s",
                    window.as_secs()
                )?;
                match retry_in {
                    Some(retry_in) => write!(f, ", next try in {}s", retry_in.as_secs()),
                    None => write!(f, ", giving up"),
                }
            }
            EventKind::JobStarted { run } => write!(f, "job run #{run} started"),
            EventKind::JobFinished { run, ok } => {
                write!(
                    f,
                    "job run #{run} {}",
                    if *ok { "succeeded" } else { "failed" }
                )
            }
            EventKind::Signalled { signal } => write!(f, "sent {signal} to the process group"),
            EventKind::Breaker { state } => write!(f, "circuit breaker {state}"),
            EventKind::Alert { message } => write!(f, "alert: {message}"),
            EventKind::Backlog {
                alert: true,
                message,
            } => write!(f, "backlog alert: {message}"),
            EventKind::Backlog { message, .. } => write!(f, "backlog: {message}"),
            EventKind::Autoscaled { from, to, reason } => {
                write!(f, "autoscale: {from} → {to} replicas ({reason})")
            }
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.replica {
            Some(replica) => write!(f, "{}#{replica}: {}", self.service, self.kind),
            None => write!(f, "{}: {}", self.service, self.kind),
        }
    }
}

pub type EventSender = broadcast::Sender<Event>;

pub fn channel() -> EventSender {
    broadcast::channel(EVENT_BUFFER).0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log's restart line says what its number counts (failures in a row, from 1), so it
    /// reads beside the RST column, which counts every restart.
    #[test]
    fn a_scheduled_restart_says_what_it_counts() {
        let kind = EventKind::RestartScheduled {
            attempt: 0,
            delay: Duration::from_millis(120),
        };
        assert_eq!(kind.to_string(), "restart in 120ms (failure 1 in a row)");
    }
}
