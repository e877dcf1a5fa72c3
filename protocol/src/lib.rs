//! # switchboard-protocol
//!
//! Everything the Switchboard console and its services must agree on, and the SDK a Rust
//! service is written with. `SPEC.md` beside this crate describes the same things byte by byte
//! for authors in other languages.
//!
//! - [`envelope`]: the one message type ([`Envelope`]) and its parts: kinds, statuses, error
//!   codes, bodies tagged postcard or JSON.
//! - `envelope_decode`, `envelope_encode`: the envelope's postcard form read and written
//!   by hand, for speed; held to postcard's own by property tests.
//! - [`codec`]: framing over a byte stream: postcard + COBS between zero bytes, as a tokio-util
//!   `Decoder`/`Encoder` that resynchronises after garbage and never ends the stream on bad input.
//! - [`frame_reader`]: frames read from a pipe and decoded into one envelope the reader
//!   keeps, so no decoded envelope is moved around.
//! - [`segment`]: the per-service shared-memory metrics segment: its layout, the service-side
//!   writer and the console-side reader.
//! - [`sdk`]: typed async handlers, calls, publishes and progress for Rust services.
//! - [`launcher`]: running one job without a console and watching its progress, heartbeat,
//!   counters and result ([`launcher::Launcher`]).
//! - [`read_clock`]: when the bytes of each incoming frame were read, for deadlines, latencies
//!   and [`sdk::Context::received`].
//! - [`busy_poll`]: the adaptive polling the console and the SDK do instead of sleeping when a
//!   message is due soon.

pub mod busy_poll;
pub mod codec;
pub mod envelope;
mod envelope_decode;
mod envelope_encode;
#[cfg(test)]
mod envelope_strategies;
pub mod frame_reader;
pub mod launcher;
pub mod read_clock;
pub mod sdk;
pub mod segment;
pub mod topic;

pub use envelope::{
    Body, Envelope, ErrorBody, ErrorCode, Hello, Kind, Name, PROTOCOL_VERSION, Priority, Status,
    Welcome,
};
