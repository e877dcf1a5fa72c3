//! Frames from an agent's instances: adopting an instance at its Hello, acting on its
//! readiness and subscriptions, routing the rest; and letting an instance go.

use super::*;
use crate::router::error_answer;

impl Tracker {
    pub(super) async fn up(&mut self, host: &str, up: Up) {
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
    pub(super) async fn frame(&mut self, handle: &Arc<InstanceHandle>, envelope: &mut Envelope) {
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
    pub(super) fn refuse_unknown(&self, host: &str, key: &InstanceKey, envelope: &Envelope) {
        if envelope.kind != Kind::Request {
            return;
        }
        if let Some(entry) = self.hosts.get(host) {
            let answer = error_answer(
                envelope.id,
                envelope.trace,
                ErrorCode::Unavailable,
                "the console has not adopted this instance yet",
            );
            let _ = entry.down.link(key.clone()).try_send(&answer);
        }
    }

    pub(super) fn tracked(
        &self,
        host: &str,
        index: usize,
        key: &InstanceKey,
    ) -> Option<Arc<InstanceHandle>> {
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
    pub(super) fn adopt(
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
        let segment = status
            .is_none_or(|s| s.snapshot.is_some())
            .then(Segment::relayed);
        let handle = Arc::new(InstanceHandle::new(
            id,
            &key.service,
            status.and_then(|s| s.pid).unwrap_or(0),
            Arc::new(entry.down.link(key.clone())),
            segment,
        ));
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
    pub(super) fn retire(
        &mut self,
        host: &str,
        index: usize,
        replica: u32,
        to: Option<InstanceState>,
    ) {
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
    pub(super) async fn routable(
        &mut self,
        handle: &Arc<InstanceHandle>,
        routable: bool,
        set_state: bool,
    ) {
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
}
