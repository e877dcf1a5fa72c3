//! Liveness probes for plain programs (issue 27 item 2), with real processes: each probe kind
//! (HTTP, TCP, command) finds a program hung while it still runs, the console kills and
//! restarts it; a program is ready at its first pass, and not counted as failing while it
//! starts; a command probe that overruns its timeout is killed and reaped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, time::Duration};

use common::{alive, processes_running, ready_pid, stack, start};
use switchboard::{event::EventKind, registry::InstanceState};

const LIMIT: Duration = Duration::from_secs(15);

/// A Python program that serves `GET /health` on `port`: 200 until `sick` exists, 503 after;
/// it starts listening only once `go` exists. Either way it keeps running.
fn http_program(port: u16, go: &Path, sick: &Path) -> String {
    let script = format!(
        r#"
import http.server, os, time
while not os.path.exists({go:?}):
    time.sleep(0.02)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if os.path.exists({sick:?}) else 200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
"#,
        go = go.display().to_string(),
        sick = sick.display().to_string(),
    );
    format!("command = \"python3\"\nargs = [\"-c\", {script:?}]")
}

/// A Python program that listens on `port` until `sick` exists, then closes its listener and
/// runs on, answering nothing: alive, and of no use.
fn tcp_program(port: u16, sick: &Path) -> String {
    let script = format!(
        r#"
import os, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port}))
s.listen()
s.settimeout(0.02)
while not os.path.exists({sick:?}):
    try:
        s.accept()[0].close()
    except socket.timeout:
        pass
s.close()
while True:
    time.sleep(1)
"#,
        sick = sick.display().to_string(),
    );
    format!("command = \"python3\"\nargs = [\"-c\", {script:?}]")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn probe_failed(e: &switchboard::event::Event, service: &str) -> bool {
    e.service == service && matches!(e.kind, EventKind::ProbeFailed { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_probe_makes_a_program_ready_at_its_first_pass_and_restarts_it_when_it_fails() {
    let marks = tempfile::tempdir().unwrap();
    let (go, sick) = (marks.path().join("go"), marks.path().join("sick"));
    let port = free_port();
    let (stack, _dir) = stack(&format!(
        r#"
        name = "http-probe"
        [services.web]
        {}
        backoff = {{ initial = "20ms", jitter = 0.0 }}
        probe = {{ http = "http://127.0.0.1:{port}/health", every = "200ms", timeout = "200ms", failures = 2 }}
        "#,
        http_program(port, &go, &sick)
    ));
    let mut running = start(stack).await;
    // Not listening yet: it runs, and is not ready; nor is it counted failing while it starts
    // (startup_timeout is 30 s), so it is not killed either.
    let started = running
        .until(LIMIT, |r| {
            r.service("web")
                .and_then(|s| s.instances.first())
                .is_some_and(|i| i.state == InstanceState::Starting && i.pid.is_some())
        })
        .await;
    assert!(started, "web never showed as starting");
    // For a while (seven checks' worth): still starting, never restarted.
    let window = std::time::Instant::now();
    while window.elapsed() < Duration::from_millis(1500) {
        let web = switchboard::registry::read(running.supervisor.registry())
            .service("web")
            .unwrap()
            .instances[0]
            .clone();
        assert_eq!(web.restarts, 0, "killed while it was still starting");
        assert_eq!(
            web.state,
            InstanceState::Starting,
            "ready before its probe passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&go, "").unwrap();
    running.ready(LIMIT, &["web"]).await;
    let first = ready_pid(&running, "web").unwrap();

    std::fs::write(&sick, "").unwrap();
    let failed = running.event(LIMIT, |e| probe_failed(e, "web")).await;
    let Some(EventKind::ProbeFailed {
        failures, error, ..
    }) = failed.map(|e| e.kind)
    else {
        panic!("the failing HTTP probe was never reported");
    };
    assert_eq!(failures, 2);
    assert!(error.contains("503"), "{error}");
    std::fs::remove_file(&sick).unwrap();
    let replaced = running
        .until(LIMIT, |r| {
            let i = &r.service("web").unwrap().instances[0];
            i.state == InstanceState::Ready && i.pid.is_some_and(|pid| pid != first)
        })
        .await;
    assert!(replaced, "web was not restarted after its probe failed");
    assert!(!alive(first), "the hung process {first} still runs");
    running
        .logged(LIMIT, "web", "probe failed (1 of 2 in a row)")
        .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_probe_finds_a_program_that_stopped_listening() {
    let marks = tempfile::tempdir().unwrap();
    let sick = marks.path().join("sick");
    let port = free_port();
    let (stack, _dir) = stack(&format!(
        r#"
        name = "tcp-probe"
        [services.db]
        {}
        restart = "never"
        probe = {{ tcp = "127.0.0.1:{port}", every = "200ms", timeout = "200ms", failures = 2 }}
        "#,
        tcp_program(port, &sick)
    ));
    let mut running = start(stack).await;
    running.ready(LIMIT, &["db"]).await;
    let pid = ready_pid(&running, "db").unwrap();
    std::fs::write(&sick, "").unwrap();
    let failed = running.event(LIMIT, |e| probe_failed(e, "db")).await;
    let Some(EventKind::ProbeFailed { error, probe, .. }) = failed.map(|e| e.kind) else {
        panic!("the failing TCP probe was never reported");
    };
    assert_eq!(probe, format!("tcp 127.0.0.1:{port}"));
    assert!(error.contains("refused"), "{error}");
    let exited = running
        .until(LIMIT, |r| {
            r.service("db").unwrap().instances[0].state == InstanceState::Crashed
        })
        .await;
    assert!(exited, "a hung program with restart = never is crashed");
    assert!(!alive(pid), "the hung process {pid} still runs");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_probe_runs_in_the_services_directory_and_an_overrun_is_killed_and_reaped() {
    let marks = tempfile::tempdir().unwrap();
    let (stack, _dir) = stack(&format!(
        r#"
        name = "command-probe"
        [services.worker]
        command = "sleep"
        args = ["1000"]
        cwd = {cwd:?}
        backoff = {{ initial = "20ms", jitter = 0.0 }}
        probe = {{ command = "test ! -e sick || {{ echo sick file found; exit 3; }}", every = "200ms", timeout = "1s", failures = 2 }}

        [services.stuck]
        command = "sleep"
        args = ["1001"]
        restart = "never"
        startup_timeout = "0s"
        probe = {{ command = ["sleep", "987"], every = "300ms", timeout = "300ms", failures = 1 }}
        "#,
        cwd = marks.path().display().to_string()
    ));
    let mut running = start(stack).await;
    running.ready(LIMIT, &["worker"]).await;
    let first = ready_pid(&running, "worker").unwrap();
    std::fs::write(marks.path().join("sick"), "").unwrap();
    let failed = running.event(LIMIT, |e| probe_failed(e, "worker")).await;
    let Some(EventKind::ProbeFailed { error, .. }) = failed.map(|e| e.kind) else {
        panic!("the failing command probe was never reported");
    };
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(error.contains("sick file found"), "{error}");
    std::fs::remove_file(marks.path().join("sick")).unwrap();
    let replaced = running
        .until(LIMIT, |r| {
            let i = &r.service("worker").unwrap().instances[0];
            i.state == InstanceState::Ready && i.pid.is_some_and(|pid| pid != first)
        })
        .await;
    assert!(replaced, "worker was not restarted after its probe failed");

    // `stuck`'s probe never finishes: it is killed at its timeout, which is the failure.
    let earlier = running
        .seen
        .iter()
        .find(|e| probe_failed(e, "stuck"))
        .cloned();
    let overran = match earlier {
        Some(event) => Some(event),
        None => running.event(LIMIT, |e| probe_failed(e, "stuck")).await,
    };
    let Some(EventKind::ProbeFailed { error, .. }) = overran.map(|e| e.kind) else {
        panic!("the overrunning command probe was never reported");
    };
    assert!(error.contains("still running after 300ms"), "{error}");
    let reaped = common::all_gone(&processes_running(&["sleep", "987"]), LIMIT).await;
    assert!(reaped, "an overrun probe's process is left");
    running.stop().await;
    assert!(
        processes_running(&["sleep", "987"]).is_empty(),
        "a probe outlived the stack"
    );
}
