//! Pub/sub fan-out: events published by one service, delivered by the router to 1 and to 10
//! subscribers, counted by each.

use std::time::Duration;

use switchboard_protocol::{Body, Envelope, Kind, Status};
use switchboard_services::bench_client::{Fanout, FanoutReport};

use super::{BenchStack, Figure};
use crate::{router::GATEWAY, supervisor::SupervisorOptions};

const EVENTS: u64 = 20_000;
const BATCH: u64 = 500;

pub async fn run(options: &SupervisorOptions, scale: usize) -> Vec<Figure> {
    let mut figures = Vec::new();
    for subscribers in [1usize, 10] {
        if let Some(report) = measure(options, subscribers, EVENTS * scale as u64).await {
            let delivered: u64 = report.received.iter().sum();
            let expected = report.published * subscribers as u64;
            let seconds = report.elapsed_us as f64 / 1e6;
            figures.push(Figure {
                name: format!("pub/sub fan-out to {subscribers}, deliveries/s"),
                value: delivered as f64 / seconds,
                unit: "/s".into(),
                detail: format!(
                    "{} events × {subscribers} subscribers, {} delivered of {expected}; {:.0} events published/s",
                    report.published,
                    delivered,
                    report.published as f64 / seconds,
                ),
            });
        }
    }
    figures
}

async fn measure(
    options: &SupervisorOptions,
    subscribers: usize,
    total: u64,
) -> Option<FanoutReport> {
    let mut toml = String::from(
        "name = \"bench-fanout\"\n[services.publisher]\nbuiltin = \"bench-client\"\ncalls = [",
    );
    let names: Vec<String> = (0..subscribers).map(|i| format!("sub{i}")).collect();
    toml.push_str(
        &names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    toml.push_str("]\n");
    for name in &names {
        toml.push_str(&format!(
            "[services.{name}]\nbuiltin = \"probe\"\nenv = {{ PROBE_COUNT_SUBSCRIBE = \"bench.>\" }}\n"
        ));
    }
    let bench = BenchStack::start(&toml, options)?;
    bench.supervisor.begin().await;
    let all_ready = bench.until_ready(Duration::from_secs(20)).await;
    let report = if all_ready {
        let fanout = Fanout {
            topic: "bench.fanout".into(),
            subscribers: names,
            total,
            batch: BATCH,
            payload: 64,
        };
        let request = Envelope {
            id: 1,
            deadline_us: 120_000_000,
            kind: Kind::Request,
            destination: "publisher".into(),
            method: "fanout".into(),
            body: Body::Json(serde_json::to_vec(&fanout).ok()?.into()),
            ..Envelope::default()
        };
        let answer = bench.supervisor.router().call(GATEWAY, request).await;
        match (&answer.kind, &answer.body) {
            (Kind::Response(Status::Ok), Body::Json(bytes)) => serde_json::from_slice(bytes).ok(),
            _ => {
                eprintln!("fan-out bench failed: {answer:?}");
                None
            }
        }
    } else {
        eprintln!("fan-out bench: services never became ready");
        None
    };
    bench.finish().await;
    report
}
