//! The conformance job written with the Rust SDK (`tests/sdk_conformance.rs` runs the same job
//! in every SDK, see `sdks/README.md`).
//!
//! Params `{"steps": N, "pace_ms": M, "pad": P}` (defaults 10, 100, 0): one task
//! "conformance", then N times: wait M ms, publish `conformance.step`, report i/N. Result
//! `{"sdk": "rust", "service": <name from Welcome>, "steps": N}`, plus `"pad"`: P x's when
//! P > 0. When the console stops it
//! mid-run, the task is cancelled and the result is `unavailable`.

use std::time::Duration;

use serde::Deserialize;
use switchboard_protocol::sdk::{Context, HandlerError, Job, SdkError};

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default = "ten")]
    steps: u64,
    #[serde(default = "hundred")]
    pace_ms: u64,
    #[serde(default)]
    pad: usize,
}

fn ten() -> u64 {
    10
}

fn hundred() -> u64 {
    100
}

async fn conformance(ctx: Context, params: Params) -> Result<serde_json::Value, HandlerError> {
    let progress = ctx.progress("conformance");
    progress.set(0, params.steps);
    for step in 1..=params.steps {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(params.pace_ms)) => {}
            // Dropping `progress` unfinished marks the task cancelled.
            () = ctx.draining() => {
                return Err(HandlerError::unavailable(format!(
                    "stopped at step {} of {}", step - 1, params.steps
                )));
            }
        }
        ctx.publish_raw(
            "conformance.step",
            switchboard_protocol::Body::Json(format!("{{\"step\":{step}}}").into()),
        )
        .await?;
        progress.set(step, params.steps);
    }
    progress.finish();
    let mut result = serde_json::json!({
        "sdk": "rust",
        "service": ctx.service_name(),
        "steps": params.steps,
    });
    if params.pad > 0 {
        result["pad"] = "x".repeat(params.pad).into();
    }
    Ok(result)
}

#[tokio::main]
async fn main() -> Result<(), SdkError> {
    switchboard_protocol::sdk::logging::init();
    let outcome = Job::new("conformance", "0.1.0").run(conformance).await;
    // `Job::run` leaves ending the process to the caller (see `Service::run`).
    std::process::exit(if outcome.is_ok() { 0 } else { 1 });
}
