//! The service builder and its serve loop: handshake, dispatch of requests and events, and a
//! graceful drain on Shutdown or stdin EOF.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    body::{Encoding, decode, encode},
    context::Context,
    dispatch::{Dispatcher, EventFn, Handler, InFlight, MethodFn, Methods, StreamFn},
    error::{HandlerError, SdkError},
    stream::{StreamSink, sink},
    wire::{Link, give_up_late_calls, poll_for_answers},
};
use crate::{
    envelope::{Body, Envelope, Hello, Kind, PROTOCOL_VERSION, Status, Welcome},
    frame_reader::{FrameReader, Read},
    segment::{SegmentWriter, ServiceState},
};

/// Requests handled at once before new ones are answered `overloaded`. The reader never waits
/// for a free place: it must keep reading, because the answers to this service's own calls
/// arrive on the same stream.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Heartbeat period used until the console's Welcome says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1000);

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
        link.send(self.hello(link.next_id()))
            .await
            .map_err(|_| SdkError::HandshakeClosed)?;
        let Some(welcome) = await_welcome(frames).await? else {
            // Stopped while starting (SPEC.md §5, Shutdown): nothing to drain.
            tracing::info!("shutdown before the handshake finished");
            return Ok(());
        };
        let welcome = Arc::new(welcome);
        let period = match welcome.heartbeat_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let housekeeping = Housekeeping::start(segment, link, period);

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
            tracker.spawn(run_main(main, root.clone(), welcome.params.clone()));
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
        read_until_done(&dispatcher, link, frames, segment, &tracker).await;
        // EOF (or a read error) means the console is gone or wants us gone: no answer can
        // arrive any more, so calls in progress fail now instead of at their deadlines.
        link.drain();
        link.disconnect();
        tracker.close();
        tracker.wait().await;
        housekeeping.end().await;
        Ok(())
    }

    /// The Hello that opens the handshake: this service's methods and topics. (Built before
    /// any await: the handlers are not `Sync`, so `&self` may not be held across one.)
    fn hello(&self, id: u64) -> Envelope {
        let topics = self.subscriptions.iter().map(|(p, _)| p.clone()).collect();
        let mut methods: Vec<String> = self.methods.keys().cloned().collect();
        methods.sort();
        Envelope {
            id,
            kind: Kind::Hello(Box::new(Hello {
                name: self.name.clone(),
                version: self.version.clone(),
                protocol_version: PROTOCOL_VERSION,
                methods,
                topics,
            })),
            ..Envelope::default()
        }
    }
}

/// A job's main function: its result goes to the console as JobResult, then the service
/// drains and ends.
async fn run_main(main: MainFn, ctx: Context, params: String) {
    let link = ctx.link.clone();
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
}

/// Reads and dispatches frames until the console's stdin ends, or, once a drain was asked
/// (Shutdown, or a job's end), until every task in `tracker` is done.
async fn read_until_done<R>(
    dispatcher: &Dispatcher,
    link: &Arc<Link>,
    frames: &mut FrameReader<R>,
    segment: &SegmentWriter,
    tracker: &TaskTracker,
) where
    R: AsyncRead + Unpin + Send,
{
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
            () = tracker.wait(), if draining => return,
        };
        match read {
            Ok(Read::Message) => dispatcher.dispatch(&mut envelope, frames.last_read()),
            Ok(Read::Malformed(bad)) => {
                tracing::warn!(reason = ?bad.reason, len = bad.len, "skipped a malformed frame from the console");
            }
            Ok(Read::End) => return,
            Err(err) => {
                tracing::warn!(cause = %err, "reading from the console failed");
                return;
            }
        }
    }
}

/// The tasks beside the serve loop: the heartbeat, polling for answers while calls are
/// waiting, and the backstop that fails calls past their deadline.
struct Housekeeping {
    stop: CancellationToken,
    tasks: [tokio::task::JoinHandle<()>; 3],
}

impl Housekeeping {
    fn start(segment: &Arc<SegmentWriter>, link: &Arc<Link>, period: Duration) -> Housekeeping {
        let stop = CancellationToken::new();
        let tasks = [
            tokio::spawn(heartbeat_loop(segment.clone(), period, stop.clone())),
            tokio::spawn(poll_for_answers(link.clone(), stop.clone())),
            tokio::spawn(give_up_late_calls(link.clone(), stop.clone())),
        ];
        Housekeeping { stop, tasks }
    }

    async fn end(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
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
