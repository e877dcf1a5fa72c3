//! Backlog you can see, and replicas that follow it (issue 28), with real processes: `order`
//! publishing its backlog through its segment while the storefront outruns it, the backlog the
//! console derives for a service that publishes none, the table, the read model and
//! `/metrics` showing both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Running, request, stack, start};
use hyper::Method;
use switchboard::{
    api::{BacklogView, ConsoleView, ReplicaBacklogView},
    client::{Client, Target},
    event::EventKind,
    gateway::Gateway,
    router::{GATEWAY, StreamStep},
};
use switchboard_services::probe::CountRequest;

/// Bound for any one wait.
const LIMIT: Duration = Duration::from_secs(30);

/// user, order and a storefront placing orders faster than one `order` replica completes them:
/// 32 at a time, four stages of `stage_ms`, so 32 / (4 × 0.25 s) = 32 orders a second against
/// `rate`.
fn shop(rate: u32, order_extra: &str) -> String {
    format!(
        r#"
name = "backlog"
[services.user]
builtin = "user"
[services.order]
builtin = "order"
depends_on = {{ user = "ready" }}
calls = ["user"]
settings = {{ stage_ms = "250", user_timeout_ms = "2000" }}
{order_extra}
[services.storefront]
builtin = "storefront"
depends_on = {{ order = "ready" }}
calls = ["user", "order"]
settings = {{ rate = "{rate}", customers = "20", invalid_percent = "0" }}
[services.slow]
builtin = "probe"
"#
    )
}

/// The backlog row of `service` in the console's read model.
fn backlog_of(running: &Running, service: &str) -> BacklogView {
    let view = running.supervisor.view(Instant::now());
    view.services
        .into_iter()
        .find(|s| s.name == service)
        .map(|s| s.backlog)
        .unwrap_or_default()
}

/// Waits until `service`'s backlog satisfies `done`; the last one seen either way.
async fn backlog_until(
    running: &Running,
    service: &str,
    limit: Duration,
    done: impl Fn(&BacklogView) -> bool,
) -> (bool, BacklogView) {
    let deadline = Instant::now() + limit;
    loop {
        let backlog = backlog_of(running, service);
        if done(&backlog) {
            return (true, backlog);
        }
        if Instant::now() >= deadline {
            return (false, backlog);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_publishes_a_growing_backlog_and_metrics_and_the_table_show_it() {
    let (stack, _dir) = stack(&shop(60, ""));
    let running = start(stack).await;
    running.ready(LIMIT, &["user", "order", "storefront"]).await;
    let gateway = Gateway::start_at(&running.supervisor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // 60 a second in, 32 out: the backlog grows by about 28 a second, and its oldest order
    // waits longer and longer.
    let (grew, backlog) = backlog_until(&running, "order", LIMIT, |b| {
        b.published
            && b.waiting >= 60
            && b.trend == "rising"
            && b.oldest_age
                .is_some_and(|age| age >= Duration::from_secs(2))
    })
    .await;
    assert!(grew, "order's backlog never grew as published: {backlog:?}");

    let client = Client::new(Target {
        address: gateway.address().into(),
        token: None,
    });
    let answer = client.send(Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("not Prometheus text");
    let sample = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("service") == Some("order"))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    };
    let waiting = sample("switchboard_service_backlog").expect("no backlog gauge");
    assert!(waiting >= 30.0, "{waiting}");
    let age = sample("switchboard_service_backlog_oldest_age_seconds").expect("no age gauge");
    assert!(age >= 1.0, "{age}");

    // The table draws it: a count with its arrow, and the age.
    let mut view: ConsoleView = running.supervisor.view(Instant::now());
    view.services.retain(|s| s.name == "order");
    // Its task bars would fill the detail pane of a short screen.
    view.services[0].tasks.clear();
    let backend = ratatui::backend::TestBackend::new(160, 16);
    let mut terminal = ratatui::Terminal::new(backend).unwrap();
    let state = switchboard::tui::state::UiState::new();
    let theme = switchboard::tui::theme::Theme::monochrome();
    terminal
        .draw(|frame| {
            switchboard::tui::render::draw(frame, &view, &state, &[], &theme);
        })
        .unwrap();
    let screen = format!("{}", terminal.backend());
    assert!(screen.contains("BACKLOG"), "{screen}");
    assert!(screen.contains('↑'), "no rising arrow:\n{screen}");
    // The detail pane of the selected service says it in words.
    assert!(
        screen.contains("backlog "),
        "no backlog line in the detail:\n{screen}"
    );
    assert!(screen.contains("rising, oldest "), "{screen}");

    gateway.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_publishes_none_gets_its_requests_in_flight_and_held_as_backlog() {
    // Restarted only after a pause, so that calls meanwhile are held by the router.
    let toml = shop(1, "").replace(
        "[services.slow]\nbuiltin = \"probe\"\n",
        "[services.slow]\nbuiltin = \"probe\"\nbackoff = { initial = \"3s\", jitter = 0.0 }\n",
    );
    let (stack, _dir) = stack(&toml);
    let running = start(stack).await;
    running.ready(LIMIT, &["slow"]).await;
    let router = running.supervisor.router().clone();
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let call = router.call(
                GATEWAY,
                request("slow", "sleep", &4000u64, Duration::from_secs(20)),
            );
            tokio::spawn(call)
        })
        .collect();
    let (seen, backlog) =
        backlog_until(&running, "slow", LIMIT, |b| !b.published && b.waiting == 6).await;
    assert!(
        seen,
        "the derived backlog never counted the 6 calls: {backlog:?}"
    );
    assert!(backlog.oldest_age.is_some(), "no age: {backlog:?}");
    for call in calls {
        call.await.unwrap();
    }
    let (drained, backlog) = backlog_until(&running, "slow", LIMIT, |b| b.waiting == 0).await;
    assert!(drained, "{backlog:?}");

    // Killed, it waits out its backoff: calls meanwhile are held for it, and count.
    running
        .supervisor
        .command(switchboard::supervisor::Command::Kill("slow".into()))
        .await
        .unwrap();
    let down = running
        .until(LIMIT, |r| {
            r.service("slow")
                .is_some_and(|s| s.instances.iter().all(|i| i.handle.is_none()))
        })
        .await;
    assert!(down, "slow never went down");
    let held: Vec<_> = (0..3)
        .map(|_| {
            let call = router.call(
                GATEWAY,
                request("slow", "echo", "hi", Duration::from_secs(20)),
            );
            tokio::spawn(call)
        })
        .collect();
    let (seen, backlog) =
        backlog_until(&running, "slow", LIMIT, |b| !b.published && b.waiting == 3).await;
    assert!(seen, "the 3 held calls were not counted: {backlog:?}");
    // No replica owes them: their age is how long the router has held them.
    assert!(
        backlog.oldest_age.is_some(),
        "held calls have no age: {backlog:?}"
    );
    for call in held {
        assert_eq!(
            common::code(&call.await.unwrap()),
            None,
            "held calls are answered"
        );
    }
    let (drained, backlog) = backlog_until(&running, "slow", LIMIT, |b| b.waiting == 0).await;
    assert!(drained, "{backlog:?}");
    running.stop().await;
}

/// `service`'s backlog age gauge on the gateway's `/metrics`.
async fn age_gauge(client: &Client, service: &str) -> Option<f64> {
    let answer = client.send(Method::GET, "/metrics", None).await.unwrap();
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("not Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "switchboard_service_backlog_oldest_age_seconds"
                && s.labels.get("service") == Some(service)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_derived_backlog_ages_with_its_oldest_unanswered_request_on_its_replica() {
    let toml = "name = \"age\"\n[services.slow]\nbuiltin = \"probe\"\nreplicas = 2\n";
    let (stack, _dir) = stack(toml);
    let running = start(stack).await;
    assert!(
        running.replicas_ready(LIMIT, "slow", 2).await,
        "slow never ready"
    );
    let gateway = Gateway::start_at(&running.supervisor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::new(Target {
        address: gateway.address().into(),
        token: None,
    });
    let router = running.supervisor.router().clone();
    let call = tokio::spawn(router.call(
        GATEWAY,
        request("slow", "sleep", &6000u64, Duration::from_secs(20)),
    ));

    // Held busy, its one request ages a second a second, sample after sample.
    let second = Duration::from_secs(1);
    let (seen, first) = backlog_until(&running, "slow", LIMIT, |b| {
        !b.published && b.waiting == 1 && b.oldest_age.is_some_and(|a| a >= second)
    })
    .await;
    assert!(seen, "the busy replica's request never aged: {first:?}");
    let first_age = first.oldest_age.unwrap_or_default();
    let (grew, later) = backlog_until(&running, "slow", LIMIT, |b| {
        b.oldest_age
            .is_some_and(|a| a > first_age && a >= 2 * second)
    })
    .await;
    assert!(grew, "the age did not grow past {first_age:?}: {later:?}");
    let age = age_gauge(&client, "slow").await.expect("no age gauge");
    assert!(age >= 1.0, "/metrics: {age}");

    // The replica that took it is the one behind; the other owes nothing.
    let view = running.supervisor.view(Instant::now());
    let row = view.services.iter().find(|s| s.name == "slow").unwrap();
    let mut replicas: Vec<_> = row.instances.iter().map(|i| i.backlog.clone()).collect();
    replicas.sort_by_key(|b| b.waiting);
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert_eq!((replicas[0].waiting, replicas[0].oldest_age), (0, None));
    assert_eq!(replicas[1].waiting, 1, "{replicas:?}");
    assert!(
        replicas[1].oldest_age.is_some_and(|a| a >= second) && !replicas[1].published,
        "{replicas:?}"
    );

    // Answered, nothing waits and the age is gone (0 on /metrics, not a missing series).
    assert_eq!(common::code(&call.await.unwrap()), None);
    let (drained, backlog) = backlog_until(&running, "slow", LIMIT, |b| {
        b.waiting == 0 && b.oldest_age.is_none()
    })
    .await;
    assert!(drained, "{backlog:?}");
    assert_eq!(age_gauge(&client, "slow").await, Some(0.0));
    gateway.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flowing_stream_counts_in_the_backlog_but_does_not_age_it() {
    let toml = "name = \"age\"\n[services.slow]\nbuiltin = \"probe\"\n";
    let (stack, _dir) = stack(toml);
    let running = start(stack).await;
    running.ready(LIMIT, &["slow"]).await;
    let router = running.supervisor.router().clone();
    let count = CountRequest {
        n: 10_000,
        pace_ms: 50,
    };
    let mut stream = router.call_stream(GATEWAY, request("slow", "count", &count, LIMIT));
    assert!(matches!(stream.next().await, StreamStep::Item(_)));

    // Being served, not waiting: still one unanswered request, but no age to alert on.
    let (seen, backlog) = backlog_until(&running, "slow", LIMIT, |b| {
        b.waiting == 1 && b.oldest_age.is_none()
    })
    .await;
    assert!(seen, "a flowing stream aged the backlog: {backlog:?}");
    drop(stream);
    let (drained, backlog) = backlog_until(&running, "slow", LIMIT, |b| b.waiting == 0).await;
    assert!(drained, "{backlog:?}");
    running.stop().await;
}

/// Each replica's backlog of `service` in the read model, in replica order.
fn replica_backlogs(running: &Running, service: &str) -> Vec<ReplicaBacklogView> {
    let view = running.supervisor.view(Instant::now());
    view.services
        .into_iter()
        .find(|s| s.name == service)
        .map(|s| s.instances.into_iter().map(|i| i.backlog).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_while_its_service_restarts_keeps_its_age_once_routed() {
    let toml = "name = \"age\"\n[services.slow]\nbuiltin = \"probe\"\n\
        backoff = { initial = \"3s\", jitter = 0.0 }\n";
    let (stack, _dir) = stack(toml);
    let running = start(stack).await;
    running.ready(LIMIT, &["slow"]).await;
    running
        .supervisor
        .command(switchboard::supervisor::Command::Kill("slow".into()))
        .await
        .unwrap();
    let down = running
        .until(LIMIT, |r| {
            r.service("slow")
                .is_some_and(|s| s.instances.iter().all(|i| i.handle.is_none()))
        })
        .await;
    assert!(down, "slow never went down");

    // Held for its 3 s backoff, then routed to the replica that came back and kept busy.
    let asked = Instant::now();
    let router = running.supervisor.router().clone();
    let call = tokio::spawn(router.call(
        GATEWAY,
        request("slow", "sleep", &4000u64, Duration::from_secs(20)),
    ));
    let deadline = Instant::now() + LIMIT;
    let routed = loop {
        let replicas = replica_backlogs(&running, "slow");
        if replicas.first().is_some_and(|r| r.waiting == 1) {
            break replicas[0].clone();
        }
        assert!(Instant::now() < deadline, "never routed: {replicas:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Its age counts from when the console took it, not from its routing: at most the
    // time since the last sample (a second) short of the whole wait.
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "held for its backoff: {waited:?}"
    );
    let age = routed.oldest_age.expect("no age once routed");
    assert!(
        age + Duration::from_millis(1500) >= waited,
        "age {age:?} after {waited:?}: it restarted from the routing"
    );
    assert_eq!(common::code(&call.await.unwrap()), None);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_alerts_and_target_age_scales_out_a_service_that_publishes_nothing() {
    let toml = "name = \"age\"\n[services.slow]\nbuiltin = \"probe\"\n\
        backlog = { max_age = \"1s\" }\n\
        autoscale = { min = 1, max = 2, target_age = \"1s\", cooldown = \"1s\" }\n";
    let (stack, _dir) = stack(toml);
    let mut running = start(stack).await;
    running.ready(LIMIT, &["slow"]).await;
    let router = running.supervisor.router().clone();
    let call = tokio::spawn(router.call(
        GATEWAY,
        request("slow", "sleep", &5000u64, Duration::from_secs(20)),
    ));

    // Its one request, unanswered past a second, is what both read.
    let alert = running
        .event(LIMIT, |e| {
            e.service == "slow" && matches!(e.kind, EventKind::Backlog { alert: true, .. })
        })
        .await
        .expect("no max_age alert");
    let text = switchboard::api::EventView::from(&alert).text;
    assert!(text.contains("over max_age 1s (1 waiting)"), "{text}");
    let scaled = |e: &switchboard::event::Event| {
        e.service == "slow" && matches!(e.kind, EventKind::Autoscaled { from: 1, to: 2, .. })
    };
    if !running.seen.iter().any(scaled) {
        running.event(LIMIT, scaled).await.expect("no scale-out");
    }

    // Answered, the alert is resolved.
    assert_eq!(common::code(&call.await.unwrap()), None);
    running
        .event(LIMIT, |e| {
            e.service == "slow" && matches!(e.kind, EventKind::Backlog { alert: false, .. })
        })
        .await
        .expect("the max_age alert was never resolved");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_above_one_replica_s_capacity_raises_the_growth_alert_within_its_window() {
    let policy = "backlog = { grow_window = \"4s\", max_backlog = 5000 }";
    let (stack, _dir) = stack(&shop(60, policy));
    let mut running = start(stack).await;
    running.ready(LIMIT, &["order", "storefront"]).await;
    let alert = running
        .event(LIMIT, |e| {
            e.service == "order" && matches!(e.kind, EventKind::Backlog { alert: true, .. })
        })
        .await
        .expect("no backlog alert");
    let view = switchboard::api::EventView::from(&alert);
    assert!(view.alert, "{view:?}");
    assert_eq!(view.kind, "backlog");
    // It names the service, the rate and the time to the bound at that rate.
    assert!(
        view.text.starts_with("order: backlog alert: grew "),
        "{}",
        view.text
    );
    assert!(
        view.text.contains(" over 4s (+"),
        "judged over its window: {}",
        view.text
    );
    assert!(view.text.contains("/s)"), "{}", view.text);
    assert!(view.text.contains("max_backlog 5000 in "), "{}", view.text);
    running.stop().await;
}

/// Every order's `(status, created events, completed events)` from order's SQLite file.
fn order_ledger(db: &std::path::Path) -> Vec<(i64, String, i64, i64)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut statement = db
        .prepare(
            "SELECT o.id, o.status,
                    (SELECT COUNT(*) FROM outbox e WHERE e.order_id = o.id AND e.topic LIKE '%created'),
                    (SELECT COUNT(*) FROM outbox e WHERE e.order_id = o.id AND e.topic LIKE '%completed')
             FROM orders o ORDER BY o.id",
        )
        .unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_adds_replicas_until_the_backlog_falls_and_removes_them_losing_no_order() {
    let policy = "autoscale = { min = 1, max = 3, target_backlog = 60, cooldown = \"3s\" }";
    // A steady 15 orders a second, and a surge of 35 more that stops half way.
    let surge = "[services.surge]\nbuiltin = \"storefront\"\ndepends_on = { order = \"ready\" }\n\
                 calls = [\"user\", \"order\"]\n\
                 settings = { rate = \"35\", customers = \"20\", invalid_percent = \"0\" }";
    let (stack, dir) = stack(&format!("{}\n{surge}", shop(15, policy)));
    let orders_db = dir.path().join(".switchboard/data/orders.db");
    let running = start(stack).await;
    // Subscribed before anything can scale.
    let events = &mut running.supervisor.events().subscribe();
    let running = std::sync::Arc::new(running);
    running
        .ready(LIMIT, &["order", "storefront", "surge"])
        .await;

    // Which replicas run each order, sampled from the task slots all along.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (running, watching) = (running.clone(), watching.clone());
        tokio::spawn(async move {
            let mut runs: std::collections::HashMap<i64, std::collections::BTreeSet<u32>> =
                Default::default();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for (replica, id) in common::orders_running(&running) {
                    runs.entry(id).or_default().insert(replica);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            runs
        })
    };

    // 50 orders a second against 32 for one replica: out to two, which outrun it.
    let scaled = |to: u32| {
        move |e: &switchboard::event::Event| {
            e.service == "order" && matches!(e.kind, EventKind::Autoscaled { to: t, .. } if t == to)
        }
    };
    let out = next_event(events, LIMIT, scaled(2))
        .await
        .expect("never scaled out");
    let EventKind::Autoscaled { reason, .. } = &out.kind else {
        unreachable!()
    };
    assert!(reason.contains("target 60"), "{reason}");
    assert!(
        running.replicas_ready(LIMIT, "order", 2).await,
        "no second replica"
    );
    let (fell, backlog) = backlog_until(&running, "order", LIMIT, |b| b.trend == "falling").await;
    assert!(
        fell,
        "the backlog never fell with two replicas: {backlog:?}"
    );

    // The load drops to what one replica carries: back in to one, while orders still come
    // in and run on both. The replica removed drains first: the orders it runs finish there,
    // the ones it holds but has not started go to the other.
    running
        .supervisor
        .command(switchboard::supervisor::Command::Stop("surge".into()))
        .await
        .unwrap();
    next_event(events, LIMIT, scaled(1))
        .await
        .expect("never scaled in");
    assert!(
        running.replicas_ready(LIMIT, "order", 1).await,
        "never back to one replica"
    );
    let audit = std::fs::read_to_string(dir.path().join(".switchboard/run/audit.jsonl")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"autoscale\"") && l.contains("order to 2")),
        "{audit}"
    );

    running
        .supervisor
        .command(switchboard::supervisor::Command::Stop("storefront".into()))
        .await
        .unwrap();
    // Nothing lost, nothing run twice: every order completes, once, with both its events.
    let deadline = Instant::now() + LIMIT;
    let ledger = loop {
        let ledger = order_ledger(&orders_db);
        if ledger.iter().all(|(_, status, _, _)| status == "completed") {
            break ledger;
        }
        assert!(Instant::now() < deadline, "orders left accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ledger.len() > 100, "only {} orders", ledger.len());
    for (id, status, created, completed) in &ledger {
        assert_eq!(
            (status.as_str(), *created, *completed),
            ("completed", 1, 1),
            "order {id}"
        );
    }
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let runs = watcher.await.unwrap();
    let twice: Vec<_> = runs.iter().filter(|(_, r)| r.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "orders run by more than one replica: {twice:?}"
    );
    let replicas: std::collections::BTreeSet<u32> = runs.values().flatten().copied().collect();
    assert!(replicas.len() > 1, "only replicas {replicas:?} ran orders");
    let running = std::sync::Arc::try_unwrap(running)
        .unwrap_or_else(|_| panic!("the watcher still holds the stack"));
    running.stop().await;
}

/// The next event `wanted` accepts, within `limit`.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<switchboard::event::Event>,
    limit: Duration,
    wanted: impl Fn(&switchboard::event::Event) -> bool,
) -> Option<switchboard::event::Event> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if wanted(&event) => return Some(event),
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_backlog_callers_are_answered_overloaded_and_the_gateway_503_with_retry_after() {
    let policy = "backlog = { max_backlog = 40, max_backlog_methods = [\"create\"] }";
    let gateway = "[gateway]\nroutes = [\n  { route = \"POST /orders\", call = \"order.create\" },\n  \
                   { route = \"GET /orders\", call = \"order.list\" },\n]\n";
    let (stack, _dir) = stack(&format!("{}{gateway}", shop(60, policy)));
    let running = start(stack).await;
    running.ready(LIMIT, &["order", "storefront"]).await;
    let gateway = Gateway::start_at(&running.supervisor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::new(Target {
        address: gateway.address().into(),
        token: None,
    });
    // The storefront fills order to its bound; past it, a create is refused at once.
    let deadline = Instant::now() + LIMIT;
    let refused = loop {
        let answer = client
            .send(
                Method::POST,
                "/orders",
                Some(br#"{"user_id": 1, "item": "cable", "quantity": 1}"#.to_vec()),
            )
            .await
            .unwrap();
        if answer.status == hyper::StatusCode::SERVICE_UNAVAILABLE {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "never refused: {}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        refused.headers.contains_key(hyper::header::RETRY_AFTER),
        "{:?}",
        refused.headers
    );
    let body: serde_json::Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_backlog 40"), "{message}");
    // What adds no work still goes through, and the breaker stays closed.
    let list = client.send(Method::GET, "/orders", None).await.unwrap();
    assert_eq!(list.status, hyper::StatusCode::OK);
    assert_eq!(
        running
            .supervisor
            .router()
            .breaker_state("order")
            .unwrap()
            .as_str(),
        "closed"
    );
    // The backlog stays near its bound instead of growing without one.
    let backlog = backlog_of(&running, "order");
    assert!(backlog.waiting < 40 + 40, "{backlog:?}");
    gateway.stop().await;
    running.stop().await;
}
