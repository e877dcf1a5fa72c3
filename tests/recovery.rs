//! Replicas and failure, with real processes (issue 21 items 3 and 4): a scale-in never takes
//! the last ready replica while a failed one is there to go, a failed service comes back on its
//! own after the long backoff, a slow starter is not killed as hung, and a breaker closes once
//! its target is back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, time::Duration};

use common::{is_state, stack, start};
use switchboard::{
    event::EventKind,
    registry::{self, InstanceState},
    supervisor::Command,
};

const LIMIT: Duration = Duration::from_secs(10);

/// A service that crashes at once while `marker` exists, and otherwise runs until its stdin
/// closes (the first step of the stop sequence).
fn crash_while(marker: &Path) -> String {
    format!(
        r#"command = "sh"
        args = ["-c", "test -e '{}' && exit 1; read x"]"#,
        marker.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_in_removes_the_failed_replica_and_keeps_a_ready_one() {
    // The issue's repro: kill `order` until it is failed, `scale order 3`, `scale order 1`.
    let marks = tempfile::tempdir().unwrap();
    let marker = marks.path().join("crash");
    let (stack, _dir) = stack(&format!(
        r#"
        name = "scale-in"
        [services.order]
        {}
        backoff = {{ initial = "20ms", jitter = 0.0 }}
        restart_limit = {{ count = 2, window = "60s", then = "stay-failed" }}
        "#,
        crash_while(&marker)
    ));
    let mut running = start(stack).await;
    running.ready(LIMIT, &["order"]).await;
    std::fs::write(&marker, "").unwrap();
    let supervisor = running.supervisor.clone();
    supervisor
        .command(Command::Kill("order".into()))
        .await
        .unwrap();
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "order", InstanceState::Failed))
            .await
            .is_some(),
        "order never failed"
    );
    std::fs::remove_file(&marker).unwrap();
    supervisor
        .command(Command::Scale("order".into(), 3))
        .await
        .unwrap();
    assert!(
        running.replicas_ready(LIMIT, "order", 2).await,
        "the two new replicas never became ready"
    );
    supervisor
        .command(Command::Scale("order".into(), 1))
        .await
        .unwrap();
    // Never 0 ready on the way, and in the end one replica, ready: the failed one went.
    let settled = running
        .until(LIMIT, |r| {
            let order = r.service("order").unwrap();
            assert!(
                order.ready_instances() >= 1,
                "no replica ready after scaling in: {:?}",
                order.instances.iter().map(|i| i.state).collect::<Vec<_>>()
            );
            order.instances.len() == 1
        })
        .await;
    assert!(settled, "scale-in never settled");
    {
        let registry = registry::read(supervisor.registry());
        let order = registry.service("order").unwrap();
        assert_eq!(order.instances[0].state, InstanceState::Ready);
        assert_ne!(
            order.instances[0].id.replica, 0,
            "the failed replica was kept"
        );
    }
    // The numbers left can have gaps; scaling out again fills the smallest free one.
    supervisor
        .command(Command::Scale("order".into(), 2))
        .await
        .unwrap();
    assert!(running.replicas_ready(LIMIT, "order", 2).await);
    let numbers: Vec<u32> = registry::read(supervisor.registry())
        .service("order")
        .unwrap()
        .instances
        .iter()
        .map(|i| i.id.replica)
        .collect();
    assert!(numbers.contains(&0), "{numbers:?}");
    let (report, events) = running.stop().await;
    assert!(report.clean(), "{report:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::GaveUp { .. }) && e.replica != Some(0)),
        "a new replica failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_service_comes_back_on_its_own_after_the_long_backoff() {
    // Crashes on its first three runs, then runs: the intensity limit fails it after the
    // third, and only the retry after the limit can bring it back (nobody acts here).
    let marks = tempfile::tempdir().unwrap();
    let count = marks.path().join("runs");
    let (stack, _dir) = stack(&format!(
        r#"
        name = "comeback"
        [services.notification]
        command = "sh"
        args = ["-c", "n=$(cat '{runs}' 2>/dev/null || echo 0); echo $((n+1)) > '{runs}'; [ $n -ge 3 ] || exit 1; read x"]
        backoff = {{ initial = "20ms", jitter = 0.0 }}
        restart_limit = {{ count = 2, window = "60s", retry_after = "1s", retry_max = "4s" }}
        "#,
        runs = count.display()
    ));
    let started = std::time::Instant::now();
    let mut running = start(stack).await;
    let gave_up = running
        .event(LIMIT, |e| matches!(e.kind, EventKind::GaveUp { .. }))
        .await
        .expect("never failed");
    assert!(
        matches!(
            gave_up.kind,
            EventKind::GaveUp {
                retry_in: Some(d),
                ..
            } if d == Duration::from_secs(1)
        ),
        "{gave_up:?}"
    );
    // Failed, and the console says when the next try is due.
    let view = running.supervisor.view(started);
    let row = view
        .services
        .iter()
        .find(|s| s.name == "notification")
        .unwrap();
    if row.state == InstanceState::Failed {
        assert_eq!(row.retry_in, Some(Duration::from_secs(1)), "{row:?}");
        assert_eq!(row.instances[0].retry_in, row.retry_in);
    }
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "notification", InstanceState::Ready))
            .await
            .is_some(),
        "never came back after failing"
    );
    let view = running.supervisor.view(started);
    assert_eq!(view.services[0].retry_in, None);
    let (report, _) = running.stop().await;
    assert!(report.clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starter_is_not_killed_as_hung_and_a_mute_one_is_after_its_startup_timeout() {
    // `slow` shakes hands after 1.5 s, well past its heartbeat timeout: the heartbeat clock
    // starts at the handshake, so it is not hung. `mute` never shakes hands: its clock starts
    // at its startup timeout.
    let (stack, _dir) = stack(
        r#"
        name = "slow"
        [services.slow]
        builtin = "probe"
        env = { PROBE_SLOW_START_MS = "1500" }
        heartbeat_timeout = "400ms"
        [services.mute]
        builtin = "probe"
        env = { PROBE_SLOW_START_MS = "600000" }
        heartbeat_timeout = "400ms"
        startup_timeout = "300ms"
        restart = "never"
        "#,
    );
    let mut running = start(stack).await;
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "slow", InstanceState::Ready))
            .await
            .is_some(),
        "the slow starter never became ready"
    );
    // It may have been declared hung before `slow` was ready, while that was awaited.
    let hung = |e: &switchboard::event::Event| matches!(e.kind, EventKind::HangDetected { .. });
    let hang = match running.seen.iter().find(|e| hung(e)).cloned() {
        Some(hang) => hang,
        None => running
            .event(LIMIT, hung)
            .await
            .expect("the mute service was never declared hung"),
    };
    assert_eq!(hang.service, "mute", "{hang:?}");
    // It went stale (half its timeout) before it was declared hung.
    assert!(
        running
            .seen
            .iter()
            .any(|e| e.service == "mute"
                && matches!(e.kind, EventKind::Heartbeat { stale: true, .. })),
        "no stale state before the hang"
    );
    // Let the slow one run a few heartbeat timeouts: still its first process.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, events) = running.stop().await;
    assert!(
        !events
            .iter()
            .any(|e| e.service == "slow" && matches!(e.kind, EventKind::HangDetected { .. })),
        "the slow starter was killed as hung"
    );
    let spawns = events
        .iter()
        .filter(|e| e.service == "slow" && matches!(e.kind, EventKind::Spawned { .. }))
        .count();
    assert_eq!(spawns, 1, "the slow starter was restarted");
}

/// A request from the gateway to `user.method`, with a 2 s deadline.
fn user_request(method: &str, body: &str) -> switchboard_protocol::Envelope {
    use switchboard_protocol::{Body, Envelope, Kind};
    Envelope {
        id: 1,
        deadline_us: 2_000_000,
        kind: Kind::Request,
        destination: "user".into(),
        method: method.into(),
        body: Body::Json(serde_json::to_vec(body).unwrap().into()),
        ..Envelope::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_closes_once_its_target_is_ready_again_and_can_be_reset_by_hand() {
    use switchboard::{api::EventView, router::GATEWAY};
    use switchboard_protocol::{Envelope, ErrorCode, Kind, Status};

    // A cooldown far longer than the test: only the target's recovery can close it in time.
    let (stack, dir) = stack(
        r#"
        name = "breaker"
        [services.user]
        builtin = "probe"
        breaker = { failures = 3, cooldown = "120s" }
        backoff = { initial = "20ms", jitter = 0.0 }
        "#,
    );
    let code = |answer: &Envelope| match &answer.kind {
        Kind::Response(Status::Error(err)) => Some(err.code),
        _ => None,
    };
    let started = std::time::Instant::now();
    let mut running = start(stack).await;
    running.ready(LIMIT, &["user"]).await;
    let router = running.supervisor.router().clone();
    let open = |router: switchboard::router::Router| async move {
        for _ in 0..3 {
            let answer = router.call(GATEWAY, user_request("fail", "boom")).await;
            assert_eq!(code(&answer), Some(ErrorCode::Internal), "{answer:?}");
        }
    };
    open(router.clone()).await;
    let answer = router.call(GATEWAY, user_request("echo", "hi")).await;
    assert_eq!(code(&answer), Some(ErrorCode::CircuitOpen), "{answer:?}");
    let view = running.supervisor.view(started);
    let cooldown = view.services[0]
        .breaker_cooldown
        .expect("no cooldown shown");
    assert!(cooldown > Duration::from_secs(100), "{cooldown:?}");

    // The target restarts (killed here); once it is ready, the next call is the probe.
    running
        .supervisor
        .command(Command::Kill("user".into()))
        .await
        .unwrap();
    // After its exit: the first start's ready event is still queued.
    assert!(
        running
            .event(LIMIT, |e| matches!(e.kind, EventKind::Exited { .. }))
            .await
            .is_some()
    );
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "user", InstanceState::Ready))
            .await
            .is_some()
    );
    let answer = router.call(GATEWAY, user_request("echo", "back")).await;
    assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    let closed = running
        .event(LIMIT, |e| {
            matches!(e.kind, EventKind::Breaker { state: "closed" })
        })
        .await
        .expect("the breaker never closed");
    // Closing resolves the alert its opening raised.
    assert_eq!(
        EventView::from(&closed).resolves.as_deref(),
        Some("breaker")
    );
    assert_eq!(
        running.supervisor.view(started).services[0].breaker_cooldown,
        None
    );

    // Open again, then closed by hand, which the audit log records.
    open(router.clone()).await;
    running
        .supervisor
        .command_audited(Command::ResetBreaker("user".into()), "test")
        .await
        .unwrap();
    assert!(
        running
            .event(LIMIT, |e| matches!(
                e.kind,
                EventKind::Breaker { state: "closed" }
            ))
            .await
            .is_some()
    );
    let answer = router.call(GATEWAY, user_request("echo", "reset")).await;
    assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    // The audit log is written by its own task: wait for the line, bounded.
    let path = running.supervisor.stack().run_dir.join("audit.jsonl");
    let deadline = std::time::Instant::now() + LIMIT;
    let mut audit = String::new();
    while !audit.contains("breaker reset") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        audit = std::fs::read_to_string(&path).unwrap_or_default();
    }
    assert!(audit.contains("breaker reset"), "{audit}");
    drop(dir);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_past_the_timer_s_range_does_not_bring_the_supervisor_down() {
    // 100000 h is past the two years tokio-util's DelayQueue takes; it used to panic the
    // supervisor's task, after which no command was answered.
    let (stack, _dir) = stack(
        r#"
        name = "far"
        [services.late]
        command = "sh"
        args = ["-c", "exit 1"]
        backoff = { initial = "100000h", max = "100000h", jitter = 0.0 }
        "#,
    );
    let mut running = start(stack).await;
    assert!(
        running
            .event(LIMIT, |e| matches!(
                e.kind,
                EventKind::RestartScheduled { .. }
            ))
            .await
            .is_some()
    );
    running
        .supervisor
        .command(Command::Stop("late".into()))
        .await
        .expect("the supervisor no longer answers");
    let (report, _) = running.stop().await;
    assert!(report.clean(), "{report:?}");
}
