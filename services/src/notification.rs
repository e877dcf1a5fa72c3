//! `notification`: subscribes to `order.*` and records one notification per event in
//! `notifications.db`. It is the idempotent consumer of the order outbox (see
//! `order::outbox`): an event's `event_id` is unique in the table, a redelivered event is
//! ignored, and every event, new or repeated, is acknowledged with `order.ack` only after the
//! row is committed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rusqlite::params;
use switchboard_protocol::sdk::{CallOptions, Context, HandlerError, Service};
use tokio::sync::mpsc;

use crate::{
    model::{Ack, ById, Notification, NotificationList, NotificationStats, OrderEvent},
    store::{Store, StoreError, now_ms},
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    order_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_order ON notifications (order_id);
";

/// Acknowledgements waiting to be sent. When full, an acknowledgement is dropped: the outbox
/// redelivers the event, which is then ignored and acknowledged again.
const ACK_QUEUE: usize = 4096;
/// Acknowledgements are sent in batches, at most this long after the event was recorded.
const ACK_EVERY: Duration = Duration::from_millis(100);
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn service() -> Result<Service, StoreError> {
    let store = Store::open("notifications.db", SCHEMA, &[])?;
    let duplicates = Arc::new(AtomicU64::new(0));
    let (acks, pending_acks) = mpsc::channel::<String>(ACK_QUEUE);
    let (record, for_order, stats) = (store.clone(), store.clone(), store);
    let (seen_twice, reported) = (duplicates.clone(), duplicates);
    Ok(Service::new("notification", env!("CARGO_PKG_VERSION"))
        .subscribe("order.*", move |_ctx, _topic: String, event: OrderEvent| {
            let (store, acks, duplicates) = (record.clone(), acks.clone(), seen_twice.clone());
            async move {
                let event_id = event.event_id.clone();
                let new = store.write(move |c| Ok(insert(c, &event)?)).await?;
                if !new {
                    duplicates.fetch_add(1, Ordering::Relaxed);
                }
                let _ = acks.try_send(event_id);
                Ok::<_, HandlerError>(())
            }
        })
        .method("for_order", move |_ctx, ById { id }| {
            let store = for_order.clone();
            async move {
                let notifications = store
                    .run(move |c| {
                        let mut statement = c.prepare(
                            "SELECT id, event_id, order_id, user_id, kind, message, created_at_ms
                             FROM notifications WHERE order_id = ?1 ORDER BY id",
                        )?;
                        let rows = statement
                            .query_map([id], |r| {
                                Ok(Notification {
                                    id: r.get(0)?,
                                    event_id: r.get(1)?,
                                    order_id: r.get(2)?,
                                    user_id: r.get(3)?,
                                    kind: r.get(4)?,
                                    message: r.get(5)?,
                                    created_at_ms: r.get(6)?,
                                })
                            })?
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(rows)
                    })
                    .await?;
                Ok::<_, HandlerError>(NotificationList { notifications })
            }
        })
        .method("stats", move |_ctx, (): ()| {
            let (store, duplicates) = (stats.clone(), reported.clone());
            async move {
                let total = store
                    .run(|c| {
                        Ok(c.query_row("SELECT COUNT(*) FROM notifications", [], |r| r.get(0))?)
                    })
                    .await?;
                Ok::<_, HandlerError>(NotificationStats {
                    total,
                    duplicates_ignored: duplicates.load(Ordering::Relaxed),
                    commits: store.commits(),
                })
            }
        })
        .background(move |ctx| send_acks(ctx, pending_acks)))
}

/// Records `event`; false if it was already recorded (a redelivery).
fn insert(c: &rusqlite::Connection, event: &OrderEvent) -> rusqlite::Result<bool> {
    let message = match event.kind.as_str() {
        "created" => format!(
            "Thanks for order #{}: we have it ({}).",
            event.order_id,
            cents(event.amount_cents)
        ),
        "completed" => format!("Order #{} has shipped.", event.order_id),
        other => format!("Order #{}: {other}.", event.order_id),
    };
    let changed = c.execute(
        "INSERT OR IGNORE INTO notifications (event_id, order_id, user_id, kind, message, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![event.event_id, event.order_id, event.user_id, event.kind, message, now_ms()],
    )?;
    Ok(changed == 1)
}

fn cents(amount: i64) -> String {
    format!("${}.{:02}", amount / 100, amount % 100)
}

/// Sends acknowledgements in batches. A batch that fails is dropped: those events come back.
async fn send_acks(ctx: Context, mut pending: mpsc::Receiver<String>) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = ctx.draining() => return,
            count = pending.recv_many(&mut batch, 512) => {
                if count == 0 {
                    return;
                }
            }
        }
        // Let the batch fill for a moment: one commit in `order` per batch, not per event.
        tokio::time::sleep(ACK_EVERY).await;
        while batch.len() < 4096 {
            match pending.try_recv() {
                Ok(id) => batch.push(id),
                Err(_) => break,
            }
        }
        let event_ids = std::mem::take(&mut batch);
        let count = event_ids.len();
        let acked: Result<u64, _> = ctx
            .call_with(
                "order",
                "ack",
                &Ack { event_ids },
                CallOptions::timeout(ACK_TIMEOUT),
            )
            .await;
        if let Err(err) = acked {
            tracing::warn!(cause = %err, count, "acknowledgements not delivered; the events will be redelivered");
        }
    }
}
