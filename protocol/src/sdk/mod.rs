//! The Rust service SDK.
//!
//! A service is a [`Service`] with typed async method handlers and topic subscriptions. It talks
//! to the console over its stdin/stdout (or any byte stream, for in-process tests) and publishes
//! its heartbeat, counters and task progress into its metrics segment.
//!
//! - [`service`]: the builder and the serve loop (handshake, dispatch, drain).
//! - [`context`]: what a handler gets: [`Context::call`], [`Context::publish`],
//!   [`Context::progress`], the request's deadline and trace.
//! - [`body`]: one typed handler answers postcard and JSON bodies alike.
//! - [`error`]: [`HandlerError`] (what a handler returns) and [`CallError`] (what a call returns).
//! - [`progress`]: [`Progress`] handles over the segment's task slots.
//! - [`stream`]: methods that answer with many items, under the receiver's credit.
//! - [`job`]: run-to-completion jobs that hand back a result.
//! - [`logging`]: tracing to stderr, because stdout carries frames only.
//! - `dispatch`: what the console sends, to the handler or the call waiting for it.
//! - `wire`: the connection's shared state: calls waiting for answers, streams, id allocation.
//! - `outbound`: frames on their way out, encoded by their senders into one buffer that the
//!   writer task writes whole.

pub mod body;
pub mod context;
mod dispatch;
pub mod error;
pub mod job;
pub mod logging;
mod outbound;
pub mod progress;
pub mod service;
pub mod stream;
mod wire;

pub use context::{CallOptions, Context};
pub use error::{CallError, HandlerError, SdkError};
pub use job::Job;
pub use progress::Progress;
pub use service::Service;
pub use stream::{ItemStream, StreamClosed, StreamSink};
