//! Several hosts in one console, and durable topics, over NATS.
//!
//! On each host but the console's, `switchboard agent --host NAME` supervises that host's
//! services with the same supervisor the console uses, so restarts, backoff, hang detection,
//! limits and logs stay local. What crosses hosts:
//!
//! - frames: every frame an agent's services write goes up to the console (the agent routes
//!   nothing, see [`crate::router::Uplink`]); the console routes it as it routes a frame from
//!   a local pipe, and sends frames down to a remote instance through a [`link::NatsLink`];
//! - status: each agent publishes its instances (state, pid, CPU, memory, heartbeat, segment)
//!   twice a second and at every change; an agent not heard for [`remote::UNREACHABLE_AFTER`] is
//!   unreachable, and its instances' callers are answered `unavailable` at once;
//! - commands: restart, stop, start, kill, scale and run go to the agent, whose supervisor
//!   carries them out.
//!
//! The parts:
//!
//! - [`subjects`]: the NATS subjects, one set per stack and host.
//! - [`wire`]: what travels on them (postcard).
//! - [`connect`](mod@connect): a connection from the stack's `[nats]` table: credentials and TLS.
//! - [`link`]: the console's way down to a remote instance.
//! - [`remote`]: the console's view of the other hosts: adoption, readiness, unreachability.
//! - [`durable`]: durable topics, kept in JetStream and acknowledged by their subscribers.
//! - [`start`](mod@start): the console's connection, shared by `remote` and `durable`.
//! - [`agent`]: `switchboard agent`'s side of the bridge.

pub mod agent;
pub mod connect;
pub mod durable;
pub mod link;
pub mod remote;
pub mod start;
pub mod subjects;
pub mod wire;

pub use connect::{ConnectError, connect};
pub use start::{LinkError, Linked, start};
