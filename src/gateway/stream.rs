//! Streams over HTTP: a stack route marked `stream = true`, or the generic
//! `POST /stream/{service}/{method}`, calls a streaming method through the router
//! ([`Router::call_stream`](crate::router::Router::call_stream)) and sends its items as they
//! come, under the same credit as any receiver:
//!
//! - `Accept: text/event-stream` gets server-sent events: `event: item` with the item's JSON
//!   as `data`, then `event: end` (data `{}`) or `event: error` (data `{"error": {code,
//!   message}}`).
//! - Anything else gets newline-delimited JSON (`application/x-ndjson`), one item per line,
//!   chunked; an error ends it with one last line `{"error": {code, message}}`.
//!
//! A stream that fails before its first item is an ordinary error response with the status of
//! its code (404, 503, ...). Items must come within the gateway's request timeout of each other
//! (the first one too): a stalled producer ends the stream with `timeout`. A client that goes
//! away drops the body, which cancels the stream at the producer.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::Body as HttpBody,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde_json::{Value, json};
use switchboard_protocol::{Body, Envelope, ErrorBody, ErrorCode, Kind};

use super::{
    AppState,
    error::{ApiError, public_error},
};
use crate::router::{GATEWAY, LocalStream, StreamStep};

/// How the items are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    ServerSentEvents,
    NdJson,
}

impl Framing {
    /// Server-sent events when the client accepts them, else NDJSON.
    pub fn from_headers(headers: &HeaderMap) -> Framing {
        let sse = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"));
        if sse {
            Framing::ServerSentEvents
        } else {
            Framing::NdJson
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::ServerSentEvents => "text/event-stream",
            Framing::NdJson => "application/x-ndjson",
        }
    }

    fn item(self, json: &str) -> Bytes {
        match self {
            Framing::ServerSentEvents => format!("event: item\ndata: {json}\n\n").into(),
            Framing::NdJson => format!("{json}\n").into(),
        }
    }

    /// The last chunk: `None` for a clean end of NDJSON, which is simply its last line.
    fn end(self, result: &Result<(), (ErrorCode, String)>) -> Option<Bytes> {
        match (self, result) {
            (Framing::ServerSentEvents, Ok(())) => {
                Some(Bytes::from_static(b"event: end\ndata: {}\n\n"))
            }
            (Framing::NdJson, Ok(())) => None,
            (framing, Err((code, message))) => {
                let error = json!({ "error": { "code": code.as_str(), "message": message } });
                Some(match framing {
                    Framing::ServerSentEvents => format!("event: error\ndata: {error}\n\n").into(),
                    Framing::NdJson => format!("{error}\n").into(),
                })
            }
        }
    }
}

/// Calls `service.method` as a stream and answers with its items.
pub async fn respond(
    state: &AppState,
    framing: Framing,
    service: &str,
    method: &str,
    body: Value,
) -> Response {
    let Ok(json) = serde_json::to_vec(&body) else {
        return ApiError::internal().into_response();
    };
    let trace = state.supervisor.router().new_trace();
    let envelope = Envelope {
        trace,
        // No deadline over the whole stream: it lasts while items keep coming (see `gap`) and
        // the client stays connected.
        deadline_us: 0,
        kind: Kind::Request,
        destination: service.into(),
        method: method.into(),
        body: Body::Json(Bytes::from(json)),
        ..Envelope::default()
    };
    let gap = state.config.request_timeout;
    let mut items = state.supervisor.router().call_stream(GATEWAY, envelope);
    let first = match next_within(&mut items, gap).await {
        StreamStep::Item(body) => body,
        StreamStep::End(Ok(())) => {
            // An empty stream: nothing but its end.
            return streaming(framing, futures::stream::iter(framing.end(&Ok(()))));
        }
        StreamStep::End(Err((code, message))) => {
            let (code, message) = public_error(service, method, trace, code, message);
            let error = ErrorBody { code, message };
            return ApiError::from_service(&error, state.retry_after(service)).into_response();
        }
    };
    let (service, method): (Arc<str>, Arc<str>) = (service.into(), method.into());
    let chunks = futures::stream::unfold((Some(first), Some(items)), move |(pending, items)| {
        let (service, method) = (service.clone(), method.clone());
        async move {
            let mut items = items?;
            let step = match pending {
                Some(body) => StreamStep::Item(body),
                None => next_within(&mut items, gap).await,
            };
            match step {
                StreamStep::Item(body) => match one_line_json(&body) {
                    Ok(json) => Some((framing.item(&json), (None, Some(items)))),
                    Err(why) => {
                        // Dropping `items` cancels the stream at the producer.
                        drop(items);
                        let end = framing.end(&Err((ErrorCode::Internal, why)));
                        end.map(|chunk| (chunk, (None, None)))
                    }
                },
                StreamStep::End(result) => {
                    let result = result.map_err(|(code, message)| {
                        public_error(&service, &method, trace, code, message)
                    });
                    framing.end(&result).map(|chunk| (chunk, (None, None)))
                }
            }
        }
    });
    streaming(framing, chunks)
}

fn streaming(
    framing: Framing,
    chunks: impl futures::Stream<Item = Bytes> + Send + 'static,
) -> Response {
    let body = HttpBody::from_stream(futures::StreamExt::map(chunks, Ok::<_, Infallible>));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The next step, or a `timeout` end when none comes within `gap`.
async fn next_within(items: &mut LocalStream, gap: Duration) -> StreamStep {
    match tokio::time::timeout(gap, items.next()).await {
        Ok(step) => step,
        Err(_) => StreamStep::End(Err((
            ErrorCode::Timeout,
            format!("no stream item within {gap:?}"),
        ))),
    }
}

/// An item as one line of JSON. Items are re-serialised rather than passed through, because a
/// service's JSON may hold newlines, which would break both framings.
fn one_line_json(body: &Body) -> Result<String, String> {
    match body {
        Body::Json(bytes) => serde_json::from_slice::<Value>(bytes)
            .map(|v| v.to_string())
            .map_err(|_| "the service sent a stream item that is not JSON".into()),
        Body::Empty => Ok("null".into()),
        Body::Postcard(_) => Err("the service sent a stream item in postcard, not JSON".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_accept() {
        let mut headers = HeaderMap::new();
        assert_eq!(Framing::from_headers(&headers), Framing::NdJson);
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert_eq!(Framing::from_headers(&headers), Framing::ServerSentEvents);
    }

    #[test]
    fn items_are_one_line_whatever_the_service_sent() {
        let body = Body::Json(Bytes::from_static(b"{\n  \"a\": \"x\\ny\"\n}"));
        let line = one_line_json(&body).unwrap();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            Framing::ServerSentEvents.item(&line),
            Bytes::from("event: item\ndata: {\"a\":\"x\\ny\"}\n\n")
        );
        assert!(one_line_json(&Body::Json(Bytes::from_static(b"{oops"))).is_err());
    }

    #[test]
    fn an_error_ends_either_framing_with_its_code() {
        let err = Err((ErrorCode::Unavailable, "gone".to_string()));
        let sse = Framing::ServerSentEvents.end(&err).unwrap();
        assert!(sse.starts_with(b"event: error\ndata: {\"error\":"));
        let line = Framing::NdJson.end(&err).unwrap();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
        assert_eq!(Framing::NdJson.end(&Ok(())), None);
    }
}
