//! Streams through the router with real processes: a slow consumer holds its producer back by
//! credit, a consumer that stops early cancels the producer, and either end dying gives the
//! other a clean end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Running, ready_pid, request, signal, stack, start};
use rustix::process::Signal;
use serde::{Serialize, de::DeserializeOwned};
use switchboard::router::{GATEWAY, INITIAL_CREDIT, StreamStep};
use switchboard_protocol::{Body, ErrorCode, Kind, Status};
use switchboard_services::probe::{Consume, Consumed, CountRequest, Counted};

const LIMIT: Duration = Duration::from_secs(15);

const STACK: &str = r#"
name = "streams"
[services.producer]
builtin = "probe"
[services.consumer]
builtin = "probe"
calls = ["producer"]
"#;

async fn call<T: Serialize, R: DeserializeOwned>(
    running: &Running,
    service: &str,
    method: &str,
    body: &T,
) -> R {
    let answer = running
        .supervisor
        .router()
        .call(
            GATEWAY,
            request(service, method, body, Duration::from_secs(30)),
        )
        .await;
    assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    let Body::Json(bytes) = &answer.body else {
        panic!("expected JSON: {answer:?}")
    };
    serde_json::from_slice(bytes).unwrap()
}

async fn ready(running: &Running) {
    running.ready(LIMIT, &["producer", "consumer"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_its_producer_back_by_credit() {
    let (stack, _dir) = stack(STACK);
    let running = start(stack).await;
    ready(&running).await;
    let n = 40;
    let consumed: Consumed = call(
        &running,
        "consumer",
        "consume",
        &Consume {
            service: "producer".into(),
            method: "count".into(),
            count: CountRequest { n, pace_ms: 0 },
            read_pace_ms: 25,
            stop_after: None,
        },
    )
    .await;
    assert_eq!(consumed.error, None);
    let indexes: Vec<u32> = consumed.items.iter().map(|i| i.index).collect();
    assert_eq!(
        indexes,
        (0..n).collect::<Vec<_>>(),
        "items out of order or lost"
    );
    // The producer stamps item i when it starts on it, which is after item i - 1 got its
    // credit, which in turn needed the consumer to have taken item i - 1 - window. A producer
    // that ignored credit would have stamped all forty at once, long before.
    let window = INITIAL_CREDIT as usize;
    for i in window + 1..n as usize {
        assert!(
            consumed.items[i].sent_at_us >= consumed.received_at_us[i - 1 - window],
            "item {i} was started before item {} was taken: the producer ran ahead of its credit",
            i - 1 - window
        );
    }
    let spread = consumed.items[n as usize - 1].sent_at_us - consumed.items[0].sent_at_us;
    assert!(
        spread > 500_000,
        "the producer was not held back: {spread} µs"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_early_cancels_the_producer() {
    let (stack, _dir) = stack(STACK);
    let running = start(stack).await;
    ready(&running).await;
    let consumed: Consumed = call(
        &running,
        "consumer",
        "consume",
        &Consume {
            service: "producer".into(),
            method: "count".into(),
            count: CountRequest {
                n: 1_000,
                pace_ms: 5,
            },
            read_pace_ms: 0,
            stop_after: Some(5),
        },
    )
    .await;
    assert_eq!(consumed.items.len(), 5);
    let start = std::time::Instant::now();
    loop {
        let cancelled: u64 = call(&running, "producer", "cancelled_streams", &()).await;
        if cancelled == 1 {
            break;
        }
        assert!(start.elapsed() < LIMIT, "the producer never saw the cancel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_inside_the_console_and_its_producer_dying() {
    let (stack, _dir) = stack(STACK);
    let running = start(stack).await;
    ready(&running).await;
    let router = &running.supervisor.router();

    // Read slowly from inside the console (as the gateway does): all items, in order, then
    // a clean end.
    let count = CountRequest { n: 20, pace_ms: 0 };
    let mut stream = router.call_stream(GATEWAY, request("producer", "count", &count, LIMIT));
    let mut seen = Vec::new();
    let end = loop {
        match stream.next().await {
            StreamStep::Item(Body::Json(bytes)) => {
                seen.push(serde_json::from_slice::<Counted>(&bytes).unwrap().index);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            StreamStep::Item(other) => panic!("not JSON: {other:?}"),
            StreamStep::End(end) => break end,
        }
    };
    assert_eq!(end, Ok(()));
    assert_eq!(seen, (0..20).collect::<Vec<_>>());

    // The producer is killed mid-stream: the reader gets a clean end with `unavailable`.
    let slow = CountRequest {
        n: 1_000,
        pace_ms: 20,
    };
    let mut stream = router.call_stream(GATEWAY, request("producer", "count", &slow, LIMIT));
    for _ in 0..3 {
        assert!(matches!(stream.next().await, StreamStep::Item(_)));
    }
    signal(ready_pid(&running, "producer").unwrap(), Signal::KILL);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let StreamStep::End(end) = stream.next().await {
                break end;
            }
        }
    })
    .await
    .expect("the reader was left hanging");
    let (code, _) = end.expect_err("a killed producer ended its stream well");
    assert_eq!(code, ErrorCode::Unavailable);
    assert_eq!(running.supervisor.router().in_flight_count(), 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dying_mid_stream_cancels_the_producer() {
    let (stack, _dir) = stack(STACK);
    let running = start(stack).await;
    ready(&running).await;
    let router = running.supervisor.router().clone();
    let consume = Consume {
        service: "producer".into(),
        method: "count".into(),
        count: CountRequest {
            n: 10_000,
            pace_ms: 0,
        },
        read_pace_ms: 50,
        stop_after: None,
    };
    let pending = tokio::spawn(async move {
        router
            .call(GATEWAY, request("consumer", "consume", &consume, LIMIT))
            .await
    });
    // Mid-stream: the consumer is reading the producer's items.
    running.in_flight(LIMIT, "consumer").await;
    running.in_flight(LIMIT, "producer").await;
    signal(ready_pid(&running, "consumer").unwrap(), Signal::KILL);
    let answer = pending.await.unwrap();
    assert!(
        matches!(&answer.kind, Kind::Response(Status::Error(e)) if e.code == ErrorCode::Unavailable),
        "{answer:?}"
    );
    let start = std::time::Instant::now();
    loop {
        let cancelled: u64 = call(&running, "producer", "cancelled_streams", &()).await;
        if cancelled == 1 {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the producer never heard its consumer died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await;
}
