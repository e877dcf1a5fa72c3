//! The console's way down to a remote instance: a [`Link`] that queues the frame for its
//! host's publisher, which publishes it on `…HOST.down` for the agent to write to the
//! instance's stdin.
//!
//! When full: one bounded queue per host ([`DOWN_QUEUE`] frames). A request or event that
//! finds it full is refused at once (`Full`: the router answers the caller `overloaded`), as
//! for a local instance's inbox; so is an answer, which the router then counts as dropped and
//! whose caller's own deadline ends its wait.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use switchboard_protocol::{Envelope, codec::DEFAULT_MAX_FRAME};
use tokio::sync::mpsc;

use super::wire::InstanceKey;
use crate::transport::{Link, SendError};

/// Frames queued for one host before its callers are told `overloaded`.
pub const DOWN_QUEUE: usize = 4096;

/// A frame on its way down, and the counter of the link that queued it.
type Queued = (Bytes, Arc<AtomicUsize>);

/// The sending side of one host's down queue; one [`NatsLink`] per instance shares it.
#[derive(Clone)]
pub struct DownQueue {
    tx: mpsc::Sender<Queued>,
}

impl DownQueue {
    /// The queue and its publisher task, which ends when every sender is gone.
    pub fn start(client: async_nats::Client, subject: String) -> DownQueue {
        let (tx, rx) = mpsc::channel(DOWN_QUEUE);
        tokio::spawn(publish(client, subject, rx));
        DownQueue { tx }
    }

    pub fn link(&self, key: InstanceKey) -> NatsLink {
        NatsLink {
            key,
            tx: self.tx.clone(),
            queued: Arc::default(),
        }
    }
}

/// Publishes what is queued, in order: one publish per frame, flushed by the client in
/// batches as it writes.
async fn publish(client: async_nats::Client, subject: String, mut rx: mpsc::Receiver<Queued>) {
    let subject = async_nats::Subject::from(subject);
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        for (frame, queued) in batch.drain(..) {
            queued.fetch_sub(1, Ordering::Relaxed);
            if let Err(err) = client.publish(subject.clone(), frame).await {
                tracing::debug!(%subject, cause = %err, "cannot publish a frame down");
            }
        }
    }
}

/// A remote instance, as the router reaches it.
pub struct NatsLink {
    key: InstanceKey,
    tx: mpsc::Sender<Queued>,
    queued: Arc<AtomicUsize>,
}

impl Link for NatsLink {
    fn try_send(&self, envelope: &Envelope) -> Result<(), SendError> {
        let down = DownRef {
            key: &self.key,
            envelope,
        };
        let frame = postcard::to_allocvec(&down).map_err(|_| SendError::TooLarge)?;
        if frame.len() > DEFAULT_MAX_FRAME {
            return Err(SendError::TooLarge);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx
            .try_send((Bytes::from(frame), self.queued.clone()))
            .map_err(|err| {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                match err {
                    mpsc::error::TrySendError::Full(_) => SendError::Full,
                    mpsc::error::TrySendError::Closed(_) => SendError::Closed,
                }
            })
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn transport(&self) -> &'static str {
        "nats"
    }
}

/// [`Down`] by reference, field for field.
#[derive(serde::Serialize)]
struct DownRef<'a> {
    key: &'a InstanceKey,
    envelope: &'a Envelope,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_down_reads_back_as_down() {
        let key = InstanceKey {
            service: "user".into(),
            replica: 0,
            boot: 1,
            generation: 3,
        };
        let envelope = Envelope {
            id: 4,
            destination: "user".into(),
            method: "get".into(),
            ..Envelope::default()
        };
        let bytes = postcard::to_allocvec(&DownRef {
            key: &key,
            envelope: &envelope,
        })
        .expect("encodes");
        let down: super::super::wire::Down = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(down, super::super::wire::Down { key, envelope });
    }
}
