//! Logging for services: tracing to stderr, because stdout carries frames only. The console
//! shows each stderr line in its log pane.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs a tracing subscriber that writes to stderr, without ANSI colours (the console adds
/// its own) and without timestamps (the console stamps every line when it arrives). The filter
/// comes from `RUST_LOG`, default `info`. Calling it twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
