//! What an agent reports besides frames: its status (instances adopted, updated and let go;
//! its jobs' runs), its log lines, and its silence (unreachable).

use super::*;

impl Tracker {
    pub(super) async fn status(&mut self, host: &str, status: HostStatus) {
        self.heard(host);
        let Some(entry) = self.hosts.get_mut(host) else {
            return;
        };
        let restarted = std::mem::replace(&mut entry.boot, status.boot) != status.boot;
        // Processes of an earlier run of the agent are gone (its keeper ended them), and so
        // is everything when it leaves.
        let stale: Vec<(usize, u32)> = entry
            .tracked
            .iter()
            .filter(|(_, t)| status.leaving || t.boot != status.boot)
            .map(|(slot, _)| *slot)
            .collect();
        for (index, replica) in stale {
            self.retire(host, index, replica, Some(InstanceState::Stopped));
        }
        if status.leaving {
            self.alert(host, format!("the agent of host `{host}` stopped"));
            let mut registry = registry::write(self.supervisor.registry());
            for service in registry.services.iter_mut() {
                if self.stack.host_of(&service.spec) == host {
                    service.instances.clear();
                }
            }
            return;
        }
        let listed: Vec<(usize, u32)> = status
            .instances
            .iter()
            .filter_map(|i| Some((self.service_of(host, &i.key.service)?, i.key.replica)))
            .collect();
        for instance in &status.instances {
            let Some(index) = self.service_of(host, &instance.key.service) else {
                continue;
            };
            self.instance_status(host, index, instance).await;
        }
        // Replicas the agent no longer has (scaled in, or a run of the agent ago).
        let gone: Vec<(usize, u32)> = {
            let registry = registry::read(self.supervisor.registry());
            registry
                .services
                .iter()
                .filter(|s| self.stack.host_of(&s.spec) == host)
                .flat_map(|s| s.instances.iter().map(move |i| (s.index, i.id.replica)))
                .filter(|slot| !listed.contains(slot))
                .collect()
        };
        for (index, replica) in gone {
            self.retire(host, index, replica, None);
            let mut registry = registry::write(self.supervisor.registry());
            registry.services[index]
                .instances
                .retain(|i| i.id.replica != replica);
        }
        let mut registry = registry::write(self.supervisor.registry());
        for service in registry.services.iter_mut() {
            if self.stack.host_of(&service.spec) == host {
                service.replicas = service.instances.len().max(1) as u32;
            }
        }
        if restarted {
            // Run numbers start over with the agent: its earlier runs must not be taken for
            // the new ones.
            for service in registry.services.iter_mut() {
                if self.stack.host_of(&service.spec) == host {
                    service.runs.clear();
                }
            }
        }
        for (job, runs) in status.runs {
            let Some(index) = self.service_of(host, &job) else {
                continue;
            };
            let service = &mut registry.services[index];
            // The console keeps what it saw before, the agent the newest.
            let newest: Vec<u64> = runs.iter().map(|r| r.run).collect();
            service.runs.retain(|r| !newest.contains(&r.run));
            service.runs.extend(runs.into_iter().take(RUNS_REPORTED));
            service.runs.make_contiguous().sort_by_key(|r| r.run);
            while service.runs.len() > registry::JOB_RUNS_KEPT {
                service.runs.pop_front();
            }
        }
    }

    /// One instance as its agent reports it: adopted while it has a process, let go when not.
    pub(super) async fn instance_status(
        &mut self,
        host: &str,
        index: usize,
        status: &RemoteInstance,
    ) {
        let key = &status.key;
        if key.replica >= MAX_REPLICAS {
            return;
        }
        let handle = if status.state.has_process() {
            self.adopt(host, index, key, Some(status))
        } else {
            self.retire(host, index, key.replica, None);
            None
        };
        if let Some(handle) = &handle
            && let (Some(segment), Some(snapshot)) = (&handle.segment, &status.snapshot)
        {
            segment.relay(snapshot.clone());
        }
        let now = Instant::now();
        let from = {
            let mut registry = registry::write(self.supervisor.registry());
            let service = &mut registry.services[index];
            let instance = service.replica_entry(key.replica);
            if handle.is_none() {
                instance.handle = None;
                instance.id.generation = 0;
            }
            instance.pid = status.pid;
            instance.restarts = status.restarts;
            instance.version.clone_from(&status.version);
            instance.methods.clone_from(&status.methods);
            instance.cpu_percent = status.cpu_percent;
            instance.rss_bytes = status.rss_bytes;
            instance.started = status
                .uptime_ms
                .and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
            instance.heartbeat_moved = status
                .heartbeat_age_ms
                .and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
            std::mem::replace(&mut instance.state, status.state)
        };
        self.state_event(index, key.replica, from, status.state);
        // After the registry shows its state: the services waiting on it look there.
        if let Some(handle) = &handle {
            set_topics(&self.supervisor, handle, status.topics.clone());
            self.routable(handle, status.routable, false).await;
        }
        if from != status.state {
            self.supervisor.remote_changed();
        }
    }

    /// Log lines of `host`'s services, kept as their own: made visible and cut to the longest
    /// line, as the console's own ingest does (an agent is not trusted to have done it).
    pub(super) fn logs(&mut self, host: &str, batch: LogBatch) {
        let store = self.supervisor.logs().clone();
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        for line in batch.lines {
            if self.service_of(host, &line.service).is_none() {
                continue;
            }
            let name = names
                .entry(line.service.clone())
                .or_insert_with(|| Arc::from(line.service.as_str()))
                .clone();
            let mut text = line_codec::visible(&line.text);
            if text.len() > line_codec::MAX_LINE {
                text.truncate(text.floor_char_boundary(line_codec::MAX_LINE));
            }
            store.push(&name, line.replica, line.stream, text);
        }
        if batch.lost > 0 {
            tracing::warn!(%host, lost = batch.lost, "log lines of another host were lost on the way");
        }
    }

    /// Hosts not heard for [`UNREACHABLE_AFTER`] (counted from the console's start for one
    /// never heard) become unreachable.
    pub(super) fn check_silence(&mut self) {
        let silent: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.reachable)
            .filter(|(_, h)| h.heard.unwrap_or(self.started).elapsed() > UNREACHABLE_AFTER)
            .map(|(name, _)| name.clone())
            .collect();
        for host in silent {
            let Some(entry) = self.hosts.get_mut(&host) else {
                continue;
            };
            entry.reachable = false;
            let slots: Vec<(usize, u32)> = entry.tracked.keys().copied().collect();
            for (index, replica) in slots {
                self.retire(&host, index, replica, Some(InstanceState::Unreachable));
            }
            self.set_unreachable(&host, true);
            let silent_for = UNREACHABLE_AFTER.as_secs_f64();
            self.alert(
                &host,
                format!("host `{host}` is unreachable: its agent has not been heard for {silent_for:.1} s"),
            );
        }
    }

    /// Marks every service of `host` (un)reachable: the router answers their callers
    /// `unavailable` at once rather than hold their requests.
    pub(super) fn set_unreachable(&self, host: &str, unreachable: bool) {
        let mut registry = registry::write(self.supervisor.registry());
        for service in registry.services.iter_mut() {
            if self.stack.host_of(&service.spec) == host {
                service.unreachable = unreachable;
                if unreachable {
                    for instance in &mut service.instances {
                        instance.state = InstanceState::Unreachable;
                    }
                }
            }
        }
    }
}
