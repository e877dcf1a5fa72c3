//! Shutdown: nothing new starts, and services stop in reverse dependency order, each once
//! none of its dependents runs.

use super::{Core, Intent, Slot};
use crate::{
    registry::{self, InstanceId, InstanceState},
    stack::Stack,
};

impl Core {
    // ----- shutdown -------------------------------------------------------------------------

    pub(super) fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        tracing::info!("shutting down the stack");
        self.shutting_down = true;
        self.pending.clear();
        self.rollouts.clear();
        let waiting: Vec<InstanceId> = {
            let mut registry = registry::write(&self.registry);
            registry
                .services
                .iter_mut()
                .flat_map(|s| {
                    s.wanted = false;
                    s.waiting_on.clear();
                    s.instances.iter()
                })
                .filter(|i| i.state == InstanceState::Backoff)
                .map(|i| i.id)
                .collect()
        };
        for id in waiting {
            self.set_state(id, InstanceState::Stopped);
        }
    }

    /// Stops, in reverse dependency order, every instance none of whose service's dependents
    /// still runs. Runs after every event while shutting down, so it costs one pass over the
    /// running instances: with 500 services, a pass over every pair of services per event made
    /// stopping take seconds.
    pub(super) fn advance_shutdown(&mut self) {
        let mut running = vec![false; self.stack.services.len()];
        for slot in self.controls.keys() {
            running[slot.0] = true;
        }
        let due: Vec<Slot> = self
            .controls
            .keys()
            // Not yet told to stop (a replacement in progress is told again: stop wins).
            .filter(|slot| self.intents.get(slot).is_none_or(|i| *i == Intent::Replace))
            .filter(|slot| !self.dependents[slot.0].iter().any(|&d| running[d]))
            .copied()
            .collect();
        for slot in due {
            let grace = self.stack.services[slot.0].shutdown_grace;
            self.stop_instance(slot, grace, Intent::Stop);
        }
    }
}

/// For each service (by index), the services that depend on it.
pub(super) fn dependents(stack: &Stack) -> Vec<Vec<usize>> {
    let mut dependents = vec![Vec::new(); stack.services.len()];
    for (index, spec) in stack.services.iter().enumerate() {
        for dependency in &spec.depends_on {
            if let Some(on) = stack
                .services
                .iter()
                .position(|s| s.name == dependency.name)
            {
                dependents[on].push(index);
            }
        }
    }
    dependents
}
