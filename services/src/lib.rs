//! # switchboard-services
//!
//! The services compiled into the `switchboard` binary and spawned as
//! `switchboard service NAME`.
//!
//! - [`probe`]: a configurable diagnostic service and job, used by `switchboard bench` and by
//!   the supervisor's tests (echo, sleep, calls, publishes, crashes, hangs, stubbornness).
//! - [`bench_client`]: drives routed requests for `switchboard bench`.

pub mod bench_client;
pub mod probe;

use switchboard_protocol::sdk::SdkError;

/// Builtin names, for `builtin = "…"` in a stack file.
pub const NAMES: &[&str] = &["probe", "probe-job", "bench-client"];

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no builtin service named `{0}` (builtins: {names})", names = NAMES.join(", "))]
    Unknown(String),
    #[error(transparent)]
    Sdk(#[from] SdkError),
}

/// Runs builtin `name` over stdin/stdout.
pub async fn run(name: &str) -> Result<(), ServiceError> {
    match name {
        "probe" => Ok(probe::service().run().await?),
        "probe-job" => Ok(probe::run_job().await?),
        "bench-client" => Ok(bench_client::service().run().await?),
        other => Err(ServiceError::Unknown(other.to_string())),
    }
}
