//! An agent's router: on a host other than the console's, `switchboard agent` supervises that
//! host's services with the same supervisor, but routes nothing itself. Every frame its
//! services write (requests, answers, events, stream items, and the handshake, readiness and
//! subscriptions after the agent has acted on them) goes to the console through an
//! [`Uplink`], and the console routes it exactly as it routes a frame from a local pipe.

use switchboard_protocol::Envelope;

use super::Router;
use crate::registry::InstanceHandle;

/// Where an agent's router hands its services' frames. Like [`crate::transport::Link`], it
/// never blocks: a frame that cannot be taken now is refused or dropped by the uplink's own
/// stated policy.
pub trait Uplink: Send + Sync {
    /// A frame from `from`'s stdout, for the console.
    fn frame(&self, from: &InstanceHandle, envelope: &Envelope);
    /// `gone` has exited: its callers on the console must hear `unavailable` now.
    fn gone(&self, gone: &InstanceHandle);
}

impl Router {
    /// Makes this an agent's router: from now on every frame goes up `uplink`. Set once, before
    /// any service starts; a second call is ignored.
    pub fn set_uplink(&self, uplink: std::sync::Arc<dyn Uplink>) {
        let _ = self.inner.uplink.set(uplink);
    }

    /// A frame the supervisor has handled itself (handshake, readiness, subscriptions): the
    /// console needs it too, when there is one above.
    pub fn forward(&self, from: &InstanceHandle, envelope: &Envelope) {
        if let Some(uplink) = self.inner.uplink.get() {
            uplink.frame(from, envelope);
        }
    }
}
