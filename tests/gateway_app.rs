//! The gateway's axum app on its own, with `oneshot` requests and no socket: routes, the token,
//! what the run directory's socket may skip, and how errors are mapped. The supervisor behind
//! it is real but never begun, so no service process runs: a stub with the real types.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use serde_json::Value;
use switchboard::gateway::{Access, AppState, GatewayState, Token, app};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const STACK: &str = r#"
name = "app"
[services.echo]
builtin = "probe"
[services.count]
kind = "job"
builtin = "probe-job"
"#;

struct Fixture {
    router: axum::Router,
    token: String,
    _running: common::Running,
    _dir: tempfile::TempDir,
}

async fn fixture(access: Access) -> Fixture {
    let (stack, dir) = common::stack(STACK);
    let run_dir = stack.run_dir.clone();
    let (supervisor, task) =
        switchboard::supervisor::Supervisor::start(stack, common::options()).unwrap();
    let events = supervisor.events().subscribe();
    let token = Token::resolve(None, &run_dir).unwrap();
    let secret = std::fs::read_to_string(run_dir.join("token")).unwrap();
    let state = AppState::new(GatewayState {
        supervisor: supervisor.clone(),
        config: Arc::new(supervisor.stack().gateway.clone()),
        token,
        address: Some("127.0.0.1:8787".into()),
        taken: None,
        loopback: true,
        started: Instant::now(),
        shutdown: CancellationToken::new(),
    });
    Fixture {
        router: app(state, access).unwrap(),
        token: secret.trim().to_string(),
        _running: common::Running {
            supervisor,
            task,
            events,
            seen: Vec::new(),
        },
        _dir: dir,
    }
}

impl Fixture {
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn admin_routes_want_the_token_over_tcp() {
    let f = fixture(Access::Token).await;
    let (status, body) = f.send("GET", "/admin/services", None, "").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, body) = f.send("GET", "/admin/services", Some("wrong"), "").await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, view) = f.send("GET", "/admin/services", Some(&f.token), "").await;
    assert_eq!(status, StatusCode::OK);
    // The read model's stable shape: milliseconds, lower-case states, no Rust Debug shapes.
    assert!(view["uptime_ms"].is_u64(), "{view}");
    assert_eq!(view["services"][0]["name"], "echo");
    assert_eq!(view["services"][0]["state"], "stopped");
    assert!(view["services"][0].get("uptime_ms").is_some(), "{view}");
    let (status, body) = f.send("GET", "/healthz", None, "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
}

#[tokio::test]
async fn over_the_socket_no_token_is_asked_for() {
    let f = fixture(Access::Socket).await;
    let (status, _) = f.send("GET", "/admin/services", None, "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = f.send("GET", "/admin/routes", None, "").await;
    assert_eq!((status, body.is_array()), (StatusCode::OK, true));
}

#[tokio::test]
async fn errors_are_json_with_a_code() {
    let f = fixture(Access::Token).await;
    let t = Some(f.token.as_str());
    let (status, body) = f
        .send("POST", "/admin/services/nosuch/restart", t, "")
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{body}"
    );
    let (status, body) = f
        .send("POST", "/admin/services/echo/scale", t, "{bad json")
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (status, body) = f
        .send("POST", "/admin/services/echo/scale", t, "{\"replicas\":0}")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and"),
        "{body}"
    );
    let (status, body) = f.send("POST", "/admin/jobs/echo/run", t, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = f.send("GET", "/no/such/route", None, "").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = f.send("DELETE", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, body) = f.send("GET", "/admin/calls?limit=x", t, "").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
}

#[tokio::test]
async fn the_console_stream_opens_with_hello() {
    let f = fixture(Access::Socket).await;
    let response = f
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/admin/console?logs=10")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    let text = String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned();
    assert!(text.starts_with("event: hello\n"), "{text}");
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let hello: switchboard::api::stream::Hello = serde_json::from_str(data).unwrap();
    assert_eq!(hello.api, switchboard::api::API_VERSION);
    assert_eq!(hello.view.services.len(), 2);
}
