//! `order`: takes orders, checks the user with `user.get` under a deadline, runs each order
//! through its stages (validate, reserve, charge, ship) as task progress, and announces
//! `order.created` and `order.completed`, with a delivery guarantee (see [`outbox`]).
//! `export` streams every order after `after`, a page at a time, under the receiver's credit.
//!
//! The database is the work queue: an order is committed as `accepted` before it is
//! acknowledged, and the processor picks up every accepted order it is not already running, so
//! after a `kill -9` the new instance simply carries on with the orders that were in flight.
//!
//! Replicas share the queue without running an order twice: the replica that accepts an order
//! claims it in the same transaction, for a lease (`lease`). A replica runs only orders it
//! holds; it takes over unclaimed ones and ones whose lease lapsed (their replica died, was
//! scaled away, or has a backlog longer than the lease), and renews its own as they run. The
//! replica index is the claim, so a replica restarted after a `kill -9` carries on with its
//! orders at once instead of waiting for their leases.

pub mod backlog;
pub mod outbox;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{OptionalExtension, params};
use switchboard_protocol::{
    ErrorCode,
    sdk::{CallError, CallOptions, Context, HandlerError, Service, StreamSink},
};
use tokio::sync::Notify;

use crate::{
    model::{Ack, ById, NewOrder, Order, OrderList, Page, User},
    store::{AddedColumn, Store, StoreError, now_ms},
};

use self::outbox::Outbox;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    item TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    completed_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    order_id INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    acked_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (acked_at_ms, seq);
";

/// Columns added since the first release (see the module's doc): the replica holding an
/// accepted order, until when, and how many replicas have claimed it.
const ADDED: &[AddedColumn] = &[
    ("orders", "claimed_by", "INTEGER"),
    ("orders", "lease_until_ms", "INTEGER"),
    ("orders", "claims", "INTEGER NOT NULL DEFAULT 0"),
];

/// What can be ordered, and its unit price in cents.
pub const CATALOG: &[(&str, i64)] = &[
    ("keyboard", 4_900),
    ("mouse", 1_900),
    ("monitor", 17_900),
    ("cable", 900),
    ("headset", 7_900),
    ("webcam", 5_900),
    ("dock", 12_900),
    ("chair", 24_900),
];

pub const STAGES: [&str; 4] = ["validate", "reserve", "charge", "ship"];
pub const MAX_QUANTITY: u32 = 100;

/// Orders processed at once; the rest wait, committed, in the database.
const PROCESSING_LIMIT: usize = 32;
/// How long `user.get` may take when the caller's own deadline leaves more.
const DEFAULT_USER_TIMEOUT: Duration = Duration::from_millis(1000);
const DEFAULT_STAGE_TIME: Duration = Duration::from_millis(120);
/// The processor looks for accepted orders this often even when nobody pokes it.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// The shortest claim on an order (see [`lease`]).
const MIN_LEASE: Duration = Duration::from_secs(5);

/// How long a replica's claim on an order lasts unless renewed: twice an order's four stages,
/// and at least [`MIN_LEASE`], so that renewals are rare (each is a synced commit) and only a
/// replica that stopped running its orders loses them.
fn lease(stage_time: Duration) -> Duration {
    (stage_time * 2 * STAGES.len() as u32).max(MIN_LEASE)
}

fn lease_ms(stage_time: Duration) -> i64 {
    i64::try_from(lease(stage_time).as_millis()).unwrap_or(i64::MAX)
}

/// State shared by the handlers and the background tasks.
#[derive(Clone)]
struct Orders {
    store: Store,
    /// Poked when an order is accepted.
    accepted: Arc<Notify>,
    outbox: Outbox,
}

pub fn service() -> Result<Service, StoreError> {
    let store = Store::open("orders.db", SCHEMA, ADDED)?;
    let orders = Orders {
        outbox: Outbox::new(store.clone()),
        store,
        accepted: Arc::new(Notify::new()),
    };
    let (create, get, list, ack, export) = (
        orders.clone(),
        orders.clone(),
        orders.clone(),
        orders.clone(),
        orders.clone(),
    );
    let (process, relay, backlog) = (orders.clone(), orders.outbox.clone(), orders.store.clone());
    let commits = orders.store.clone();
    Ok(Service::new("order", env!("CARGO_PKG_VERSION"))
        .method("create", move |ctx, new: NewOrder| {
            let orders = create.clone();
            async move { orders.create(ctx, new).await }
        })
        .method("get", move |ctx, ById { id }| {
            let orders = get.clone();
            async move {
                orders
                    .store
                    .read_now(ctx.received(), |c| Ok(find(c, id)?))?
                    .ok_or_else(|| HandlerError::not_found(format!("no order {id}")))
            }
        })
        .method("list", move |_ctx, page: Page| {
            let orders = list.clone();
            async move { Ok::<_, HandlerError>(orders.list(page).await?) }
        })
        .stream(
            "export",
            move |_ctx, page: Page, sink: StreamSink<Order>| {
                let orders = export.clone();
                async move { orders.export(page, sink).await }
            },
        )
        // Group commits of this instance's database since it started, each one fsync: what
        // `switchboard bench --only gateway` divides the orders by.
        .method("commits", move |_ctx, (): ()| {
            let commits = commits.commits();
            async move { Ok::<_, HandlerError>(commits) }
        })
        .method("ack", move |_ctx, Ack { event_ids }| {
            let orders = ack.clone();
            async move { Ok::<_, HandlerError>(orders.outbox.ack(event_ids).await?) }
        })
        .background(move |ctx| async move { process.process(ctx).await })
        .background(move |ctx| async move { relay.relay(ctx).await })
        .background(move |ctx| backlog::publish(backlog, ctx)))
}

fn row_to_order(row: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: row.get(0)?,
        user_id: row.get(1)?,
        item: row.get(2)?,
        quantity: row.get(3)?,
        amount_cents: row.get(4)?,
        status: row.get(5)?,
        created_at_ms: row.get(6)?,
    })
}

const ORDER_COLUMNS: &str = "id, user_id, item, quantity, amount_cents, status, created_at_ms";

fn find(c: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<Order>> {
    c.prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"))?
        .query_row([id], row_to_order)
        .optional()
}

fn duration_setting(ctx: &Context, key: &str, default: Duration) -> Duration {
    ctx.setting(key)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default, Duration::from_millis)
}

/// What the caller of `order.create` is told when `user.get` fails.
fn user_failure(user_id: i64, err: CallError) -> HandlerError {
    match err.code() {
        ErrorCode::NotFound => HandlerError::bad_request(format!("no user {user_id}")),
        code @ (ErrorCode::Timeout
        | ErrorCode::Unavailable
        | ErrorCode::Overloaded
        | ErrorCode::CircuitOpen) => HandlerError::new(
            code,
            format!("cannot check user {user_id}: the user service answered {code}"),
        ),
        _ => {
            tracing::warn!(cause = %err, user_id, "user.get failed");
            HandlerError::new(
                ErrorCode::Unavailable,
                format!("cannot check user {user_id}"),
            )
        }
    }
}

impl Orders {
    async fn create(&self, ctx: Context, new: NewOrder) -> Result<Order, HandlerError> {
        let item = new.item.trim().to_lowercase();
        let Some(&(_, price)) = CATALOG.iter().find(|(name, _)| *name == item) else {
            let names: Vec<&str> = CATALOG.iter().map(|(n, _)| *n).collect();
            return Err(HandlerError::bad_request(format!(
                "unknown item `{}` (the catalog has {})",
                new.item,
                names.join(", ")
            )));
        };
        if new.quantity == 0 || new.quantity > MAX_QUANTITY {
            return Err(HandlerError::bad_request(format!(
                "quantity must be 1 to {MAX_QUANTITY}"
            )));
        }
        let timeout = duration_setting(&ctx, "user_timeout_ms", DEFAULT_USER_TIMEOUT);
        let _user: User = ctx
            .call_with(
                "user",
                "get",
                &ById { id: new.user_id },
                CallOptions::timeout(timeout),
            )
            .await
            .map_err(|err| user_failure(new.user_id, err))?;
        let amount_cents = price * i64::from(new.quantity);
        let (me, lease_ms) = (
            i64::from(ctx.instance()),
            lease_ms(duration_setting(&ctx, "stage_ms", DEFAULT_STAGE_TIME)),
        );
        let order = self
            .store
            .write(move |c| {
                let at = now_ms();
                // One savepoint in the next group commit: the order, its claim (by this
                // replica from the start, see the module's doc) and its event, or nothing.
                c.prepare_cached(
                    "INSERT INTO orders (user_id, item, quantity, amount_cents, status, created_at_ms,
                                         claimed_by, lease_until_ms, claims)
                     VALUES (?1, ?2, ?3, ?4, 'accepted', ?5, ?6, ?7, 1)",
                )?
                .execute(params![
                    new.user_id,
                    item,
                    new.quantity,
                    amount_cents,
                    at,
                    me,
                    at + lease_ms
                ])?;
                let order = Order {
                    id: c.last_insert_rowid(),
                    user_id: new.user_id,
                    item,
                    quantity: new.quantity,
                    amount_cents,
                    status: "accepted".into(),
                    created_at_ms: at,
                };
                // The event is committed with the order or not at all: the outbox.
                outbox::enqueue(c, &order, "created", at)?;
                Ok(order)
            })
            .await?;
        self.accepted.notify_one();
        self.outbox.wake();
        Ok(order)
    }

    async fn list(&self, page: Page) -> Result<OrderList, StoreError> {
        let limit = page.limit();
        self.store
            .run(move |c| {
                let total = c.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))?;
                let mut statement = c.prepare(&format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?;
                let mut orders = statement
                    .query_map(params![page.after, limit + 1], row_to_order)?
                    .collect::<Result<Vec<_>, _>>()?;
                // One row more than asked says whether another page follows.
                let next = if orders.len() > limit as usize {
                    orders.truncate(limit as usize);
                    orders.last().map(|o| o.id)
                } else {
                    None
                };
                Ok(OrderList {
                    orders,
                    total,
                    next,
                })
            })
            .await
    }

    /// Every order after `page.after`, read a page at a time; each page is read only when the
    /// receiver has taken the last, so a slow reader holds no more than a page in memory.
    async fn export(&self, mut page: Page, sink: StreamSink<Order>) -> Result<(), HandlerError> {
        loop {
            let list = self.list(page.clone()).await?;
            for order in &list.orders {
                sink.send(order).await?;
            }
            match list.next {
                Some(after) => page.after = after,
                None => return Ok(()),
            }
        }
    }

    /// Runs accepted orders through their stages, at most [`PROCESSING_LIMIT`] at once.
    async fn process(self, ctx: Context) {
        let stage_time = duration_setting(&ctx, "stage_ms", DEFAULT_STAGE_TIME);
        let me = i64::from(ctx.instance());
        let running: Arc<Mutex<HashSet<i64>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let free = PROCESSING_LIMIT.saturating_sub(tasks.len());
            if free > 0 {
                let busy: Vec<i64> = running
                    .lock()
                    .map(|r| r.iter().copied().collect())
                    .unwrap_or_default();
                let lease_ms = lease_ms(stage_time);
                let due = self
                    .store
                    .run(move |c| claim(c, me, lease_ms, free, &busy))
                    .await;
                match due {
                    Ok(due) => {
                        for (order, lease_until_ms) in due {
                            if let Ok(mut running) = running.lock() {
                                running.insert(order.id);
                            }
                            let (this, ctx, running) = (self.clone(), ctx.clone(), running.clone());
                            tasks.spawn(async move {
                                let id = order.id;
                                let claim = Claim {
                                    me,
                                    until_ms: lease_until_ms,
                                };
                                this.run_stages(&ctx, order, claim, stage_time).await;
                                if let Ok(mut running) = running.lock() {
                                    running.remove(&id);
                                }
                            });
                        }
                    }
                    Err(err) => tracing::error!(cause = %err, "cannot read accepted orders"),
                }
            }
            tokio::select! {
                () = ctx.draining() => break,
                () = self.accepted.notified() => {}
                Some(_) = tasks.join_next() => {}
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
        // Draining (scaled in, or stopped): the orders running finish their few stages (an
        // order cut short would run its stages again elsewhere), then the ones this replica
        // holds but has not started are handed back, so another replica takes them at once
        // rather than after their lease. A drain cut short by the console's SIGKILL leaves
        // them `accepted` and claimed: the lease hands them on, as after a crash.
        while tasks.join_next().await.is_some() {}
        match self.store.run(move |c| release(c, me)).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "handed back orders not started"),
            Err(err) => tracing::warn!(cause = %err, "cannot hand back orders"),
        }
    }

    async fn run_stages(
        &self,
        ctx: &Context,
        order: Order,
        mut claim: Claim,
        stage_time: Duration,
    ) {
        let progress = ctx.progress(&format!("order {}: {}", order.id, STAGES[0]));
        let lease_ms = lease_ms(stage_time);
        for (i, stage) in STAGES.iter().enumerate() {
            // Renewed before a stage once half the lease is gone (rarely: a fresh claim lasts
            // twice the stages), so it cannot lapse while the order runs.
            if now_ms() >= claim.until_ms - lease_ms / 2 {
                let (id, me, until_ms) = (order.id, claim.me, now_ms() + lease_ms);
                let renewed = self
                    .store
                    .write(move |c| {
                        Ok(c.execute(
                            "UPDATE orders SET lease_until_ms = ?1
                             WHERE id = ?2 AND claimed_by = ?3 AND status = 'accepted'",
                            params![until_ms, id, me],
                        )? == 1)
                    })
                    .await;
                match renewed {
                    Ok(true) => claim.until_ms = until_ms,
                    // Another replica holds it now (this one stalled past its lease), or it is
                    // done: leave it to them.
                    Ok(false) => {
                        tracing::warn!(order = id, "order taken over by another replica");
                        progress.fail();
                        return;
                    }
                    Err(err) => tracing::warn!(cause = %err, order = id, "cannot renew the claim"),
                }
            }
            progress.set_label(&format!("order {}: {stage}", order.id));
            progress.set(i as u64, STAGES.len() as u64);
            tokio::time::sleep(stage_time).await;
        }
        progress.set(STAGES.len() as u64, STAGES.len() as u64);
        let id = order.id;
        let completed = self
            .store
            .write(move |c| {
                let at = now_ms();
                let changed = c.execute(
                    "UPDATE orders SET status = 'completed', completed_at_ms = ?2
                     WHERE id = ?1 AND status = 'accepted'",
                    params![order.id, at],
                )?;
                if changed == 1 {
                    let order = Order {
                        status: "completed".into(),
                        ..order
                    };
                    outbox::enqueue(c, &order, "completed", at)?;
                }
                Ok(changed == 1)
            })
            .await;
        match completed {
            Ok(_) => {
                progress.finish();
                self.outbox.wake();
            }
            Err(err) => {
                tracing::error!(cause = %err, order = id, "cannot complete order");
                progress.fail();
            }
        }
    }
}

/// This replica's hold on an order it runs.
struct Claim {
    /// The replica index: the value of `claimed_by`.
    me: i64,
    /// When the lease lapses, in milliseconds since the Unix epoch.
    until_ms: i64,
}

/// Hands back the accepted orders replica `me` holds (it runs none of them any more): they
/// are unclaimed, and their claim is not counted, so the replica that takes one next counts
/// as its first.
fn release(c: &mut rusqlite::Connection, me: i64) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE orders SET claimed_by = NULL, lease_until_ms = NULL, claims = MAX(claims - 1, 0)
         WHERE status = 'accepted' AND claimed_by = ?1",
        params![me],
    )?)
}

/// Claims up to `free` accepted orders for replica `me`, oldest first, skipping `busy` (the ones
/// it runs already): its own, unclaimed ones, and ones whose lease lapsed. One immediate
/// transaction, so two replicas never both take an order. Writes only for a takeover or a
/// lease less than half left, so a replica running what it accepted commits nothing here.
/// Answers each order with when its lease lapses.
fn claim(
    c: &mut rusqlite::Connection,
    me: i64,
    lease_ms: i64,
    free: usize,
    busy: &[i64],
) -> Result<Vec<(Order, i64)>, StoreError> {
    let now = now_ms();
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let due = {
        let mut statement = tx.prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS}, claimed_by, lease_until_ms FROM orders
             WHERE status = 'accepted'
               AND (claimed_by IS NULL OR claimed_by = ?1 OR lease_until_ms IS NULL OR lease_until_ms < ?2)
             ORDER BY id LIMIT ?3"
        ))?;
        statement
            .query_map(params![me, now, (free + busy.len()) as i64], |row| {
                Ok((
                    row_to_order(row)?,
                    row.get::<_, Option<i64>>(7)?,
                    row.get::<_, Option<i64>>(8)?,
                ))
            })?
            .filter(|o| o.as_ref().map_or(true, |(o, _, _)| !busy.contains(&o.id)))
            .take(free)
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut orders = Vec::with_capacity(due.len());
    for (order, holder, until) in due {
        let taken_over = holder != Some(me);
        let mut until = until.unwrap_or(0);
        if taken_over || until < now + lease_ms / 2 {
            until = now + lease_ms;
            tx.prepare_cached(
                "UPDATE orders SET claimed_by = ?1, lease_until_ms = ?2, claims = claims + ?3 WHERE id = ?4",
            )?
            .execute(params![me, until, i64::from(taken_over), order.id])?;
            if taken_over && holder.is_some() {
                tracing::info!(
                    order = order.id,
                    from = holder,
                    "took over an order whose lease lapsed"
                );
            }
        }
        orders.push((order, until));
    }
    tx.commit()?;
    Ok(orders)
}
