//! Events: each service subscribed to a matching topic gets one once, on its least busy ready
//! replica, or when it is back if it is restarting.
//!
//! A subscription belongs to the replica that made it (in its Hello or a Subscribe frame); the
//! service is subscribed to a pattern while at least one of its replicas is. Replicas of one
//! service are interchangeable, so the event then goes to whichever replica is least busy, not
//! necessarily one that subscribed. A replica's patterns are kept while it restarts (its next
//! Hello replaces them), so that events for it can be held; a replica scaled away drops them.

use std::sync::atomic::Ordering;

use switchboard_protocol::{Envelope, topic::topic_matches};

use super::{Router, lock};
use crate::{registry, transport::SendError};

impl Router {
    /// Records the topic patterns replica `replica` of `service` now subscribes to, replacing
    /// what that replica had; the other replicas' subscriptions stand.
    pub fn subscriptions_changed(&self, service: &str, replica: u32, patterns: &[String]) {
        let mut topics = lock(&self.inner.topics);
        let replicas = topics.entry(service.to_string()).or_default();
        if patterns.is_empty() {
            replicas.remove(&replica);
        } else {
            replicas.insert(replica, patterns.to_vec());
        }
    }

    /// Forgets the subscriptions of `replica` of `service`: it was scaled away. (Replica
    /// numbers are names: a scale-in may remove any of them.)
    pub fn replica_removed(&self, service: &str, replica: u32) {
        if let Some(subscribed) = lock(&self.inner.topics).get_mut(service) {
            subscribed.remove(&replica);
        }
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
                // Healthy replicas first (see `supervisor::degraded`).
                .min_by_key(|h| {
                    (
                        h.degraded.load(Ordering::Relaxed),
                        h.outstanding.load(Ordering::Relaxed),
                    )
                })
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
        let sent = match target.link.try_send(event) {
            // Sent Shutdown since the pick (and unroutable since before): another replica,
            // or held for the one coming back.
            Err(SendError::Draining) if !target.is_routable() => {
                return self.deliver_event(service, event);
            }
            sent => sent,
        };
        if sent.is_err() {
            self.inner
                .counters
                .dropped_events
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(to = %service, "event dropped: subscriber congested");
        }
    }

    pub(super) fn event(&self, envelope: &Envelope) {
        if self.durable_event(envelope) {
            return;
        }
        // Each subscribing service gets the event once, on its least busy ready replica; one
        // that is restarting gets it when it is back.
        let subscribers: Vec<String> = lock(&self.inner.topics)
            .iter()
            .filter(|(_, replicas)| {
                replicas
                    .values()
                    .flatten()
                    .any(|p| topic_matches(p, &envelope.destination))
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in subscribers {
            self.deliver_event(&service, envelope);
        }
    }
}
