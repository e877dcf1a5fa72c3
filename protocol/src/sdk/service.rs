//! The service builder and its serve loop: handshake, dispatch of requests and events, and a
//! graceful drain on Shutdown or stdin EOF.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{FutureExt, future::BoxFuture};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    body::{Encoding, decode, encode},
    context::Context,
    error::{HandlerError, SdkError},
    stream::{Gate, StreamSink, end as stream_end, sink},
    wire::{Link, give_up_late_calls, poll_for_answers},
};
use crate::{
    envelope::{Body, Envelope, ErrorCode, Hello, Kind, PROTOCOL_VERSION, Status, Welcome},
    frame_reader::{FrameReader, Read},
    segment::{Outcome, SegmentWriter, ServiceState},
    topic::topic_matches,
};

/// Requests handled at once before new ones are answered `overloaded`. The reader never waits
/// for a free place: it must keep reading, because the answers to this service's own calls
/// arrive on the same stream.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Heartbeat period used until the console's Welcome says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1000);

/// Handlers by method name, looked up for every request: foldhash, not SipHash. The keys are
/// the service's own methods, fixed before it serves, so a caller choosing names can only
/// make its own lookups miss.
type Methods = HashMap<String, Handler, foldhash::fast::RandomState>;

type MethodFn =
    Arc<dyn Fn(Context, Body) -> BoxFuture<'static, Result<Body, HandlerError>> + Send + Sync>;
type StreamFn = Arc<
    dyn Fn(
            Context,
            Body,
            Arc<Link>,
            Envelope,
            Arc<Gate>,
        ) -> BoxFuture<'static, Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// How a method answers: once, or with a stream of items.
#[derive(Clone)]
enum Handler {
    Unary(MethodFn),
    Stream(StreamFn),
}

type EventFn = Arc<
    dyn Fn(Context, String, Body) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync,
>;
type BackgroundFn = Box<dyn FnOnce(Context) -> BoxFuture<'static, ()> + Send>;
pub(crate) type MainFn =
    Box<dyn FnOnce(Context, String) -> BoxFuture<'static, (Status, Body)> + Send>;

/// A service: typed method handlers, topic subscriptions and background tasks.
///
/// ```no_run
/// # use switchboard_protocol::sdk::{Service, HandlerError};
/// # async fn demo() -> Result<(), switchboard_protocol::sdk::SdkError> {
/// Service::new("greeter", "0.1.0")
///     .method("hello", |_ctx, name: String| async move {
///         Ok::<_, HandlerError>(format!("hello, {name}"))
///     })
///     .run()
///     .await
/// # }
/// ```
pub struct Service {
    name: String,
    version: String,
    methods: Methods,
    subscriptions: Vec<(String, EventFn)>,
    background: Vec<BackgroundFn>,
    main: Option<MainFn>,
    max_in_flight: usize,
}

impl Service {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Service {
            name: name.into(),
            version: version.into(),
            methods: Methods::default(),
            subscriptions: Vec::new(),
            background: Vec::new(),
            main: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// Serves `name` with a typed handler. The request body is decoded from postcard or JSON,
    /// whichever it is tagged with, and the reply is encoded the same way.
    pub fn method<Req, Resp, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, HandlerError>> + Send + 'static,
    {
        let erased: MethodFn = Arc::new(move |ctx, body| {
            let encoding = Encoding::of(&body);
            match decode::<Req>(&body) {
                Ok(request) => {
                    let reply = handler(ctx, request);
                    async move { encode(&reply.await?, encoding) }.boxed()
                }
                Err(err) => futures::future::ready(Err(err)).boxed(),
            }
        });
        self.methods.insert(name.to_owned(), Handler::Unary(erased));
        self
    }

    /// Serves `name` with a handler that answers with a stream: it sends items through its
    /// [`StreamSink`], whose `send` waits for the receiver's credit, and the stream ends when
    /// the handler returns (an error ends it with that error).
    pub fn stream<Req, Item, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(Context, Req, StreamSink<Item>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let erased: StreamFn =
            Arc::new(
                move |ctx, body, link, request, gate| match decode::<Req>(&body) {
                    Ok(req) => handler(ctx, req, sink(link, &request, gate)).boxed(),
                    Err(err) => futures::future::ready(Err(err)).boxed(),
                },
            );
        self.methods
            .insert(name.to_owned(), Handler::Stream(erased));
        self
    }

    /// Handles events on topics matching `pattern` (`*` one token, `>` the rest).
    pub fn subscribe<E, F, Fut>(mut self, pattern: &str, handler: F) -> Self
    where
        E: DeserializeOwned + Send + 'static,
        F: Fn(Context, String, E) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let erased: EventFn = Arc::new(move |ctx, topic, body| match decode::<E>(&body) {
            Ok(event) => handler(ctx, topic, event).boxed(),
            Err(err) => futures::future::ready(Err(err)).boxed(),
        });
        self.subscriptions.push((pattern.to_owned(), erased));
        self
    }

    /// Runs `task` once the service is ready. It should return when
    /// [`Context::draining`] resolves: the drain waits for it.
    pub fn background<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.push(Box::new(move |ctx| task(ctx).boxed()));
        self
    }

    /// How many requests may be handled at once (default [`DEFAULT_MAX_IN_FLIGHT`]).
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit.max(1);
        self
    }

    pub(crate) fn with_main(mut self, main: MainFn) -> Self {
        self.main = Some(main);
        self
    }

    /// Serves over stdin/stdout with the segment the console handed over (or private memory
    /// when run unsupervised).
    ///
    /// tokio reads stdin on a blocking thread that cannot be interrupted, so after this
    /// returns, end the process (or shut the runtime down with a timeout) instead of waiting
    /// for that thread.
    pub async fn run(self) -> Result<(), SdkError> {
        // A segment that cannot be opened (a program started by a service inherits the
        // variable but not the fd) is not fatal: the service then reports into private memory.
        let segment = Arc::new(match SegmentWriter::from_env() {
            Ok(Some(segment)) => segment,
            Ok(None) => SegmentWriter::anonymous()?,
            Err(err) => {
                tracing::warn!(cause = %err, "no metrics segment; the console will not see counters");
                SegmentWriter::anonymous()?
            }
        });
        // Under the console stdin and stdout are pipes: use them through the reactor. tokio's
        // own stdin/stdout hand every read and write to a blocking thread, which costs tens of
        // microseconds per message. Anything else (a terminal, a file) falls back to those.
        match (pipe_reader(), pipe_writer()) {
            (Some(reader), Some(writer)) => self.serve(reader, writer, segment).await,
            _ => {
                self.serve(tokio::io::stdin(), tokio::io::stdout(), segment)
                    .await
            }
        }
    }

    /// Serves over any byte streams: the console's pipes, or an in-memory duplex in tests.
    pub async fn serve<R, W>(
        self,
        reader: R,
        writer: W,
        segment: Arc<SegmentWriter>,
    ) -> Result<(), SdkError>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        segment.set_state(ServiceState::Starting);
        let close = CancellationToken::new();
        let (link, writer_task) = Link::start(writer, segment.clone(), close.clone());
        let mut frames = FrameReader::new(reader);

        let result = self.serve_on(&link, &mut frames, &segment).await;

        // Whatever happened, flush what is queued so the console sees our last answers.
        segment.set_state(ServiceState::Finished);
        close.cancel();
        match writer_task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(cause = %err, "writing to the console failed"),
            Err(err) => tracing::warn!(cause = %err, "writer task failed"),
        }
        result
    }

    async fn serve_on<R>(
        self,
        link: &Arc<Link>,
        frames: &mut FrameReader<R>,
        segment: &Arc<SegmentWriter>,
    ) -> Result<(), SdkError>
    where
        R: AsyncRead + Unpin + Send,
    {
        let topics = self.subscriptions.iter().map(|(p, _)| p.clone()).collect();
        let mut methods: Vec<String> = self.methods.keys().cloned().collect();
        methods.sort();
        let hello = Envelope {
            id: link.next_id(),
            kind: Kind::Hello(Box::new(Hello {
                name: self.name.clone(),
                version: self.version.clone(),
                protocol_version: PROTOCOL_VERSION,
                methods,
                topics,
            })),
            ..Envelope::default()
        };
        link.send(hello)
            .await
            .map_err(|_| SdkError::HandshakeClosed)?;
        let Some(welcome) = await_welcome(frames).await? else {
            // Stopped while starting (SPEC.md §5, Shutdown): nothing to drain.
            tracing::info!("shutdown before the handshake finished");
            return Ok(());
        };
        let welcome = Arc::new(welcome);

        let housekeeping_stop = CancellationToken::new();
        let period = match welcome.heartbeat_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let heartbeat = tokio::spawn(heartbeat_loop(
            segment.clone(),
            period,
            housekeeping_stop.clone(),
        ));
        let poller = tokio::spawn(poll_for_answers(link.clone(), housekeeping_stop.clone()));
        let backstop = tokio::spawn(give_up_late_calls(link.clone(), housekeeping_stop.clone()));

        let root = Context::new(link.clone(), welcome.clone());
        link.send(Envelope {
            id: link.next_id(),
            kind: Kind::Ready,
            ..Envelope::default()
        })
        .await
        .map_err(|_| SdkError::HandshakeClosed)?;
        segment.set_state(ServiceState::Ready);
        tracing::debug!(service = %welcome.service, instance = welcome.instance, "ready");

        let tracker = TaskTracker::new();
        for task in self.background {
            tracker.spawn(task(root.clone()));
        }
        if let Some(main) = self.main {
            let ctx = root.clone();
            let link = link.clone();
            let params = welcome.params.clone();
            tracker.spawn(async move {
                let (status, body) = main(ctx, params).await;
                let result = Envelope {
                    id: link.next_id(),
                    kind: Kind::JobResult(status),
                    body,
                    ..Envelope::default()
                };
                if link.send(result).await.is_err() {
                    tracing::warn!("console gone before the job result could be sent");
                }
                link.drain();
            });
        }

        let dispatcher = Dispatcher {
            methods: self.methods,
            subscriptions: self.subscriptions,
            root,
            tracker: tracker.clone(),
            in_flight: Arc::new(InFlight::new(self.max_in_flight)),
            inline: tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::CurrentThread,
        };
        let mut draining = false;
        // Made once: a fresh future each turn of the loop registered with the drain token,
        // under its lock, for every frame read.
        let mut drain_asked = std::pin::pin!(link.until_draining());
        // Decoded into in place, frame after frame: never moved (see `FrameReader`).
        let mut envelope = Envelope::default();
        loop {
            let read = tokio::select! {
                read = frames.read_into(&mut envelope) => read,
                () = &mut drain_asked, if !draining => {
                    draining = true;
                    segment.set_state(ServiceState::Draining);
                    tracker.close();
                    continue;
                }
                () = tracker.wait(), if draining => break,
            };
            match read {
                Ok(Read::Message) => dispatcher.dispatch(&mut envelope, frames.last_read()),
                Ok(Read::Malformed(bad)) => {
                    tracing::warn!(reason = ?bad.reason, len = bad.len, "skipped a malformed frame from the console");
                }
                Ok(Read::End) => break,
                Err(err) => {
                    tracing::warn!(cause = %err, "reading from the console failed");
                    break;
                }
            }
        }
        // EOF (or a read error) means the console is gone or wants us gone: no answer can
        // arrive any more, so calls in progress fail now instead of at their deadlines.
        link.drain();
        link.disconnect();
        tracker.close();
        tracker.wait().await;
        housekeeping_stop.cancel();
        let _ = heartbeat.await;
        let _ = poller.await;
        let _ = backstop.await;
        Ok(())
    }
}

fn pipe_reader() -> Option<tokio::net::unix::pipe::Receiver> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()
}

fn pipe_writer() -> Option<tokio::net::unix::pipe::Sender> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok()
}

/// The console's Welcome; `None` when it sent Shutdown first (it stops services that are
/// still starting too).
async fn await_welcome<R>(frames: &mut FrameReader<R>) -> Result<Option<Welcome>, SdkError>
where
    R: AsyncRead + Unpin,
{
    let mut envelope = Envelope::default();
    loop {
        match frames.read_into(&mut envelope).await {
            Ok(Read::Message) => match std::mem::take(&mut envelope.kind) {
                Kind::Welcome(welcome) => {
                    if welcome.protocol_version != PROTOCOL_VERSION {
                        return Err(SdkError::Handshake(format!(
                            "console speaks protocol {}, this service speaks {PROTOCOL_VERSION}",
                            welcome.protocol_version
                        )));
                    }
                    return Ok(Some(*welcome));
                }
                Kind::Shutdown => return Ok(None),
                other => {
                    tracing::warn!(kind = ?other, "ignoring a frame that came before Welcome");
                }
            },
            Ok(Read::Malformed(bad)) => {
                tracing::warn!(reason = ?bad.reason, "skipped a malformed frame before Welcome");
            }
            Ok(Read::End) => return Err(SdkError::HandshakeClosed),
            Err(err) => return Err(SdkError::Io(err)),
        }
    }
}

async fn heartbeat_loop(segment: Arc<SegmentWriter>, period: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => segment.heartbeat(),
            () = stop.cancelled() => return,
        }
    }
}

/// Requests being handled, against the service's limit. The limit is only ever tried, never
/// waited for, so a counter does what a semaphore would, without the semaphore's lock on every
/// release (3 % of the probe's samples with 64 requests in flight).
struct InFlight {
    count: AtomicUsize,
    limit: usize,
}

/// One request counted in [`InFlight`] until dropped.
struct Entered(Arc<InFlight>);

impl InFlight {
    fn new(limit: usize) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            limit,
        }
    }

    fn try_enter(this: &Arc<InFlight>) -> Option<Entered> {
        this.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < this.limit).then_some(n + 1)
            })
            .ok()?;
        Some(Entered(this.clone()))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Routes each incoming frame to its handler task.
struct Dispatcher {
    methods: Methods,
    subscriptions: Vec<(String, EventFn)>,
    root: Context,
    tracker: TaskTracker,
    in_flight: Arc<InFlight>,
    /// Run a request's handler on the reader until it first waits (see [`Dispatcher::request`]).
    inline: bool,
}

impl Dispatcher {
    /// `received`: when the frame's last bytes were read from the console.
    fn dispatch(&self, envelope: &mut Envelope, received: Instant) {
        match envelope.kind {
            Kind::Request => self.request(envelope, received),
            Kind::Event => self.event(envelope, received),
            Kind::Response(_) | Kind::StreamEnd(_) => {
                self.root.link.answer(std::mem::take(envelope));
            }
            Kind::StreamItem => self.root.link.stream_item(std::mem::take(envelope)),
            Kind::Credit(_) | Kind::Cancel => self.root.link.control(envelope),
            Kind::Shutdown => {
                tracing::info!("shutdown requested: draining");
                self.root.link.drain();
            }
            // A Cancel for a plain request is not acted on: it runs to completion and the
            // console drops its answer.
            _ => tracing::debug!(kind = ?envelope.kind, "ignoring frame"),
        }
    }

    fn request(&self, envelope: &mut Envelope, received: Instant) {
        let link = self.root.link.clone();
        if link.is_draining() {
            return self.reject(envelope, ErrorCode::Unavailable, "service is draining");
        }
        let Some(handler) = self.methods.get(envelope.method.as_str()).cloned() else {
            let message = format!("no method `{}`", envelope.method);
            return self.reject(envelope, ErrorCode::NotFound, &message);
        };
        let Some(permit) = InFlight::try_enter(&self.in_flight) else {
            return self.reject(
                envelope,
                ErrorCode::Overloaded,
                "too many requests in flight",
            );
        };
        let ctx = self.root.for_message(envelope, received);
        link.segment.request_started();
        let handler = match handler {
            Handler::Unary(handler) => handler,
            Handler::Stream(handler) => {
                let envelope = std::mem::take(envelope);
                self.tracker
                    .spawn(serve_stream(handler, ctx, envelope, received, permit));
                return;
            }
        };
        let deadline = ctx.deadline();
        let (id, trace) = (envelope.id, envelope.trace);
        let mut work = panic_answers_internal(handler(ctx, std::mem::take(&mut envelope.body)));
        // On a current-thread runtime the work is first polled right here, on the reader, and
        // only spawned if it has to wait: most handlers answer without waiting (a lookup, a
        // computation), and for them a task per request was a large part of the service's cost
        // per message (spawn, schedule, the tracker's bookkeeping), as were the deadline timer
        // and the futures moved into it. Nothing runs in parallel on that runtime anyway, so
        // this changes no concurrency. A multi-threaded runtime spawns at once, so a handler's
        // work runs on the workers, not on the reader. (A handler pending on the first poll
        // registered a no-op waker; the task polls it again at once, with the real one.)
        if self.inline
            && let Some(result) = (&mut work).now_or_never()
        {
            let answer = answer_request(&link, id, trace, received, result);
            if let Some(answer) = link.try_send_back(answer) {
                // The outbound queue is full: wait for room off the reader.
                self.tracker.spawn(async move {
                    let _ = link.send(answer).await;
                    drop(permit);
                });
            }
            return;
        }
        self.tracker.spawn(async move {
            let result = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(HandlerError::new(ErrorCode::Timeout, "deadline passed"))
                    }),
                None => work.await,
            };
            let answer = answer_request(&link, id, trace, received, result);
            let _ = link.send(answer).await;
            drop(permit);
        });
    }

    fn reject(&self, envelope: &Envelope, code: ErrorCode, message: &str) {
        let link = self.root.link.clone();
        link.segment.request_started();
        link.segment
            .request_finished(Outcome::Error, Duration::ZERO);
        let answer = reply(
            &link,
            envelope.id,
            envelope.trace,
            Status::error(code, message),
            Body::Empty,
        );
        // Answered from a task so the reader never waits on a full outbound queue.
        self.tracker.spawn(async move {
            let _ = link.send(answer).await;
        });
    }

    fn event(&self, envelope: &Envelope, received: Instant) {
        self.root.link.segment.event_received();
        let topic = envelope.destination.to_string();
        for (pattern, handler) in &self.subscriptions {
            if !topic_matches(pattern, &topic) {
                continue;
            }
            let work = handler(
                self.root.for_message(envelope, received),
                topic.clone(),
                envelope.body.clone(),
            );
            let topic = topic.clone();
            self.tracker.spawn(async move {
                if let Err(err) = work.await {
                    tracing::warn!(%topic, cause = %err, "event handler failed");
                }
            });
        }
    }
}

/// Runs a streaming handler under the request's deadline and ends the stream with its outcome.
async fn serve_stream(
    handler: StreamFn,
    ctx: Context,
    request: Envelope,
    received: Instant,
    permit: Entered,
) {
    let link = ctx.link.clone();
    let gate = link.produce(request.id);
    let deadline = ctx.deadline();
    // The sink encodes items like the request, so it keeps the request (and its body's tag).
    let work = handler(
        ctx,
        request.body.clone(),
        link.clone(),
        request.clone(),
        gate.clone(),
    );
    let work = panic_answers_internal(work);
    let result = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
            .await
            .unwrap_or_else(|_| Err(HandlerError::new(ErrorCode::Timeout, "deadline passed"))),
        None => work.await,
    };
    link.produced(request.id);
    let outcome = match &result {
        Ok(()) => Outcome::Ok,
        Err(err) if err.code == ErrorCode::Timeout => Outcome::Timeout,
        Err(_) => Outcome::Error,
    };
    link.segment.request_finished(outcome, received.elapsed());
    // A cancelled stream needs no end: the console has already ended it for the receiver.
    if !gate.cancelled.is_cancelled() {
        let status = match result {
            Ok(()) => Status::Ok,
            Err(err) => err.into_status(),
        };
        let _ = link.send(stream_end(&link, &request, status)).await;
    }
    drop(permit);
}

/// A handler that panics answers `internal` (the panic hook logs it on stderr): its caller does
/// not wait for the deadline, and the reader, which may be running the handler inline, carries
/// on.
fn panic_answers_internal<T>(
    work: impl Future<Output = Result<T, HandlerError>>,
) -> impl Future<Output = Result<T, HandlerError>> {
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|_| Err(HandlerError::internal("the handler panicked")))
        })
}

/// Records a finished request in the segment and makes its answer.
fn answer_request(
    link: &Link,
    id: u64,
    trace: u64,
    received: Instant,
    result: Result<Body, HandlerError>,
) -> Envelope {
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(err) if err.code == ErrorCode::Timeout => Outcome::Timeout,
        Err(_) => Outcome::Error,
    };
    link.segment.request_finished(outcome, received.elapsed());
    let (status, body) = match result {
        Ok(body) => (Status::Ok, body),
        Err(err) => (err.into_status(), Body::Empty),
    };
    reply(link, id, trace, status, body)
}

fn reply(link: &Link, correlation: u64, trace: u64, status: Status, body: Body) -> Envelope {
    Envelope {
        id: link.next_id(),
        correlation,
        trace,
        kind: Kind::Response(status),
        body,
        ..Envelope::default()
    }
}
