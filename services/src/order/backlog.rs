//! What `order` tells the console about the work waiting inside it: the accepted orders this
//! replica holds (running or queued behind `PROCESSING_LIMIT`), and when the oldest
//! of them was accepted. The console adds the replicas up, alerts when the sum keeps growing and
//! scales on it.
//!
//! Each replica counts only the orders claimed by its own index, so an order is counted once
//! however many replicas share the database. An order whose replica went away is counted again
//! when a survivor takes it over (after its lease); until then it is nobody's.

use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{OptionalExtension, params};
use switchboard_protocol::sdk::Context;

use crate::store::{Store, StoreError};

/// How often the backlog is recounted: the console samples it about once a second.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// Publishes this replica's backlog until the service drains. A failed count keeps the last
/// published value (a stale gauge beats a false zero) and is logged.
pub async fn publish(store: Store, ctx: Context) {
    let me = i64::from(ctx.instance());
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = ctx.draining() => break,
            _ = tick.tick() => {}
        }
        match store.run(move |c| count(c, me)).await {
            Ok((waiting, oldest_ms)) => {
                let oldest = oldest_ms
                    .and_then(|ms| u64::try_from(ms).ok())
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
                ctx.set_backlog(waiting, oldest);
            }
            Err(err) => tracing::warn!(cause = %err, "cannot count the backlog"),
        }
    }
}

/// Orders accepted and not completed that replica `me` holds, and the oldest one's acceptance
/// time (ms since the epoch).
fn count(c: &mut rusqlite::Connection, me: i64) -> Result<(u64, Option<i64>), StoreError> {
    let (waiting, oldest) = c
        .prepare_cached(
            "SELECT COUNT(*), MIN(created_at_ms) FROM orders
             WHERE status = 'accepted' AND claimed_by = ?1",
        )?
        .query_row(params![me], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .optional()?
        .unwrap_or((0, None));
    Ok((u64::try_from(waiting).unwrap_or(0), oldest))
}
