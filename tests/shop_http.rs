//! The demo stack's own routes over real HTTP: the shop's services behind the gateway, with the
//! routes exactly as `src/stack/demo.toml` declares them (the storefront is off, so the data is
//! only what the test writes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{stack, start};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use switchboard::{
    client::{Client, RawResponse, Target},
    gateway::Gateway,
};

const LIMIT: Duration = Duration::from_secs(20);

fn demo_without_storefront() -> String {
    let demo = include_str!("../src/stack/demo.toml")
        .replace("stage_ms = \"150\"", "stage_ms = \"10\"")
        .replace("bind = \"127.0.0.1:8787\"", "bind = \"127.0.0.1:0\"");
    let cut = demo.find("[services.storefront]").unwrap();
    let rest = &demo[cut..];
    let next = rest[1..].find("\n[").map_or(rest.len(), |i| i + 1);
    format!("{}{}", &demo[..cut], &rest[next..])
}

fn body(response: &RawResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|err| {
        panic!(
            "not JSON ({err}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_routes_serve_the_shop() {
    let toml = demo_without_storefront();
    assert!(!toml.contains("[services.storefront]"));
    let (stack, _dir) = stack(&toml);
    let running = start(stack).await;
    running
        .ready(LIMIT, &["user", "order", "notification"])
        .await;
    let gateway = Gateway::start_at(&running.supervisor, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let http = Client::new(Target {
        address: gateway.address().into(),
        token: None,
    });
    let send = |method: Method, path: &str, payload: Option<Value>| {
        let http = http.clone();
        let path = path.to_string();
        async move {
            http.send(method, &path, payload.map(|p| p.to_string().into_bytes()))
                .await
                .unwrap()
        }
    };

    // Lists with no query at all: every field of the page has a default.
    let empty = send(Method::GET, "/users", None).await;
    assert_eq!(empty.status, StatusCode::OK, "{:?}", body(&empty));
    assert_eq!(body(&empty)["total"], 0);

    let created = send(
        Method::POST,
        "/users",
        Some(json!({"name": "Ada", "email": "ada@example.com"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK);
    let id = body(&created)["id"].as_i64().unwrap();
    let bad = send(
        Method::POST,
        "/users",
        Some(json!({"name": "Bob", "email": "not-an-email"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let renamed = send(
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({"name": "Ada L."})),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", body(&renamed));
    let fetched = body(&send(Method::GET, &format!("/users/{id}"), None).await);
    assert_eq!(fetched["name"], "Ada L.");
    assert_eq!(
        send(Method::GET, "/users/999999", None).await.status,
        StatusCode::NOT_FOUND
    );

    let mut orders = Vec::new();
    for quantity in 1..=3 {
        let order = send(
            Method::POST,
            "/orders",
            Some(json!({"user_id": id, "item": "cable", "quantity": quantity})),
        )
        .await;
        assert_eq!(order.status, StatusCode::OK, "{:?}", body(&order));
        orders.push(body(&order)["id"].as_i64().unwrap());
    }
    let unknown = send(
        Method::POST,
        "/orders",
        Some(json!({"user_id": 999999, "item": "cable", "quantity": 1})),
    )
    .await;
    assert!(unknown.status.is_client_error(), "{}", unknown.status);

    let listed = body(&send(Method::GET, "/orders?limit=2", None).await);
    assert_eq!(listed["total"], 3);
    assert_eq!(listed["orders"].as_array().unwrap().len(), 2);

    // Every order completes and is notified of both its events.
    let last = orders[2];
    let deadline = Instant::now() + LIMIT;
    loop {
        let order = body(&send(Method::GET, &format!("/orders/{last}"), None).await);
        let notes = body(&send(Method::GET, &format!("/orders/{last}/notifications"), None).await);
        if order["status"] == "completed" && notes["notifications"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{order} {notes}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The export stream, as NDJSON: every order once, in order.
    let export = send(Method::GET, "/orders/export", None).await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers["content-type"], "application/x-ndjson");
    let exported: Vec<i64> = String::from_utf8_lossy(&export.body)
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(exported, orders);

    gateway.stop().await;
    running.stop().await;
}
