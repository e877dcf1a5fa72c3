//! The seam between routing and transport: the router reaches every instance through a
//! [`Link`], and knows nothing else about how frames get there.
//!
//! Today every instance is a child process, reached through its stdin pipe: the link is its
//! [`Inbox`], drained by the instance's writer task. A service on another host would get a link
//! that publishes to its NATS subject instead; routing, deadlines, breakers, holds, streams and
//! tracing stay as they are, because they only ever call [`Link::try_send`].

use switchboard_protocol::Envelope;

use super::{Inbox, SendError};

/// How the router hands a frame to one instance. Never blocks and never awaits: the router
/// runs on the hot path, so a link that cannot take a frame now says so (`Full`, and the
/// caller is answered `overloaded`) rather than waiting.
pub trait Link: Send + Sync {
    /// Queues `envelope` for the instance. By reference: the pipe transport encodes it as it
    /// queues it, so it never needs the envelope itself (and a held copy is the caller's).
    fn try_send(&self, envelope: &Envelope) -> Result<(), SendError>;
    /// Frames queued and not yet handed to the transport.
    fn queued(&self) -> usize;
    /// The transport, for logs and the console: "stdin pipe", "nats".
    fn transport(&self) -> &'static str;
}

impl Link for Inbox {
    fn try_send(&self, envelope: &Envelope) -> Result<(), SendError> {
        Inbox::try_send(self, envelope)
    }

    fn queued(&self) -> usize {
        self.len()
    }

    fn transport(&self) -> &'static str {
        "stdin pipe"
    }
}
