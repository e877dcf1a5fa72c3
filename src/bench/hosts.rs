//! `bench --only hosts`: a routed call to a service on another host (an agent, over NATS on
//! loopback) against the same request/reply made with async-nats directly, measured in the same
//! run on the same `nats-server`.
//!
//! - bare: a requester and a responder, each its own NATS connection on a thread of its own,
//!   exchanging 64-byte payloads: the round trip at 1 in flight, the rate at 64;
//! - routed: the bench client (beside the console) calls the probe service on host `h`, run by
//!   `switchboard agent`: client → console (pipe) → NATS → agent → probe (pipe), and back.
//!
//! The difference is what the agent and the console add around the two NATS hops: four pipe
//! hops and two routing decisions. It needs `nats-server` on `PATH` (Debian's package).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;

use super::{BenchStack, Figure, routing};
use crate::supervisor::SupervisorOptions;

/// Requests per measurement at 1 and at 64 in flight.
const ONE: usize = 5_000;
const MANY: usize = 100_000;
const PAYLOAD: usize = 64;

pub async fn run(options: &SupervisorOptions) -> Vec<Figure> {
    let Some(server) = Server::start() else {
        return vec![figure(
            "hosts: skipped",
            f64::NAN,
            "",
            "nats-server is not on PATH (Debian package nats-server)",
        )];
    };
    let url = server.url();
    let bare_one = bare(&url, 1, ONE).await;
    let bare_many = bare(&url, 64, MANY).await;
    let mut options = options.clone();
    options.log_files = false;
    let routed = routed(&options, &url).await;
    drop(server);
    let (Some(bare_one), Some(bare_many)) = (bare_one, bare_many) else {
        return vec![figure(
            "hosts: failed",
            f64::NAN,
            "",
            "the bare NATS request/reply did not run",
        )];
    };
    let mut figures = vec![
        figure(
            "hosts: bare NATS round trip p50",
            bare_one.p50_us,
            "µs",
            "async-nats request/reply on loopback, 1 in flight",
        ),
        figure(
            "hosts: bare NATS rate, 64 in flight",
            bare_many.rate,
            "req/s",
            "async-nats requests in flight on one connection",
        ),
    ];
    let Some((one, many)) = routed else {
        figures.push(figure(
            "hosts: routed",
            f64::NAN,
            "",
            "the console and agent did not come up",
        ));
        return figures;
    };
    figures.extend([
        figure(
            "hosts: routed p50 to another host",
            one.p50_us,
            "µs",
            "bench client → console → NATS → agent → probe, and back",
        ),
        figure(
            "hosts: routed p50 ÷ bare NATS round trip",
            one.p50_us / bare_one.p50_us,
            "×",
            "target ≤ 1.5",
        ),
        figure(
            "hosts: extra cost per round trip",
            one.p50_us - bare_one.p50_us,
            "µs",
            "routed p50 − bare p50: four pipe hops and two routing decisions around the two \
             NATS hops, less what busy polling saves (the bare client sleeps between frames)",
        ),
        figure(
            "hosts: routed rate to another host, 64 in flight",
            many.rate,
            "req/s",
            "",
        ),
        figure(
            "hosts: routed 64 in flight ÷ bare NATS",
            many.rate / bare_many.rate,
            "×",
            "target ≥ 0.5",
        ),
    ]);
    figures
}

fn figure(name: &str, value: f64, unit: &str, detail: &str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail: detail.into(),
    }
}

/// A `nats-server` on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { child, port };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bare request/reply: a responder and a requester, each on a runtime of its own thread.
async fn bare(url: &str, in_flight: usize, count: usize) -> Option<routing::Routed> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || bare_blocking(&url, in_flight, count))
        .await
        .ok()
        .flatten()
}

fn bare_blocking(url: &str, in_flight: usize, count: usize) -> Option<routing::Routed> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let responder_url = url.to_string();
    let responder = std::thread::spawn(move || {
        let runtime = runtime()?;
        runtime.block_on(async move {
            let client = async_nats::connect(responder_url.as_str()).await.ok()?;
            let mut requests = client.subscribe("bench.echo").await.ok()?;
            client.flush().await.ok()?;
            let _ = ready_tx.send(());
            while let Some(request) = requests.next().await {
                let Some(reply) = request.reply else { break };
                if request.payload.is_empty() {
                    break;
                }
                let _ = client.publish(reply, request.payload).await;
            }
            Some(())
        })
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).ok()?;
    let measured = runtime()?.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_secs(10)))
            .connect(url)
            .await
            .ok()?;
        let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
        let warmup = count / 10;
        let mut latencies = Vec::with_capacity(count);
        let started = Instant::now();
        let mut measured_from = started;
        let mut calls = futures::stream::iter(0..warmup + count)
            .map(|i| {
                let client = client.clone();
                let payload = payload.clone();
                async move {
                    let sent = Instant::now();
                    let answer = client.request("bench.echo", payload).await;
                    (i, answer.is_ok(), sent.elapsed())
                }
            })
            .buffer_unordered(in_flight);
        while let Some((i, ok, took)) = calls.next().await {
            if !ok {
                return None;
            }
            if i == warmup {
                measured_from = Instant::now();
            }
            if i >= warmup {
                latencies.push(took.as_secs_f64() * 1e6);
            }
        }
        let elapsed = measured_from.elapsed().as_secs_f64();
        // An empty request ends the responder.
        let _ = client.publish("bench.echo", bytes::Bytes::new()).await;
        let _ = client.flush().await;
        latencies.sort_by(f64::total_cmp);
        Some(routing::Routed {
            rate: latencies.len() as f64 / elapsed,
            p50_us: super::percentile(&latencies, 0.50),
            p99_us: super::percentile(&latencies, 0.99),
            ..routing::Routed::MISSING
        })
    });
    let _ = responder.join();
    measured
}

/// The routed calls: the console here, the agent of host `h` as a process of its own.
async fn routed(
    options: &SupervisorOptions,
    url: &str,
) -> Option<(routing::Routed, routing::Routed)> {
    let toml = format!(
        r#"
        name = "bench-hosts"
        [nats]
        url = "{url}"
        [services.echo]
        builtin = "probe"
        host = "h"
        [services.client]
        builtin = "bench-client"
        calls = ["echo"]
        "#
    );
    let stack = BenchStack::start(&toml, options)?;
    let Some(agent) = agent(&options.builtin_exe, &stack.dir, &toml) else {
        stack.finish().await;
        return None;
    };
    let hosts = match crate::hosts::start(&stack.supervisor).await {
        Ok(hosts) => hosts,
        Err(err) => {
            eprintln!("bench: hosts: {err}");
            None
        }
    };
    stack.supervisor.begin().await;
    let measured = if stack.until_ready(Duration::from_secs(20)).await {
        let one = routing::routed(&stack, 1, ONE).await;
        let many = routing::routed(&stack, 64, MANY).await;
        one.zip(many)
    } else {
        eprintln!("bench: hosts: the probe on host h did not become ready");
        None
    };
    if let Some(hosts) = hosts {
        hosts.stop();
    }
    stop(agent);
    stack.finish().await;
    measured
}

/// `switchboard agent --host h` on the bench's stack file, written beside the console's.
fn agent(exe: &Path, dir: &Path, toml: &str) -> Option<Child> {
    let file = dir.join("stack.toml");
    std::fs::write(&file, toml).ok()?;
    Command::new(exe)
        .args(["agent", "--host", "h"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// SIGTERM, and a wait for the agent to stop its services.
fn stop(mut agent: Child) {
    let pid = agent.id();
    crate::supervisor::procs::signal(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = agent.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = agent.kill();
    let _ = agent.wait();
}
