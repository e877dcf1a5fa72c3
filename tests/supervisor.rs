//! The supervisor with real processes: dependency order, backoff and the intensity limit, hang
//! detection, the stop sequence's escalation, grandchildren, jobs and rolling restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{alive, all_gone, is_state, stack, start};
use switchboard::{
    event::EventKind,
    registry::{self, ExitStatus, InstanceState},
    router::GATEWAY,
    supervisor::{Command, Reply},
};
use switchboard_protocol::{Body, Envelope, Kind, Status};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_in_dependency_order_and_stops_in_reverse() {
    // `db` becomes ready only when it prints its ready line, after a pause: `api` must wait
    // for that, not merely for the spawn.
    let (stack, _dir) = stack(
        r#"
        name = "order"
        [services.web]
        command = "sh"
        args = ["-c", "read x"]
        depends_on = { api = "ready" }
        [services.api]
        command = "sh"
        args = ["-c", "read x"]
        depends_on = ["db"]
        [services.db]
        command = "sh"
        args = ["-c", "sleep 0.3; echo accepting connections; read x"]
        ready_line = "accepting connections"
        "#,
    );
    let mut running = start(stack).await;
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "web", InstanceState::Ready))
            .await
            .is_some()
    );
    let (report, events) = running.stop().await;
    assert!(report.clean(), "{report:?}");

    let position = |service: &str, wanted: &dyn Fn(&EventKind) -> bool| {
        events
            .iter()
            .position(|e| e.service == service && wanted(&e.kind))
            .unwrap_or_else(|| panic!("no such event for {service}"))
    };
    let spawned = |s: &str| position(s, &|k| matches!(k, EventKind::Spawned { .. }));
    let ready = |s: &str| {
        position(s, &|k| {
            matches!(
                k,
                EventKind::State {
                    to: InstanceState::Ready,
                    ..
                }
            )
        })
    };
    let exited = |s: &str| position(s, &|k| matches!(k, EventKind::Exited { .. }));
    assert!(
        ready("db") < spawned("api"),
        "api started before db was ready"
    );
    assert!(ready("api") < spawned("web"));
    assert!(exited("web") < exited("api"), "api stopped before web");
    assert!(exited("api") < exited("db"));
}

/// A program that does not exist fails at once, named in the alert, and is not retried: a
/// missing executable does not appear by retrying (it used to be retried five times with
/// backoff, its error naming no path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_fails_at_once_named_and_unretried() {
    let (stack, _dir) = stack(
        r#"
        name = "missing"
        [services.ghost]
        command = "/nonexistent/x/y"
        backoff = { initial = "10ms", max = "20ms", multiplier = 2.0, jitter = 0.0 }
        "#,
    );
    let mut running = start(stack).await;
    let failed = running
        .event(LIMIT, |e| is_state(e, "ghost", InstanceState::Failed))
        .await;
    assert!(failed.is_some(), "never failed: {:?}", running.seen);
    // Time for a retry that must not come.
    let retry = running
        .event(Duration::from_millis(300), |e| {
            matches!(e.kind, EventKind::RestartScheduled { .. })
        })
        .await;
    assert!(retry.is_none(), "retried: {retry:?}");
    let alert = running.seen.iter().find_map(|e| match &e.kind {
        EventKind::Alert { message } => Some(message.clone()),
        _ => None,
    });
    assert_eq!(
        alert.as_deref(),
        Some("cannot start: /nonexistent/x/y: no such file; not retried (s starts it again)")
    );
    let scheduled = running
        .seen
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RestartScheduled { .. }))
        .count();
    assert_eq!(scheduled, 0, "a missing program was retried");
    let (report, _) = running.stop().await;
    assert!(report.clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_service_backs_off_then_fails_at_the_intensity_limit() {
    let (stack, _dir) = stack(
        r#"
        name = "crash"
        [services.crasher]
        command = "sh"
        args = ["-c", "exit 3"]
        backoff = { initial = "40ms", max = "1s", multiplier = 2.0, jitter = 0.0 }
        restart_limit = { count = 3, window = "60s" }
        "#,
    );
    let mut running = start(stack).await;
    let gave_up = running
        .event(LIMIT, |e| matches!(e.kind, EventKind::GaveUp { .. }))
        .await;
    assert!(gave_up.is_some(), "never gave up");
    let delays: Vec<Duration> = running
        .seen
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::RestartScheduled { delay, .. } => Some(delay),
            _ => None,
        })
        .collect();
    assert_eq!(
        delays,
        [40, 80, 160].map(Duration::from_millis),
        "backoff must grow"
    );
    let exits = running
        .seen
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::Exited {
                    status: ExitStatus::Code(3)
                }
            )
        })
        .count();
    assert_eq!(exits, 4, "one first run and three restarts");
    {
        let registry = registry::read(running.supervisor.registry());
        let crasher = registry.service("crasher").unwrap();
        assert_eq!(crasher.state(), InstanceState::Failed);
        assert_eq!(crasher.restarts(), 3);
    }
    let (report, _) = running.stop().await;
    assert!(report.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_wait_a_jittered_delay_that_never_passes_the_cap() {
    // 10, 20, then 40 ms at the cap for six more restarts; jitter 0.5 takes away up to half.
    let (stack, _dir) = stack(
        r#"
        name = "jitter"
        [services.crasher]
        command = "sh"
        args = ["-c", "exit 3"]
        backoff = { initial = "10ms", max = "40ms", multiplier = 2.0, jitter = 0.5 }
        restart_limit = { count = 8, window = "60s" }
        "#,
    );
    let mut running = start(stack).await;
    let gave_up = running
        .event(LIMIT, |e| matches!(e.kind, EventKind::GaveUp { .. }))
        .await;
    assert!(gave_up.is_some(), "never gave up");
    let mut scheduled = Vec::new();
    let mut waited = Vec::new();
    let mut since = None;
    for event in &running.seen {
        match event.kind {
            EventKind::RestartScheduled { delay, attempt } => {
                scheduled.push((attempt, delay));
                since = Some(event.at);
            }
            EventKind::Spawned { .. } => {
                if let Some(at) = since.take() {
                    waited.push(event.at.duration_since(at).unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    assert_eq!(scheduled.len(), 8, "{scheduled:?}");
    let nominal = |attempt: u32| Duration::from_millis(10 << attempt.min(2));
    for &(attempt, delay) in &scheduled {
        let full = nominal(attempt);
        assert!(
            delay <= full && delay >= full / 2,
            "attempt {attempt}: {delay:?} is outside half to all of {full:?}: {scheduled:?}"
        );
    }
    // The jitter is there: the six capped delays are not one figure, nor all the full cap.
    let capped: Vec<Duration> = scheduled.iter().skip(2).map(|&(_, d)| d).collect();
    assert!(
        capped.iter().any(|&d| d != capped[0]) && capped.iter().any(|&d| d < nominal(2)),
        "no jitter: {scheduled:?}"
    );
    // And each restart really waited its delay (a lower bound: load only makes it later).
    assert_eq!(waited.len(), 8, "{waited:?}");
    for (&(_, delay), &waited) in scheduled.iter().zip(&waited) {
        assert!(
            waited + Duration::from_millis(1) >= delay,
            "restarted after {waited:?}, before its delay {delay:?}"
        );
    }
    let (report, _) = running.stop().await;
    assert!(report.clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_service_is_detected_killed_and_restarted() {
    let (stack, _dir) = stack(
        r#"
        name = "hang"
        [services.frozen]
        builtin = "probe"
        env = { PROBE_HANG_AFTER_MS = "300" }
        heartbeat_timeout = "400ms"
        backoff = { initial = "10ms", jitter = 0.0 }
        "#,
    );
    let mut running = start(stack).await;
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "frozen", InstanceState::Ready))
            .await
            .is_some()
    );
    let first_pid = registry::read(running.supervisor.registry())
        .service("frozen")
        .unwrap()
        .instances[0]
        .pid
        .unwrap();
    let hang = running
        .event(LIMIT, |e| matches!(e.kind, EventKind::HangDetected { .. }))
        .await
        .expect("hang never detected");
    let EventKind::HangDetected { silent_for } = hang.kind else {
        unreachable!()
    };
    // Detected after the timeout, not missed: a bound no load reaches. How soon after the
    // timeout is `switchboard bench --only hang`'s figure (one heartbeat period).
    assert!(silent_for >= Duration::from_millis(400), "{silent_for:?}");
    assert!(silent_for < Duration::from_secs(3), "{silent_for:?}");
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "frozen", InstanceState::Ready))
            .await
            .is_some(),
        "not restarted after the hang"
    );
    assert!(all_gone(&[first_pid], LIMIT).await, "hung process survived");
    let restarts = registry::read(running.supervisor.registry())
        .service("frozen")
        .unwrap()
        .restarts();
    assert!(restarts >= 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_ignoring_sigterm_is_killed_after_its_grace_period() {
    let (stack, _dir) = stack(
        r#"
        name = "stubborn"
        [services.mule]
        builtin = "probe"
        env = { PROBE_STUBBORN = "1" }
        shutdown_grace = "200ms"
        "#,
    );
    let mut running = start(stack).await;
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "mule", InstanceState::Ready))
            .await
            .is_some()
    );
    let pid = registry::read(running.supervisor.registry())
        .service("mule")
        .unwrap()
        .instances[0]
        .pid
        .unwrap();
    let (report, events) = running.stop().await;
    let signals: Vec<&str> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Signalled { signal } => Some(signal),
            _ => None,
        })
        .collect();
    assert_eq!(signals, ["SIGTERM", "SIGKILL"]);
    assert!(!report.clean(), "a forced stop is not a clean shutdown");
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grandchild_does_not_outlive_its_service() {
    let (stack, _dir) = stack(
        r#"
        name = "family"
        [services.parent]
        command = "sh"
        args = ["-c", "sleep 600 & echo grandchild $!; read x"]
        ready_line = "grandchild"
        "#,
    );
    let running = start(stack).await;
    assert!(
        running
            .until(LIMIT, |r| r.service("parent").unwrap().ready_instances()
                == 1)
            .await
    );
    let line = running
        .supervisor
        .logs()
        .tail("parent", 10)
        .into_iter()
        .find(|l| l.text.starts_with("grandchild"))
        .expect("no grandchild line");
    let grandchild: u32 = line.text["grandchild ".len()..].trim().parse().unwrap();
    assert!(alive(grandchild));
    let (report, _) = running.stop().await;
    assert!(report.clean());
    assert!(
        all_gone(&[grandchild], Duration::from_secs(5)).await,
        "grandchild {grandchild} survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_with_parameters_reporting_progress_and_a_result() {
    let (stack, _dir) = stack(
        r#"
        name = "jobs"
        [services.count]
        kind = "job"
        builtin = "probe-job"
        "#,
    );
    let running = start(stack).await;
    let reply = running
        .supervisor
        .command(Command::RunJob(
            "count".into(),
            Some(r#"{"steps": 8, "pace_ms": 60}"#.into()),
        ))
        .await
        .unwrap();
    assert_eq!(reply, Reply::JobRun(1));
    // Progress is read from the job's segment while it runs.
    let progress = std::sync::Mutex::new(Vec::new());
    let finished = running
        .until(LIMIT, |registry| {
            let job = registry.service("count").unwrap();
            if let Some(segment) = job
                .instances
                .first()
                .and_then(|i| i.handle.as_ref())
                .and_then(|h| h.segment.as_ref())
            {
                for task in segment.read().tasks {
                    if task.total == 8 {
                        progress.lock().unwrap().push(task.done);
                    }
                }
            }
            job.runs.back().is_some_and(|run| run.exit.is_some())
        })
        .await;
    assert!(finished, "job did not finish");
    let seen = progress.into_inner().unwrap();
    assert!(
        seen.iter().any(|&done| done > 0 && done < 8),
        "no intermediate progress seen: {seen:?}"
    );
    let run = running.last_run("count");
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
    let result: serde_json::Value =
        serde_json::from_str(run.result.unwrap().unwrap().as_str()).unwrap();
    assert_eq!(result, serde_json::json!({"steps": 8, "sum": 36}));

    // A failing run reports its error.
    let reply = running
        .supervisor
        .command(Command::RunJob(
            "count".into(),
            Some(r#"{"steps": 2, "fail": true}"#.into()),
        ))
        .await
        .unwrap();
    assert_eq!(reply, Reply::JobRun(2));
    assert!(
        running
            .until(LIMIT, |r| r.service("count").unwrap().runs.len() == 2
                && r.service("count").unwrap().runs[1].exit.is_some())
            .await
    );
    let run = registry::read(running.supervisor.registry())
        .service("count")
        .unwrap()
        .runs[1]
        .clone();
    assert!(
        run.result
            .unwrap()
            .unwrap_err()
            .contains("failed on purpose")
    );
    running.stop().await;
}

fn echo_request(id: u64, text: &str) -> Envelope {
    Envelope {
        id,
        deadline_us: 5_000_000,
        kind: Kind::Request,
        destination: "echo".into(),
        method: "echo".into(),
        body: Body::Json(serde_json::to_vec(text).unwrap().into()),
        ..Envelope::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_requests_succeeding() {
    let (stack, _dir) = stack(
        r#"
        name = "rolling"
        [services.echo]
        builtin = "probe"
        replicas = 3
        shutdown_grace = "2s"
        "#,
    );
    let mut running = start(stack).await;
    assert!(running.replicas_ready(LIMIT, "echo", 3).await);
    let pids_before: Vec<u32> = registry::read(running.supervisor.registry())
        .service("echo")
        .unwrap()
        .instances
        .iter()
        .filter_map(|i| i.pid)
        .collect();

    let router = running.supervisor.router().clone();
    let client = tokio::spawn(async move {
        let mut answers = Vec::new();
        let mut id = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        loop {
            id += 1;
            let answer = router.call(GATEWAY, echo_request(id, "ping")).await;
            answers.push(answer);
            if tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    running
        .supervisor
        .command(Command::Restart("echo".into()))
        .await
        .unwrap();
    // Done when every replica was replaced and is ready again.
    let replaced = running
        .until(Duration::from_secs(15), |r| {
            let echo = r.service("echo").unwrap();
            echo.ready_instances() == 3
                && echo
                    .instances
                    .iter()
                    .all(|i| i.pid.is_some_and(|pid| !pids_before.contains(&pid)))
        })
        .await;
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = client.await.unwrap();
    assert!(replaced, "not every replica was replaced");
    assert!(
        answers.len() > 20,
        "client made only {} calls",
        answers.len()
    );
    let failures: Vec<&Envelope> = answers
        .iter()
        .filter(|a| !matches!(a.kind, Kind::Response(Status::Ok)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rolling restart, first: {:?}",
        failures.len(),
        answers.len(),
        failures.first()
    );
    // Restarting replaced one replica at a time: once all three were up, never fewer than two
    // were ready.
    let mut ready = 0i32;
    let mut lowest = 3;
    let mut full = false;
    while let Ok(event) = running.events.try_recv() {
        running.seen.push(event);
    }
    for event in &running.seen {
        if let EventKind::State { from, to } = event.kind {
            if to == InstanceState::Ready {
                ready += 1;
            } else if from == InstanceState::Ready {
                ready -= 1;
            }
            full |= ready == 3;
            if full {
                lowest = lowest.min(ready);
            }
        }
    }
    assert!(
        full,
        "the events never showed all three replicas ready at once"
    );
    assert!(
        lowest >= 2,
        "as few as {lowest} replicas were ready at once"
    );
    running.stop().await;
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_come_from_the_os() {
    // sysinfo#1528 (CPU always 0) is open upstream: a busy process must show real CPU.
    let (stack, _dir) = stack(
        r#"
        name = "busy"
        [services.spinner]
        command = "sh"
        args = ["-c", "while :; do :; done"]
        shutdown_grace = "100ms"
        [services.sleeper]
        command = "sleep"
        args = ["600"]
        shutdown_grace = "100ms"
        "#,
    );
    let running = start(stack).await;
    // The figures are sampled while someone reads them (`monitor::resources`).
    running.supervisor.own_usage().looked_at();
    let busy = running
        .until(Duration::from_secs(10), |r| {
            r.service("spinner")
                .unwrap()
                .instances
                .first()
                .is_some_and(|i| i.cpu_percent > 20.0)
        })
        .await;
    assert!(busy, "a spinning process never showed CPU");
    let registry_snapshot = {
        let registry = registry::read(running.supervisor.registry());
        let sleeper = &registry.service("sleeper").unwrap().instances[0];
        (sleeper.cpu_percent, sleeper.rss_bytes)
    };
    assert!(
        registry_snapshot.0 < 10.0,
        "sleep is not busy: {registry_snapshot:?}"
    );
    assert!(
        registry_snapshot.1 > 100 * 1024,
        "rss is reported: {registry_snapshot:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waits_for_a_job_to_complete() {
    // `migrate` runs at stack start because `app` depends on it completing; `app` starts only
    // after the job's successful exit.
    let (stack, _dir) = stack(
        r#"
        name = "migrations"
        [services.app]
        command = "sh"
        args = ["-c", "read x"]
        depends_on = { migrate = "completed" }
        [services.migrate]
        kind = "job"
        builtin = "probe-job"
        params = '{"steps": 3, "pace_ms": 50}'
        "#,
    );
    let mut running = start(stack).await;
    assert!(
        running
            .event(LIMIT, |e| is_state(e, "app", InstanceState::Ready))
            .await
            .is_some(),
        "app never started"
    );
    let finished = running
        .seen
        .iter()
        .position(|e| {
            e.service == "migrate" && matches!(e.kind, EventKind::JobFinished { ok: true, .. })
        })
        .expect("the job did not finish first");
    let app_spawned = running
        .seen
        .iter()
        .position(|e| e.service == "app" && matches!(e.kind, EventKind::Spawned { .. }))
        .unwrap();
    assert!(finished < app_spawned);
    running.stop().await;
}

/// Nobody looking, nothing sampled: CPU and RSS stay unread until the figures are asked for,
/// and then come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_are_sampled_only_while_someone_looks() {
    let (stack, _dir) = stack(
        r#"
        name = "unwatched"
        [services.sleeper]
        command = "sleep"
        args = ["600"]
        shutdown_grace = "100ms"
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["sleeper"]).await;
    let rss = |r: &registry::Registry| r.service("sleeper").unwrap().instances[0].rss_bytes;
    // Three sampling periods with nobody looking: nothing read.
    let sampled = running.until(Duration::from_secs(3), |r| rss(r) > 0).await;
    assert!(!sampled, "sampled with nobody looking");
    let _ = running.supervisor.view(std::time::Instant::now());
    assert!(
        running.until(Duration::from_secs(10), |r| rss(r) > 0).await,
        "not sampled once looked at"
    );
    running.stop().await;
}
