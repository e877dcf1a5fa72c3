//! Durable topics: an event on a topic the stack declares durable (`[topics."order.*"]
//! durable = true`) is not delivered from memory; it is handed to a [`DurableTopics`] store
//! (JetStream, see `hosts::durable`), which delivers it to each subscribing service at least
//! once, with a `correlation` the service acknowledges (`Ack`) after handling it.

use switchboard_protocol::Envelope;

use super::Router;
use crate::registry::InstanceHandle;

/// Where the events of durable topics go. Never blocks: the store queues what it takes.
pub trait DurableTopics: Send + Sync {
    /// Takes `event` when its topic is durable (true), to be stored and delivered by the store;
    /// false leaves it to the router.
    fn publish(&self, event: &Envelope) -> bool;
    /// `from` acknowledged the durable delivery `delivery`: it was handled.
    fn acked(&self, from: &InstanceHandle, delivery: u64);
}

impl Router {
    /// Hands durable topics' events to `store` from now on. Set once, before any service starts.
    pub fn set_durable(&self, store: std::sync::Arc<dyn DurableTopics>) {
        let _ = self.inner.durable.set(store);
    }

    /// Whether the store took `event`.
    pub(super) fn durable_event(&self, event: &Envelope) -> bool {
        self.inner
            .durable
            .get()
            .is_some_and(|store| store.publish(event))
    }

    pub(super) fn acked(&self, from: &InstanceHandle, delivery: u64) {
        match self.inner.durable.get() {
            Some(store) => store.acked(from, delivery),
            None => tracing::debug!(service = %from.service, "an Ack without durable topics"),
        }
    }
}
