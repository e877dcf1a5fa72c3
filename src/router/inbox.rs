//! An instance's inbound queue: bounded, with priority lanes, feeding its stdin writer.
//!
//! Requests and events go into the lane of their priority (0 to 3) and the writer always takes
//! from the highest non-empty lane, so a priority-3 request overtakes a backlog of priority-1
//! work. Answers (responses, stream ends, handshake and control frames) go into a lane above all
//! of them: the caller waiting for an answer is already holding resources.
//!
//! When full: `try_send` of a request or event fails at once and the router answers the caller
//! `overloaded` (the target is congested). Answers may exceed the capacity by up to the same
//! amount again, because refusing them would leave a caller hanging; past that they are dropped
//! and counted, and the caller's own deadline ends its wait.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use switchboard_protocol::{Envelope, Kind};
use tokio::sync::Notify;

const LANES: usize = 5;
const ANSWER_LANE: usize = LANES - 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The queue is full; the frame is handed back.
    Full(Box<Envelope>),
    /// The instance is gone.
    Closed,
}

struct Lanes {
    lanes: [VecDeque<Envelope>; LANES],
    len: usize,
    closed: bool,
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
            closed: false,
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
        _ => ANSWER_LANE,
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inbox {
    /// Queues a frame without waiting.
    pub fn try_send(&self, envelope: Envelope) -> Result<(), SendError> {
        let lane = lane(&envelope);
        {
            let mut lanes = self.shared.lock();
            if lanes.closed {
                return Err(SendError::Closed);
            }
            let limit = if lane == ANSWER_LANE {
                self.shared.capacity * 2
            } else {
                self.shared.capacity
            };
            if lanes.len >= limit {
                if lane == ANSWER_LANE {
                    self.shared.dropped_answers.fetch_add(1, Ordering::Relaxed);
                }
                return Err(SendError::Full(Box::new(envelope)));
            }
            lanes.lanes[lane].push_back(envelope);
            lanes.len += 1;
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
    /// The next frame, highest lane first; `None` once closed and drained.
    pub async fn recv(&mut self) -> Option<Envelope> {
        let shared = self.shared.clone();
        loop {
            // Registered before checking, so a send between the check and the wait is not missed.
            let notified = shared.ready.notified();
            match self.try_recv() {
                Ok(envelope) => return Some(envelope),
                Err(true) => return None,
                Err(false) => notified.await,
            }
        }
    }

    /// The next frame if one is waiting; `Err(true)` when closed and empty.
    pub fn try_recv(&mut self) -> Result<Envelope, bool> {
        let mut lanes = self.shared.lock();
        for lane in (0..LANES).rev() {
            if let Some(envelope) = lanes.lanes[lane].pop_front() {
                lanes.len -= 1;
                return Ok(envelope);
            }
        }
        Err(lanes.closed)
    }

    /// Refuses new frames; those already queued can still be received.
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
    use switchboard_protocol::Priority;

    use super::*;

    fn request(id: u64, priority: u8) -> Envelope {
        Envelope {
            id,
            priority: Priority(priority),
            kind: Kind::Request,
            ..Envelope::default()
        }
    }

    #[tokio::test]
    async fn higher_priority_and_answers_go_first() {
        let (tx, mut rx) = inbox(10);
        tx.try_send(request(1, 1)).unwrap();
        tx.try_send(request(2, 0)).unwrap();
        tx.try_send(request(3, 3)).unwrap();
        tx.try_send(request(4, 200)).unwrap();
        tx.try_send(Envelope {
            id: 5,
            kind: Kind::Response(switchboard_protocol::Status::Ok),
            ..Envelope::default()
        })
        .unwrap();
        let mut order = Vec::new();
        while let Ok(e) = rx.try_recv() {
            order.push(e.id);
        }
        assert_eq!(order, [5, 3, 4, 1, 2]);
    }

    #[tokio::test]
    async fn full_refuses_requests_but_answers_get_an_allowance() {
        let (tx, mut rx) = inbox(2);
        tx.try_send(request(1, 1)).unwrap();
        tx.try_send(request(2, 1)).unwrap();
        assert!(matches!(
            tx.try_send(request(3, 1)),
            Err(SendError::Full(_))
        ));
        let answer = || Envelope {
            kind: Kind::Response(switchboard_protocol::Status::Ok),
            ..Envelope::default()
        };
        tx.try_send(answer()).unwrap();
        tx.try_send(answer()).unwrap();
        assert!(matches!(tx.try_send(answer()), Err(SendError::Full(_))));
        assert_eq!(tx.dropped_answers(), 1);
        rx.close();
        assert_eq!(tx.try_send(request(9, 1)), Err(SendError::Closed));
        let mut drained = 0;
        while rx.recv().await.is_some() {
            drained += 1;
        }
        assert_eq!(drained, 4, "queued frames survive close");
    }

    #[tokio::test]
    async fn recv_wakes_on_send() {
        let (tx, mut rx) = inbox(4);
        let waiter = tokio::spawn(async move { rx.recv().await.map(|e| e.id) });
        tokio::task::yield_now().await;
        tx.try_send(request(42, 1)).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(42));
    }
}
