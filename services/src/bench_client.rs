//! `bench-client`: drives routed requests for `switchboard bench`. Its `run` method calls a
//! target `count` times with `in_flight` calls outstanding and reports throughput and latency.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream::FuturesUnordered};
use serde::{Deserialize, Serialize};
use switchboard_protocol::sdk::{CallOptions, Context, HandlerError, Service};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub target: String,
    /// When given, the calls go to these services in turn instead of to `target`: traffic
    /// spread over many services (`switchboard bench --only growth`).
    #[serde(default)]
    pub targets: Vec<String>,
    pub method: String,
    pub in_flight: usize,
    pub count: usize,
    /// Calls made first, at the same `in_flight`, and not counted: the run's start-up.
    #[serde(default)]
    pub warmup: usize,
    pub payload: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub count: usize,
    pub errors: usize,
    pub elapsed_us: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// `fanout`: publish `total` events on `topic` in batches of `batch`; after each batch, ask
/// every subscriber for its count, which (requests and events sharing one ordered lane) returns
/// only once the batch has reached it. So no queue ever holds more than a batch, and the rate
/// is what the router sustains without dropping anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fanout {
    pub topic: String,
    pub subscribers: Vec<String>,
    pub total: u64,
    pub batch: u64,
    pub payload: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FanoutReport {
    pub published: u64,
    /// Events counted by each subscriber, in `subscribers` order.
    pub received: Vec<u64>,
    pub elapsed_us: u64,
}

pub fn service() -> Service {
    Service::new("bench-client", env!("CARGO_PKG_VERSION"))
        .method("run", |ctx: Context, run: Run| async move {
            Ok::<_, HandlerError>(drive(&ctx, &run).await)
        })
        .method("fanout", |ctx: Context, fanout: Fanout| async move {
            fan_out(&ctx, &fanout).await
        })
}

async fn fan_out(ctx: &Context, fanout: &Fanout) -> Result<FanoutReport, HandlerError> {
    let payload = vec![7u8; fanout.payload];
    let options = CallOptions::timeout(Duration::from_secs(30));
    let count = |service: String| {
        let ctx = ctx.clone();
        async move {
            ctx.call_with::<_, u64>(&service, "event_count", &(), options)
                .await
        }
    };
    let before: Vec<u64> =
        futures::future::try_join_all(fanout.subscribers.iter().cloned().map(count)).await?;
    let started = Instant::now();
    let mut published = 0;
    while published < fanout.total {
        let batch = fanout.batch.min(fanout.total - published).max(1);
        for _ in 0..batch {
            ctx.publish(&fanout.topic, &payload).await?;
        }
        published += batch;
        futures::future::try_join_all(fanout.subscribers.iter().cloned().map(count)).await?;
    }
    let elapsed = started.elapsed();
    let after: Vec<u64> =
        futures::future::try_join_all(fanout.subscribers.iter().cloned().map(count)).await?;
    Ok(FanoutReport {
        published,
        received: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
        elapsed_us: elapsed.as_micros() as u64,
    })
}

/// With more than one call in flight, one call in this many is timed. Reading the clock twice
/// per call (and keeping every latency) was a tenth of the client's work per call, which is
/// the harness's cost, not the router's: the bare hub's client, the routing benchmark's
/// baseline, times nothing at that load. The percentiles still come from thousands of calls.
const TIME_ONE_IN: usize = 8;

async fn drive(ctx: &Context, run: &Run) -> Report {
    let payload = bytes::Bytes::from(vec![7u8; run.payload]);
    let options = CallOptions::timeout(Duration::from_secs(30));
    let every = if run.in_flight > 1 { TIME_ONE_IN } else { 1 };
    let mut latencies = Vec::with_capacity(run.count / every + 1);
    let mut errors = 0;
    let mut pending = FuturesUnordered::new();
    let call = |payload: bytes::Bytes, issued: usize| {
        let target = match run.targets.len() {
            0 => run.target.as_str(),
            n => run.targets[issued % n].as_str(),
        };
        let (method, timed) = (run.method.as_str(), issued.is_multiple_of(every));
        async move {
            let start = timed.then(Instant::now);
            let answer: Result<bytes::Bytes, _> =
                ctx.call_with(target, method, &payload, options).await;
            (answer.is_ok(), start.map(|start| start.elapsed()))
        }
    };
    let total = run.count + run.warmup;
    let mut started = Instant::now();
    let (mut issued, mut answered) = (0, 0);
    while issued < total.min(run.in_flight.max(1)) {
        pending.push(call(payload.clone(), issued));
        issued += 1;
    }
    while let Some((ok, latency)) = pending.next().await {
        answered += 1;
        if answered == run.warmup {
            // The warm-up is over: count and time from here.
            started = Instant::now();
        } else if answered > run.warmup {
            latencies.extend(latency);
            errors += usize::from(!ok);
        }
        if issued < total {
            pending.push(call(payload.clone(), issued));
            issued += 1;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * q) as usize)
            .map_or(0, |d| d.as_micros() as u64)
    };
    Report {
        count: answered.saturating_sub(run.warmup),
        errors,
        elapsed_us: elapsed.as_micros() as u64,
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}
