//! An operator's commands: start, stop, restart (rolling, for services), kill, scale and
//! running a job, with the stopping and slot bookkeeping they share.

use std::{collections::VecDeque, time::SystemTime};

use super::{Core, Intent, Slot};
use crate::{
    event::EventKind,
    registry::{self, InstanceId, InstanceState, JOB_RUNS_KEPT, JobRun},
    stack::ServiceKind,
    supervisor::{
        Command, ControlError, MAX_REPLICAS, Reply, Request, instance::Control,
        replicas::removal_order,
    },
};

impl Core {
    // ----- commands -------------------------------------------------------------------------

    pub(super) async fn command(&mut self, request: Request) {
        let result = self.execute(request.command).await;
        let _ = request.reply.send(result);
    }

    async fn execute(&mut self, command: Command) -> Result<Reply, ControlError> {
        let name = match &command {
            Command::Start(n)
            | Command::Stop(n)
            | Command::Restart(n)
            | Command::Kill(n)
            | Command::Scale(n, _)
            | Command::RunJob(n, _)
            | Command::ResetBreaker(n) => n.clone(),
        };
        let index = self
            .index_of(&name)
            .ok_or_else(|| ControlError::UnknownService(name.clone()))?;
        let is_job = self.stack.services[index].kind == ServiceKind::Job;
        match command {
            Command::Start(_) if is_job => self.run_job(index, None).await,
            Command::Start(_) => {
                self.forgive(index);
                self.pending.remove(&index);
                self.start_service(index).await;
                Ok(Reply::Done)
            }
            Command::Stop(_) => {
                self.stop_service(index, Intent::Stop);
                Ok(Reply::Done)
            }
            Command::Restart(_) if is_job => {
                let params = registry::read(&self.registry).services[index]
                    .runs
                    .back()
                    .map(|run| run.params.clone());
                self.run_job(index, params).await
            }
            Command::Restart(_) => {
                self.rolling_restart(index).await;
                Ok(Reply::Done)
            }
            Command::Kill(_) => {
                for (slot, control) in &self.controls {
                    if slot.0 == index {
                        let _ = control.try_send(Control::Kill);
                    }
                }
                Ok(Reply::Done)
            }
            Command::Scale(_, _) if is_job => Err(ControlError::IsAJob(name)),
            Command::Scale(_, replicas) => {
                if replicas == 0 || replicas > MAX_REPLICAS {
                    return Err(ControlError::BadReplicas {
                        asked: replicas,
                        max: MAX_REPLICAS,
                    });
                }
                self.scale(index, replicas).await;
                Ok(Reply::Done)
            }
            Command::RunJob(_, _) if !is_job => Err(ControlError::NotAJob(name)),
            Command::RunJob(_, params) => self.run_job(index, params).await,
            Command::ResetBreaker(_) => {
                // Closing is announced by the router, as any other breaker transition.
                let was_open = self.router.reset_breaker(&name).unwrap_or(false);
                tracing::info!(service = %name, was_open, "breaker reset by hand");
                Ok(Reply::Done)
            }
        }
    }

    /// An operator's start or restart forgives past failures.
    fn forgive(&mut self, index: usize) {
        for (slot, tracker) in &mut self.trackers {
            if slot.0 == index {
                tracker.reset();
            }
        }
    }

    fn stop_service(&mut self, index: usize, intent: Intent) {
        self.pending.remove(&index);
        self.rollouts.remove(&index);
        let grace = self.stack.services[index].shutdown_grace;
        let waiting: Vec<InstanceId> = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.wanted = false;
            service.waiting_on.clear();
            // A stopped service is not tried again: no next try is due.
            for instance in &mut service.instances {
                instance.retry_at = None;
            }
            service
                .instances
                .iter()
                .filter(|i| i.state == InstanceState::Backoff)
                .map(|i| i.id)
                .collect()
        };
        // Instances waiting out a backoff have no process: they are simply stopped.
        for id in waiting {
            self.set_state(id, InstanceState::Stopped);
        }
        self.stop_processes(index, grace, intent);
    }

    /// Stops every replica of service `index` that has a process.
    pub(super) fn stop_processes(
        &mut self,
        index: usize,
        grace: std::time::Duration,
        intent: Intent,
    ) {
        // The service's own replicas, from the registry: scanning every slot of the stack
        // here made a shutdown, which stops services one by one, quadratic per exit.
        let slots: Vec<Slot> = registry::read(&self.registry)
            .services
            .get(index)
            .map(|service| {
                service
                    .instances
                    .iter()
                    .map(|i| (index, i.id.replica))
                    .filter(|slot| self.controls.contains_key(slot))
                    .collect()
            })
            .unwrap_or_default();
        for slot in slots {
            self.stop_instance(slot, grace, intent);
        }
    }

    pub(super) fn stop_instance(&mut self, slot: Slot, grace: std::time::Duration, intent: Intent) {
        let Some(control) = self.controls.get(&slot) else {
            return;
        };
        if let Some(current) = self.intents.get_mut(&slot) {
            // Already stopping; a stronger intent (Remove, Stop) wins over Replace.
            if intent != Intent::Replace {
                *current = intent;
            }
            return;
        }
        let signal = self.stack.services[slot.0].stop_signal;
        let _ = control.try_send(Control::Stop { grace, signal });
        self.intents.insert(slot, intent);
        let (id, handle) = {
            let registry = registry::read(&self.registry);
            let instance = registry
                .services
                .get(slot.0)
                .and_then(|s| s.replica(slot.1));
            (
                instance.map(|i| i.id),
                instance.and_then(|i| i.handle.clone()),
            )
        };
        // From now on nothing new is routed to it: the instance task queues Shutdown only when
        // it next runs, and a request routed in between would be taken by a service that was
        // told to stop (tests/services.rs `orders_check_their_user_and_never_hang` saw it under
        // load).
        if let Some(handle) = handle {
            handle
                .routable
                .store(false, std::sync::atomic::Ordering::Release);
        }
        if let Some(id) = id {
            self.set_state(id, InstanceState::Stopping);
        }
    }

    async fn rolling_restart(&mut self, index: usize) {
        self.forgive(index);
        let running: Vec<u32> = {
            let registry = registry::read(&self.registry);
            registry.services[index]
                .instances
                .iter()
                .filter(|i| i.state.has_process())
                .map(|i| i.id.replica)
                .collect()
        };
        if running.is_empty() {
            self.pending.remove(&index);
            self.start_service(index).await;
            return;
        }
        let mut queue: VecDeque<u32> = running.into();
        if let Some(first) = queue.pop_front() {
            let grace = self.stack.services[index].shutdown_grace;
            self.stop_instance((index, first), grace, Intent::Replace);
        }
        self.rollouts.insert(index, queue);
    }

    /// Moves a rolling restart on once the replica it replaced is ready.
    pub(super) fn continue_rollout(&mut self, index: usize) {
        let Some(queue) = self.rollouts.get_mut(&index) else {
            return;
        };
        let next = queue.pop_front();
        if queue.is_empty() && next.is_none() {
            self.rollouts.remove(&index);
            return;
        }
        if let Some(replica) = next {
            let grace = self.stack.services[index].shutdown_grace;
            self.stop_instance((index, replica), grace, Intent::Replace);
        }
    }

    /// Sets the wanted number of replicas. Scaling out adds replicas under the smallest free
    /// numbers; scaling in removes replicas in [`removal_order`], whatever their numbers.
    pub(super) async fn scale(&mut self, index: usize, replicas: u32) {
        let (members, victims, wanted) = {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.replicas = replicas;
            // Replicas already on their way out do not count.
            let members: Vec<_> = service
                .instances
                .iter()
                .filter(|i| self.intents.get(&(index, i.id.replica)) != Some(&Intent::Remove))
                .collect();
            let surplus = members.len().saturating_sub(replicas as usize);
            let victims: Vec<u32> = removal_order(members.iter().copied())
                .into_iter()
                .take(surplus)
                .collect();
            (members.len(), victims, service.wanted)
        };
        tracing::info!(
            service = %self.stack.services[index].name,
            replicas,
            removing = ?victims,
            "scale"
        );
        for replica in victims {
            self.remove_replica(index, replica);
        }
        if wanted {
            for _ in members..replicas as usize {
                let replica = registry::read(&self.registry).services[index].free_replica();
                self.spawn_instance((index, replica), String::new(), false)
                    .await;
            }
        }
    }

    /// Removes one replica: stopped first when it has a process, dropped at once otherwise
    /// (its pending restart, if any, then finds no instance and does nothing).
    fn remove_replica(&mut self, index: usize, replica: u32) {
        if self.controls.contains_key(&(index, replica)) {
            let grace = self.stack.services[index].shutdown_grace;
            self.stop_instance((index, replica), grace, Intent::Remove);
        } else {
            self.drop_replica(index, replica);
        }
    }

    /// Forgets a replica that has no process any more, and the subscriptions it held.
    pub(super) fn drop_replica(&mut self, index: usize, replica: u32) {
        self.trackers.remove(&(index, replica));
        registry::write(&self.registry).services[index]
            .instances
            .retain(|i| i.id.replica != replica || i.state.has_process());
        self.router
            .replica_removed(&self.stack.services[index].name, replica);
    }

    pub(super) async fn run_job(
        &mut self,
        index: usize,
        params: Option<String>,
    ) -> Result<Reply, ControlError> {
        if self.controls.contains_key(&(index, 0)) {
            return Err(ControlError::AlreadyRunning(
                self.stack.services[index].name.clone(),
            ));
        }
        let params = params.unwrap_or_else(|| self.stack.services[index].params.clone());
        if !params.trim().is_empty() {
            serde_json::from_str::<serde_json::Value>(&params)
                .map_err(|err| ControlError::BadParams(err.to_string()))?;
        }
        let run = {
            let counter = self.job_runs.entry(index).or_insert(0);
            *counter += 1;
            *counter
        };
        {
            let mut registry = registry::write(&self.registry);
            let service = &mut registry.services[index];
            service.wanted = true;
            if service.runs.len() == JOB_RUNS_KEPT {
                service.runs.pop_front();
            }
            service.runs.push_back(JobRun {
                run,
                params: params.clone(),
                started_at: SystemTime::now(),
                duration: None,
                exit: None,
                result: None,
            });
        }
        self.emit(index, None, EventKind::JobStarted { run });
        self.spawn_instance((index, 0), params, false).await;
        Ok(Reply::JobRun(run))
    }
}
