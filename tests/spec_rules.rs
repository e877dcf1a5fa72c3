//! The rules `protocol/SPEC.md` states about what the console does, each pinned with real
//! processes: Python services written from the spec (`tests/fixtures/spec/`, on the hostile
//! fixtures' `wire.py`) on a supervisor running in this test process.
//!
//! - a request for a method not in the service's Hello is answered `not_found` by the console;
//! - a subscription belongs to the replica that made it: one replica unsubscribing leaves the
//!   service subscribed through the others;
//! - a service stopped before its handshake still gets Shutdown, then EOF;
//! - the heartbeat defaults, and `Welcome.heartbeat_ms` as a fifth of the timeout within
//!   20 ms–1 s;
//! - degraded: a burst of bad frames flags a replica, the router prefers its healthy
//!   siblings, and a quiet window clears it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Running, code, is_state, request, stack, start};
use switchboard::{
    event::EventKind,
    registry::{ExitStatus, InstanceState},
    router::GATEWAY,
    supervisor::{Command, degraded},
};
use switchboard_protocol::{Body, ErrorCode, Kind, Status};

const LIMIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/spec/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A stack of the probe (to publish events) and the Python fixture `script` as `name`.
fn spec_stack(
    name: &str,
    script: &str,
    extra: &str,
) -> (switchboard::stack::Stack, tempfile::TempDir) {
    stack(&format!(
        r#"
        name = "spec"
        [services.probe]
        builtin = "probe"
        [services.{name}]
        command = "python3"
        args = ["{}"]
        protocol = true
        heartbeat_timeout = "off"
        shutdown_grace = "2s"
        {extra}
        "#,
        fixture(script)
    ))
}

/// The log lines of `service` (replica, text) that start with `prefix`.
fn lines(running: &Running, service: &str, prefix: &str) -> Vec<(u32, String)> {
    running
        .supervisor
        .logs()
        .tail(service, 10_000)
        .iter()
        .filter(|l| l.text.starts_with(prefix))
        .map(|l| (l.replica, l.text.clone()))
        .collect()
}

async fn logged(running: &Running, service: &str, prefix: &str, count: usize) -> bool {
    running
        .until(LIMIT, |_| lines(running, service, prefix).len() >= count)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_not_in_hello_is_refused_without_reaching_the_service() {
    let (stack, _dir) = spec_stack("subscriber", "subscriber.py", "");
    let running = start(stack).await;
    running.ready(LIMIT, &["subscriber"]).await;
    let router = running.supervisor.router().clone();
    let refused = router
        .call(GATEWAY, request("subscriber", "other", "x", LIMIT))
        .await;
    assert_eq!(code(&refused), Some(ErrorCode::NotFound), "{refused:?}");
    // A declared method does reach it (the fixture never answers: a short deadline).
    let reached = router
        .call(
            GATEWAY,
            request("subscriber", "echo", "x", Duration::from_millis(300)),
        )
        .await;
    assert_eq!(code(&reached), Some(ErrorCode::Timeout), "{reached:?}");
    assert!(logged(&running, "subscriber", "request echo", 1).await);
    assert!(lines(&running, "subscriber", "request other").is_empty());
    running.stop().await;
}

#[test]
fn heartbeat_timeout_and_shutdown_grace_default_to_five_seconds() {
    let (stack, _dir) = stack("name = \"d\"\n[services.s]\ncommand = \"true\"\nprotocol = true\n");
    let spec = stack.service("s").unwrap();
    assert_eq!(spec.heartbeat_timeout, Some(Duration::from_secs(5)));
    assert_eq!(spec.shutdown_grace, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_asks_for_a_beat_every_fifth_of_the_timeout_within_bounds() {
    // (heartbeat_timeout, heartbeat_ms): a fifth, at most 1 s, 1 s when off.
    for (timeout, expected) in [("\"4s\"", 800), ("\"30s\"", 1000), ("\"off\"", 1000)] {
        let (stack, _dir) = stack(&format!(
            r#"
            name = "spec"
            [services.subscriber]
            command = "python3"
            args = ["{}"]
            protocol = true
            heartbeat_timeout = {timeout}
            shutdown_grace = "2s"
            "#,
            fixture("subscriber.py")
        ));
        let running = start(stack).await;
        assert!(logged(&running, "subscriber", "welcome", 1).await);
        let welcome = lines(&running, "subscriber", "welcome");
        assert_eq!(
            welcome[0].1,
            format!("welcome heartbeat_ms {expected}"),
            "heartbeat_timeout = {timeout}"
        );
        running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_unsubscribing_leaves_the_service_subscribed_through_the_other() {
    let (stack, _dir) = spec_stack("subscriber", "subscriber.py", "replicas = 2");
    let running = start(stack).await;
    running.ready(LIMIT, &["probe"]).await;
    assert!(running.replicas_ready(LIMIT, "subscriber", 2).await);
    assert!(logged(&running, "subscriber", "unsubscribed", 1).await);
    // The Unsubscribe frame went to stdout before the log line to stderr, but the two pipes
    // are read apart: give the frame a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let router = running.supervisor.router().clone();
    for topic in ["news.a", "news.b", "news.c", "news.d"] {
        let publish = serde_json::json!({"topic": topic, "text": "hello"}).to_string();
        let mut call = request("probe", "publish", "", LIMIT);
        call.body = Body::Json(publish.into_bytes().into());
        let answer = router.call(GATEWAY, call).await;
        assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    }
    assert!(
        logged(&running, "subscriber", "event news.", 4).await,
        "events after one replica unsubscribed: {:?}",
        lines(&running, "subscriber", "event")
    );
    // Each event once to the service, not once per replica.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&running, "subscriber", "event news.").len(), 4);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_before_its_handshake_gets_shutdown_then_eof() {
    let (stack, _dir) = spec_stack("starting", "starting.py", "");
    let mut running = start(stack).await;
    assert!(logged(&running, "starting", "starting", 1).await);
    running
        .supervisor
        .command(Command::Stop("starting".into()))
        .await
        .unwrap();
    assert!(logged(&running, "starting", "eof", 1).await);
    let got: Vec<String> = running
        .supervisor
        .logs()
        .tail("starting", 100)
        .iter()
        .map(|l| l.text.clone())
        .filter(|t| t.starts_with("frame") || t == "eof")
        .collect();
    assert_eq!(got, ["frame 11", "eof"], "Shutdown (kind 11), then EOF");
    running
        .event(LIMIT, |e| is_state(e, "starting", InstanceState::Stopped))
        .await
        .expect("never stopped");
    let instance = switchboard::registry::read(running.supervisor.registry())
        .service("starting")
        .unwrap()
        .instances[0]
        .clone();
    // It ignores SIGTERM: exit 0 shows the stop reached it by frame and EOF alone.
    assert_eq!(instance.last_exit, Some(ExitStatus::Code(0)));
    let (_, events) = running.stop().await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Signalled { .. })),
        "no signal was needed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_frames_degrades_a_replica_until_a_quiet_window_passes() {
    let (stack, _dir) = spec_stack("garbled", "garbled.py", "replicas = 2");
    let mut running = start(stack).await;
    let degraded_seen = running
        .event(LIMIT, |e| {
            e.service == "garbled"
                && e.replica == Some(0)
                && matches!(
                    e.kind,
                    EventKind::State {
                        to: InstanceState::Degraded,
                        ..
                    }
                )
        })
        .await;
    assert!(degraded_seen.is_some(), "replica 0 never flagged degraded");
    assert!(running.replicas_ready(LIMIT, "garbled", 1).await);
    // While replica 0 is degraded and replica 1 healthy, requests go to replica 1.
    let router = running.supervisor.router().clone();
    let short = Duration::from_millis(200);
    let calls: Vec<_> = (0..4)
        .map(|_| router.call(GATEWAY, request("garbled", "echo", "x", short)))
        .collect();
    for answer in futures::future::join_all(calls).await {
        assert_eq!(code(&answer), Some(ErrorCode::Timeout), "{answer:?}");
    }
    assert!(logged(&running, "garbled", "request echo", 4).await);
    let replicas: Vec<u32> = lines(&running, "garbled", "request echo")
        .iter()
        .map(|(replica, _)| *replica)
        .collect();
    assert_eq!(
        replicas,
        [1, 1, 1, 1],
        "the healthy replica takes the requests"
    );
    // No bad frame since the burst: healthy again once the quiet window has passed.
    let cleared = running
        .event(degraded::QUIET + LIMIT, |e| {
            e.service == "garbled"
                && e.replica == Some(0)
                && matches!(
                    e.kind,
                    EventKind::State {
                        from: InstanceState::Degraded,
                        to: InstanceState::Ready
                    }
                )
        })
        .await;
    assert!(cleared.is_some(), "replica 0 never cleared");
    assert!(running.replicas_ready(LIMIT, "garbled", 2).await);
    running.stop().await;
}
