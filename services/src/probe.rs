//! The probe: a diagnostic service whose behaviour is set through environment variables, so a
//! stack file can make it misbehave on purpose. `switchboard bench` uses it as the echo target,
//! and the supervisor's tests use it to crash, hang, or refuse to stop.
//!
//! | variable | effect |
//! |---|---|
//! | `PROBE_CRASH_AFTER_MS` | exit with status 1 this long after becoming ready |
//! | `PROBE_ALLOCATE_MB` | once ready, allocate and fill this many MiB (aborts if the allocation fails) |
//! | `PROBE_HANG_AFTER_MS` | freeze (SIGSTOP itself) this long after becoming ready |
//! | `PROBE_SLOW_START_MS` | block this long before the handshake, as a slow starter does |
//! | `PROBE_STUBBORN=1` | ignore SIGTERM, Shutdown and stdin EOF |
//! | `PROBE_GRANDCHILD=1` | start a `sleep 600` child in the same process group |
//! | `PROBE_SUBSCRIBE` | comma-separated topic patterns to subscribe to |
//! | `PROBE_COUNT_SUBSCRIBE` | a topic pattern whose events are only counted (`event_count`) |
//! | `PROBE_VERSION` | the version reported in Hello |
//! | `PROBE_LOAD_TARGET`, `PROBE_LOAD_RATE` | call `service.method` (with a short text) this many times a second |
//!
//! Streams: `count` answers with a stream of [`Counted`] items, under the receiver's credit;
//! `consume` reads such a stream slowly (or stops early); `cancelled_streams` says how many
//! of its `count` streams were cancelled by their receiver.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use switchboard_protocol::sdk::{CallOptions, Context, HandlerError, Job, Service, StreamSink};

fn env_ms(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v == "true")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallThrough {
    pub service: String,
    pub method: String,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishText {
    pub topic: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub text: String,
}

/// `count`: stream `n` items, one every `pace_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CountRequest {
    pub n: u32,
    pub pace_ms: u64,
}

/// One streamed item, stamped with when the producer sent it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counted {
    pub index: u32,
    pub sent_at_us: u64,
}

/// `consume`: read `service.method`'s `count` stream, waiting `read_pace_ms` after each item,
/// dropping the stream after `stop_after` items if set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consume {
    pub service: String,
    pub method: String,
    pub count: CountRequest,
    pub read_pace_ms: u64,
    pub stop_after: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consumed {
    pub items: Vec<Counted>,
    /// When each item was taken, on the same clock as `sent_at_us`.
    pub received_at_us: Vec<u64>,
    /// How the stream ended, if not well.
    pub error: Option<String>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn consume(ctx: Context, consume: Consume) -> Result<Consumed, HandlerError> {
    let options = CallOptions::timeout(Duration::from_secs(30));
    let mut stream = ctx
        .call_stream::<_, Counted>(&consume.service, &consume.method, &consume.count, options)
        .await?;
    let mut consumed = Consumed {
        items: Vec::new(),
        received_at_us: Vec::new(),
        error: None,
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(item) => {
                consumed.items.push(item);
                consumed.received_at_us.push(now_us());
            }
            Err(err) => {
                consumed.error = Some(err.to_string());
                break;
            }
        }
        if consume.stop_after == Some(consumed.items.len() as u32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(consume.read_pace_ms)).await;
    }
    Ok(consumed)
}

pub fn service() -> Service {
    // Before anything is built, so the handshake waits: a slow starter (loading data,
    // migrating a database) is silent, not hung.
    if let Some(delay) = env_ms("PROBE_SLOW_START_MS") {
        std::thread::sleep(delay);
    }
    let version = std::env::var("PROBE_VERSION").unwrap_or_else(|_| "0.1.0".into());
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let service = Service::new("probe", version.clone());
    let service = through_console(streams(plain_methods(service, version)), received.clone());
    subscriptions(service, received)
        .background(misbehave)
        .background(load)
}

/// Methods that answer from the process alone: echo, bytes, panic, sleep, fail, version, pid.
fn plain_methods(service: Service, version: String) -> Service {
    service
        .method("echo", |_ctx, text: String| async move {
            Ok::<_, HandlerError>(text)
        })
        // `Bytes` is (de)serialized as one byte string, a `Vec<u8>` byte by byte; the wire
        // format is the same in postcard.
        .method("bytes", |_ctx, body: bytes::Bytes| async move {
            Ok::<_, HandlerError>(body)
        })
        .method("panic", |_ctx, message: String| async move {
            if !message.is_empty() {
                panic!("{message}");
            }
            Ok::<_, HandlerError>(())
        })
        .method("sleep", |_ctx, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HandlerError>(ms)
        })
        .method("fail", |_ctx, message: String| async move {
            Err::<(), _>(HandlerError::internal(message))
        })
        .method("version", move |_ctx, (): ()| {
            let version = version.clone();
            async move { Ok::<_, HandlerError>(version) }
        })
        .method("pid", |_ctx, (): ()| async move {
            Ok::<_, HandlerError>(std::process::id())
        })
}

/// `count`, a paced stream, and `cancelled_streams`, how many of them their callers dropped.
fn streams(service: Service) -> Service {
    let cancelled_streams = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cancels_seen = cancelled_streams.clone();
    service
        .stream(
            "count",
            move |_ctx, count: CountRequest, sink: StreamSink<Counted>| {
                let cancelled = cancelled_streams.clone();
                async move {
                    for index in 0..count.n {
                        if count.pace_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(count.pace_ms)).await;
                        }
                        let item = Counted {
                            index,
                            sent_at_us: now_us(),
                        };
                        if let Err(closed) = sink.send(&item).await {
                            cancelled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            return Err(closed.into());
                        }
                    }
                    Ok(())
                }
            },
        )
        .method("cancelled_streams", move |_ctx, (): ()| {
            let seen = cancels_seen.load(std::sync::atomic::Ordering::Relaxed);
            async move { Ok::<_, HandlerError>(seen) }
        })
}

/// Methods that go through the console: consume, call, publish, and `received`, the events
/// the subscriptions below took.
fn through_console(service: Service, received: Arc<Mutex<Vec<Received>>>) -> Service {
    service
        .method("consume", consume)
        .method("call", |ctx: Context, call: CallThrough| async move {
            let answer: String = ctx.call(&call.service, &call.method, &call.body).await?;
            Ok::<_, HandlerError>(answer)
        })
        .method("publish", |ctx: Context, publish: PublishText| async move {
            ctx.publish(&publish.topic, &publish.text).await?;
            Ok::<_, HandlerError>(())
        })
        .method("received", move |_ctx, (): ()| {
            let list = received.lock().map(|r| r.clone()).unwrap_or_default();
            async move { Ok::<_, HandlerError>(list) }
        })
}

/// `PROBE_COUNT_SUBSCRIBE` (count only) and `PROBE_SUBSCRIBE` (keep each event) subscriptions.
fn subscriptions(mut service: Service, received: Arc<Mutex<Vec<Received>>>) -> Service {
    // A subscriber that only counts, for fan-out benchmarks: it keeps nothing per event.
    if let Ok(pattern) = std::env::var("PROBE_COUNT_SUBSCRIBE") {
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = counted.clone();
        service = service
            .subscribe(&pattern, move |_ctx, _topic: String, _body: Vec<u8>| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Ok(()) }
            })
            .method("event_count", move |_ctx, (): ()| {
                let count = counted.load(std::sync::atomic::Ordering::Relaxed);
                async move { Ok::<_, HandlerError>(count) }
            });
    }
    if let Ok(patterns) = std::env::var("PROBE_SUBSCRIBE") {
        for pattern in patterns.split(',').filter(|p| !p.is_empty()) {
            let received = received.clone();
            service = service.subscribe(pattern, move |_ctx, topic: String, text: String| {
                // On stderr too, so a test can tell which replica took an event.
                tracing::info!(%topic, "received an event");
                if let Ok(mut list) = received.lock() {
                    list.push(Received { topic, text });
                }
                async { Ok(()) }
            });
        }
    }
    service
}

/// Generates steady load on another service, for the demo and for tests.
async fn load(ctx: Context) {
    let Ok(target) = std::env::var("PROBE_LOAD_TARGET") else {
        return;
    };
    let Some((service, method)) = target.split_once('.') else {
        tracing::warn!(%target, "PROBE_LOAD_TARGET must be service.method");
        return;
    };
    let rate: f64 = std::env::var("PROBE_LOAD_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r: &f64| *r > 0.0 && r.is_finite())
        .unwrap_or(10.0);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    let mut failed = 0u64;
    loop {
        tokio::select! {
            () = ctx.draining() => return,
            _ = ticks.tick() => {}
        }
        let options = switchboard_protocol::sdk::CallOptions::timeout(Duration::from_secs(2));
        let answer: Result<String, _> = ctx.call_with(service, method, "ping", options).await;
        sent += 1;
        if let Err(err) = answer {
            failed += 1;
            tracing::warn!(cause = %err, "load call failed");
        }
        if sent.is_multiple_of((rate as u64 * 10).max(1)) {
            tracing::info!(sent, failed, "load generator");
        }
    }
}

/// Whatever the environment asks the probe to do wrong.
async fn misbehave(ctx: Context) {
    if env_flag("PROBE_GRANDCHILD") {
        match std::process::Command::new("sleep").arg("600").spawn() {
            Ok(child) => tracing::info!(pid = child.id(), "started grandchild"),
            Err(err) => tracing::warn!(cause = %err, "cannot start grandchild"),
        }
    }
    let stubborn = env_flag("PROBE_STUBBORN");
    if stubborn {
        // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety conditions.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
        tracing::info!("stubborn: ignoring SIGTERM, Shutdown and EOF");
    }
    if let Some(mib) = std::env::var("PROBE_ALLOCATE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // Filled, so the pages are really used. Under a memory limit the allocation fails and
        // the process aborts, which is what a test of `limits.memory` looks for.
        let block = vec![1u8; mib << 20];
        tracing::info!(bytes = block.len(), "allocated");
        std::hint::black_box(&block);
    }
    if let Some(after) = env_ms("PROBE_CRASH_AFTER_MS") {
        tokio::time::sleep(after).await;
        tracing::error!("crashing on purpose");
        std::process::exit(1);
    }
    if let Some(after) = env_ms("PROBE_HANG_AFTER_MS") {
        tokio::time::sleep(after).await;
        tracing::warn!("hanging on purpose");
        // SAFETY: raise has no memory-safety conditions.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
    if stubborn {
        // Never returns, so the drain never finishes: the console must escalate.
        std::future::pending::<()>().await;
    }
    ctx.draining().await;
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct JobParams {
    pub steps: u64,
    pub pace_ms: u64,
    pub fail: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobResult {
    pub steps: u64,
    pub sum: u64,
}

/// The probe job: `steps` steps of `pace_ms` each, with progress, then a result.
pub async fn run_job() -> Result<(), switchboard_protocol::sdk::SdkError> {
    Job::new("probe-job", "0.1.0")
        .run(|ctx: Context, params: Option<JobParams>| async move {
            let params = params.unwrap_or_default();
            let steps = if params.steps == 0 { 10 } else { params.steps };
            let progress = ctx.progress("probe steps");
            let mut sum = 0;
            for step in 1..=steps {
                tokio::time::sleep(Duration::from_millis(params.pace_ms)).await;
                sum += step;
                progress.set(step, steps);
            }
            if params.fail {
                progress.fail();
                return Err(HandlerError::internal("failed on purpose"));
            }
            progress.finish();
            Ok(JobResult { steps, sum })
        })
        .await
}
