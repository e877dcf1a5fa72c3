//! The router with real processes: every error code, wildcard fan-out, requests and events held
//! across a restart, in-flight requests failed fast when their target dies, a congested
//! target that does not hold up the others, and the console's busy polling ending with the
//! traffic, and the least loaded replica taking the next request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Running, code, is_state, ok, request, signal, stack, start};
use rustix::process::Signal;
use serde::Serialize;
use switchboard::{registry::InstanceState, router::GATEWAY, supervisor::Command};
use switchboard_protocol::{Envelope, ErrorCode};

const LIMIT: Duration = Duration::from_secs(10);

async fn call<T: Serialize>(
    running: &Running,
    service: &str,
    method: &str,
    body: &T,
    deadline: Duration,
) -> Envelope {
    running
        .supervisor
        .router()
        .call(GATEWAY, request(service, method, body, deadline))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_the_router_answers() {
    let (stack, _dir) = stack(
        r#"
        name = "errors"
        [services.echo]
        builtin = "probe"
        [services.caller]
        builtin = "probe"
        calls = ["echo"]
        [services.parked]
        builtin = "probe"
        [services.plain]
        command = "sh"
        args = ["-c", "read x"]
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["echo", "caller", "parked"]).await;
    let second = Duration::from_secs(1);

    let answer = call(&running, "echo", "echo", &"hi", second).await;
    assert_eq!(ok::<String>(&answer), "hi");

    let answer = call(&running, "nobody", "echo", &"hi", second).await;
    assert_eq!(code(&answer), Some(ErrorCode::NotFound));
    let answer = call(&running, "echo", "no_such_method", &"hi", second).await;
    assert_eq!(code(&answer), Some(ErrorCode::NotFound));
    let answer = call(&running, "plain", "echo", &"hi", second).await;
    assert_eq!(code(&answer), Some(ErrorCode::NotFound));

    // A bad body is the service's bad_request, passed through.
    let answer = call(&running, "echo", "sleep", &"not a number", second).await;
    assert_eq!(code(&answer), Some(ErrorCode::BadRequest));

    // The console answers timeout itself, on time.
    let started = Instant::now();
    let answer = call(
        &running,
        "echo",
        "sleep",
        &2000u64,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(code(&answer), Some(ErrorCode::Timeout));
    assert!(started.elapsed() < Duration::from_millis(1500));

    // caller may call echo but not parked: its own call is refused.
    let through = serde_json::json!({"service": "echo", "method": "echo", "body": "via caller"});
    let answer = call(&running, "caller", "call", &through, second).await;
    assert_eq!(ok::<String>(&answer), "via caller");
    let sneaky = serde_json::json!({"service": "parked", "method": "echo", "body": "x"});
    let answer = call(&running, "caller", "call", &sneaky, second).await;
    assert_eq!(code(&answer), Some(ErrorCode::Forbidden), "{answer:?}");
    let audit = running
        .supervisor
        .audit()
        .as_ref()
        .unwrap()
        .path()
        .to_path_buf();
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains("forbidden") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        text.lines()
            .any(|l| l.contains("\"actor\":\"caller\"") && l.contains("parked.echo")),
        "forbidden call not audited: {text}"
    );

    // A stopped service is unavailable at once (nothing to wait for).
    running
        .supervisor
        .command(Command::Stop("parked".into()))
        .await
        .unwrap();
    assert!(
        running
            .until(LIMIT, |r| r.service("parked").unwrap().state()
                == InstanceState::Stopped)
            .await
    );
    let answer = call(&running, "parked", "echo", &"hi", second).await;
    assert_eq!(code(&answer), Some(ErrorCode::Unavailable));

    // What the router refused itself is counted on its route. Names callers make up are not
    // counted apart (that would let them grow the metrics): a method the service does not
    // declare is counted as "(other)", a name that is no service of the stack not at all.
    let routes = running.supervisor.router().routes();
    let counted = |from: &str, to: &str, method: &str| {
        routes
            .iter()
            .find(|(r, _)| (&*r.from, &*r.to, r.method.as_str()) == (from, to, method))
            .map(|(_, s)| (s.requests, s.errors))
    };
    assert_eq!(
        counted("caller", "parked", "echo"),
        Some((1, 1)),
        "{routes:?}"
    );
    assert_eq!(
        counted(GATEWAY, "parked", "echo"),
        Some((1, 1)),
        "{routes:?}"
    );
    assert_eq!(
        counted(GATEWAY, "echo", "no_such_method"),
        None,
        "{routes:?}"
    );
    assert_eq!(
        counted(GATEWAY, "echo", "(other)"),
        Some((1, 1)),
        "{routes:?}"
    );
    assert!(routes.iter().all(|(r, _)| &*r.to != "nobody"), "{routes:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_fails_fast_when_its_target_is_killed() {
    let (stack, _dir) = stack(
        r#"
        name = "fail-fast"
        [services.slow]
        builtin = "probe"
        backoff = { initial = "5s" }
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["slow"]).await;
    let router = running.supervisor.router().clone();
    let pending = tokio::spawn(async move {
        let started = Instant::now();
        let answer = router
            .call(
                GATEWAY,
                request("slow", "sleep", &30_000u64, Duration::from_secs(30)),
            )
            .await;
        (answer, started.elapsed())
    });
    running.in_flight(LIMIT, "slow").await;
    running
        .supervisor
        .command(Command::Kill("slow".into()))
        .await
        .unwrap();
    let (answer, took) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("the caller was left hanging")
        .unwrap();
    assert_eq!(code(&answer), Some(ErrorCode::Unavailable), "{answer:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_events_are_held_across_a_restart() {
    let (stack, _dir) = stack(
        r#"
        name = "held"
        [services.target]
        builtin = "probe"
        env = { PROBE_SUBSCRIBE = "order.*" }
        backoff = { initial = "400ms", jitter = 0.0 }
        [services.publisher]
        builtin = "probe"
        "#,
    );
    let mut running = start(stack).await;
    running.ready(LIMIT, &["target", "publisher"]).await;
    running
        .supervisor
        .command(Command::Kill("target".into()))
        .await
        .unwrap();
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "target", InstanceState::Backoff))
            .await
            .is_some()
    );
    // While it waits out its backoff: an event for it, and a request to it.
    let publish = serde_json::json!({"topic": "order.created", "text": "order 1"});
    let answer = call(&running, "publisher", "publish", &publish, LIMIT).await;
    assert_eq!(code(&answer), None, "{answer:?}");
    let started = Instant::now();
    let answer = call(&running, "target", "echo", &"held", Duration::from_secs(5)).await;
    assert_eq!(ok::<String>(&answer), "held", "held until the restart");
    assert!(
        started.elapsed() > Duration::from_millis(100),
        "it was not down?"
    );
    // The event reached the new instance.
    let mut delivered = false;
    for _ in 0..50 {
        let received = call(&running, "target", "received", &(), LIMIT).await;
        let list: Vec<serde_json::Value> = ok(&received);
        if list.iter().any(|r| r["text"] == "order 1") {
            delivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(delivered, "held event not delivered");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_fan_out_reaches_every_matching_service_once() {
    let (stack, _dir) = stack(
        r#"
        name = "fanout"
        [services.one_token]
        builtin = "probe"
        env = { PROBE_SUBSCRIBE = "order.*" }
        [services.all_below]
        builtin = "probe"
        env = { PROBE_SUBSCRIBE = "order.>" }
        replicas = 2
        [services.exact]
        builtin = "probe"
        env = { PROBE_SUBSCRIBE = "order.created.eu" }
        [services.other]
        builtin = "probe"
        env = { PROBE_SUBSCRIBE = "user.*" }
        [services.publisher]
        builtin = "probe"
        "#,
    );
    let running = start(stack).await;
    running
        .ready(
            LIMIT,
            &["one_token", "all_below", "exact", "other", "publisher"],
        )
        .await;
    for topic in ["order.created", "order.created.eu"] {
        let publish = serde_json::json!({"topic": topic, "text": topic});
        let answer = call(&running, "publisher", "publish", &publish, LIMIT).await;
        assert_eq!(code(&answer), None);
    }
    // Each delivery is logged by the replica that took it: wait for every one expected.
    let deliveries = |running: &Running| -> Vec<(String, u32, String)> {
        let logs = &running.supervisor.logs();
        ["one_token", "all_below", "exact", "other"]
            .iter()
            .flat_map(|service| logs.tail(service, 1000))
            .filter(|line| line.text.contains("received an event"))
            .map(|line| {
                let topic = line
                    .text
                    .split("topic=")
                    .nth(1)
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (line.service.to_string(), line.replica, topic)
            })
            .collect()
    };
    // one_token 1, all_below 2, exact 1.
    let deadline = std::time::Instant::now() + LIMIT;
    while deliveries(&running).len() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer for a duplicate or a stray delivery to show up, were there one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = deliveries(&running);
    seen.sort();
    let services: Vec<(&str, &str)> = seen
        .iter()
        .map(|(service, _, topic)| (service.as_str(), topic.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            ("all_below", "order.created"),
            ("all_below", "order.created.eu"),
            ("exact", "order.created.eu"),
            ("one_token", "order.created"),
        ],
        "each matching service exactly once, `other` never: {seen:?}"
    );
    // What a subscriber took is its work, counted from its segment by the metrics sampler.
    let events_of = |service: &str| {
        switchboard::monitor::metrics::read(running.supervisor.metrics())
            .service(service)
            .map_or(0, |m| m.events)
    };
    let deadline = std::time::Instant::now() + LIMIT;
    while (events_of("all_below") < 2 || events_of("exact") < 1)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        [
            events_of("all_below"),
            events_of("exact"),
            events_of("other")
        ],
        [2, 1, 0]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_congested_target_is_overloaded_and_the_rest_carry_on() {
    let (stack, _dir) = stack(
        r#"
        name = "congestion"
        [services.frozen]
        builtin = "probe"
        env = { PROBE_HANG_AFTER_MS = "100" }
        heartbeat_timeout = "off"
        shutdown_grace = "200ms"
        [services.healthy]
        builtin = "probe"
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["frozen", "healthy"]).await;
    // Frozen stops reading its stdin once it says so.
    running.logged(LIMIT, "frozen", "hanging on purpose").await;
    let router = running.supervisor.router().clone();
    let flood: Vec<_> = (0..5000)
        .map(|_| {
            router.call(
                GATEWAY,
                request("frozen", "echo", &"x", Duration::from_secs(2)),
            )
        })
        .collect();
    let flood = tokio::spawn(futures::future::join_all(flood));
    // Meanwhile the healthy service answers promptly.
    for _ in 0..20 {
        let started = Instant::now();
        let answer = call(&running, "healthy", "echo", &"fine", Duration::from_secs(1)).await;
        // Within its 1 s deadline, or it would be a timeout; how fast is the bench's to say.
        assert_eq!(
            ok::<String>(&answer),
            "fine",
            "after {:?}",
            started.elapsed()
        );
    }
    let answers = flood.await.unwrap();
    let overloaded = answers
        .iter()
        .filter(|a| code(a) == Some(ErrorCode::Overloaded))
        .count();
    let timed_out = answers
        .iter()
        .filter(|a| code(a) == Some(ErrorCode::Timeout))
        .count();
    // Overloaded answers are failures of the target, so its breaker opens and the rest of the
    // flood fails fast.
    let circuit_open = answers
        .iter()
        .filter(|a| code(a) == Some(ErrorCode::CircuitOpen))
        .count();
    assert!(overloaded > 0, "no overloaded answers");
    assert!(circuit_open > 0, "the breaker never opened");
    assert_eq!(
        overloaded + timed_out + circuit_open,
        5000,
        "every call was answered"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_fails_fast_and_closes_again() {
    let (stack, _dir) = stack(
        r#"
        name = "breaker"
        [services.flaky]
        builtin = "probe"
        breaker = { failures = 3, cooldown = "300ms" }
        "#,
    );
    let mut running = start(stack).await;
    running.ready(LIMIT, &["flaky"]).await;
    let second = Duration::from_secs(1);
    for _ in 0..3 {
        let answer = call(&running, "flaky", "fail", &"boom", second).await;
        assert_eq!(code(&answer), Some(ErrorCode::Internal));
    }
    let started = Instant::now();
    let answer = call(&running, "flaky", "echo", &"hi", second).await;
    assert_eq!(code(&answer), Some(ErrorCode::CircuitOpen), "{answer:?}");
    // Refused at once, not after the call's 1 s deadline (a bound no load reaches; how fast a
    // refusal is, is `switchboard bench`'s to measure).
    assert!(
        started.elapsed() < second / 2,
        "fails fast, took {:?}",
        started.elapsed()
    );
    let answer_trace = answer.trace;
    assert_ne!(answer_trace, 0, "a refusal gets a trace id too");
    assert_eq!(
        running
            .supervisor
            .router()
            .breaker_state("flaky")
            .map(|b| b.as_str()),
        Some("open")
    );
    let opened = running
        .event(LIMIT, |e| {
            matches!(
                e.kind,
                switchboard::event::EventKind::Breaker { state: "open" }
            )
        })
        .await;
    assert!(opened.is_some_and(|e| e.is_alert()));

    tokio::time::sleep(Duration::from_millis(350)).await;
    // The probe after the cooldown succeeds and closes it.
    let answer = call(&running, "flaky", "echo", &"again", second).await;
    assert_eq!(ok::<String>(&answer), "again");
    assert!(
        running
            .event(LIMIT, |e| matches!(
                e.kind,
                switchboard::event::EventKind::Breaker { state: "closed" }
            ))
            .await
            .is_some()
    );
    // Every hop was traced, and the route counted.
    let hops = running.supervisor.router().recent_hops(100);
    assert_eq!(
        hops.iter().filter(|h| h.error == Some("internal")).count(),
        3
    );
    let routes = running.supervisor.router().routes();
    let fail = routes
        .iter()
        .find(|(r, _)| &*r.to == "flaky" && r.method == "fail")
        .expect("route counted");
    assert_eq!((fail.1.requests, fail.1.errors), (3, 3));
    // The call the open breaker refused counts as its route's error and is traced: during an
    // outage the metrics show what callers get, though no request reached the service.
    let echo = routes
        .iter()
        .find(|(r, _)| &*r.to == "flaky" && r.method == "echo")
        .expect("route counted");
    assert_eq!((echo.1.requests, echo.1.errors), (2, 1), "{echo:?}");
    let refused = hops
        .iter()
        .find(|h| h.error == Some("circuit_open"))
        .expect("the refusal traced");
    assert_eq!((&*refused.from, refused.trace), (GATEWAY, answer_trace));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_requests_overtake_queued_ones() {
    use switchboard_protocol::Priority;

    let (stack, _dir) = stack(
        r#"
        name = "priority"
        [services.target]
        builtin = "probe"
        breaker = { failures = 100000, min_requests = 100000 }
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["target"]).await;
    let handle = {
        let registry = switchboard::registry::read(running.supervisor.registry());
        registry.service("target").unwrap().instances[0]
            .handle
            .clone()
            .unwrap()
    };
    // Freeze the target: its stdin pipe fills, then frames wait in its inbox.
    signal(handle.pid, Signal::STOP);
    let router = running.supervisor.router().clone();
    // Trace ids mark the requests; the router records answers in the order it routes them.
    let send = |priority: u8, traces: std::ops::Range<u64>| {
        traces
            .map(|trace| {
                // Big enough that the pipe holds only a few hundred: everything queued must stay
                // under the service's own limit of requests in flight.
                let body = "x".repeat(100);
                let mut request = request("target", "echo", &body, Duration::from_secs(20));
                request.priority = Priority(priority);
                request.trace = trace;
                tokio::spawn(router.call(GATEWAY, request))
            })
            .collect::<Vec<_>>()
    };
    let mut waiting = Vec::new();
    let mut next = 1_000;
    while handle.link.queued() < 200 && next < 20_000 {
        waiting.extend(send(0, next..next + 100));
        next += 100;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        (200..900).contains(&handle.link.queued()),
        "inbox holds {}",
        handle.link.queued()
    );
    let queued = handle.link.queued();
    waiting.extend(send(0, 100..110)); // low priority, queued last
    waiting.extend(send(3, 200..210)); // high priority, queued after them
    let deadline = Instant::now() + LIMIT;
    while handle.link.queued() < queued + 20 {
        assert!(
            Instant::now() < deadline,
            "the last 20 never reached the inbox"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(handle.pid, Signal::CONT);
    for answer in waiting {
        let _ = answer.await;
    }
    let order: Vec<u64> = running
        .supervisor
        .router()
        .recent_hops(4096)
        .iter()
        .filter(|h| h.error.is_none())
        .map(|h| h.trace)
        .collect();
    let position = |trace: u64| order.iter().position(|&t| t == trace);
    let last_high = (200..210)
        .filter_map(position)
        .max()
        .expect("high answered");
    let first_low = (100..110).filter_map(position).min().expect("low answered");
    assert!(
        last_high < first_low,
        "high-priority requests queued after low ones must overtake them: last high at {last_high}, first low at {first_low}"
    );
    running.stop().await;
}

/// A service that crashed and will not be restarted (`restart = "never"`) is not waited for:
/// its callers hear unavailable at once instead of holding until their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_will_not_come_back_is_unavailable_at_once() {
    let (stack, _dir) = stack(
        r#"
        name = "gone"
        [services.once]
        builtin = "probe"
        restart = "never"
        env = { PROBE_CRASH_AFTER_MS = "100" }
        "#,
    );
    let mut running = start(stack).await;
    let crashed = running
        .event(LIMIT, |e| is_state(e, "once", InstanceState::Crashed))
        .await;
    assert!(crashed.is_some(), "the probe never crashed");
    let started = Instant::now();
    let answer = call(&running, "once", "echo", &"hello", Duration::from_secs(5)).await;
    assert_eq!(code(&answer), Some(ErrorCode::Unavailable), "{answer:?}");
    // Answered long before the call's 5 s deadline: not held for a replica that will not come.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "held for {:?}",
        started.elapsed()
    );
    running.stop().await;
}

/// CPU time the calling thread has run, from the scheduler's own account.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// After routing, the console polls its pipes instead of sleeping, but only while messages
/// keep coming: once they stop, its thread sleeps again. A poller that did not stop would spend
/// the whole quiet half second below on the CPU.
#[tokio::test] // one thread, as the console runs, so its CPU time is this thread's
async fn the_console_stops_polling_when_messages_stop() {
    let (stack, _dir) = stack(
        r#"
        name = "quiet"
        [services.echo]
        builtin = "probe"
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["echo"]).await;
    for _ in 0..2000 {
        let answer = call(&running, "echo", "echo", &"hello", LIMIT).await;
        assert_eq!(code(&answer), None, "{answer:?}");
    }
    let before = thread_cpu();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spent = thread_cpu() - before;
    assert!(
        spent < Duration::from_millis(100),
        "the console's thread ran {spent:?} of a quiet 500 ms"
    );
    running.stop().await;
}

/// A handler that panics answers `internal` at once, and its service goes on serving: the SDK
/// may be running the handler on the reader itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_internal_and_the_service_carries_on() {
    let (stack, _dir) = stack(
        r#"
        name = "panics"
        [services.echo]
        builtin = "probe"
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["echo"]).await;
    let pid = || {
        let registry = switchboard::registry::read(running.supervisor.registry());
        registry.service("echo").unwrap().instances[0].pid
    };
    let before = pid();
    assert!(before.is_some(), "the probe is not running");
    for _ in 0..3 {
        let started = Instant::now();
        let answer = call(&running, "echo", "panic", &"boom", LIMIT).await;
        assert_eq!(code(&answer), Some(ErrorCode::Internal), "{answer:?}");
        assert!(
            started.elapsed() < LIMIT / 2,
            "answered only after {:?}",
            started.elapsed()
        );
        let answer = call(&running, "echo", "echo", &"still here", LIMIT).await;
        assert_eq!(ok::<String>(&answer), "still here");
    }
    assert_eq!(pid(), before, "the same process serves on");
    running.stop().await;
}

/// Least loaded, and equals take turns: one caller with one request at a time finds every
/// replica idle each time, and the replicas still share its requests (the first replica
/// used to take them all). Each service takes its own turns: calling two in alternation does
/// not pin either to one replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_replicas_take_turns() {
    let (stack, _dir) = stack(
        r#"
        name = "turns"
        [services.echo]
        builtin = "probe"
        replicas = 3
        [services.twin]
        builtin = "probe"
        replicas = 2
        "#,
    );
    let running = start(stack).await;
    assert!(
        running.replicas_ready(LIMIT, "echo", 3).await
            && running.replicas_ready(LIMIT, "twin", 2).await,
        "the replicas never became ready"
    );
    let mut answered: std::collections::BTreeMap<(&str, u32), u32> = Default::default();
    for _ in 0..30 {
        for service in ["echo", "twin"] {
            let pid: u32 = ok(&call(&running, service, "pid", &(), Duration::from_secs(5)).await);
            *answered.entry((service, pid)).or_default() += 1;
        }
    }
    for (service, replicas) in [("echo", 3), ("twin", 2)] {
        let counts: Vec<u32> = answered
            .iter()
            .filter(|((s, _), _)| *s == service)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(counts.len(), replicas, "{service}: {answered:?}");
        assert!(counts.iter().all(|&n| n >= 5), "{service}: {answered:?}");
    }
    running.stop().await;
}

/// Each ready replica of `service` as (pid, requests outstanding).
fn loads(running: &Running, service: &str) -> Vec<(u32, u64)> {
    switchboard::registry::read(running.supervisor.registry())
        .service(service)
        .unwrap()
        .instances
        .iter()
        .filter_map(|i| i.handle.as_ref())
        .map(|h| {
            (
                h.pid,
                h.outstanding.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_loaded_replica_gets_the_next_request() {
    let (stack, _dir) = stack(
        r#"
        name = "least"
        [services.echo]
        builtin = "probe"
        replicas = 2
        shutdown_grace = "200ms"
        "#,
    );
    let running = start(stack).await;
    assert!(
        running.replicas_ready(LIMIT, "echo", 2).await,
        "the replicas never became ready"
    );
    // One replica is busy with a long request; the other is idle.
    let router = running.supervisor.router().clone();
    let long = |router: switchboard::router::Router| {
        tokio::spawn(async move {
            router
                .call(
                    GATEWAY,
                    request("echo", "sleep", &60_000u64, Duration::from_secs(90)),
                )
                .await
        })
    };
    let first = long(router.clone());
    let one_busy = running
        .until(LIMIT, |_| {
            let mut outstanding: Vec<u64> = loads(&running, "echo").iter().map(|l| l.1).collect();
            outstanding.sort_unstable();
            outstanding == [0, 1]
        })
        .await;
    assert!(
        one_busy,
        "the long request never got in flight: {:?}",
        loads(&running, "echo")
    );
    let busy = loads(&running, "echo")
        .into_iter()
        .find(|l| l.1 == 1)
        .unwrap()
        .0;
    // Every request meanwhile goes to the idle one (taking turns would send half to the busy one).
    for i in 0..10 {
        let pid: u32 = ok(&call(&running, "echo", "pid", &(), Duration::from_secs(5)).await);
        assert_ne!(
            pid,
            busy,
            "request {i} went to the busy replica: {:?}",
            loads(&running, "echo")
        );
    }
    // A second long request goes to the idle one too: one in flight on each, not two on one.
    let second = long(router.clone());
    let spread = running
        .until(LIMIT, |_| {
            loads(&running, "echo").iter().map(|l| l.1).sum::<u64>() == 2
        })
        .await;
    assert!(spread, "the second long request never got in flight");
    let outstanding: Vec<u64> = loads(&running, "echo").iter().map(|l| l.1).collect();
    assert_eq!(
        outstanding,
        [1, 1],
        "both long requests went to one replica"
    );
    first.abort();
    second.abort();
    running.stop().await;
}

/// The calls a service makes through the console are its call rate: the router counts them by
/// caller, the sampler makes a rate of them, and the read model carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_s_calls_are_its_call_rate() {
    let (stack, _dir) = stack(
        r#"
        name = "callers"
        [services.alpha]
        builtin = "probe"
        [services.gamma]
        builtin = "probe"
        calls = ["alpha"]
        env = { PROBE_LOAD_TARGET = "alpha.echo", PROBE_LOAD_RATE = "20" }
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["alpha", "gamma"]).await;
    let metrics = running.supervisor.metrics();
    let mut samples = switchboard::monitor::metrics::read(metrics).samples();
    let calls = |service: &str| {
        switchboard::monitor::metrics::read(metrics)
            .service(service)
            .map_or((0, 0.0), |m| (m.calls, m.call_rate))
    };
    // Woken by each sample (once a second), not by a sleep.
    let waited = tokio::time::timeout(LIMIT, async {
        while !(calls("gamma").0 >= 10 && calls("gamma").1 > 0.0) {
            samples.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "gamma's calls never counted: {:?}",
        calls("gamma")
    );
    assert_eq!(calls("alpha"), (0, 0.0), "alpha calls nobody");
    let view = running.supervisor.view(Instant::now());
    let row = |name: &str| view.services.iter().find(|s| s.name == name).unwrap();
    assert!(row("gamma").call_rate > 0.0, "{:?}", row("gamma").call_rate);
    assert_eq!(row("alpha").call_rate, 0.0);
    running.stop().await;
}
