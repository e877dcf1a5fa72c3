//! Service logs: every line a service writes to stderr (and, for plain programs, stdout),
//! timestamped on arrival, kept in bounded per-service rings for the console and the admin API,
//! and appended to per-service files with size-based rotation.
//!
//! - [`line_codec`]: splits a byte stream into lines, truncating over-long ones instead of failing.
//! - [`store`]: the rings and the live feed.
//! - [`file`](mod@file): the background writer of the per-service log files.

pub mod file;
pub mod line_codec;
pub mod store;

pub use line_codec::LineCodec;
pub use store::{LogLine, LogStore, Stream};
