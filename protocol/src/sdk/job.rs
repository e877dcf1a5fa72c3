//! Jobs: programs that run to completion, report progress, and hand back a result.

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use futures::FutureExt;
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    context::Context,
    error::{HandlerError, SdkError},
    service::{MainFn, Service},
};
use crate::{
    envelope::{Body, Status},
    segment::SegmentWriter,
};

/// A job: the handshake, then `work(ctx, params)` with progress through `ctx.progress`, then
/// one JobResult frame carrying the result as JSON, then exit.
pub struct Job {
    service: Service,
}

impl Job {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Job {
            service: Service::new(name, version),
        }
    }

    /// Runs `work` over stdin/stdout. See [`Service::run`] about ending the process afterwards.
    pub async fn run<P, R, F, Fut>(self, work: F) -> Result<(), SdkError>
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(Context, P) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        self.service.with_main(main_fn(work)).run().await
    }

    /// Runs `work` over any byte streams (in-process tests).
    pub async fn serve<Rd, W, P, R, F, Fut>(
        self,
        reader: Rd,
        writer: W,
        segment: Arc<SegmentWriter>,
        work: F,
    ) -> Result<(), SdkError>
    where
        Rd: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(Context, P) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        self.service
            .with_main(main_fn(work))
            .serve(reader, writer, segment)
            .await
    }
}

fn main_fn<P, R, F, Fut>(work: F) -> MainFn
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: FnOnce(Context, P) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
{
    Box::new(move |ctx, params: String| {
        async move {
            let text = if params.trim().is_empty() {
                "null"
            } else {
                params.as_str()
            };
            let outcome = match serde_json::from_str::<P>(text) {
                Ok(params) => work(ctx, params).await,
                Err(err) => Err(HandlerError::bad_request(format!(
                    "bad job parameters: {err}"
                ))),
            };
            match outcome.and_then(|result| {
                serde_json::to_vec(&result)
                    .map_err(|err| HandlerError::internal(format!("cannot encode result: {err}")))
            }) {
                Ok(json) => (Status::Ok, Body::Json(Bytes::from(json))),
                Err(err) => (err.into_status(), Body::Empty),
            }
        }
        .boxed()
    })
}
