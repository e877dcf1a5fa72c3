//! Start-up: which wanted services their dependencies let start, in start order, and
//! spawning the process of one replica slot (with its metrics segment and instance task).

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use switchboard_protocol::{
    Welcome,
    segment::{SegmentReader, create_segment},
};
use tokio::sync::mpsc;

use super::{Core, INBOX, Slot};
use crate::{
    event::EventKind,
    registry::{self, ExitStatus, Instance, InstanceHandle, InstanceId, InstanceState},
    stack::{Condition, ServiceKind, ServiceSpec},
    supervisor::{InstanceEvent, instance::InstanceTask, probe::Prober},
};

impl Core {
    /// Marks every service (and autostart job) wanted and starts what its dependencies allow.
    pub(super) async fn begin(&mut self) {
        let stack = self.stack.clone();
        for index in stack.start_order_indices() {
            let spec = &stack.services[index];
            if spec.kind == ServiceKind::Service || stack.is_autostart(&spec.name) {
                registry::write(&self.registry).services[index].wanted = true;
                // Its own host's agent starts a service of another host.
                if !stack.is_remote(spec) {
                    self.pending.insert(index);
                }
            }
        }
        self.start_pending().await;
    }

    // ----- starting -------------------------------------------------------------------------

    /// Starts every pending service whose dependencies are met, in start order.
    ///
    /// Called after every start and exit, so it walks only the pending services, never the
    /// whole stack: with nothing held back (the steady state) it costs nothing, whatever the
    /// number of services.
    pub(super) async fn start_pending(&mut self) {
        while !self.pending.is_empty() {
            let mut started_any = false;
            let stack = self.stack.clone();
            let mut due: Vec<usize> = self.pending.iter().copied().collect();
            due.sort_unstable_by_key(|&index| self.start_rank[index]);
            for index in due {
                // Starting an earlier one may have settled this one already.
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

    /// Brings every replica of a service up: the replicas it has first (whatever their
    /// numbers), then new ones under the smallest free numbers up to the wanted count.
    pub(super) async fn start_service(&mut self, index: usize) {
        if self.stack.is_remote(&self.stack.services[index]) {
            return;
        }
        let (replicas, existing) = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.wanted = true;
            let existing: Vec<(u32, bool)> = service
                .instances
                .iter()
                .filter(|i| {
                    self.intents.get(&(index, i.id.replica)) != Some(&super::Intent::Remove)
                })
                .map(|i| (i.id.replica, i.state.has_process()))
                .collect();
            (service.replicas as usize, existing)
        };
        for &(replica, running) in existing.iter().take(replicas) {
            if !running {
                self.spawn_instance((index, replica), String::new(), false)
                    .await;
            }
        }
        for _ in existing.len()..replicas {
            let replica = registry::read(&self.registry).services[index].free_replica();
            self.spawn_instance((index, replica), String::new(), false)
                .await;
        }
    }

    /// Spawns the process for a replica slot. `restart` counts it as a restart.
    pub(super) async fn spawn_instance(&mut self, slot: Slot, params: String, restart: bool) {
        let (index, replica) = slot;
        let spec = self.stack.services[index].clone();
        self.generation += 1;
        let id = InstanceId {
            service: index,
            replica,
            generation: self.generation,
        };
        self.fresh_instance(id, restart);
        let (segment_fd, segment_reader) = match segment_for(&spec) {
            Some((fd, reader)) => (Some(fd), Some(reader)),
            None => (None, None),
        };
        let lineage = self.sweeper.lineage();
        let command = self.launch.command(&spec, replica, segment_fd, &lineage);
        let probe_env = command.env.clone();
        let child = match self.spawner.spawn(command).await {
            Ok(child) => child,
            Err(err) => return self.spawn_failed(id, &err).await,
        };
        let pid = child.id().unwrap_or(0);
        let (inbox_tx, inbox_rx) = crate::transport::inbox(INBOX);
        let (control_tx, control_rx) = mpsc::channel(8);
        let handle = Arc::new(InstanceHandle::new(
            id,
            &spec.name,
            pid,
            Arc::new(inbox_tx),
            segment_reader.map(crate::transport::Segment::Mapped),
        ));
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
            log_budget: spec.log_budget,
            welcome: welcome(&spec, replica, heartbeat_ms, params),
            heartbeat_timeout,
            startup_timeout: spec.startup_timeout,
            lineage,
            sweeper: self.sweeper.clone(),
            probe: self.prober(&spec, id, probe_env),
        };
        self.tasks.spawn(task.run());
        // A plain program with no ready line is ready once it runs, or at its probe's first
        // pass when it has one.
        if !spec.protocol && spec.ready_line.is_none() && spec.probe.is_none() {
            self.set_state(id, InstanceState::Ready);
        }
    }

    fn prober(
        &self,
        spec: &ServiceSpec,
        id: InstanceId,
        env: Vec<(String, String)>,
    ) -> Option<Prober> {
        let probe = spec.probe.clone()?;
        Some(Prober {
            id,
            service: Arc::from(spec.name.as_str()),
            spec: probe,
            env: env
                .into_iter()
                .filter(|(key, _)| key != switchboard_protocol::segment::SEGMENT_FD_ENV)
                .collect(),
            cwd: spec.cwd.clone(),
            ready_on_pass: !spec.protocol && spec.ready_line.is_none(),
            startup_timeout: spec.startup_timeout,
            spawner: self.spawner.clone(),
            sweeper: self.sweeper.clone(),
            logs: self.logs.clone(),
            events: self.instance_tx.clone(),
        })
    }

    /// The replica's registry entry starts over under `id`, keeping its restart count (one
    /// more for a restart), its state until the next transition, and its last exit.
    fn fresh_instance(&self, id: InstanceId, restart: bool) {
        let mut registry = registry::write(&self.registry);
        let instance = registry.services[id.service].replica_entry(id.replica);
        let restarts = instance.restarts + u32::from(restart);
        let mut fresh = Instance::new(id);
        fresh.restarts = restarts;
        fresh.state = instance.state;
        fresh.last_exit = instance.last_exit.take();
        *instance = fresh;
    }

    /// The process could not be started: said. A missing program fails at once, unretried (it
    /// will not appear by retrying); any other spawn error is treated like a crash, so backoff
    /// and the intensity limit apply.
    async fn spawn_failed(&self, id: InstanceId, err: &std::io::Error) {
        let (status, message) = if super::super::spawn::will_not_appear(err) {
            let status = ExitStatus::CannotStart(err.to_string());
            let message = format!("{status}; not retried (s starts it again)");
            (status, message)
        } else {
            let status = ExitStatus::SpawnFailed(err.to_string());
            (status, format!("cannot spawn: {err}"))
        };
        self.emit(id.service, Some(id.replica), EventKind::Alert { message });
        let _ = self
            .instance_tx
            .send(InstanceEvent::Exited { id, status })
            .await;
    }
}

/// A protocol service's metrics segment: the fd it inherits and the console's reader. None
/// for a plain program, or when one cannot be made (said in the log; it then runs unseen).
fn segment_for(spec: &ServiceSpec) -> Option<(std::os::fd::OwnedFd, SegmentReader)> {
    if !spec.protocol {
        return None;
    }
    match create_segment(&spec.name) {
        Ok(segment) => Some(segment),
        Err(err) => {
            tracing::warn!(service = %spec.name, cause = %err, "no metrics segment");
            None
        }
    }
}

/// What the console tells a protocol service in the handshake.
fn welcome(spec: &ServiceSpec, replica: u32, heartbeat_ms: u32, params: String) -> Welcome {
    Welcome {
        protocol_version: switchboard_protocol::PROTOCOL_VERSION,
        service: spec.name.clone(),
        instance: replica,
        heartbeat_ms,
        settings: spec.settings.clone(),
        params,
    }
}
