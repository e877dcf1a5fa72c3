//! `switchboard bench --only gateway`: HTTP over loopback, in one run with one load client:
//!
//! - `GET /users/{id}` through the gateway to the user service (a real SQLite read), against a
//!   bare axum handler answering the same JSON bytes: what the gateway, the router and the
//!   service add to an HTTP request. Measured in `ROUNDS` interleaved pairs, and the ratio
//!   is the median of the pairs' ratios: the machine drifts between runs by more than that;
//! - `POST /orders` through the gateway (order checks the user, then commits the order and its
//!   outbox in one SQLite transaction with `synchronous=FULL`), beside this disk's fsync rate
//!   measured in the same data directory: durable writes bound the order rate.
//!
//! The load (`bench::http_load`) runs on its own thread and runtime (as a separate client would), with
//! [`DEFAULT_CONNECTIONS`] keep-alive HTTP/1 connections (`--http-connections`), each sending
//! its next request as soon as the previous answer is read. `--http-load wrk` sends the same
//! load with wrk instead (one thread, the same connections and duration), as an outside
//! cross-check of the client.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::Method;
use tokio_util::sync::CancellationToken;

pub use super::http_load::{DEFAULT_CONNECTIONS, HttpLoad, LoadClient, wrk_found};
use super::{
    BenchStack, Figure,
    cpu::{Usage, processes_ns},
    http_load::{Load, MEASURE, Shot, WARMUP, once, send_load},
    median,
};
use crate::{gateway::Gateway, supervisor::SupervisorOptions};

/// Pairs of GET measurements (through the gateway, bare), interleaved.
const ROUNDS: usize = 5;

/// The shop without its storefront (the bench is the only load) and with no stage delays, so
/// an order's rate is its check with user and its durable write.
const STACK: &str = r#"
name = "bench-gateway"
[gateway]
request_timeout = "10s"
routes = [
  { route = "GET /users/{id}", call = "user.get" },
  { route = "POST /orders", call = "order.create" },
]
[services.user]
builtin = "user"
[services.order]
builtin = "order"
calls = ["user"]
settings = { stage_ms = "0", user_timeout_ms = "2000" }
[services.notification]
builtin = "notification"
calls = ["order"]
"#;

fn figure(name: &str, value: f64, unit: &str, detail: impl Into<String>) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail: detail.into(),
    }
}

pub async fn run(options: &SupervisorOptions, client: LoadClient) -> Vec<Figure> {
    let mut options = options.clone();
    options.log_files = false;
    let Some(stack) = BenchStack::start(STACK, &options) else {
        return Vec::new();
    };
    stack.supervisor.begin().await;
    if !stack.until_ready(Duration::from_secs(15)).await {
        eprintln!("bench: gateway: the shop did not become ready");
        stack.finish().await;
        return Vec::new();
    }
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let gateway = match Gateway::start_at(&stack.supervisor, loopback).await {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("bench: gateway: {err}");
            stack.finish().await;
            return Vec::new();
        }
    };
    let user = stack.pids("user");
    let figures = measure(
        gateway.address(),
        &stack.supervisor.stack().data_dir,
        client,
        &user,
    )
    .await;
    gateway.stop().await;
    stack.finish().await;
    figures.unwrap_or_else(|why| {
        eprintln!("bench: gateway: {why}");
        Vec::new()
    })
}

async fn measure(
    gateway: SocketAddr,
    data_dir: &Path,
    client: LoadClient,
    user_pids: &[u32],
) -> Result<Vec<Figure>, String> {
    let user = once(
        gateway,
        Method::POST,
        "/call/user/create",
        r#"{"name": "Bench", "email": "bench@example.com"}"#,
    )
    .await?;
    let id = serde_json::from_slice::<serde_json::Value>(&user)
        .ok()
        .and_then(|v| v["id"].as_i64())
        .ok_or("no user id in the answer to user.create")?;
    let sender = match client.sender {
        HttpLoad::Builtin => "built-in client",
        HttpLoad::Wrk => "wrk",
    };
    let detail = format!(
        "{sender}, {} keep-alive connections, loopback",
        client.connections
    );
    let mut figures = get_against_bare(gateway, client, id, &detail, user_pids).await?;
    figures.extend(durable_orders(gateway, data_dir, client, id, &detail).await?);
    Ok(figures)
}

/// One load's figures with what it cost: CPU per request of this process's main thread (the
/// console's, or the bare handler's: the same runtime) and of the service's processes.
struct Costed {
    load: Load,
    thread_us: f64,
    /// The main thread's CPU over the load's wall time.
    thread_busy: f64,
    service_us: f64,
}

async fn costed_load(
    client: LoadClient,
    address: SocketAddr,
    shot: &Shot,
    service_pids: &[u32],
) -> Costed {
    let service_before = processes_ns(service_pids);
    let thread_before = Usage::thread();
    let started = Instant::now();
    let load = send_load(client, address, shot.clone()).await;
    let wall = started.elapsed().as_secs_f64();
    let thread = Usage::thread().since(thread_before).total();
    let service = processes_ns(service_pids).saturating_sub(service_before);
    // The rate is over the measured part; the warm-up ran at the same load.
    let requests = load.rate * (WARMUP + MEASURE).as_secs_f64();
    Costed {
        thread_us: thread * 1e6 / requests,
        thread_busy: thread / wall,
        service_us: service as f64 / 1e3 / requests,
        load,
    }
}

/// `GET /users/{id}` through the gateway and from a bare axum handler answering the same JSON,
/// in interleaved rounds, and their ratio.
async fn get_against_bare(
    gateway: SocketAddr,
    client: LoadClient,
    id: i64,
    detail: &str,
    user_pids: &[u32],
) -> Result<Vec<Figure>, String> {
    let path = format!("/users/{id}");
    // The user's JSON exactly as the gateway answers it: what the bare handler answers too.
    let json = once(gateway, Method::GET, &path, "").await?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let bare_stop = CancellationToken::new();
    let bare = bare_server(loopback, json.clone(), bare_stop.clone())
        .await
        .map_err(|err| format!("bare server: {err}"))?;
    let get = Shot {
        method: Method::GET,
        path,
        body: None,
        expect: Some(json),
    };
    // Interleaved rounds, the order swapped each round: the machine's speed drifts between runs
    // by more than the difference being measured, and a pair measured back to back shares it.
    let mut throughs = Vec::new();
    let mut directs = Vec::new();
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            throughs.push(costed_load(client, gateway, &get, user_pids).await);
            directs.push(costed_load(client, bare, &get, &[]).await);
        } else {
            directs.push(costed_load(client, bare, &get, &[]).await);
            throughs.push(costed_load(client, gateway, &get, user_pids).await);
        }
    }
    bare_stop.cancel();
    let cost = |loads: &[Costed], pick: fn(&Costed) -> f64| median(loads.iter().map(pick));
    let cpu = [
        cost(&throughs, |c| c.thread_us),
        cost(&throughs, |c| c.service_us),
        cost(&directs, |c| c.thread_us),
        cost(&throughs, |c| c.thread_busy),
        cost(&directs, |c| c.thread_busy),
    ];
    let (throughs, directs): (Vec<Load>, Vec<Load>) = (
        throughs.into_iter().map(|c| c.load).collect(),
        directs.into_iter().map(|c| c.load).collect(),
    );
    let mut ratios: Vec<f64> = throughs
        .iter()
        .zip(&directs)
        .map(|(t, d)| t.rate / d.rate)
        .collect();
    let listed = ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN);
    let through = Load::median(throughs);
    let direct = Load::median(directs);
    Ok(vec![
        figure(
            "GET /users/{id} through the gateway to user",
            through.rate,
            "req/s",
            format!(
                "{detail}; median of {ROUNDS} rounds; {} errors",
                through.errors
            ),
        ),
        figure("  p50", through.p50_us, "µs", ""),
        figure("  p99", through.p99_us, "µs", ""),
        figure(
            "  CPU per request, the console's thread",
            cpu[0],
            "µs",
            format!(
                "busy {:.0} % of the run; the user service {:.2} µs",
                cpu[3] * 100.0,
                cpu[1]
            ),
        ),
        figure(
            "GET /users/{id} from a bare axum handler, same JSON",
            direct.rate,
            "req/s",
            format!(
                "{detail}; median of {ROUNDS} rounds; {} errors",
                direct.errors
            ),
        ),
        figure("  p50", direct.p50_us, "µs", ""),
        figure("  p99", direct.p99_us, "µs", ""),
        figure(
            "  CPU per request, the handler's thread",
            cpu[2],
            "µs",
            format!(
                "busy {:.0} % of the run; the same thread as the console's, in rounds of its own",
                cpu[4] * 100.0
            ),
        ),
        figure(
            "gateway ÷ bare handler, throughput",
            ratio,
            "×",
            format!(
                "median of {ROUNDS} back-to-back pairs ({listed}); targets: at least 0.5, 0.6 in every run (second round)"
            ),
        ),
    ])
}

/// `POST /orders` under load, against the disk's fsync rate and the group commits the services
/// made meanwhile.
async fn durable_orders(
    gateway: SocketAddr,
    data_dir: &Path,
    client: LoadClient,
    id: i64,
    detail: &str,
) -> Result<Vec<Figure>, String> {
    let order = Shot {
        method: Method::POST,
        path: "/orders".into(),
        body: Some(Bytes::from(format!(
            r#"{{"user_id": {id}, "item": "cable", "quantity": 1}}"#
        ))),
        expect: None,
    };
    let commits_before = commits(gateway).await;
    let orders = send_load(client, gateway, order).await;
    // The completions and notifications of the last orders trail the load by a few commits:
    // counted too, after a pause (stages take no time in this stack).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let commits_after = commits(gateway).await;
    let dir = data_dir.to_path_buf();
    let fsync = tokio::task::spawn_blocking(move || fsync_rate(&dir, MEASURE))
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("fsync rate: {err}"))?;
    Ok(vec![
        figure(
            "POST /orders through the gateway (durable)",
            orders.rate,
            "orders/s",
            format!("{detail}; {} errors", orders.errors),
        ),
        figure("  p50", orders.p50_us, "µs", ""),
        figure("  p99", orders.p99_us, "µs", ""),
        figure(
            "fsync rate of the data directory's disk",
            fsync,
            "fsync/s",
            "one writer: 4 KiB rewrite in an allocated file + fdatasync, as a WAL commit",
        ),
        figure(
            "orders per commit made (orders.db + notifications.db)",
            orders_per_commit(commits_before, commits_after),
            "×",
            "orders stored over the load ÷ the group commits (each one fsync) order and notification counted meanwhile; 4 commits an order, 0.25, without grouping; target: at least 2",
        ),
        figure(
            "orders ÷ fsyncs",
            orders.rate / fsync,
            "×",
            "each order: 2 writes in orders.db (created, completed), 2 in notifications.db, acks; the writes queued together share one commit and one sync; bounded by CPU once the disk is fast",
        ),
    ])
}

/// Group commits made so far by `order` and `notification` (their counts, added), and the
/// orders stored; NaN where a service cannot say.
async fn commits(gateway: SocketAddr) -> (f64, f64) {
    let count = |answer: Result<Bytes, String>, field: Option<&str>| {
        let value: serde_json::Value = serde_json::from_slice(&answer.ok()?).ok()?;
        match field {
            Some(field) => value[field].as_f64(),
            None => value.as_f64(),
        }
    };
    let order = once(gateway, Method::POST, "/call/order/commits", "null").await;
    let notification = once(gateway, Method::POST, "/call/notification/stats", "null").await;
    let stored = once(gateway, Method::POST, "/call/order/list", r#"{"limit": 1}"#).await;
    let commits = match (count(order, None), count(notification, Some("commits"))) {
        (Some(order), Some(notification)) => order + notification,
        _ => f64::NAN,
    };
    (commits, count(stored, Some("total")).unwrap_or(f64::NAN))
}

/// Orders stored per commit made, between two [`commits`] readings (the load's warm-up and
/// its measured part, and the completions and notifications that trail it: all of its work).
fn orders_per_commit((commits_before, orders_before): (f64, f64), after: (f64, f64)) -> f64 {
    let (commits_after, orders_after) = after;
    (orders_after - orders_before) / (commits_after - commits_before)
}

/// Durable writes per second on the disk holding `dir`, the way SQLite's WAL syncs a commit: a
/// 4 KiB write into a file already allocated (the WAL is reused after each checkpoint), then
/// `fdatasync`, back to back from one writer, for `time`. (Appending instead would add a
/// metadata journal commit to every sync, which a reused WAL does not pay.)
fn fsync_rate(dir: &Path, time: Duration) -> std::io::Result<f64> {
    use std::os::unix::fs::FileExt;
    const PAGES: u64 = 256;
    let path = dir.join("bench-fsync");
    let file = std::fs::File::create(&path)?;
    let page = [0x5au8; 4096];
    for index in 0..PAGES {
        file.write_all_at(&page, index * 4096)?;
    }
    file.sync_all()?;
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed() < time {
        file.write_all_at(&page, (syncs % PAGES) * 4096)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

/// The baseline: the same JSON bytes from a handler with nothing behind it, at the same path.
async fn bare_server(
    addr: SocketAddr,
    json: Bytes,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(move || {
            let json = json.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    json,
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(address)
}
