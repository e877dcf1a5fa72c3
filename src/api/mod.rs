//! The read model: plain serde types for everything the console shows, and the messages of
//! the console stream that pushes it to attached consoles. The local console, an attached
//! console, the admin API and the CLI all speak these types; none of them reaches into the
//! supervisor's own structures.
//!
//! - [`view`]: the service table, each service's detail, calls, routes and log lines.
//! - [`event`]: a lifecycle event.
//! - [`stream`]: the console stream's messages (`GET /admin/console`).
//! - [`patch`]: the small JSON patches the stream sends instead of whole views.
//! - [`millis`]: times as whole milliseconds.
//! - [`human`]: durations and sizes as people read them.
//!
//! ## Stability
//! This is version [`API_VERSION`] of the admin API's JSON. Within a version, fields are only
//! ever added: a reader ignores what it does not know, and a field it expects is never renamed
//! or removed. A change that must break a reader bumps the version, which the console stream
//! announces in its first message, so an attached console can say it needs an upgrade.

pub mod event;
pub mod human;
pub mod millis;
pub mod patch;
pub mod stream;
pub mod view;

pub use self::{
    event::EventView,
    view::{
        AttachedView, BacklogView, ConsoleView, DependencyView, ExitView, HopView, LogView,
        ReplicaBacklogView, ReplicaView, RouteView, RunView, ServiceRow, TaskView,
    },
};

/// The admin API's version (see the module's Stability section).
pub const API_VERSION: u32 = 1;
