//! Once a second: each service's backlog against its alert bounds, and its replicas against
//! its autoscale target. Both read the sampler's figures (`monitor::backlog`); a decision to
//! scale goes the way an operator's `scale` does, and is an event and an audit entry.

use std::{collections::HashMap, time::Instant};

use super::Core;
use crate::{
    event::EventKind,
    monitor::{backlog::Backlog, metrics},
    registry,
    stack::ServiceKind,
    supervisor::{
        autoscale::{self, Load},
        backlog_alert::{self, AlertState},
    },
};

/// What the watch remembers between ticks.
#[derive(Default)]
pub(super) struct Watch {
    alerts: HashMap<usize, AlertState>,
    /// When autoscaling last changed each service.
    scaled_at: HashMap<usize, Instant>,
}

impl Core {
    pub(super) async fn watch_backlogs(&mut self) {
        let now = Instant::now();
        for (index, backlog, in_flight) in self.watched() {
            // The stack is shared and never changes: a handle on it, not a copy of the spec.
            let stack = self.stack.clone();
            let spec = &stack.services[index];
            let state = self.watch.alerts.entry(index).or_default();
            for change in
                backlog_alert::judge(state, &spec.backlog, &backlog, metrics::SAMPLE_EVERY)
            {
                self.emit(index, None, change);
            }
            // Another host's agent scales its own services.
            let Some(scale) = spec.autoscale.filter(|_| !stack.is_remote(spec)) else {
                continue;
            };
            let cooling = self
                .watch
                .scaled_at
                .get(&index)
                .is_some_and(|at| now.duration_since(*at) < scale.cooldown);
            let (wanted, current) = {
                let registry = registry::read(&self.registry);
                let service = &registry.services[index];
                (service.wanted, service.replicas)
            };
            if cooling || !wanted {
                continue;
            }
            let load = Load {
                waiting: backlog.waiting,
                in_flight,
                oldest_age: backlog.oldest_age,
                trend: backlog.trend(),
            };
            if let Some(decision) = autoscale::decide(&scale, current, &load) {
                self.watch.scaled_at.insert(index, now);
                self.autoscale(index, current, decision).await;
            }
        }
    }

    /// The services with a backlog policy and their figures, copied out of the sampler.
    fn watched(&self) -> Vec<(usize, Backlog, u64)> {
        let metrics = metrics::read(&self.metrics);
        self.stack
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == ServiceKind::Service)
            .filter(|(_, s)| {
                s.autoscale.is_some()
                    || s.backlog.grow_window.is_some()
                    || s.backlog.max_age.is_some()
            })
            .filter_map(|(index, s)| {
                let m = metrics.service(&s.name)?;
                Some((index, m.backlog.clone(), m.in_flight))
            })
            .collect()
    }

    async fn autoscale(&mut self, index: usize, from: u32, decision: autoscale::Decision) {
        let name = self.stack.services[index].name.clone();
        tracing::info!(service = %name, from, to = decision.to, reason = %decision.reason, "autoscale");
        if let Some(audit) = &self.audit {
            let target = format!("{name} to {}", decision.to);
            audit.record(
                "autoscale",
                "scale",
                &target,
                &format!("ok: {}", decision.reason),
            );
        }
        self.emit(
            index,
            None,
            EventKind::Autoscaled {
                from,
                to: decision.to,
                reason: decision.reason,
            },
        );
        self.scale(index, decision.to).await;
    }
}
