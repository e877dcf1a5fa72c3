//! `switchboard bench --only gateway`: HTTP over loopback through the gateway to a probe's
//! `echo`, against a bare axum handler answering the same JSON, in the same run and with the
//! same load client, so the difference is what the gateway and the router add.
//!
//! The load client runs on its own thread and runtime (as a separate client would), with
//! [`CONNECTIONS`] keep-alive HTTP/1 connections, each sending its next request as soon as
//! the previous answer is read.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::{BenchStack, Figure, percentile};
use crate::{gateway::Gateway, registry, supervisor::SupervisorOptions};

const CONNECTIONS: usize = 16;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);

const STACK: &str = r#"
name = "bench-gateway"
[services.echo]
builtin = "probe"
"#;

/// A 64-byte JSON string, the body both servers answer with.
const BODY: &str = "\"switchboard gateway benchmark: sixty-four bytes of JSON text..\"";

#[derive(Debug, Default)]
struct Load {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn figure(name: &str, value: f64, unit: &str, detail: impl Into<String>) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail: detail.into(),
    }
}

pub async fn run(options: &SupervisorOptions) -> Vec<Figure> {
    let mut options = options.clone();
    options.log_files = false;
    let Some(stack) = BenchStack::start(STACK, &options) else {
        return Vec::new();
    };
    stack.supervisor.begin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && registry::read(&stack.supervisor.registry)
            .service("echo")
            .is_none_or(|s| s.ready_instances() == 0)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    let bare_stop = CancellationToken::new();
    let bare = match bare_server(loopback, bare_stop.clone()).await {
        Ok(address) => address,
        Err(err) => {
            eprintln!("bench: bare server: {err}");
            gateway.stop().await;
            stack.finish().await;
            return Vec::new();
        }
    };
    let through = load_from_another_thread(gateway.address(), "/call/echo/echo").await;
    let direct = load_from_another_thread(bare, "/echo").await;
    bare_stop.cancel();
    gateway.stop().await;
    stack.finish().await;

    let detail = format!("{CONNECTIONS} keep-alive connections, 64-byte JSON, loopback");
    vec![
        figure(
            "HTTP through the gateway to probe echo",
            through.rate,
            "req/s",
            format!("{detail}; {} errors", through.errors),
        ),
        figure("  p50", through.p50_us, "µs", ""),
        figure("  p99", through.p99_us, "µs", ""),
        figure(
            "HTTP to a bare axum handler, same JSON",
            direct.rate,
            "req/s",
            format!("{detail}; {} errors", direct.errors),
        ),
        figure("  p50", direct.p50_us, "µs", ""),
        figure("  p99", direct.p99_us, "µs", ""),
        figure(
            "gateway ÷ bare handler, throughput",
            through.rate / direct.rate,
            "×",
            "",
        ),
    ]
}

/// The baseline: the same JSON answered by a handler with nothing behind it.
async fn bare_server(addr: SocketAddr, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/echo",
        axum::routing::post(|body: Bytes| async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(address)
}

async fn load_from_another_thread(address: SocketAddr, path: &'static str) -> Load {
    let client = std::thread::Builder::new()
        .name("bench-http-load".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok::<_, std::io::Error>(runtime.block_on(load(address, path)))
        });
    let Ok(client) = client else {
        return Load::default();
    };
    match tokio::task::spawn_blocking(move || client.join()).await {
        Ok(Ok(Ok(load))) => load,
        _ => Load::default(),
    }
}

async fn load(address: SocketAddr, path: &'static str) -> Load {
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + MEASURE;
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        workers.push(tokio::spawn(connection(address, path, measure_from, end)));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((times, failed)) = worker.await {
            latencies.extend(times);
            errors += failed;
        } else {
            errors += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    Load {
        rate: latencies.len() as f64 / MEASURE.as_secs_f64(),
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        errors,
    }
}

/// One keep-alive connection sending requests back to back; latencies (µs) measured after
/// the warm-up.
async fn connection(
    address: SocketAddr,
    path: &'static str,
    measure_from: Instant,
    end: Instant,
) -> (Vec<f64>, u64) {
    let mut times = Vec::new();
    let mut errors = 0;
    let Ok(stream) = tokio::net::TcpStream::connect(address).await else {
        return (times, 1);
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
    else {
        return (times, 1);
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    while Instant::now() < end {
        let Ok(request) = hyper::Request::post(path)
            .header(hyper::header::HOST, address.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        else {
            return (times, errors + 1);
        };
        let sent = Instant::now();
        let ok = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await;
                status.is_success() && body.is_ok_and(|b| b.to_bytes() == BODY.as_bytes())
            }
            Err(_) => return (times, errors + 1),
        };
        if !ok {
            errors += 1;
        } else if sent >= measure_from {
            times.push(sent.elapsed().as_secs_f64() * 1e6);
        }
    }
    (times, errors)
}
