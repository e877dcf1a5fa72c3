//! Watching the running processes without sending them anything.
//!
//! - [`resources`]: CPU% and RSS per process from the OS (sysinfo), on its own thread.
//! - [`metrics`]: request rates, error rates, latency and task progress from each instance's
//!   segment, sampled into short histories for sparklines.
//! - [`backlog`]: each service's backlog (published or derived), its trend and growth.
//! - [`tasks`]: which task slots are listed (finished tasks leave after a minute).

pub mod backlog;
pub mod metrics;
pub mod resources;
pub mod tasks;
