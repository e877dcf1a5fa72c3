//! The HTTP gateway over real HTTP on loopback, with real probe services: service routes and
//! every error status, the hardening (body limit, malformed JSON, unknown routes), the admin API
//! and its token, a restart seen in the registry, the audit log and the event stream, and a
//! `/metrics` scrape read by a Prometheus text parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Running, signal, stack, start};
use hyper::{Method, StatusCode, header};
use rustix::process::Signal;
use serde_json::{Value, json};
use switchboard::{
    api::{ConsoleView, HopView},
    client::{Client, RawResponse, Target},
    gateway::{DISCOVERY_FILE, Discovery, Gateway, GatewayError, auth},
    registry,
};

const LIMIT: Duration = Duration::from_secs(15);

const STACK: &str = r#"
name = "gw"
[gateway]
request_timeout = "600ms"
body_limit = "1KiB"
routes = [
  { route = "POST /echo", call = "echo.echo" },
  { route = "POST /through/{service}", call = "caller.call" },
  { route = "GET /sleep", call = "echo.sleep" },
  { route = "GET /count", call = "echo.count", stream = true },
]
[services.echo]
builtin = "probe"
[services.caller]
builtin = "probe"
calls = ["echo"]
[services.parked]
builtin = "probe"
[services.slowpoke]
builtin = "probe"
breaker = { failures = 2, cooldown = "30s" }
[services.count]
kind = "job"
builtin = "probe-job"
params = '{"steps": 3, "pace_ms": 50}'
"#;

struct Fixture {
    running: Running,
    gateway: Gateway,
    /// With the admin token.
    admin: Client,
    /// Without any token.
    anonymous: Client,
    _dir: tempfile::TempDir,
}

async fn fixture(toml: &str, services: &[&str]) -> Fixture {
    let (stack, dir) = stack(toml);
    let run_dir = stack.run_dir.clone();
    let running = start(stack).await;
    let gateway = Gateway::start_at(&running.supervisor, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the gateway did not start");
    assert_ne!(gateway.address().port(), 0, "the bound port is known");
    let token = auth::from_env(None)
        .or_else(|| std::fs::read_to_string(run_dir.join(auth::TOKEN_FILE)).ok())
        .expect("no token")
        .trim()
        .to_string();
    let admin = Client::new(Target {
        address: gateway.address().into(),
        token: Some(token),
    });
    let anonymous = Client::new(Target {
        address: gateway.address().into(),
        token: None,
    });
    running.ready(LIMIT, services).await;
    Fixture {
        running,
        gateway,
        admin,
        anonymous,
        _dir: dir,
    }
}

impl Fixture {
    async fn post(&self, path: &str, body: &str) -> RawResponse {
        self.anonymous
            .send(Method::POST, path, Some(body.as_bytes().to_vec()))
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.running.stop().await;
    }
}

fn json_body(response: &RawResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {} {:?}",
            response.status,
            String::from_utf8_lossy(&response.body)
        )
    })
}

/// Asserts the status and the JSON error body's code; returns the message.
fn expect_error(response: &RawResponse, status: StatusCode, code: &str) -> String {
    assert_eq!(
        response.status,
        status,
        "{:?}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.headers[header::CONTENT_TYPE],
        "application/json",
        "error bodies are JSON"
    );
    let body = json_body(response);
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_routes_answer_and_every_error_code_has_its_status() {
    let f = fixture(STACK, &["echo", "caller", "parked", "slowpoke"]).await;

    // A stack route: the JSON body goes to the service, its JSON answer comes back.
    let answer = f.post("/echo", "\"hello\"").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(json_body(&answer), json!("hello"));
    assert!(answer.headers.contains_key("x-switchboard-trace"));
    // Path parameters are merged into the body object.
    let answer = f
        .post(
            "/through/echo",
            r#"{"method": "echo", "body": "via caller"}"#,
        )
        .await;
    assert_eq!(json_body(&answer), json!("via caller"), "{answer:?}");
    // The generic route.
    let answer = f.post("/call/echo/echo", "\"generic\"").await;
    assert_eq!(json_body(&answer), json!("generic"));

    // not_found: unknown service, unknown method.
    expect_error(
        &f.post("/call/nobody/echo", "\"x\"").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        &f.post("/call/echo/no_such_method", "\"x\"").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // bad_request from the service: sleep wants a number.
    expect_error(
        &f.post("/call/echo/sleep", "\"not a number\"").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // A route with query parameters sends an object, which sleep cannot take either.
    let answer = f
        .anonymous
        .send(Method::GET, "/sleep?ms=1", None)
        .await
        .unwrap();
    expect_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    // internal: a generic message naming the trace; the handler's own text stays in the log.
    let answer = f.post("/call/echo/fail", "\"boom\"").await;
    let message = expect_error(&answer, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(!message.contains("boom"), "{message}");
    let trace = answer.headers["x-switchboard-trace"].to_str().unwrap();
    assert!(message.contains(&format!("trace {trace}")), "{message}");
    // forbidden: caller may call echo but not parked, and says so to the gateway.
    expect_error(
        &f.post(
            "/call/caller/call",
            r#"{"service": "parked", "method": "echo", "body": "x"}"#,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // timeout: the gateway's request_timeout (600 ms) is the envelope's deadline.
    let started = Instant::now();
    expect_error(
        &f.post("/call/echo/sleep", "3000").await,
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
    );
    assert!(started.elapsed() < Duration::from_millis(2500));

    // unavailable: a stopped service, with Retry-After.
    let stopped = f
        .admin
        .send(Method::POST, "/admin/services/parked/stop", None)
        .await
        .unwrap();
    assert_eq!(stopped.status, StatusCode::OK);
    assert!(
        f.running
            .until(LIMIT, |r| r
                .service("parked")
                .unwrap()
                .instances
                .iter()
                .all(|i| !i.state.has_process()))
            .await
    );
    let answer = f.post("/call/parked/echo", "\"x\"").await;
    expect_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(answer.headers[header::RETRY_AFTER], "1");

    // circuit_open: two timeouts open slowpoke's breaker (failures = 2, cooldown 30 s).
    for _ in 0..2 {
        expect_error(
            &f.post("/call/slowpoke/sleep", "3000").await,
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        );
    }
    let answer = f.post("/call/slowpoke/echo", "\"x\"").await;
    expect_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "circuit_open");
    let retry: u64 = answer.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 30, "Retry-After is the breaker's cooldown");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_body_limit_malformed_json_and_unknown_routes() {
    let f = fixture(STACK, &["echo"]).await;
    // Over the 1 KiB body limit: 413, JSON.
    let big = format!("\"{}\"", "x".repeat(4096));
    expect_error(
        &f.post("/echo", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    expect_error(
        &f.post("/call/echo/echo", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Just under it still works.
    let fits = format!("\"{}\"", "x".repeat(1000));
    assert_eq!(f.post("/echo", &fits).await.status, StatusCode::OK);
    // Malformed JSON: 400 with a JSON body, not axum's plain text.
    let message = expect_error(
        &f.post("/echo", "{\"unterminated\": ").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert!(message.contains("malformed JSON"), "{message}");
    expect_error(
        &f.post("/through/echo", "[1, 2").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // A numeric path parameter arrives as a JSON number: caller.call wants a string service
    // name, so it refuses the body (bad_request), where a string "7" would have reached the
    // router and been not_found.
    expect_error(
        &f.post("/through/7", r#"{"method": "echo", "body": "x"}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect_error(
        &f.post("/through/seven", r#"{"method": "echo", "body": "x"}"#)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A route with parameters needs an object body.
    expect_error(
        &f.post("/through/echo", "[1, 2]").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    // Unknown route and wrong method: JSON too.
    let answer = f
        .anonymous
        .send(Method::GET, "/nowhere", None)
        .await
        .unwrap();
    expect_error(&answer, StatusCode::NOT_FOUND, "not_found");
    let answer = f.anonymous.send(Method::GET, "/echo", None).await.unwrap();
    expect_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // Nothing from the console's insides leaks into a message.
    let answer = f.post("/call/nobody/echo", "1").await;
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        !text.contains("panicked") && !text.contains("src/"),
        "{text}"
    );
    // Still healthy after all that.
    let health = f
        .anonymous
        .send(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(json_body(&health)["status"], "ok");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token() {
    let f = fixture(STACK, &["echo"]).await;
    let missing = f
        .anonymous
        .send(Method::GET, "/admin/services", None)
        .await
        .unwrap();
    expect_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(missing.headers.contains_key(header::WWW_AUTHENTICATE));
    let echo_pid = registry::read(f.running.supervisor.registry())
        .service("echo")
        .and_then(|s| s.instances[0].pid)
        .expect("echo runs");
    let wrong = Client::new(Target {
        address: f.gateway.address().into(),
        token: Some("not-the-token".into()),
    });
    for (method, path) in [
        (Method::GET, "/admin/services"),
        (Method::POST, "/admin/services/echo/kill"),
        (Method::GET, "/admin/events"),
    ] {
        let answer = wrong.send(method, path, None).await.unwrap();
        expect_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    }
    // Wrong tokens are audited (missing ones are not: that is only a forgetful client).
    assert!(
        audited(&f, |l| l["actor"] == "api:wrong-token"
            && l["target"] == "POST /admin/services/echo/kill"
            && l["result"] == "refused")
        .await,
        "wrong token not audited"
    );
    // The refused kill did nothing: the audit line is written after the refusal, and a kill
    // that went through would have ended the process well within this window.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_millis(500) {
        assert!(common::alive(echo_pid), "the refused kill killed echo");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view: ConsoleView = f
        .admin
        .json(Method::GET, "/admin/services", None::<&()>)
        .await
        .unwrap();
    let echo = view.services.iter().find(|s| s.name == "echo").unwrap();
    assert_eq!((echo.restarts, echo.pid), (0, Some(echo_pid)));
    assert_eq!(view.gateway, Some(f.gateway.address().to_string()));
    f.stop().await;
}

/// Reads `RUN_DIR/audit.jsonl` until a line satisfies `wanted`.
async fn audited(f: &Fixture, wanted: impl Fn(&Value) -> bool) -> bool {
    let path = f
        .running
        .supervisor
        .audit()
        .as_ref()
        .unwrap()
        .path()
        .to_path_buf();
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| wanted(&l))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_through_the_api_is_seen_in_the_registry_the_audit_log_and_the_event_stream() {
    let f = fixture(STACK, &["echo"]).await;
    let before: ConsoleView = f
        .admin
        .json(Method::GET, "/admin/services", None::<&()>)
        .await
        .unwrap();
    let old_pid = before
        .services
        .iter()
        .find(|s| s.name == "echo")
        .unwrap()
        .pid
        .expect("echo has a pid");

    // Subscribe to the event stream first; collect echo's events on a task.
    let events = f.admin.clone();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut seen: Vec<(String, Value)> = Vec::new();
        let _ = events
            .events("/admin/events", |name, data| {
                if name == "subscribed" {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                    return true;
                }
                let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                let done = name == "state" && data["service"] == "echo" && data["to"] == "ready";
                seen.push((name.to_string(), data));
                !done
            })
            .await;
        seen
    });
    tokio::time::timeout(LIMIT, subscribed)
        .await
        .expect("event stream did not open")
        .unwrap();

    let restarted = f
        .admin
        .send(Method::POST, "/admin/services/echo/restart", None)
        .await
        .unwrap();
    assert_eq!(restarted.status, StatusCode::OK);
    assert_eq!(json_body(&restarted), json!({"ok": true}));

    // The registry, through the API: a new ready process.
    let deadline = Instant::now() + LIMIT;
    let mut new_pid = None;
    while Instant::now() < deadline {
        let view: ConsoleView = f
            .admin
            .json(Method::GET, "/admin/services", None::<&()>)
            .await
            .unwrap();
        let echo = view.services.iter().find(|s| s.name == "echo").unwrap();
        if echo.ready == 1 && echo.pid.is_some_and(|p| p != old_pid) {
            new_pid = echo.pid;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(new_pid.is_some(), "echo was not replaced");

    // The audit log.
    assert!(
        audited(&f, |l| l["actor"] == "api:token"
            && l["action"] == "restart"
            && l["target"] == "echo"
            && l["result"] == "ok")
        .await,
        "restart not audited"
    );

    // The event stream saw the lifecycle transitions.
    let seen = tokio::time::timeout(LIMIT, collector)
        .await
        .expect("no echo → ready event on the stream")
        .unwrap();
    assert!(
        seen.iter()
            .any(|(name, data)| name == "spawned" && data["service"] == "echo"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(name, data)| name == "state"
            && data["service"] == "echo"
            && data["to"] == "ready"),
        "{seen:?}"
    );

    // An unknown service is a 404 and is audited with its error.
    let answer = f
        .admin
        .send(Method::POST, "/admin/services/nobody/restart", None)
        .await
        .unwrap();
    expect_error(&answer, StatusCode::NOT_FOUND, "not_found");
    assert!(
        audited(&f, |l| l["target"] == "nobody" && l["result"] != "ok").await,
        "refused restart not audited"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_reset_through_the_api_is_audited() {
    let f = fixture(STACK, &["echo"]).await;
    let answer = f
        .admin
        .send(Method::POST, "/admin/services/echo/breaker/reset", None)
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(
        audited(&f, |l| l["action"] == "breaker reset"
            && l["target"] == "echo"
            && l["result"] == "ok")
        .await,
        "breaker reset not audited"
    );
    let answer = f
        .admin
        .send(Method::POST, "/admin/services/nobody/breaker/reset", None)
        .await
        .unwrap();
    expect_error(&answer, StatusCode::NOT_FOUND, "not_found");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_logs_and_a_job_run_through_the_api() {
    let f = fixture(STACK, &["echo"]).await;
    let answer = f
        .admin
        .send(
            Method::POST,
            "/admin/services/echo/scale",
            Some(br#"{"replicas": 2}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(f.running.replicas_ready(LIMIT, "echo", 2).await);
    let answer = f
        .admin
        .send(
            Method::POST,
            "/admin/services/echo/scale",
            Some(br#"{"replicas": 0}"#.to_vec()),
        )
        .await
        .unwrap();
    expect_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(audited(&f, |l| l["action"] == "scale" && l["target"] == "echo to 2").await);
    // The registry lists each replica, with its own pid.
    let view: ConsoleView = f
        .admin
        .json(Method::GET, "/admin/services", None::<&()>)
        .await
        .unwrap();
    let echo = view.services.iter().find(|s| s.name == "echo").unwrap();
    let pids: Vec<Option<u32>> = echo.instances.iter().map(|i| i.pid).collect();
    assert_eq!(pids.len(), 2, "{:?}", echo.instances);
    assert!(
        pids.iter().all(Option::is_some) && pids[0] != pids[1],
        "{pids:?}"
    );

    let lines: Vec<Value> = f
        .admin
        .json(Method::GET, "/admin/services/echo/logs?tail=5", None::<&()>)
        .await
        .unwrap();
    assert!(!lines.is_empty() && lines.len() <= 5, "{lines:?}");
    assert!(lines.iter().all(|l| l["service"] == "echo"));

    let started: Value = f
        .admin
        .json(
            Method::POST,
            "/admin/jobs/count/run",
            Some(&json!({"steps": 3, "pace_ms": 30})),
        )
        .await
        .unwrap();
    let run = started["run"].as_u64().expect("a run number");
    let deadline = Instant::now() + LIMIT;
    let mut outcome = Value::Null;
    while Instant::now() < deadline {
        let runs: Value = f
            .admin
            .json(Method::GET, "/admin/jobs/count/runs", None::<&()>)
            .await
            .unwrap();
        if let Some(found) = runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run"] == run && !r["outcome"].is_null())
        {
            outcome = found["outcome"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(outcome["ok"] == true, "job did not succeed: {outcome}");
    let answer = f
        .admin
        .send(
            Method::POST,
            "/admin/jobs/count/run",
            Some(b"{nope".to_vec()),
        )
        .await
        .unwrap();
    expect_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    let answer = f
        .admin
        .send(Method::GET, "/admin/jobs/echo/runs", None)
        .await
        .unwrap();
    expect_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_with_a_prometheus_parser() {
    let f = fixture(STACK, &["echo", "caller"]).await;
    for _ in 0..3 {
        assert_eq!(f.post("/echo", "\"x\"").await.status, StatusCode::OK);
    }
    // A reply after the deadline (600 ms here): echo is frozen while the router answers the
    // caller 504; thawed, it answers, and the router drops that reply and counts it late.
    let echo_pid = switchboard::registry::read(f.running.supervisor.registry())
        .service("echo")
        .and_then(|s| s.instances[0].handle.as_ref().map(|h| h.pid))
        .expect("echo runs");
    signal(echo_pid, Signal::STOP);
    let late = f.post("/echo", "\"late\"").await;
    signal(echo_pid, Signal::CONT);
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    // The segment sampler runs once a second; wait for it to have seen the requests.
    let deadline = Instant::now() + LIMIT;
    let scrape = loop {
        let answer = f
            .anonymous
            .send(Method::GET, "/metrics", None)
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = String::from_utf8(answer.body.to_vec()).unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("not Prometheus text");
        let requests = value(
            &scrape,
            "switchboard_service_requests_total",
            &[("service", "echo")],
        );
        let late = value(&scrape, "switchboard_router_late_replies_total", &[]);
        if requests.is_some_and(|r| r >= 3.0) && late == Some(1.0) || Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let echo = [("service", "echo")];
    assert_eq!(value(&scrape, "switchboard_service_up", &echo), Some(1.0));
    assert_eq!(
        value(
            &scrape,
            "switchboard_service_state",
            &[("service", "echo"), ("state", "ready")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "switchboard_service_state",
            &[("service", "echo"), ("state", "failed")]
        ),
        Some(0.0)
    );
    assert!(value(&scrape, "switchboard_service_requests_total", &echo).unwrap() >= 3.0);
    // echo calls nobody: its outgoing calls are there, and none.
    assert_eq!(
        value(&scrape, "switchboard_service_calls_made_total", &echo),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "switchboard_service_restarts_total", &echo),
        Some(0.0)
    );
    assert_eq!(
        value(&scrape, "switchboard_service_breaker_state", &echo),
        Some(0.0)
    );
    assert!(value(&scrape, "switchboard_service_rss_bytes", &echo).is_some());
    assert!(value(&scrape, "switchboard_service_cpu_percent", &echo).is_some());
    assert!(value(&scrape, "switchboard_service_heartbeat_age_seconds", &echo).is_some());
    let route = [("from", "gateway"), ("to", "echo"), ("method", "echo")];
    assert!(value(&scrape, "switchboard_route_requests_total", &route).unwrap() >= 3.0);
    // Zero where polling is off (one CPU), but always there.
    assert!(value(&scrape, "switchboard_router_busy_poll_seconds_total", &[]).is_some());
    assert_eq!(
        value(&scrape, "switchboard_router_late_replies_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "switchboard_router_dropped_events_total", &[]),
        Some(0.0)
    );
    // The latency histograms parse as histograms with a +Inf bucket holding every request.
    let histogram = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| s.value.clone())
    };
    match histogram("switchboard_service_request_duration_seconds", &echo) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert!(inf.count >= 3.0, "{buckets:?}");
        }
        other => panic!("no service latency histogram: {other:?}"),
    }
    match histogram("switchboard_route_duration_seconds", &route) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative"
            );
        }
        other => panic!("no route latency histogram: {other:?}"),
    }
    f.stop().await;
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_file_token_file_and_graceful_stop() {
    let f = fixture(STACK, &["echo"]).await;
    let run_dir = f.running.supervisor.stack().run_dir.clone();
    let discovery: Discovery =
        serde_json::from_slice(&std::fs::read(run_dir.join(DISCOVERY_FILE)).unwrap()).unwrap();
    assert_eq!(discovery.address, f.gateway.address());
    assert_eq!(discovery.pid, std::process::id());
    if auth::from_env(None).is_none() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(run_dir.join(auth::TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A request in flight when the gateway stops still gets its answer.
    let client = f.anonymous.clone();
    let slow = tokio::spawn(async move {
        client
            .send(Method::POST, "/call/echo/sleep", Some(b"300".to_vec()))
            .await
    });
    f.running.in_flight(LIMIT, "echo").await;
    let address = f.gateway.address();
    let Fixture {
        running, gateway, ..
    } = f;
    let stopped = Instant::now();
    gateway.stop().await;
    assert!(stopped.elapsed() < Duration::from_secs(5));
    let answer = slow.await.unwrap().expect("in-flight request was cut off");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        !run_dir.join(DISCOVERY_FILE).exists(),
        "discovery file removed"
    );
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still listening after stop"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_non_loopback_address_without_a_token_and_bad_routes() {
    let (stack_def, _dir) = stack(STACK);
    let running = start(stack_def).await;
    if auth::from_env(None).is_none() {
        let refused = Gateway::start_at(&running.supervisor, "0.0.0.0:0".parse().unwrap()).await;
        assert!(
            matches!(refused, Err(GatewayError::NotLoopback(_))),
            "{:?}",
            refused.err()
        );
    }
    running.stop().await;

    // A route under the gateway's own paths: the stack file is refused where it is written,
    // and a stack that reaches the gateway without the parser is refused there too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(
        &path,
        r#"
        name = "bad-routes"
        [gateway]
        routes = [
          { route = "GET /admin/users", call = "echo.echo" },
        ]
        [services.echo]
        builtin = "probe"
        "#,
    )
    .unwrap();
    let diagnostics = switchboard::stack::load(&path).expect_err("a reserved route parsed");
    assert!(
        diagnostics
            .iter()
            .any(|d| d.to_string().contains("belong to the gateway")),
        "{diagnostics:?}"
    );
    let (mut stack_def, _dir) = stack(STACK);
    stack_def
        .gateway
        .routes
        .push(switchboard::stack::RouteSpec {
            method: "GET".into(),
            path: "/admin/users".into(),
            service: "echo".into(),
            call_method: "echo".into(),
            stream: false,
        });
    let running = start(stack_def).await;
    let refused = Gateway::start_at(&running.supervisor, "127.0.0.1:0".parse().unwrap()).await;
    assert!(
        matches!(refused, Err(GatewayError::Route { .. })),
        "{:?}",
        refused.err()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_header_shows_the_bound_address() {
    use ratatui::{Terminal, backend::TestBackend};
    use switchboard::tui::{ConsoleSource, LocalSource, render, state::UiState, theme::Theme};
    let f = fixture(STACK, &["echo"]).await;
    let source =
        LocalSource::new(f.running.supervisor.clone()).with_gateway(Some(f.gateway.address()));
    let view = source.view();
    assert_eq!(view.gateway, Some(f.gateway.address().to_string()));
    let mut terminal = Terminal::new(TestBackend::new(140, 10)).unwrap();
    terminal
        .draw(|frame| {
            render::draw(frame, &view, &UiState::new(), &[], &Theme::monochrome());
        })
        .unwrap();
    let screen = terminal.backend().to_string();
    let header = screen.lines().next().unwrap();
    assert!(
        header.contains(&format!("http://{}", f.gateway.address())),
        "{header}"
    );
    f.stop().await;
}

/// A request whose response body is read frame by frame: (status, content type, body).
async fn open_stream(
    f: &Fixture,
    method: Method,
    path: &str,
    body: &str,
    accept: Option<&str>,
) -> (StatusCode, String, hyper::body::Incoming) {
    let address = f.gateway.address();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, address.to_string())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(accept) = accept {
        request = request.header(header::ACCEPT, accept);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status(), content_type, response.into_body())
}

/// Reads the body until `lines` complete lines have arrived (or it ends): the lines.
async fn read_lines(body: &mut hyper::body::Incoming, lines: usize) -> Vec<String> {
    use http_body_util::BodyExt;
    let mut text = String::new();
    while text.matches('\n').count() < lines {
        let frame = tokio::time::timeout(LIMIT, body.frame())
            .await
            .expect("the stream stalled");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    text.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_comes_as_ndjson_or_server_sent_events_and_ends_cleanly() {
    let f = fixture(STACK, &["echo"]).await;
    // NDJSON, from the generic route: one item per line, then the body ends.
    let (status, content_type, mut body) = open_stream(
        &f,
        Method::POST,
        "/stream/echo/count",
        r#"{"n": 5, "pace_ms": 0}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/x-ndjson");
    let lines = read_lines(&mut body, usize::MAX).await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let item: Value = serde_json::from_str(line).unwrap();
        assert_eq!(item["index"], i as u64, "{line}");
    }

    // Server-sent events, from a stack route with `stream = true` and query parameters.
    let (status, content_type, mut body) = open_stream(
        &f,
        Method::GET,
        "/count?n=3&pace_ms=10",
        "",
        Some("text/event-stream"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/event-stream");
    let lines = read_lines(&mut body, usize::MAX).await;
    let mut parser = switchboard::client::SseParser::default();
    let events = parser.push(format!("{}\n", lines.join("\n")).as_bytes());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["item", "item", "item", "end"], "{events:?}");
    let item: Value = serde_json::from_str(&events[2].1).unwrap();
    assert_eq!(item["index"], 2);

    // A method that does not stream: its answer is the one item.
    let (status, _, mut body) =
        open_stream(&f, Method::POST, "/stream/echo/echo", r#""once""#, None).await;
    assert_eq!(status, StatusCode::OK);
    let lines = read_lines(&mut body, usize::MAX).await;
    assert_eq!(lines, [r#""once""#]);

    // An empty stream is just its end.
    let (status, _, mut body) = open_stream(
        &f,
        Method::POST,
        "/stream/echo/count",
        r#"{"n": 0, "pace_ms": 0}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(read_lines(&mut body, usize::MAX).await.is_empty());
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_fails_with_a_status_before_its_first_item_and_with_an_error_line_after() {
    let f = fixture(STACK, &["echo"]).await;
    // Before the first item: an ordinary error response.
    let (status, content_type, _) =
        open_stream(&f, Method::POST, "/stream/nobody/count", "{}", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/json");
    let (status, _, _) = open_stream(
        &f,
        Method::POST,
        "/stream/echo/count",
        r#"{"n": "many"}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // No first item within the request timeout (600 ms here): 504.
    let (status, _, _) = open_stream(
        &f,
        Method::POST,
        "/stream/echo/count",
        r#"{"n": 3, "pace_ms": 2000}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);

    // After items have flowed, the producer dying ends the stream with an error line.
    let (status, _, mut body) = open_stream(
        &f,
        Method::POST,
        "/stream/echo/count",
        r#"{"n": 1000, "pace_ms": 50}"#,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read_lines(&mut body, 2).await.len(), 2);
    f.running
        .supervisor
        .command(switchboard::supervisor::Command::Kill("echo".into()))
        .await
        .unwrap();
    let lines = read_lines(&mut body, usize::MAX).await;
    let last: Value = serde_json::from_str(lines.last().expect("no end line")).unwrap();
    assert_eq!(last["error"]["code"], "unavailable", "{lines:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_the_stream_at_the_producer() {
    let f = fixture(STACK, &["echo"]).await;
    let (status, _, mut body) = open_stream(
        &f,
        Method::POST,
        "/stream/echo/count",
        r#"{"n": 100000, "pace_ms": 5}"#,
        Some("text/event-stream"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(read_lines(&mut body, 4).await.len() >= 4);
    drop(body);
    let deadline = Instant::now() + LIMIT;
    loop {
        let answer = f.post("/call/echo/cancelled_streams", "null").await;
        assert_eq!(answer.status, StatusCode::OK);
        if json_body(&answer) == json!(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the producer was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.stop().await;
}

/// The router's traces over the admin API: the recent calls of a service, and every hop of one
/// trace, whose id an HTTP answer carries in its `x-switchboard-trace` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_calls_and_a_trace_through_the_admin_api() {
    let f = fixture(STACK, &["echo", "caller"]).await;
    // gateway → caller → echo: two hops of one trace.
    let answer = f
        .post("/through/echo", r#"{"method": "echo", "body": "hello"}"#)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let trace: u64 = answer.headers["x-switchboard-trace"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let hops: Vec<HopView> = f
        .admin
        .json(Method::GET, &format!("/admin/traces/{trace}"), None::<&()>)
        .await
        .unwrap();
    let route: Vec<(&str, &str, &str)> = hops
        .iter()
        .map(|h| (h.from.as_str(), h.to.as_str(), h.method.as_str()))
        .collect();
    // The inner call ends first.
    assert_eq!(
        route,
        [("caller", "echo", "echo"), ("gateway", "caller", "call")],
        "{hops:?}"
    );
    assert!(hops.iter().all(|h| h.trace == trace && h.error.is_none()));
    assert!(hops[1].latency_us >= hops[0].latency_us, "{hops:?}");

    // A refused call is traced too, with its code.
    let refused = f.post("/call/parked/no_such_method", "{}").await;
    expect_error(&refused, StatusCode::NOT_FOUND, "not_found");
    let calls: Vec<HopView> = f
        .admin
        .json(
            Method::GET,
            "/admin/calls?service=parked&limit=5",
            None::<&()>,
        )
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].error.as_deref(), Some("not_found"));
    assert_eq!(calls[0].method, "(other)");
    let all: Vec<HopView> = f
        .admin
        .json(Method::GET, "/admin/calls?limit=2", None::<&()>)
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "the two most recent: {all:?}");
    assert_eq!(all[1].to, "parked");

    // Bad input gets clear errors; no token, no traces.
    let get = |path: &'static str| f.admin.send(Method::GET, path, None);
    expect_error(
        &get("/admin/traces/abc").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    expect_error(
        &get("/admin/traces/987654321").await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        &get("/admin/calls?service=nobody").await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    expect_error(
        &get("/admin/calls?limit=many").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let anonymous = f
        .anonymous
        .send(Method::GET, "/admin/calls", None)
        .await
        .unwrap();
    expect_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
    f.stop().await;
}
