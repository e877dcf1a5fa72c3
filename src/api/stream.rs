//! The console stream: `GET /admin/console`, server-sent events that keep an attached console
//! up to date without polling. Its events, by name:
//!
//! | event | data |
//! |---|---|
//! | `hello` | [`Hello`]: the API version, the whole view and the recent log lines |
//! | `patch` | a [`patch`](super::patch) of the view's JSON since the last `hello` or `patch` |
//! | `event` | an [`EventView`](super::EventView): a lifecycle event as it happens |
//! | `logs` | new log lines, oldest first (a batch, sent within [`LOG_BATCH_WAIT`]) |
//! | `lagged` | how many events or log lines this client was too slow to receive |
//!
//! A state change is pushed as soon as the supervisor makes it, and the figures (rates, CPU,
//! progress) as soon as they are sampled; nothing is sent when nothing changed, apart from a
//! keep-alive comment every [`KEEP_ALIVE`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConsoleView, LogView};

/// How long new log lines wait for more before they are sent together.
pub const LOG_BATCH_WAIT: Duration = Duration::from_millis(50);
/// A comment is sent when nothing else was for this long, so a dead link is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Log lines sent with `hello` at most (the attached console's scrollback).
pub const MAX_LOG_TAIL: usize = 5000;

/// The first message of the console stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The admin API's version ([`super::API_VERSION`]).
    pub api: u32,
    /// The instance's pid.
    pub pid: u32,
    pub view: ConsoleView,
    pub logs: Vec<LogView>,
}

/// The query of `GET /admin/console`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamQuery {
    /// How many recent log lines `hello` carries (default and most [`MAX_LOG_TAIL`]).
    pub logs: Option<usize>,
}
