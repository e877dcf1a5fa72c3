//! # Switchboard
//!
//! A process supervisor and service orchestrator with a full-screen terminal console. The
//! console runs the services of a stack as separate OS processes, routes every request and
//! event between them over their stdin/stdout, and reads their heartbeats, counters and task
//! progress from per-service shared-memory segments.
//!
//! The parts, in the order data flows through them:
//!
//! - [`stack`]: the stack file (`stack.toml`): parsing, validation with `FILE:LINE:COL` errors,
//!   the embedded demo stack.
//! - [`transport`]: how frames reach an instance (a [`transport::Link`]; the stdin pipe's
//!   inbox).
//! - [`registry`]: every service and instance with its state: the single source of truth that
//!   the console, the gateway and the router read.
//! - [`supervisor`]: spawning, stopping, restarting with backoff, dependency order, jobs,
//!   rolling restarts. The only writer of lifecycle state.
//! - [`router`]: request/response and pub/sub between services, with deadlines and
//!   back-pressure.
//! - [`hosts`]: services on several hosts in one console: agents and the console over NATS.
//! - [`gateway`]: the HTTP gateway: the stack's routes, the admin API, `/metrics`.
//! - [`event`]: the lifecycle event channel.
//! - [`audit`]: the append-only audit log of operator actions and refused calls.
//! - [`logs`]: per-service log rings and rotated log files.
//! - [`monitor`]: CPU and memory from the OS, rates and progress from the segments.
//! - [`api`]: the read model: plain serde types for everything the console shows, and the
//!   console stream that pushes it to attached consoles.
//! - [`tui`]: the operator console, a full-screen terminal UI, drawn from the read model.
//! - [`lock`]: one instance per stack (`RUN_DIR/instance.lock`).
//! - [`app`]: starting and stopping a stack for every front end: the local console, headless,
//!   a detached instance (`up -d`), `bench`.
//! - [`attach`]: `switchboard attach`, the console over a running instance.
//! - [`builtin`]: the services compiled into the binary (`switchboard service NAME`).
//! - [`bench`](mod@bench): `switchboard bench`, measurements with real processes.
//! - [`cli`]: the command line.
//! - [`client`]: the CLI's client for a running instance's admin API (`switchboard ps` and
//!   friends).

pub mod api;
pub mod app;
pub mod attach;
pub mod audit;
pub mod bench;
pub mod builtin;
pub mod cli;
pub mod client;
pub mod event;
pub mod gateway;
pub mod hosts;
pub mod lock;
pub mod logs;
pub mod monitor;
pub mod registry;
pub mod router;
pub mod stack;
pub mod supervisor;
pub mod transport;
pub mod tui;
