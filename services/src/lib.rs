//! # switchboard-services
//!
//! The services compiled into the `switchboard` binary and spawned as
//! `switchboard service NAME`.
//!
//! - [`probe`]: a configurable diagnostic service and job, used by `switchboard bench` and by
//!   the supervisor's tests (echo, sleep, calls, publishes, crashes, hangs, stubbornness).
//! - [`bench_client`]: drives routed requests for `switchboard bench`.
//!
//! The demo stack's services, a small shop:
//!
//! - [`user`]: users, validated and persisted.
//! - [`order`]: orders, which check their user, run through stages shown as progress, and
//!   announce themselves through an outbox ([`order::outbox`]) that guarantees delivery.
//! - [`notification`]: the idempotent consumer of order events.
//! - [`storefront`]: a load generator that shops at a set rate.
//! - [`python_job`]: `order-report`, the Python report job (in `services/python/`), embedded.
//!
//! [`model`] holds their messages; [`store`] their SQLite storage.

pub mod bench_client;
pub mod model;
pub mod notification;
pub mod order;
pub mod probe;
pub mod python_job;
pub mod store;
pub mod storefront;
pub mod user;

use switchboard_protocol::sdk::SdkError;

/// Builtin names, for `builtin = "…"` in a stack file.
pub const NAMES: &[&str] = &[
    "user",
    "order",
    "notification",
    "storefront",
    "order-report",
    "probe",
    "probe-job",
    "bench-client",
];

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no builtin service named `{0}` (builtins: {names})", names = NAMES.join(", "))]
    Unknown(String),
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    PythonJob(#[from] python_job::PythonJobError),
}

/// Runs builtin `name` over stdin/stdout.
pub async fn run(name: &str) -> Result<(), ServiceError> {
    match name {
        "user" => Ok(user::service()?.run().await?),
        "order" => Ok(order::service()?.run().await?),
        "notification" => Ok(notification::service()?.run().await?),
        "storefront" => Ok(storefront::service().run().await?),
        "order-report" => Err(python_job::exec_order_report().into()),
        "probe" => Ok(probe::service().run().await?),
        "probe-job" => Ok(probe::run_job().await?),
        "bench-client" => Ok(bench_client::service().run().await?),
        other => Err(ServiceError::Unknown(other.to_string())),
    }
}
