//! Service logs: every line a service writes to stderr (and, for plain programs, stdout),
//! timestamped on arrival, kept in bounded per-service rings for the console and the admin API,
//! and appended to per-service files with size-based rotation. What a service may log is
//! bounded by its budget; beyond it lines are dropped and counted.
//!
//! - [`ingest`]: reads the pipes on a thread of its own, off the routing path.
//! - [`budget`]: the per-service token buckets and the count of lines dropped.
//! - [`line_codec`]: splits a byte stream into lines, truncating over-long ones instead of failing.
//! - [`store`]: the rings and the live feed.
//! - [`file`](mod@file): the background writer of the per-service log files.

pub mod budget;
pub mod file;
pub mod ingest;
pub mod line_codec;
pub mod store;

pub use ingest::{ReadyLine, Source};
pub use store::{LogLine, LogStore, Stream};
