//! An instance's inbound queue: bounded, with priority lanes, feeding its stdin writer.
//!
//! Requests and events go into the lane of their priority (0 to 3) and the writer always takes
//! the highest lanes first, so a priority-3 request overtakes a backlog of priority-1 work.
//! Answers (responses, stream ends, handshake and control frames) go into a lane above all of
//! them: the caller waiting for an answer is already holding resources.
//!
//! A frame is encoded as it is queued, into its lane's buffer, and the writer takes whole lanes
//! and writes them with one system call: the router moves no envelope through a queue, and the
//! writer's turn is a swap of buffers and a write (see `write_stdin`).
//!
//! Shutdown is queued behind every request and event already queued (in the lowest lane, after
//! what it holds), and from then on requests and events are refused with
//! [`SendError::Draining`], under the same lock: the service sees every request the router gave
//! it before its Shutdown, and none after, and the router sends the rest elsewhere.
//!
//! When full: `try_send` of a request or event fails at once and the router answers the caller
//! `overloaded` (the target is congested). Answers may exceed the capacity by up to the same
//! amount again, because refusing them would leave a caller hanging; past that they are dropped
//! and counted, and the caller's own deadline ends its wait.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use bytes::BytesMut;
use switchboard_protocol::{Envelope, Kind, codec::FrameCodec};
use tokio::sync::Notify;
use tokio_util::codec::Encoder;

const LANES: usize = 5;
const ANSWER_LANE: usize = LANES - 1;
/// The most capacity a lane's buffer keeps once written: one burst of big frames must not pin
/// its size in every instance's inbox for good.
const LANE_KEEP: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The queue is full.
    Full,
    /// The instance is gone.
    Closed,
    /// The instance was sent Shutdown: a request or event must go to another replica.
    Draining,
    /// The frame, as it would go down the pipe, is over the frame limit.
    TooLarge,
}

struct Lanes {
    /// Encoded frames, one buffer per lane.
    lanes: [BytesMut; LANES],
    /// Frames queued, in all lanes.
    len: usize,
    codec: FrameCodec,
    closed: bool,
    /// Shutdown is queued: no request or event may follow it.
    draining: bool,
}

struct Shared {
    lanes: Mutex<Lanes>,
    ready: Notify,
    capacity: usize,
    dropped_answers: AtomicU64,
}

/// The sending side, held by the router (through the instance handle). Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<Shared>,
}

/// The receiving side, owned by the instance's stdin writer.
pub struct InboxReceiver {
    shared: Arc<Shared>,
}

pub fn inbox(capacity: usize) -> (Inbox, InboxReceiver) {
    let shared = Arc::new(Shared {
        lanes: Mutex::new(Lanes {
            lanes: Default::default(),
            len: 0,
            codec: FrameCodec::new(),
            closed: false,
            draining: false,
        }),
        ready: Notify::new(),
        capacity: capacity.max(1),
        dropped_answers: AtomicU64::new(0),
    });
    (
        Inbox {
            shared: shared.clone(),
        },
        InboxReceiver { shared },
    )
}

fn lane(envelope: &Envelope) -> usize {
    match envelope.kind {
        // Stream items ride in the answer lane with their stream's end, so the end can never
        // overtake them; the credit bounds how many there are.
        Kind::Request | Kind::Event => usize::from(envelope.priority.0).min(ANSWER_LANE - 1),
        // Behind everything queued: the writer takes the lowest lane last.
        Kind::Shutdown => 0,
        _ => ANSWER_LANE,
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        // Every change under this lock is one append or one take: a panic cannot leave it
        // half done.
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inbox {
    /// Queues a frame without waiting.
    pub fn try_send(&self, envelope: &Envelope) -> Result<(), SendError> {
        let lane = lane(envelope);
        {
            let mut lanes = self.shared.lock();
            if lanes.closed {
                return Err(SendError::Closed);
            }
            let work = matches!(envelope.kind, Kind::Request | Kind::Event);
            if work && lanes.draining {
                return Err(SendError::Draining);
            }
            let shutdown = matches!(envelope.kind, Kind::Shutdown);
            lanes.draining |= shutdown;
            // Shutdown is never refused for room: it is how a congested instance is stopped.
            let limit = if shutdown {
                usize::MAX
            } else if lane == ANSWER_LANE {
                self.shared.capacity * 2
            } else {
                self.shared.capacity
            };
            if lanes.len >= limit {
                if lane == ANSWER_LANE {
                    self.shared.dropped_answers.fetch_add(1, Ordering::Relaxed);
                }
                return Err(SendError::Full);
            }
            let was_empty = lanes.len == 0;
            let Lanes {
                lanes: bufs, codec, ..
            } = &mut *lanes;
            // A refused frame leaves nothing behind in the lane.
            codec
                .encode(envelope, &mut bufs[lane])
                .map_err(|_| SendError::TooLarge)?;
            lanes.len += 1;
            // The writer waits only once it found the queue empty: only the first frame
            // after that needs to wake it.
            if !was_empty {
                return Ok(());
            }
        }
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.shared.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Answers dropped because even the answer allowance was exhausted.
    pub fn dropped_answers(&self) -> u64 {
        self.shared.dropped_answers.load(Ordering::Relaxed)
    }
}

impl InboxReceiver {
    /// Waits until a frame is queued: `true`, or `false` once closed and drained.
    pub async fn ready(&mut self) -> bool {
        let shared = self.shared.clone();
        loop {
            // Registered before checking, so a send between the check and the wait is not missed.
            let notified = shared.ready.notified();
            {
                let lanes = shared.lock();
                if lanes.len > 0 {
                    return true;
                }
                if lanes.closed {
                    return false;
                }
            }
            notified.await;
        }
    }

    /// Moves every queued frame into `batch` (emptied first), the highest lane first, and
    /// returns how many there were.
    pub fn take(&mut self, batch: &mut BytesMut) -> usize {
        batch.clear();
        let mut lanes = self.shared.lock();
        let taken = std::mem::take(&mut lanes.len);
        for lane in lanes.lanes.iter_mut().rev() {
            if lane.is_empty() {
                continue;
            }
            if batch.is_empty() {
                // Usually one lane holds everything: hand its buffer over whole.
                std::mem::swap(batch, lane);
            } else {
                batch.extend_from_slice(lane);
                lane.clear();
            }
            if lane.capacity() > LANE_KEEP {
                *lane = BytesMut::new();
            }
        }
        taken
    }

    /// Refuses new frames; those already queued can still be taken.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
    }
}

impl Drop for InboxReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use switchboard_protocol::{Body, Priority, codec::Frame};
    use tokio_util::codec::Decoder;

    use super::*;

    fn request(id: u64, priority: u8) -> Envelope {
        Envelope {
            id,
            priority: Priority(priority),
            kind: Kind::Request,
            ..Envelope::default()
        }
    }

    fn answer(id: u64) -> Envelope {
        Envelope {
            id,
            kind: Kind::Response(switchboard_protocol::Status::Ok),
            ..Envelope::default()
        }
    }

    /// The ids of the frames taken, in the order they would be written.
    fn take_ids(rx: &mut InboxReceiver) -> Vec<u64> {
        let mut batch = BytesMut::new();
        let taken = rx.take(&mut batch);
        let mut codec = FrameCodec::new();
        let mut ids = Vec::new();
        while let Some(frame) = codec.decode(&mut batch).unwrap() {
            match frame {
                Frame::Message(envelope) => ids.push(envelope.id),
                Frame::Malformed(bad) => panic!("{bad:?}"),
            }
        }
        assert_eq!(ids.len(), taken);
        ids
    }

    #[tokio::test]
    async fn higher_priority_and_answers_go_first() {
        let (tx, mut rx) = inbox(10);
        tx.try_send(&request(1, 1)).unwrap();
        tx.try_send(&request(2, 0)).unwrap();
        tx.try_send(&request(3, 3)).unwrap();
        tx.try_send(&request(4, 200)).unwrap();
        tx.try_send(&answer(5)).unwrap();
        tx.try_send(&request(6, 1)).unwrap();
        assert_eq!(tx.len(), 6);
        assert_eq!(take_ids(&mut rx), [5, 3, 4, 1, 6, 2]);
        assert!(tx.is_empty());
        // Lanes are reused after a take.
        tx.try_send(&request(7, 0)).unwrap();
        tx.try_send(&request(8, 2)).unwrap();
        assert_eq!(take_ids(&mut rx), [8, 7]);
    }

    #[tokio::test]
    async fn full_refuses_requests_but_answers_get_an_allowance() {
        let (tx, mut rx) = inbox(2);
        tx.try_send(&request(1, 1)).unwrap();
        tx.try_send(&request(2, 1)).unwrap();
        assert_eq!(tx.try_send(&request(3, 1)), Err(SendError::Full));
        tx.try_send(&answer(4)).unwrap();
        tx.try_send(&answer(5)).unwrap();
        assert_eq!(tx.try_send(&answer(6)), Err(SendError::Full));
        assert_eq!(tx.dropped_answers(), 1);
        rx.close();
        assert_eq!(tx.try_send(&request(9, 1)), Err(SendError::Closed));
        assert!(rx.ready().await, "queued frames survive close");
        assert_eq!(take_ids(&mut rx), [4, 5, 1, 2]);
        assert!(!rx.ready().await, "closed and drained");
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_and_leaves_nothing_behind() {
        let (tx, mut rx) = inbox(4);
        tx.try_send(&request(1, 1)).unwrap();
        let huge = Envelope {
            body: Body::Postcard(Bytes::from(
                vec![1u8; switchboard_protocol::codec::DEFAULT_MAX_FRAME],
            )),
            ..request(2, 1)
        };
        assert_eq!(tx.try_send(&huge), Err(SendError::TooLarge));
        tx.try_send(&request(3, 1)).unwrap();
        assert_eq!(take_ids(&mut rx), [1, 3]);
    }

    #[tokio::test]
    async fn ready_wakes_on_send() {
        let (tx, mut rx) = inbox(4);
        let waiter = tokio::spawn(async move {
            let ready = rx.ready().await;
            (ready, take_ids(&mut rx))
        });
        tokio::task::yield_now().await;
        tx.try_send(&request(42, 1)).unwrap();
        assert_eq!(waiter.await.unwrap(), (true, vec![42]));
    }

    #[test]
    fn shutdown_goes_behind_what_is_queued_and_no_request_follows_it() {
        let (tx, mut rx) = inbox(4);
        for (id, priority) in [(1, 0), (2, 3), (3, 1), (4, 0)] {
            tx.try_send(&request(id, priority)).unwrap();
        }
        let shutdown = Envelope {
            id: 99,
            kind: Kind::Shutdown,
            ..Envelope::default()
        };
        // Full (4 of 4), and still taken: it is how a congested instance is stopped.
        tx.try_send(&shutdown).unwrap();
        assert_eq!(tx.try_send(&request(5, 3)), Err(SendError::Draining));
        let event = Envelope {
            kind: Kind::Event,
            ..request(6, 0)
        };
        assert_eq!(tx.try_send(&event), Err(SendError::Draining));
        // Answers still reach a draining service: it may be waiting on its own calls.
        tx.try_send(&answer(7)).unwrap();
        assert_eq!(take_ids(&mut rx), [7, 2, 3, 1, 4, 99]);
    }
}
