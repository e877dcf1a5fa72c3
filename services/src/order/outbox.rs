//! The outbox: how `order` keeps its promise that every event of every acknowledged order is
//! delivered, although the router holds events only in memory and any process may be killed.
//!
//! 1. An event is written to the `outbox` table in the same transaction as the order change it
//!    announces, so it exists exactly when the change does.
//! 2. The relay publishes every event that has not been acknowledged, and publishes it again,
//!    with backoff, until it is.
//! 3. The consumer (`notification`) records each event in its own database under a unique
//!    `event_id`, ignoring ones it has seen, and only then acknowledges with `order.ack`.
//!
//! So each event is delivered at least once, and recorded exactly once. A crash anywhere
//! only causes redelivery, which step 3 absorbs.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rusqlite::{Connection, params};
use switchboard_protocol::sdk::Context;
use tokio::sync::Notify;

use crate::{
    model::{Order, OrderEvent},
    store::{Store, StoreError, now_ms},
};

/// Redelivery waits this long after the first attempt, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Pending events read per pass. Past this many unacknowledged (the consumer has been down a
/// long time), the newest wait until older ones are acknowledged.
const BATCH: i64 = 4096;
/// Without a wake-up, the relay looks at the table this often.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Acknowledged rows are kept this long (for inspection), then deleted.
const KEEP_ACKED: Duration = Duration::from_secs(3600);

/// Writes the event announcing `kind` (`created`, `completed`) for `order`, in the write (a
/// savepoint of a group commit) that makes the change it announces.
pub fn enqueue(tx: &Connection, order: &Order, kind: &str, at_ms: i64) -> Result<(), StoreError> {
    let event = OrderEvent {
        event_id: format!("order-{}-{kind}", order.id),
        order_id: order.id,
        user_id: order.user_id,
        kind: kind.to_owned(),
        amount_cents: order.amount_cents,
        at_ms,
    };
    let body = serde_json::to_string(&event)
        .map_err(|e| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
    tx.prepare_cached(
        "INSERT INTO outbox (event_id, topic, order_id, body, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![event.event_id, format!("order.{kind}"), order.id, body, at_ms])?;
    Ok(())
}

/// The relay's handle: wake it after a commit, acknowledge delivered events.
#[derive(Clone)]
pub struct Outbox {
    store: Store,
    wake: Arc<Notify>,
}

/// When an unacknowledged event was last sent, and how many times.
struct Attempt {
    count: u32,
    next: Instant,
}

impl Outbox {
    pub fn new(store: Store) -> Self {
        Outbox {
            store,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Marks `event_ids` delivered; unknown or already acknowledged ids are ignored, so an
    /// acknowledgement may itself be repeated. Answers how many were newly acknowledged.
    pub async fn ack(&self, event_ids: Vec<String>) -> Result<u64, StoreError> {
        if event_ids.is_empty() {
            return Ok(0);
        }
        self.store
            .write(move |c| {
                let at = now_ms();
                let mut acked = 0;
                {
                    let mut statement = c.prepare_cached(
                        "UPDATE outbox SET acked_at_ms = ?2 WHERE event_id = ?1 AND acked_at_ms IS NULL",
                    )?;
                    for id in &event_ids {
                        acked += statement.execute(params![id, at])? as u64;
                    }
                }
                Ok(acked)
            })
            .await
    }

    /// Publishes unacknowledged events until the service drains. Attempts are remembered in
    /// memory only: after a restart everything pending is simply due again.
    pub async fn relay(self, ctx: Context) {
        let mut attempts: HashMap<i64, Attempt> = HashMap::new();
        let mut last_prune = Instant::now();
        loop {
            let now = Instant::now();
            let pending = self
                .store
                .run(|c| {
                    let mut statement = c.prepare(
                        "SELECT seq, topic, body FROM outbox WHERE acked_at_ms IS NULL ORDER BY seq LIMIT ?1",
                    )?;
                    let rows = statement
                        .query_map([BATCH], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(rows)
                })
                .await;
            match pending {
                Ok(pending) => {
                    // Forget attempts of events acknowledged since.
                    let live: std::collections::HashSet<i64> =
                        pending.iter().map(|(s, _, _)| *s).collect();
                    attempts.retain(|seq, _| live.contains(seq));
                    for (seq, topic, body) in pending {
                        let attempt = attempts.entry(seq).or_insert(Attempt {
                            count: 0,
                            next: now,
                        });
                        if attempt.next > now {
                            continue;
                        }
                        let event: OrderEvent = match serde_json::from_str(&body) {
                            Ok(event) => event,
                            Err(err) => {
                                tracing::error!(seq, cause = %err, "outbox row does not decode; skipped");
                                attempt.next = now + RETRY_MAX;
                                continue;
                            }
                        };
                        if attempt.count > 0 {
                            tracing::info!(event = %event.event_id, attempt = attempt.count + 1, "redelivering");
                        }
                        if ctx.publish(&topic, &event).await.is_err() {
                            return; // the console is gone
                        }
                        let delay = RETRY_FIRST
                            .saturating_mul(1 << attempt.count.min(8))
                            .min(RETRY_MAX);
                        attempt.count += 1;
                        attempt.next = now + delay;
                    }
                }
                Err(err) => tracing::error!(cause = %err, "cannot read the outbox"),
            }
            if last_prune.elapsed() > Duration::from_secs(60) {
                last_prune = Instant::now();
                let cutoff = now_ms() - KEEP_ACKED.as_millis() as i64;
                let pruned = self
                    .store
                    .run(move |c| {
                        Ok(c.execute("DELETE FROM outbox WHERE acked_at_ms < ?1", [cutoff])?)
                    })
                    .await;
                if let Err(err) = pruned {
                    tracing::warn!(cause = %err, "cannot prune the outbox");
                }
            }
            let soonest = attempts.values().map(|a| a.next).min();
            let wait = soonest.map_or(POLL_EVERY, |t| {
                t.saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(20), POLL_EVERY)
            });
            tokio::select! {
                () = ctx.draining() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
