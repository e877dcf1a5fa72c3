//! What instances report (hello, ready, hung, signalled, bad frames, a job's result, exit),
//! and what follows an exit: the next state, a restart after backoff, or giving up.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use switchboard_protocol::Body;

use super::{Core, Intent, Slot};
use crate::{
    event::EventKind,
    registry::{self, EXITS_KEPT, ExitRecord, ExitStatus, InstanceId, InstanceState},
    stack::{RestartPolicy, ServiceKind},
    supervisor::{InstanceEvent, limits, restart::Decision},
};

/// The longest a restart waits, whatever the stack file says (`backoff.max`, `retry_max`): the
/// timer wheel refuses deadlines past about two years (tokio-util's `DelayQueue` panics), and a
/// year is longer than anyone waits for a restart.
const LONGEST_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

impl Core {
    // ----- reports from instances -----------------------------------------------------------

    pub(super) async fn instance_event(&mut self, event: InstanceEvent) {
        match event {
            InstanceEvent::Hello { id, hello } => {
                let mut registry = registry::write(&self.registry);
                if let Some(instance) = registry.instance_mut(id) {
                    instance.version = Some(hello.version);
                    instance.protocol_version = Some(hello.protocol_version);
                    instance.methods = hello.methods;
                }
            }
            InstanceEvent::Ready { id } => self.ready(id).await,
            InstanceEvent::Hung { id, silent_for } => {
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::HangDetected { silent_for },
                );
            }
            InstanceEvent::ProbeFailed {
                id,
                probe,
                failures,
                error,
            } => {
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::ProbeFailed {
                        probe,
                        failures,
                        error,
                    },
                );
            }
            InstanceEvent::Stale {
                id,
                stale,
                silent_for,
            } => self.heartbeat_stale(id, stale, silent_for),
            InstanceEvent::Signalled { id, signal, forced } => {
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::Signalled { signal },
                );
                if self.shutting_down && forced {
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
                        message: format!("{count} bad frames on stdout: degraded"),
                    },
                );
                let ready = registry::read(&self.registry)
                    .instance(id)
                    .is_some_and(|i| i.state == InstanceState::Ready);
                if ready {
                    self.set_state(id, InstanceState::Degraded);
                }
            }
            InstanceEvent::Recovered { id } => {
                let degraded = registry::read(&self.registry)
                    .instance(id)
                    .is_some_and(|i| i.state == InstanceState::Degraded);
                if degraded {
                    self.set_state(id, InstanceState::Ready);
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
        // A process the console did not set out to stop may have met one of its limits.
        let reason = if self.intents.contains_key(&slot) {
            None
        } else {
            limits::exit_reason(&self.stack.services[id.service].limits, &status)
        };
        let (uptime, is_current) = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[id.service];
            if service.exits.len() == EXITS_KEPT {
                service.exits.pop_front();
            }
            service.exits.push_back(ExitRecord {
                at: SystemTime::now(),
                replica: id.replica,
                status: status.clone(),
                reason: reason.clone(),
            });
            match service.replica_mut(id.replica) {
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
        if let Some(reason) = &reason {
            self.emit(
                id.service,
                Some(id.replica),
                EventKind::Alert {
                    message: format!("exited ({status}): {reason}"),
                },
            );
        }
        let spec = self.stack.services[id.service].clone();
        let success = status.success();
        if spec.kind == ServiceKind::Job {
            self.finish_job_run(id, &status, reason.as_deref(), uptime);
        }
        let intent = self.intents.remove(&slot);
        match intent {
            Some(Intent::Stop) => self.set_state(id, InstanceState::Stopped),
            Some(Intent::Remove) => {
                self.set_state(id, InstanceState::Stopped);
                self.drop_replica(id.service, id.replica);
            }
            Some(Intent::Replace) if !self.shutting_down => {
                self.set_state(id, InstanceState::Stopped);
                self.spawn_instance(slot, String::new(), true).await;
            }
            _ if self.shutting_down => self.set_state(id, InstanceState::Stopped),
            _ => {
                let wanted = registry::read(&self.registry).services[id.service].wanted;
                let missing = matches!(status, ExitStatus::CannotStart(_));
                let restart = wanted
                    && !missing
                    && match spec.restart {
                        RestartPolicy::Always => true,
                        RestartPolicy::OnFailure => !success,
                        RestartPolicy::Never => false,
                    };
                let settled = if success {
                    InstanceState::Exited
                } else if missing {
                    InstanceState::Failed
                } else {
                    InstanceState::Crashed
                };
                self.set_state(id, settled);
                if restart {
                    self.after_failure(id, uptime);
                }
            }
        }
        self.start_pending().await;
    }

    /// An instance said Ready (or printed its ready line).
    async fn ready(&mut self, id: InstanceId) {
        let starting = registry::read(&self.registry)
            .instance(id)
            .is_some_and(|i| i.state == InstanceState::Starting);
        if !starting {
            return;
        }
        // Garbage written before the handshake flags it as garbage after would.
        let flagged = registry::read(&self.registry)
            .instance(id)
            .and_then(|i| i.handle.as_ref())
            .is_some_and(|h| h.degraded.load(Ordering::Relaxed));
        let state = if flagged {
            InstanceState::Degraded
        } else {
            InstanceState::Ready
        };
        let name = &self.stack.services[id.service].name;
        // Before it is announced ready: whoever sees it ready and calls must not find the
        // breaker still sitting out its cooldown.
        self.router.breaker_target_ready(name);
        self.set_state(id, state);
        // Requests and events held while it was down go to it now.
        self.router
            .service_ready(&self.stack.services[id.service].name);
        self.continue_rollout(id.service);
        self.start_pending().await;
    }

    /// The heartbeat check found the heartbeat still for half its timeout, or moving again.
    fn heartbeat_stale(&mut self, id: InstanceId, stale: bool, silent_for: Duration) {
        let changed = registry::write(&self.registry)
            .instance_mut(id)
            .is_some_and(|i| std::mem::replace(&mut i.stale, stale) != stale);
        if changed {
            self.emit(
                id.service,
                Some(id.replica),
                EventKind::Heartbeat { stale, silent_for },
            );
        }
    }

    /// An instance that its restart policy restarts died after `uptime`: backoff, or failed at
    /// the intensity limit (and then perhaps tried again after the long backoff).
    fn after_failure(&mut self, id: InstanceId, uptime: Duration) {
        let slot = (id.service, id.replica);
        let spec = &self.stack.services[id.service];
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
                self.schedule_restart(slot, id.generation, delay);
            }
            Decision::GiveUp {
                restarts,
                window,
                retry_in,
            } => {
                self.set_state(id, InstanceState::Failed);
                if let Some(delay) = retry_in {
                    let delay = self.schedule_restart(slot, id.generation, delay);
                    if let Some(instance) = registry::write(&self.registry).instance_mut(id) {
                        instance.retry_at = Instant::now().checked_add(delay);
                    }
                }
                self.emit(
                    id.service,
                    Some(id.replica),
                    EventKind::GaveUp {
                        restarts,
                        window,
                        retry_in,
                    },
                );
            }
        }
    }

    /// Puts a restart in the queue, `delay` from now, capped at [`LONGEST_WAIT`]; returns the
    /// delay used.
    fn schedule_restart(&mut self, slot: Slot, generation: u64, delay: Duration) -> Duration {
        let delay = delay.min(LONGEST_WAIT);
        self.restarts_due.insert((slot, generation), delay);
        delay
    }

    /// `reason`: what a resource limit has to do with the exit, if anything.
    fn finish_job_run(
        &self,
        id: InstanceId,
        status: &ExitStatus,
        reason: Option<&str>,
        uptime: std::time::Duration,
    ) {
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
                    Err(match reason {
                        Some(reason) => format!("{status}: {reason}"),
                        None => status.to_string(),
                    })
                });
            }
            let ok = status.success() && run.result.as_ref().is_some_and(Result::is_ok);
            (run.run, ok)
        };
        self.emit(id.service, None, EventKind::JobFinished { run, ok });
    }

    pub(super) async fn restart_due(&mut self, slot: Slot, generation: u64) {
        let still_waiting = {
            let registry = registry::read(&self.registry);
            let service = &registry.services[slot.0];
            service.wanted
                && service.replica(slot.1).is_some_and(|i| {
                    i.id.generation == generation
                        && (i.state == InstanceState::Backoff
                            || (i.state == InstanceState::Failed && i.retry_at.is_some()))
                })
        };
        if still_waiting && !self.shutting_down {
            self.spawn_instance(slot, String::new(), true).await;
        }
    }
}
