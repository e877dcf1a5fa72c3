//! Events: each service subscribed to a matching topic gets one once, on its least busy ready
//! replica, or when it is back if it is restarting.

use std::sync::atomic::Ordering;

use switchboard_protocol::{Envelope, topic::topic_matches};

use super::{Router, lock};
use crate::registry;

impl Router {
    /// Records the topic patterns an instance of `service` subscribed to.
    pub fn subscriptions_changed(&self, service: &str, patterns: &[String]) {
        lock(&self.inner.topics).insert(service.to_string(), patterns.to_vec());
    }

    /// Sends an event to the least busy ready instance of `service`, or holds it while the
    /// service restarts.
    pub(super) fn deliver_event(&self, service: &str, event: &Envelope) {
        let target = {
            let registry = registry::read(&self.inner.registry);
            let Some(entry) = registry.service(service) else {
                return;
            };
            let start = self.rotation_start(service, entry.instances.len());
            let (head, tail) = entry.instances.split_at(start);
            // `min_by_key` keeps the first of equals: the rotation decides which that is.
            let best = tail
                .iter()
                .chain(head)
                .filter_map(|i| i.handle.as_ref())
                .filter(|h| h.is_routable())
                .min_by_key(|h| h.outstanding.load(Ordering::Relaxed))
                .cloned();
            match best {
                Some(best) => Some(best),
                None if entry.coming_back() => None,
                None => return,
            }
        };
        let Some(target) = target else {
            lock(&self.inner.held).hold_event(service, event.clone());
            return;
        };
        if target.link.try_send(event).is_err() {
            self.inner
                .counters
                .dropped_events
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(to = %service, "event dropped: subscriber congested");
        }
    }

    pub(super) fn event(&self, envelope: &Envelope) {
        // Each subscribing service gets the event once, on its least busy ready replica; one
        // that is restarting gets it when it is back.
        let subscribers: Vec<String> = lock(&self.inner.topics)
            .iter()
            .filter(|(_, patterns)| {
                patterns
                    .iter()
                    .any(|p| topic_matches(p, &envelope.destination))
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in subscribers {
            self.deliver_event(&service, envelope);
        }
    }
}
