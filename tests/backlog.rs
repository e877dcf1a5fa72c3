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
    api::{BacklogView, ConsoleView},
    client::{Client, Target},
    gateway::Gateway,
    router::GATEWAY,
};

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
    let backend = ratatui::backend::TestBackend::new(160, 12);
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

    gateway.stop().await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_publishes_none_gets_its_requests_in_flight_as_backlog() {
    let (stack, _dir) = stack(&shop(1, ""));
    let running = start(stack).await;
    running.ready(LIMIT, &["slow"]).await;
    let router = running.supervisor.router.clone();
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
    assert_eq!(backlog.oldest_age, None, "a derived backlog has no age");
    for call in calls {
        call.await.unwrap();
    }
    let (drained, backlog) = backlog_until(&running, "slow", LIMIT, |b| b.waiting == 0).await;
    assert!(drained, "{backlog:?}");
    running.stop().await;
}
