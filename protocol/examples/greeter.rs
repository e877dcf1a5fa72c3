//! An example service written with the SDK: a typed method that calls another service with the
//! request's deadline, publishes an event, and shows progress; plus a slow method to show the
//! graceful drain.
//!
//! Run it under a console with a stack entry such as
//! `command = "target/debug/examples/greeter"`, `protocol = true`, `calls = ["directory"]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_protocol::sdk::{Context, HandlerError, Service};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Greet {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Greeting {
    pub text: String,
    pub title: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Greeted {
    pub name: String,
}

pub fn greeter() -> Service {
    Service::new("greeter", "1.0.0")
        .method("greet", |ctx: Context, request: Greet| async move {
            let progress = ctx.progress("greeting");
            progress.set(0, 2);
            // A typed call through the console; the deadline of this request travels with it.
            let title: String = ctx.call("directory", "title", &request.name).await?;
            progress.set(1, 2);
            ctx.publish(
                "greeting.sent",
                &Greeted {
                    name: request.name.clone(),
                },
            )
            .await?;
            progress.set(2, 2);
            progress.finish();
            Ok::<_, HandlerError>(Greeting {
                text: format!("hello, {title} {}", request.name),
                title,
            })
        })
        .method("slow", |_ctx, millis: u64| async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, HandlerError>(millis)
        })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), switchboard_protocol::sdk::SdkError> {
    switchboard_protocol::sdk::logging::init();
    greeter().run().await?;
    // stdin's reader thread cannot be interrupted; leave without waiting for it.
    std::process::exit(0);
}
