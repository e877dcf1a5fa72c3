//! Server-sent event streams: lifecycle events (`GET /admin/events`) and a followed log
//! (`GET /admin/services/{name}/logs?follow=true`).
//!
//! Each stream reads its own broadcast receiver. A client slower than the console loses the
//! oldest items rather than holding anyone up (the channels are bounded and drop for laggards);
//! it is told with a `lagged` event carrying how many it missed. Streams end when the gateway
//! stops, so a graceful shutdown never waits on an open stream.

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::AppState;
use crate::{
    api::{EventView, LogView},
    event::Event,
    logs::LogLine,
};

fn json_event(name: &str, value: &impl Serialize) -> SseEvent {
    match SseEvent::default().event(name).json_data(value) {
        Ok(event) => event,
        // Our own plain data types always serialise; keep the stream alive regardless.
        Err(_) => SseEvent::default().event("error").data("unserialisable"),
    }
}

fn lagged(missed: u64) -> SseEvent {
    SseEvent::default().event("lagged").data(missed.to_string())
}

/// Items of a broadcast receiver, as SSE events, until the channel closes.
fn from_broadcast<T: Clone + Send + 'static>(
    receiver: broadcast::Receiver<T>,
    render: impl Fn(&T) -> Option<SseEvent> + Send + 'static,
) -> impl Stream<Item = SseEvent> + Send {
    stream::unfold((receiver, render), |(mut receiver, render)| async move {
        loop {
            match receiver.recv().await {
                Ok(item) => match render(&item) {
                    Some(event) => return Some((event, (receiver, render))),
                    None => continue,
                },
                Err(RecvError::Lagged(missed)) => {
                    return Some((lagged(missed), (receiver, render)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

fn sse(state: &AppState, events: impl Stream<Item = SseEvent> + Send + 'static) -> Response {
    let stopping = state.shutdown.clone().cancelled_owned();
    Sse::new(events.take_until(stopping).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub async fn lifecycle(State(state): State<AppState>) -> Response {
    let receiver = state.supervisor.events().subscribe();
    // A first event tells the client it is subscribed: whatever happens after it is streamed.
    let hello = SseEvent::default().event("subscribed").data("{}");
    let events = from_broadcast(receiver, |event: &Event| {
        let view = EventView::from(event);
        Some(json_event(&view.kind.clone(), &view))
    });
    sse(&state, stream::once(async move { hello }).chain(events))
}

pub fn log_follow(
    state: &AppState,
    service: String,
    tail: Vec<LogView>,
    feed: broadcast::Receiver<Arc<LogLine>>,
) -> Response {
    let last_seq = tail.last().map(|l| l.seq);
    let backlog = stream::iter(
        tail.into_iter()
            .map(|line| json_event("log", &line))
            .collect::<Vec<_>>(),
    );
    let live = from_broadcast(feed, move |line: &Arc<LogLine>| {
        // Lines already sent in the tail, and other services' lines, are skipped.
        let fresh = last_seq.is_none_or(|seq| line.seq > seq);
        (fresh && *line.service == *service)
            .then(|| json_event("log", &LogView::from(line.as_ref())))
    });
    sse(state, backlog.chain(live))
}
