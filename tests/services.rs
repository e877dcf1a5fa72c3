//! The example services with real processes and real SQLite files: user validation, orders
//! checked against user (unknown, down, frozen), the full order flow with its progress stages
//! and notifications, and the delivery guarantee under repeated `kill -9`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{
    Running, error, notifications_by_order, ok, ready_pid, request, signal, stack, start,
};
use rustix::process::Signal;
use serde::Serialize;
use switchboard::{
    router::{GATEWAY, StreamStep},
    supervisor::Command,
};
use switchboard_protocol::{Body, Envelope, ErrorCode, Kind};
use switchboard_services::model::{
    ById, NewOrder, NewUser, NotificationList, Order, User, UserUpdate,
};

const LIMIT: Duration = Duration::from_secs(15);

/// The shop without the storefront, so the tests decide what is ordered.
const SHOP: &str = r#"
name = "shop"
[services.user]
builtin = "user"
[services.order]
builtin = "order"
depends_on = { user = "ready" }
calls = ["user"]
settings = { stage_ms = "40", user_timeout_ms = "400" }
[services.notification]
builtin = "notification"
depends_on = { order = "ready" }
calls = ["order"]
"#;

async fn call<T: Serialize>(running: &Running, service: &str, method: &str, body: &T) -> Envelope {
    call_within(running, service, method, body, Duration::from_secs(5)).await
}

async fn call_within<T: Serialize>(
    running: &Running,
    service: &str,
    method: &str,
    body: &T,
    deadline: Duration,
) -> Envelope {
    let request = request(service, method, body, deadline);
    running.supervisor.router().call(GATEWAY, request).await
}

async fn new_user(running: &Running, name: &str, email: &str) -> User {
    let answer = call(
        running,
        "user",
        "create",
        &NewUser {
            name: name.into(),
            email: email.into(),
        },
    )
    .await;
    ok(&answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_validates_and_persists() {
    let (stack, dir) = stack(SHOP);
    let running = start(stack).await;
    running.ready(LIMIT, &["user"]).await;

    let ada = new_user(&running, "  Ada Lovelace ", "ada@example.com").await;
    assert_eq!(ada.name, "Ada Lovelace");
    let bad = [
        ("Ada", "not-an-email", "has no `@`"),
        ("Ada", "ada@localhost", "domain"),
        ("Ada", "a da@example.com", "spaces"),
        ("", "someone@example.com", "name must not be empty"),
        ("Ada Again", "ADA@example.com", "already registered"),
    ];
    for (name, email, why) in bad {
        let answer = call(
            &running,
            "user",
            "create",
            &NewUser {
                name: name.into(),
                email: email.into(),
            },
        )
        .await;
        let (code, message) = error(&answer).unwrap_or_else(|| panic!("{email} accepted"));
        assert_eq!(code, ErrorCode::BadRequest, "{email}: {message}");
        assert!(message.contains(why), "{email}: {message}");
    }
    // A body of the wrong shape is a bad request too, not a crash.
    let answer = call(&running, "user", "create", &serde_json::json!({"name": 7})).await;
    assert_eq!(error(&answer).unwrap().0, ErrorCode::BadRequest);

    let got: User = ok(&call(&running, "user", "get", &ById { id: ada.id }).await);
    assert_eq!(got, ada);
    let missing = call(&running, "user", "get", &ById { id: 999_999 }).await;
    assert_eq!(error(&missing).unwrap().0, ErrorCode::NotFound);

    let grace = new_user(&running, "Grace", "grace@example.com").await;
    let clash = UserUpdate {
        id: grace.id,
        name: None,
        email: Some("ada@example.com".into()),
    };
    assert_eq!(
        error(&call(&running, "user", "update", &clash).await)
            .unwrap()
            .0,
        ErrorCode::BadRequest
    );
    let rename = UserUpdate {
        id: grace.id,
        name: Some("Grace Hopper".into()),
        email: None,
    };
    let renamed: User = ok(&call(&running, "user", "update", &rename).await);
    assert_eq!(renamed.name, "Grace Hopper");
    assert_eq!(renamed.email, "grace@example.com");
    running.stop().await;

    // The rows are in the SQLite file the service left behind.
    let db = rusqlite::Connection::open(dir.path().join(".switchboard/data/users.db")).unwrap();
    let names: Vec<String> = db
        .prepare("SELECT name FROM users ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["Ada Lovelace", "Grace Hopper"]);
}

/// Replicas share `users.db`, and each answers the point reads that arrive together in one read
/// from its pipe from one SQLite read snapshot: still, every replica finds a user the moment
/// its creation is acknowledged, while a flood of reads keeps snapshots open on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_sees_a_write_once_it_is_acknowledged() {
    let (stack, _dir) = stack(
        r#"
name = "replicas"
[services.user]
builtin = "user"
replicas = 2
"#,
    );
    let running = std::sync::Arc::new(start(stack).await);
    assert!(
        running.replicas_ready(LIMIT, "user", 2).await,
        "two user replicas never became ready"
    );
    let reader = new_user(&running, "Reader", "reader@example.com").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (running, stop) = (running.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got: User =
                        ok(&call(&running, "user", "get", &ById { id: reader.id }).await);
                    assert_eq!(got.id, reader.id);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..200 {
        let user = new_user(&running, "Writer", &format!("writer{i}@example.com")).await;
        // Two at once: least-outstanding routing gives one to each replica.
        let by_id = ById { id: user.id };
        let (a, b) = tokio::join!(
            call(&running, "user", "get", &by_id),
            call(&running, "user", "get", &by_id)
        );
        assert_eq!(
            ok::<User>(&a),
            user,
            "user {} not found after its creation",
            user.id
        );
        assert_eq!(
            ok::<User>(&b),
            user,
            "user {} not found after its creation",
            user.id
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reads in flood {
        assert!(reads.await.unwrap() > 0);
    }
    // Both replicas answered reads (each counts the requests it took in its segment), so the
    // checks above read from each, not from one.
    let answered: Vec<u64> = {
        let registry = switchboard::registry::read(running.supervisor.registry());
        registry
            .service("user")
            .unwrap()
            .instances
            .iter()
            .map(|i| {
                i.handle
                    .as_ref()
                    .and_then(|h| h.segment.as_ref())
                    .map_or(0, |segment| segment.read().ok)
            })
            .collect()
    };
    assert!(
        answered.len() == 2 && answered.iter().all(|&n| n > 100),
        "requests answered per replica: {answered:?}"
    );
    let running = std::sync::Arc::try_unwrap(running)
        .unwrap_or_else(|_| panic!("a flood task still holds the console"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_check_their_user_and_never_hang() {
    let (stack, _dir) = stack(SHOP);
    let running = start(stack).await;
    running.ready(LIMIT, &["user", "order"]).await;
    let ada = new_user(&running, "Ada", "ada@example.com").await;

    let order = |user_id: i64, item: &str, quantity: u32| NewOrder {
        user_id,
        item: item.into(),
        quantity,
    };
    let unknown = call(&running, "order", "create", &order(424_242, "mouse", 1)).await;
    let (code, message) = error(&unknown).expect("an order for an unknown user was accepted");
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("no user 424242"), "{message}");
    for bad in [order(ada.id, "spaceship", 1), order(ada.id, "mouse", 0)] {
        let answer = call(&running, "order", "create", &bad).await;
        assert_eq!(error(&answer).unwrap().0, ErrorCode::BadRequest);
    }
    let placed: Order = ok(&call(&running, "order", "create", &order(ada.id, "Mouse", 2)).await);
    assert_eq!(
        (placed.amount_cents, placed.item.as_str()),
        (3_800, "mouse")
    );

    // User frozen (SIGSTOP): order's call to it times out after user_timeout_ms (400 ms), and
    // the caller hears so well within its own deadline.
    let user_pid = ready_pid(&running, "user").unwrap();
    signal(user_pid, Signal::STOP);
    let started = Instant::now();
    let frozen = call_within(
        &running,
        "order",
        "create",
        &order(ada.id, "cable", 1),
        Duration::from_secs(3),
    )
    .await;
    let waited = started.elapsed();
    signal(user_pid, Signal::CONT);
    let (code, message) = error(&frozen).expect("an order was accepted while user was frozen");
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(waited < Duration::from_secs(3), "took {waited:?}");

    // User stopped: unavailable, at once.
    running
        .supervisor
        .command(Command::Stop("user".into()))
        .await
        .unwrap();
    let started = Instant::now();
    let down = call_within(
        &running,
        "order",
        "create",
        &order(ada.id, "cable", 1),
        Duration::from_secs(3),
    )
    .await;
    let (code, message) = error(&down).expect("an order was accepted while user was down");
    assert!(
        matches!(code, ErrorCode::Unavailable | ErrorCode::Timeout),
        "{code:?}: {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_runs_its_stages_and_is_notified() {
    let (stack, _dir) = stack(&SHOP.replace("stage_ms = \"40\"", "stage_ms = \"300\""));
    let running = start(stack).await;
    running
        .ready(LIMIT, &["user", "order", "notification"])
        .await;
    let ada = new_user(&running, "Ada", "ada@example.com").await;
    let placed: Order = ok(&call(
        &running,
        "order",
        "create",
        &NewOrder {
            user_id: ada.id,
            item: "dock".into(),
            quantity: 1,
        },
    )
    .await);
    assert_eq!(placed.status, "accepted");

    // The stages show in order's segment as one task whose label names the stage.
    let prefix = format!("order {}: ", placed.id);
    let stages = std::sync::Mutex::new(BTreeSet::new());
    running
        .until(LIMIT, |registry| {
            let order = registry.service("order").unwrap();
            for instance in &order.instances {
                if let Some(segment) = instance.handle.as_ref().and_then(|h| h.segment.as_ref()) {
                    for task in segment.read().tasks {
                        if let Some(stage) = task.label.strip_prefix(&prefix) {
                            stages.lock().unwrap().insert(stage.to_owned());
                        }
                    }
                }
            }
            stages.lock().unwrap().len() == 4
        })
        .await;
    let stages = stages.into_inner().unwrap();
    assert_eq!(
        stages,
        ["charge", "reserve", "ship", "validate"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );

    let start = Instant::now();
    loop {
        let list: NotificationList = ok(&call(
            &running,
            "notification",
            "for_order",
            &ById { id: placed.id },
        )
        .await);
        let kinds: Vec<&str> = list.notifications.iter().map(|n| n.kind.as_str()).collect();
        if kinds == ["created", "completed"] {
            break;
        }
        assert!(start.elapsed() < LIMIT, "notifications: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done: Order = ok(&call(&running, "order", "get", &ById { id: placed.id }).await);
    assert_eq!(done.status, "completed");
    running.stop().await;
}

/// Places orders from a few concurrent callers while `order` and `notification` are killed with
/// SIGKILL over and over; then every acknowledged order must exist, complete, and have exactly
/// one notification per event.
///
/// What it proves, and what not: the outbox, redelivery and the idempotent consumer lose and
/// duplicate nothing when the *processes* die at random points (`user` is not killed: orders
/// only read it). A SIGKILL leaves the page cache intact, so this says nothing about
/// `synchronous=FULL` surviving a power cut; and the kills are random, not aimed at the
/// instants around a commit (`tests/chaos.rs` kills all four at random through the gateway).
///
/// The callers are paced below what `order` can process (32 at once, 4 stages of 25 ms: about
/// 300 a second). Unpaced they placed 21,893 orders in 12 s once routing got fast, a backlog of
/// over a minute that the settle deadline then measured instead of any loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_order_or_notification_is_lost_under_kill_9() {
    let toml = SHOP.replace("stage_ms = \"40\"", "stage_ms = \"25\"").replace(
        "[services.notification]",
        "[services.notification]\nbackoff = { initial = \"50ms\", max = \"200ms\" }\nrestart_limit = { count = 100, window = \"60s\" }",
    ).replace(
        "[services.order]",
        "[services.order]\nbackoff = { initial = \"50ms\", max = \"200ms\" }\nrestart_limit = { count = 100, window = \"60s\" }",
    );
    let (stack, dir) = stack(&toml);
    let running = std::sync::Arc::new(start(stack).await);
    running
        .ready(LIMIT, &["user", "order", "notification"])
        .await;
    let customers: Vec<i64> = {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                new_user(&running, "Shopper", &format!("shopper{i}@example.com"))
                    .await
                    .id,
            );
        }
        ids
    };

    let stop_at = Instant::now() + Duration::from_secs(12);
    // Four callers, one order each per PACE at most: under 200 a second.
    const PACE: Duration = Duration::from_millis(20);
    let mut shoppers = Vec::new();
    for worker in 0..4 {
        let (running, customers) = (running.clone(), customers.clone());
        shoppers.push(tokio::spawn(async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0u32);
            let mut n = worker;
            while Instant::now() < stop_at {
                n += 1;
                let new = NewOrder {
                    user_id: customers[n % customers.len()],
                    item: "cable".into(),
                    quantity: 1,
                };
                let answer =
                    call_within(&running, "order", "create", &new, Duration::from_secs(2)).await;
                match error(&answer) {
                    None => acknowledged.push(ok::<Order>(&answer).id),
                    Some(_) => refused += 1,
                }
                tokio::time::sleep(PACE).await;
            }
            (acknowledged, refused)
        }));
    }
    let mut kills = 0;
    let mut victim = 0;
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(..500))).await;
        let service = ["order", "notification"][victim % 2];
        victim += 1;
        if let Some(pid) = ready_pid(&running, service) {
            signal(pid, Signal::KILL);
            kills += 1;
        }
    }
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for shopper in shoppers {
        let (acked, failed) = shopper.await.unwrap();
        acknowledged.extend(acked);
        refused += failed;
    }
    eprintln!(
        "{} orders acknowledged, {refused} refused, {kills} kills",
        acknowledged.len()
    );
    assert!(kills >= 10, "only {kills} kills");
    assert!(
        acknowledged.len() >= 50,
        "only {} orders went through",
        acknowledged.len()
    );

    // Everything settles once the killing stops: every order completes and both its events are
    // recorded exactly once.
    let notifications = dir.path().join(".switchboard/data/notifications.db");
    let orders_db = dir.path().join(".switchboard/data/orders.db");
    let settled = Instant::now();
    loop {
        let by_order = notifications_by_order(&notifications);
        let missing: Vec<i64> = acknowledged
            .iter()
            .copied()
            .filter(|id| by_order.get(id).map(Vec::len) != Some(2))
            .collect();
        if missing.is_empty() {
            for id in &acknowledged {
                let mut kinds = by_order[id].clone();
                kinds.sort();
                assert_eq!(kinds, ["completed", "created"], "order {id}");
            }
            // No notification for an order that does not exist, and none twice.
            let db = rusqlite::Connection::open(&orders_db).unwrap();
            let orders: BTreeSet<i64> = db
                .prepare("SELECT id FROM orders WHERE status = 'completed'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for id in &acknowledged {
                assert!(
                    orders.contains(id),
                    "acknowledged order {id} is not in orders.db"
                );
            }
            for (order, kinds) in &by_order {
                assert!(
                    orders.contains(order),
                    "notification for unknown order {order}"
                );
                assert_eq!(kinds.len(), 2, "order {order}: {kinds:?}");
            }
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(60),
            "{} of {} acknowledged orders still lack notifications after {:?}, e.g. {:?}",
            missing.len(),
            acknowledged.len(),
            settled.elapsed(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("settled in {:?}", settled.elapsed());
    let running = std::sync::Arc::try_unwrap(running)
        .ok()
        .expect("shoppers still hold the supervisor");
    running.stop().await;
}

/// `order.export` streams every order, a page (100) at a time, in id order, under credit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_export_streams_every_order() {
    let (stack, _dir) = stack(SHOP);
    let running = start(stack).await;
    running.ready(LIMIT, &["user", "order"]).await;
    let customer = new_user(&running, "Exporter", "exporter@example.com").await;
    let mut placed = Vec::new();
    for _ in 0..230 {
        let new = NewOrder {
            user_id: customer.id,
            item: "cable".into(),
            quantity: 1,
        };
        placed.push(ok::<Order>(&call(&running, "order", "create", &new).await).id);
    }
    let request = Envelope {
        kind: Kind::Request,
        destination: "order".into(),
        method: "export".into(),
        body: Body::Json(serde_json::to_vec(&serde_json::json!({})).unwrap().into()),
        ..Envelope::default()
    };
    let mut stream = running.supervisor.router().call_stream(GATEWAY, request);
    let mut exported = Vec::new();
    let end = loop {
        match stream.next().await {
            StreamStep::Item(Body::Json(bytes)) => {
                exported.push(serde_json::from_slice::<Order>(&bytes).unwrap().id);
            }
            StreamStep::Item(other) => panic!("not JSON: {other:?}"),
            StreamStep::End(end) => break end,
        }
    };
    assert_eq!(end, Ok(()));
    assert_eq!(exported, placed, "every order once, in id order");
    running.stop().await;
}

/// The Python report job (the embedded `order-report` builtin) run through the console against
/// the real order service: its progress is read from its segment while it runs, and its result
/// counts the orders placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_report_job_reports_on_the_real_orders() {
    let toml = format!(
        "{SHOP}\n[services.report]\nkind = \"job\"\nbuiltin = \"order-report\"\ncalls = [\"order\"]\n"
    );
    let (stack, _dir) = stack(&toml);
    let running = start(stack).await;
    running.ready(LIMIT, &["user", "order"]).await;
    let ada = new_user(&running, "Ada", "ada@example.com").await;
    for quantity in 1..=12u32 {
        let new = NewOrder {
            user_id: ada.id,
            item: "cable".into(),
            quantity,
        };
        let _: Order = ok(&call(&running, "order", "create", &new).await);
    }
    running
        .supervisor
        .command(Command::RunJob(
            "report".into(),
            Some(r#"{"page": 2, "pace_ms": 60}"#.into()),
        ))
        .await
        .unwrap();
    let pages_seen = std::sync::Mutex::new(BTreeSet::new());
    let finished = running
        .until(Duration::from_secs(30), |registry| {
            let job = registry.service("report").unwrap();
            for instance in &job.instances {
                if let Some(segment) = instance.handle.as_ref().and_then(|h| h.segment.as_ref()) {
                    for task in segment.read().tasks {
                        if task.label.starts_with("report: page") && task.total == 6 {
                            pages_seen.lock().unwrap().insert(task.done);
                        }
                    }
                }
            }
            job.runs.back().is_some_and(|run| run.exit.is_some())
        })
        .await;
    assert!(finished, "the report job did not finish");
    let pages_seen = pages_seen.into_inner().unwrap();
    assert!(
        pages_seen.iter().any(|&done| done > 0 && done < 6),
        "no intermediate progress seen: {pages_seen:?}"
    );
    let run = running.last_run("report");
    let result = run.result.expect("no result").expect("the job failed");
    let report: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(report["orders"], 12);
    assert_eq!(report["revenue_cents"], 900 * (1..=12).sum::<i64>());
    assert_eq!(report["customers"], 1);
    assert_eq!(report["pages"], 6);

    // Pauses are capped in all: twelve pages at 5 s each would take a minute; `pace_total_ms`
    // bounds their sum to 0.6 s, however many pages there are.
    running
        .supervisor
        .command(Command::RunJob(
            "report".into(),
            Some(r#"{"page": 1, "pace_ms": 5000, "pace_total_ms": 600}"#.into()),
        ))
        .await
        .unwrap();
    let finished = running
        .until(Duration::from_secs(20), |registry| {
            let runs = &registry.service("report").unwrap().runs;
            runs.len() == 2 && runs.back().is_some_and(|run| run.exit.is_some())
        })
        .await;
    assert!(finished, "the paced report did not finish within 20 s");
    let run = running.last_run("report");
    let report: serde_json::Value =
        serde_json::from_str(&run.result.expect("no result").expect("the job failed")).unwrap();
    assert_eq!(report["pages"], 12);
    running.stop().await;
}

/// `(id, status, claimed_by, claims)` of every order, from order's SQLite file.
fn order_claims(orders_db: &std::path::Path) -> Vec<(i64, String, Option<i64>, i64)> {
    let db = rusqlite::Connection::open(orders_db).unwrap();
    let mut statement = db
        .prepare("SELECT id, status, claimed_by, claims FROM orders ORDER BY id")
        .unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Scaled out, order's replicas share the orders instead of each running all of them: every
/// order runs its stages on exactly one replica, once, and completes. Scaled back in, the
/// orders the removed replica had claimed are taken over by the one left once their lease
/// lapses, and complete too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_replicas_share_the_orders_and_take_over_a_removed_ones() {
    let toml = SHOP
        .replace("stage_ms = \"40\"", "stage_ms = \"60\"")
        .replace("[services.order]", "[services.order]\nreplicas = 3");
    let (stack, dir) = stack(&toml);
    let orders_db = dir.path().join(".switchboard/data/orders.db");
    let running = std::sync::Arc::new(start(stack).await);
    running
        .ready(LIMIT, &["user", "order", "notification"])
        .await;
    assert!(
        running.replicas_ready(LIMIT, "order", 3).await,
        "order never had three ready replicas"
    );
    let customer = new_user(&running, "Sharer", "sharer@example.com").await;

    // Watch every replica's running tasks while orders go through.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (running, watching) = (running.clone(), watching.clone());
        tokio::spawn(async move {
            let mut runs: std::collections::HashMap<i64, BTreeSet<u32>> = Default::default();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for (replica, id) in common::orders_running(&running) {
                    runs.entry(id).or_default().insert(replica);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            runs
        })
    };
    let mut callers = Vec::new();
    for _ in 0..6 {
        let running = running.clone();
        callers.push(tokio::spawn(async move {
            let mut placed = Vec::new();
            for _ in 0..15 {
                let new = NewOrder {
                    user_id: customer.id,
                    item: "cable".into(),
                    quantity: 1,
                };
                let answer = call(&running, "order", "create", &new).await;
                placed.push(ok::<Order>(&answer).id);
            }
            placed
        }));
    }
    let mut placed = Vec::new();
    for caller in callers {
        placed.extend(caller.await.unwrap());
    }
    let completed = |db: &std::path::Path, ids: &[i64]| {
        let claims = order_claims(db);
        ids.iter().all(|id| {
            claims
                .iter()
                .any(|(order, status, _, _)| order == id && status == "completed")
        })
    };
    let deadline = Instant::now() + LIMIT;
    while !completed(&orders_db, &placed) {
        assert!(Instant::now() < deadline, "orders never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let runs = watcher.await.unwrap();
    let twice: Vec<_> = runs.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "orders run by more than one replica: {twice:?}"
    );
    let replicas: BTreeSet<u32> = runs.values().flatten().copied().collect();
    assert!(replicas.len() > 1, "only replicas {replicas:?} ran orders");
    assert!(
        runs.len() >= placed.len() / 2,
        "saw only {} of {} orders run",
        runs.len(),
        placed.len()
    );
    for (id, status, holder, claims) in order_claims(&orders_db) {
        assert_eq!(
            (status.as_str(), claims),
            ("completed", 1),
            "order {id} (held by {holder:?})"
        );
    }

    // Scaled in to one replica. Orders claimed by a replica that is gone (index 7 here) wait
    // for their lease; the replica left takes each over once it lapses, and completes it.
    running
        .supervisor
        .command(Command::Scale("order".into(), 1))
        .await
        .unwrap();
    let one = running
        .until(LIMIT, |r| {
            r.service("order")
                .is_some_and(|s| s.ready_instances() == 1 && s.instances.len() == 1)
        })
        .await;
    assert!(one, "order never scaled in to one replica");
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let claimed = |by: i64, lease_until_ms: i64| -> i64 {
        let db = rusqlite::Connection::open(&orders_db).unwrap();
        db.execute(
            "INSERT INTO orders (user_id, item, quantity, amount_cents, status, created_at_ms,
                                 claimed_by, lease_until_ms, claims)
             VALUES (?1, 'cable', 1, 900, 'accepted', ?2, ?3, ?4, 1)",
            rusqlite::params![customer.id, now_ms(), by, lease_until_ms],
        )
        .unwrap();
        db.last_insert_rowid()
    };
    let lapsed = claimed(7, now_ms() - 1);
    let leased_until = now_ms() + 3_000;
    let leased = claimed(7, leased_until);
    // Its own order with little lease left (as after a backlog): replica 0 runs it at once and
    // renews the lease first, so that it cannot lapse mid-run.
    let short_until = now_ms() + 1_000;
    let own = claimed(0, short_until);
    let deadline = Instant::now() + LIMIT;
    loop {
        // Read the time first: a takeover before the lease lapsed would show as a row taken
        // over while the time read before it was still inside the lease.
        let before = now_ms();
        let claims = order_claims(&orders_db);
        let row = |id: i64| claims.iter().find(|c| c.0 == id).cloned().unwrap();
        let held = row(leased);
        if before < leased_until {
            assert_eq!(
                held.2,
                Some(7),
                "order {leased} taken over inside its lease: {held:?}"
            );
        }
        if row(lapsed).1 == "completed" && held.1 == "completed" {
            for (id, status, holder, claims) in [row(lapsed), held] {
                assert_eq!(
                    (status.as_str(), holder, claims),
                    ("completed", Some(0), 2),
                    "order {id}"
                );
            }
            assert_eq!(row(own).1, "completed");
            let db = rusqlite::Connection::open(&orders_db).unwrap();
            let (claims, until): (i64, i64) = db
                .query_row(
                    "SELECT claims, lease_until_ms FROM orders WHERE id = ?1",
                    [own],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(claims, 1, "its own order is no takeover");
            assert!(
                until >= short_until + 3_000,
                "lease not renewed: {until} vs {short_until}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orphaned orders never completed: {claims:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = std::sync::Arc::try_unwrap(running)
        .ok()
        .expect("callers still hold the supervisor");
    running.stop().await;
}
