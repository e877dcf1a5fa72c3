//! Server-sent event streams: lifecycle events (`GET /admin/events`) and a followed log
//! (`GET /admin/services/{name}/logs?follow=true`).
//!
//! Each stream reads its own broadcast receiver. A client slower than the console loses the
//! oldest items rather than holding anyone up (the channels are bounded and drop for laggards);
//! it is told with a `lagged` event carrying how many it missed. Streams end when the gateway
//! stops, so a graceful shutdown never waits on an open stream.

use std::{convert::Infallible, sync::Arc, time::UNIX_EPOCH};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::{Stream, StreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};

use super::AppState;
use crate::{
    event::{Event, EventKind},
    logs::LogLine,
    tui::view::LogView,
};

/// One lifecycle event as JSON: the `data` of an SSE event whose name is `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub service: String,
    pub replica: Option<u32>,
    /// `state`, `spawned`, `exited`, `restart_scheduled`, `hang_detected`, `gave_up`,
    /// `job_started`, `job_finished`, `signalled`, `breaker` or `alert`.
    pub kind: String,
    /// For `state`: the states before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The event as the headless output prints it.
    pub text: String,
}

impl From<&Event> for EventView {
    fn from(event: &Event) -> Self {
        let (kind, from, to) = match &event.kind {
            EventKind::State { from, to } => (
                "state",
                Some(from.as_str().to_string()),
                Some(to.as_str().to_string()),
            ),
            EventKind::Spawned { .. } => ("spawned", None, None),
            EventKind::Exited { .. } => ("exited", None, None),
            EventKind::RestartScheduled { .. } => ("restart_scheduled", None, None),
            EventKind::HangDetected { .. } => ("hang_detected", None, None),
            EventKind::GaveUp { .. } => ("gave_up", None, None),
            EventKind::JobStarted { .. } => ("job_started", None, None),
            EventKind::JobFinished { .. } => ("job_finished", None, None),
            EventKind::Signalled { .. } => ("signalled", None, None),
            EventKind::Breaker { .. } => ("breaker", None, None),
            EventKind::Alert { .. } => ("alert", None, None),
        };
        EventView {
            at_ms: event
                .at
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            service: event.service.clone(),
            replica: event.replica,
            kind: kind.to_string(),
            from,
            to,
            text: event.to_string(),
        }
    }
}

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
    let receiver = state.supervisor.events.subscribe();
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
