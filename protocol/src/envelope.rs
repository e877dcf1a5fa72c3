//! The envelope: the one message type that travels between the console and a service.
//!
//! postcard is not self-describing, so the field order below *is* the wire format (see
//! `SPEC.md`). Never reorder or remove a field or an enum variant; new enum variants are only
//! ever appended, and a change that old peers cannot read bumps [`PROTOCOL_VERSION`].

use bytes::Bytes;
/// Short strings stored inline (up to 24 bytes), so routing a message allocates nothing for its
/// service and method names. Encoded on the wire exactly like a `String`.
pub use compact_str::CompactString as Name;
use serde::{Deserialize, Serialize};

/// Version of the wire protocol, carried in [`Hello`] and [`Welcome`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Priority of a request or event. Higher is more urgent; a service's inbound queue delivers
/// higher priority first.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(pub u8);

impl Priority {
    pub const LOW: Priority = Priority(0);
    pub const NORMAL: Priority = Priority(1);
    pub const HIGH: Priority = Priority(2);
    pub const CRITICAL: Priority = Priority(3);
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// One message on the wire.
///
/// The sender a message claims is never trusted: the console knows which pipe a frame came
/// from, and the envelope has no "from" field for that reason.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Unique per sender and per connection; chosen by the sender.
    pub id: u64,
    /// For a Response, stream item, stream end or credit: the `id` of the request it answers.
    /// `0` otherwise.
    pub correlation: u64,
    /// Trace id; `0` asks the router to assign one.
    pub trace: u64,
    /// Remaining deadline budget in microseconds, relative to when the frame is sent.
    /// `0` means no deadline.
    pub deadline_us: u64,
    pub priority: Priority,
    pub kind: Kind,
    /// A service name (for requests) or a topic (for events and subscriptions). Empty otherwise.
    pub destination: Name,
    /// The method of a request. Empty otherwise.
    pub method: Name,
    pub body: Body,
}

/// What a message is. Variants are only ever appended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub enum Kind {
    /// Service → console, first frame: who the service is and what it serves. Boxed (as is
    /// Welcome): each is sent once per connection, and inline they would make every routed
    /// envelope twice as large to move. Boxing does not change the wire format.
    Hello(Box<Hello>),
    /// Console → service, answer to Hello: settings and heartbeat period.
    Welcome(Box<Welcome>),
    /// Service → console: ready to take requests.
    Ready,
    /// A call to `destination.method`.
    #[default]
    Request,
    /// The answer to the request whose id is in `correlation`.
    Response(Status),
    /// A publish to the topic in `destination`.
    Event,
    /// Service → console: deliver events on the topic pattern in `destination`.
    Subscribe,
    /// Service → console: stop delivering the topic pattern in `destination`.
    Unsubscribe,
    /// One item of the stream answering request `correlation`. Sent only while the receiver
    /// has granted credit.
    StreamItem,
    /// The end of the stream answering request `correlation`, with its outcome.
    StreamEnd(Status),
    /// The receiver of stream `correlation` grants this many more items.
    Credit(u32),
    /// Console → service: stop taking new work, finish in-flight work, then exit.
    Shutdown,
    /// Job → console: the job's result, sent just before it exits.
    JobResult(Status),
    /// The caller of request `correlation` no longer wants the answer (stream receiver gone,
    /// deadline passed). Best effort.
    Cancel,
    /// Service → console: the durable event delivered with this `correlation` was handled
    /// (every handler it matched returned). Until then the console delivers it again.
    Ack,
}

/// Service → console handshake.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    pub name: String,
    pub version: String,
    pub protocol_version: u32,
    /// Methods this service answers.
    pub methods: Vec<String>,
    /// Topic patterns to subscribe to from the start.
    pub topics: Vec<String>,
}

/// Console → service handshake answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Welcome {
    pub protocol_version: u32,
    /// The service's name in the stack.
    pub service: String,
    /// Replica index of this instance, from 0.
    pub instance: u32,
    /// How often the service should bump its heartbeat counter.
    pub heartbeat_ms: u32,
    /// Free-form settings from the stack file.
    pub settings: Vec<(String, String)>,
    /// Parameters of a job run (JSON text); empty for services.
    pub params: String,
}

/// Outcome of a request, a stream or a job.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Ok,
    Error(ErrorBody),
}

impl Status {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Status::Error(ErrorBody {
            code,
            message: message.into(),
        })
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Status::Ok)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// The closed set of error codes. Variants are only ever appended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    Timeout,
    Unavailable,
    Overloaded,
    CircuitOpen,
    Forbidden,
    BadRequest,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::NotFound,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Overloaded,
        ErrorCode::CircuitOpen,
        ErrorCode::Forbidden,
        ErrorCode::BadRequest,
        ErrorCode::Internal,
    ];

    /// The snake_case name used in JSON, metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::CircuitOpen => "circuit_open",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload, tagged with its encoding. The JSON tag lets the HTTP gateway call the same
/// handlers that Rust callers reach with postcard.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub enum Body {
    #[default]
    Empty,
    Postcard(Bytes),
    Json(Bytes),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Postcard(b) | Body::Json(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
