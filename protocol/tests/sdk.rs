//! The SDK in-process, over an in-memory duplex standing in for the console: a typed call with
//! its deadline propagated, a publish, progress in the segment, JSON and postcard bodies, error
//! codes, and a graceful drain.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../examples/greeter.rs"]
mod greeter;

use std::{sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use greeter::{Greet, Greeting};
use switchboard_protocol::{
    Body, Envelope, ErrorCode, Kind, PROTOCOL_VERSION, Status, Welcome,
    codec::{Frame, FrameCodec},
    segment::{SegmentWriter, TaskState},
};
use tokio::io::DuplexStream;
use tokio_util::codec::{FramedRead, FramedWrite};

struct Console {
    frames: FramedRead<DuplexStream, FrameCodec>,
    sink: FramedWrite<DuplexStream, FrameCodec>,
}

impl Console {
    async fn next(&mut self) -> Envelope {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.frames.next())
                .await
                .expect("service said nothing")
                .expect("service closed stdout")
                .unwrap();
            if let Frame::Message(envelope) = frame {
                return envelope;
            }
        }
    }

    async fn send(&mut self, envelope: Envelope) {
        self.sink.send(envelope).await.unwrap();
    }
}

type Serving = tokio::task::JoinHandle<Result<(), switchboard_protocol::sdk::SdkError>>;

/// Starts the greeter on a duplex and completes the handshake.
async fn start() -> (Console, Arc<SegmentWriter>, Serving) {
    start_with(greeter::greeter()).await
}

/// Starts `service` (a greeter, perhaps with other settings) and completes the handshake.
async fn start_with(
    service: switchboard_protocol::sdk::Service,
) -> (Console, Arc<SegmentWriter>, Serving) {
    // One pipe per direction, like stdin and stdout: closing the console's writer is EOF for
    // the service.
    let (service_read, console_write) = tokio::io::duplex(64 * 1024);
    let (console_read, service_write) = tokio::io::duplex(64 * 1024);
    let segment = Arc::new(SegmentWriter::anonymous().unwrap());
    let task = tokio::spawn(service.serve(service_read, service_write, segment.clone()));
    let mut console = Console {
        frames: FramedRead::new(console_read, FrameCodec::new()),
        sink: FramedWrite::new(console_write, FrameCodec::new()),
    };
    let hello = console.next().await;
    let Kind::Hello(info) = &hello.kind else {
        panic!("first frame was {:?}", hello.kind)
    };
    assert_eq!(info.protocol_version, PROTOCOL_VERSION);
    console
        .send(Envelope {
            id: 1,
            correlation: hello.id,
            kind: Kind::Welcome(Box::new(Welcome {
                protocol_version: PROTOCOL_VERSION,
                service: info.name.clone(),
                instance: 0,
                heartbeat_ms: 20,
                ..Welcome::default()
            })),
            ..Envelope::default()
        })
        .await;
    assert_eq!(console.next().await.kind, Kind::Ready);
    (console, segment, task)
}

fn request(id: u64, method: &str, body: Body, deadline_us: u64) -> Envelope {
    Envelope {
        id,
        trace: 77,
        deadline_us,
        kind: Kind::Request,
        destination: "greeter".into(),
        method: method.into(),
        body,
        ..Envelope::default()
    }
}

fn is_error(envelope: &Envelope, code: ErrorCode) -> bool {
    matches!(&envelope.kind, Kind::Response(Status::Error(e)) if e.code == code)
}

#[tokio::test]
async fn a_typed_call_a_publish_progress_and_a_drain() {
    let (mut console, segment, task) = start().await;
    let reader = segment.reader();

    // A JSON request, as the HTTP gateway sends.
    let body = Body::Json(br#"{"name":"Ada"}"#.to_vec().into());
    console.send(request(10, "greet", body, 2_000_000)).await;

    // The service calls directory.title through the console, with the deadline propagated.
    let call = console.next().await;
    assert_eq!(call.kind, Kind::Request);
    assert_eq!(
        (call.destination.as_str(), call.method.as_str()),
        ("directory", "title")
    );
    assert_eq!(call.trace, 77, "trace id propagates");
    assert!(
        call.deadline_us > 0 && call.deadline_us <= 2_000_000,
        "{}",
        call.deadline_us
    );
    let name: String = match &call.body {
        Body::Postcard(bytes) => postcard::from_bytes(bytes).unwrap(),
        other => panic!("calls use postcard, got {other:?}"),
    };
    assert_eq!(name, "Ada");
    console
        .send(Envelope {
            id: 2,
            correlation: call.id,
            kind: Kind::Response(Status::Ok),
            body: Body::Postcard(postcard::to_allocvec("Countess").unwrap().into()),
            ..Envelope::default()
        })
        .await;

    let event = console.next().await;
    assert_eq!(event.kind, Kind::Event);
    assert_eq!(event.destination, "greeting.sent");

    let reply = console.next().await;
    assert_eq!(reply.correlation, 10);
    assert_eq!(reply.kind, Kind::Response(Status::Ok));
    let Body::Json(json) = &reply.body else {
        panic!("a JSON request gets a JSON reply, got {:?}", reply.body)
    };
    let greeting: Greeting = serde_json::from_slice(json).unwrap();
    assert_eq!(greeting.text, "hello, Countess Ada");

    // The same handler answers postcard; a failing dependency's code reaches the caller.
    let greet = Greet { name: "Bo".into() };
    let body = Body::Postcard(postcard::to_allocvec(&greet).unwrap().into());
    console.send(request(11, "greet", body, 0)).await;
    let call = console.next().await;
    console
        .send(Envelope {
            id: 3,
            correlation: call.id,
            kind: Kind::Response(Status::error(ErrorCode::Unavailable, "directory is down")),
            ..Envelope::default()
        })
        .await;
    let reply = console.next().await;
    assert_eq!(reply.correlation, 11);
    assert!(is_error(&reply, ErrorCode::Unavailable), "{reply:?}");

    // Progress of the first request reached the segment, and so did the counters.
    let snapshot = reader.read();
    let done: Vec<_> = snapshot
        .tasks
        .iter()
        .filter(|t| t.label == "greeting" && t.state == TaskState::Done)
        .collect();
    assert_eq!(done.len(), 1, "{:?}", snapshot.tasks);
    assert_eq!((done[0].done, done[0].total), (2, 2));
    assert_eq!(snapshot.received, 2);
    assert_eq!(snapshot.ok, 1);
    assert_eq!(snapshot.error, 1);
    assert_eq!(snapshot.events_published, 1);

    // Unknown methods and bad bodies get their codes.
    console.send(request(12, "nope", Body::Empty, 0)).await;
    let bad = Body::Json(b"{".to_vec().into());
    console.send(request(13, "greet", bad, 0)).await;
    let mut replies = [console.next().await, console.next().await];
    replies.sort_by_key(|r| r.correlation);
    assert!(
        is_error(&replies[0], ErrorCode::NotFound),
        "{:?}",
        replies[0]
    );
    assert!(
        is_error(&replies[1], ErrorCode::BadRequest),
        "{:?}",
        replies[1]
    );

    // Heartbeats move on their own.
    let before = reader.read().heartbeat;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(reader.read().heartbeat > before, "heartbeat did not move");

    // Drain: a slow request in flight when Shutdown arrives still gets its answer; a request
    // after it is refused; then the service ends by itself.
    let body = Body::Postcard(postcard::to_allocvec(&150u64).unwrap().into());
    console.send(request(20, "slow", body, 0)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    console
        .send(Envelope {
            id: 4,
            kind: Kind::Shutdown,
            ..Envelope::default()
        })
        .await;
    console.send(request(21, "slow", Body::Empty, 0)).await;
    let mut answers = [console.next().await, console.next().await];
    answers.sort_by_key(|a| a.correlation);
    assert_eq!(answers[0].correlation, 20);
    assert_eq!(answers[0].kind, Kind::Response(Status::Ok));
    assert!(
        is_error(&answers[1], ErrorCode::Unavailable),
        "{:?}",
        answers[1]
    );
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("service did not finish draining")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn stdin_eof_fails_pending_calls_and_ends_the_service() {
    let (mut console, _segment, task) = start().await;
    let body = Body::Json(br#"{"name":"Cy"}"#.to_vec().into());
    console.send(request(1, "greet", body, 0)).await;
    let call = console.next().await;
    assert_eq!(call.destination, "directory");
    // The console goes away without answering.
    drop(console.sink);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("service hung after EOF")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_overloaded_until_one_finishes() {
    let (mut console, _segment, _task) = start_with(greeter::greeter().max_in_flight(2)).await;
    let slow =
        |id, millis: &str| request(id, "slow", Body::Json(millis.as_bytes().to_vec().into()), 0);
    console.send(slow(1, "300")).await;
    console.send(slow(2, "300")).await;
    console.send(slow(3, "300")).await;
    let refused = console.next().await;
    assert_eq!(refused.correlation, 3);
    assert!(is_error(&refused, ErrorCode::Overloaded), "{refused:?}");
    let mut answered = [console.next().await, console.next().await];
    answered.sort_by_key(|answer| answer.correlation);
    for (answer, id) in answered.iter().zip([1, 2]) {
        assert_eq!(answer.correlation, id);
        assert_eq!(answer.kind, Kind::Response(Status::Ok));
    }
    // Both places are free again; a request that answers at once takes one and gives it back.
    for id in 4..8 {
        console.send(slow(id, "0")).await;
        let answer = console.next().await;
        assert_eq!(answer.correlation, id);
        assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    }
}

#[tokio::test]
async fn a_call_the_console_never_answers_times_out_locally_after_its_budget() {
    use switchboard_protocol::sdk::{CallError, CallOptions, HandlerError, Service};
    const BUDGET: Duration = Duration::from_millis(150);
    const LONG: Duration = Duration::from_secs(60);
    let caller = Service::new("caller", "1.0.0").method("ask", |ctx, (): ()| async move {
        // A call with a long budget waits first: the short one must still be given up on time.
        let long = tokio::spawn({
            let ctx = ctx.clone();
            async move {
                let _: Result<String, CallError> = ctx
                    .call_with("directory", "title", "long", CallOptions::timeout(LONG))
                    .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let outcome: Result<String, CallError> = ctx
            .call_with("directory", "title", "short", CallOptions::timeout(BUDGET))
            .await;
        long.abort();
        let kind = match outcome {
            Err(CallError::Timeout { .. }) => "timeout".to_string(),
            other => format!("{other:?}"),
        };
        Ok::<_, HandlerError>((kind, started.elapsed().as_millis() as u64))
    });
    let (mut console, _segment, _task) = start_with(caller).await;
    // No deadline on the request: only the calls' own budgets bound them.
    console
        .send(request(1, "ask", Body::Json(b"null".to_vec().into()), 0))
        .await;
    for budget in [LONG, BUDGET] {
        let call = console.next().await;
        assert_eq!(
            (call.destination.as_str(), call.method.as_str()),
            ("directory", "title")
        );
        assert_eq!(call.deadline_us, budget.as_micros() as u64);
    }
    // The console stays silent; the caller must give up by itself, and answer.
    let answer = console.next().await;
    assert_eq!(answer.correlation, 1);
    assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    let Body::Json(json) = &answer.body else {
        panic!("answer body {:?}", answer.body)
    };
    let (kind, waited_ms): (String, u64) = serde_json::from_slice(json).unwrap();
    assert_eq!(kind, "timeout");
    // Not before the console's own timeout answer could have come.
    assert!(
        waited_ms >= BUDGET.as_millis() as u64,
        "gave up after {waited_ms} ms"
    );
}

/// SPEC.md §5, Shutdown: the console stops a service that is still starting with Shutdown, which
/// may come before any Welcome; the service then exits cleanly instead of failing its handshake.
#[tokio::test]
async fn shutdown_before_welcome_ends_the_service_cleanly() {
    let (service_read, console_write) = tokio::io::duplex(64 * 1024);
    let (console_read, service_write) = tokio::io::duplex(64 * 1024);
    let segment = Arc::new(SegmentWriter::anonymous().unwrap());
    let task = tokio::spawn(greeter::greeter().serve(service_read, service_write, segment));
    let mut console = Console {
        frames: FramedRead::new(console_read, FrameCodec::new()),
        sink: FramedWrite::new(console_write, FrameCodec::new()),
    };
    let hello = console.next().await;
    assert!(matches!(hello.kind, Kind::Hello(_)), "{hello:?}");
    console
        .send(Envelope {
            id: 1,
            kind: Kind::Shutdown,
            ..Envelope::default()
        })
        .await;
    let served = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("still running after Shutdown")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}
