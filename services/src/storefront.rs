//! `storefront`: a load generator that shops. It keeps a pool of customers (creating them with
//! `user.create`) and places orders with `order.create` at a steady rate, so the demo shows live
//! request rates, order progress and notifications from its first seconds.
//!
//! Settings (the stack file's `settings` table): `rate` orders per second (default 20),
//! `customers` the pool size (default 40), `invalid_percent` the share of orders deliberately
//! sent for an unknown customer (default 2), so the error columns show something real.

use std::time::Duration;

use switchboard_protocol::sdk::{CallOptions, Context, Service};

use crate::{
    model::{NewOrder, NewUser, Order, Page, User, UserList},
    order::CATALOG,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Linus",
    "Frances", "John", "Sophie", "Dennis", "Hedy", "Tim",
];

pub fn service() -> Service {
    Service::new("storefront", env!("CARGO_PKG_VERSION")).background(shop)
}

fn setting<T: std::str::FromStr>(ctx: &Context, key: &str, default: T) -> T {
    ctx.setting(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Loads the existing customers, creating more until the pool is full. Retries while user is
/// not answering.
async fn customers(ctx: &Context, wanted: usize) -> Option<Vec<i64>> {
    let mut pool = Vec::new();
    let page = Page {
        after: 0,
        limit: Some(wanted as u32),
    };
    let listed: Result<UserList, _> = ctx
        .call_with("user", "list", &page, CallOptions::timeout(CALL_TIMEOUT))
        .await;
    if let Ok(list) = listed {
        pool.extend(list.users.iter().map(|u| u.id));
    }
    let mut attempt = 0u32;
    while pool.len() < wanted {
        if ctx.is_draining() {
            return None;
        }
        let first = FIRST_NAMES[fastrand::usize(..FIRST_NAMES.len())];
        let tag: u32 = fastrand::u32(..);
        let new = NewUser {
            name: format!("{first} {tag:08x}"),
            email: format!("{}.{tag:08x}@example.com", first.to_lowercase()),
        };
        let created: Result<User, _> = ctx
            .call_with("user", "create", &new, CallOptions::timeout(CALL_TIMEOUT))
            .await;
        match created {
            Ok(user) => pool.push(user.id),
            Err(err) => {
                attempt += 1;
                tracing::warn!(cause = %err, "cannot create a customer yet");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
            }
        }
    }
    Some(pool)
}

async fn shop(ctx: Context) {
    let rate: f64 = setting(&ctx, "rate", 20.0);
    let rate = if rate.is_finite() && rate > 0.0 {
        rate.min(10_000.0)
    } else {
        20.0
    };
    let wanted: usize = setting(&ctx, "customers", 40usize).clamp(1, 10_000);
    let invalid_percent: u32 = setting(&ctx, "invalid_percent", 2u32).min(100);
    let Some(pool) = customers(&ctx, wanted).await else {
        return;
    };
    tracing::info!(customers = pool.len(), rate, "shopping");
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut placed, mut failed, mut rejected) = (0u64, 0u64, 0u64);
    let mut orders = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = ctx.draining() => break,
            _ = ticks.tick() => {}
            Some(done) = orders.join_next() => {
                match done {
                    Ok(Ok(_)) => placed += 1,
                    Ok(Err(switchboard_protocol::ErrorCode::BadRequest)) => rejected += 1,
                    _ => failed += 1,
                }
                if (placed + failed + rejected).is_multiple_of((rate as u64 * 10).max(1)) {
                    tracing::info!(placed, rejected, failed, "storefront");
                }
                continue;
            }
        }
        // Orders run concurrently, so a slow order service lowers the rate only once this many
        // are outstanding.
        if orders.len() >= 256 {
            continue;
        }
        let (item, _) = CATALOG[fastrand::usize(..CATALOG.len())];
        let user_id = if fastrand::u32(..100) < invalid_percent {
            -1 - i64::from(fastrand::u16(..))
        } else {
            pool[fastrand::usize(..pool.len())]
        };
        let new = NewOrder {
            user_id,
            item: item.to_owned(),
            quantity: fastrand::u32(1..=3),
        };
        let ctx = ctx.clone();
        orders.spawn(async move {
            let order: Result<Order, _> = ctx
                .call_with("order", "create", &new, CallOptions::timeout(CALL_TIMEOUT))
                .await;
            order.map_err(|err| err.code())
        });
    }
}
