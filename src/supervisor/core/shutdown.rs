//! Shutdown: nothing new starts, and services stop in reverse dependency order, each once
//! none of its dependents runs.

use std::collections::{BTreeSet, HashSet};

use super::{Core, Intent};
use crate::registry::{self, InstanceId, InstanceState};

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

    /// Stops, in reverse dependency order, every service none of whose dependents still runs.
    pub(super) fn advance_shutdown(&mut self) {
        let running: BTreeSet<usize> = self.controls.keys().map(|slot| slot.0).collect();
        let stack = self.stack.clone();
        // What the running services depend on, gathered once: this runs after every exit of
        // the shutdown, and asking each service about every other made a stop of N services
        // cost N³ (seconds at 1,000).
        let needed: HashSet<&str> = running
            .iter()
            .flat_map(|&other| stack.services[other].depends_on.iter())
            .map(|d| d.name.as_str())
            .collect();
        for &index in &running {
            let dependents_running = needed.contains(stack.services[index].name.as_str());
            if !dependents_running {
                let grace = stack.services[index].shutdown_grace;
                self.stop_processes(index, grace, Intent::Stop);
            }
        }
    }
}
