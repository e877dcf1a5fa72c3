//! `GET /admin/console`: the console stream an attached console draws from (see
//! [`crate::api::stream`] for its messages).
//!
//! One task per client builds the view when something may have changed (a lifecycle event, a
//! new metrics sample, the once-a-second uptime) and sends only its [`patch`] against what
//! the client already has; when nothing changed, nothing is sent. Log lines go in batches.
//! A client too slow for the events and lines misses the oldest ones, is told so with
//! `lagged`, and is never waited for: its queue is bounded like every other stream's.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use futures::stream;
use serde::Serialize;
use tokio::{
    sync::{broadcast, broadcast::error::RecvError, watch},
    time::Instant,
};

use super::{ApiError, AppState};
use crate::{
    api::{
        API_VERSION, EventView, LogView, patch,
        stream::{Hello, KEEP_ALIVE, LOG_BATCH_WAIT, MAX_LOG_TAIL, StreamQuery},
    },
    event::Event,
    logs::LogLine,
};

/// Events that follow one another this closely are sent with one view patch.
const SETTLE: Duration = Duration::from_millis(10);
/// The view is looked at this often even when nothing announced a change (uptimes, and
/// anything that changes without an event).
const REFRESH: Duration = Duration::from_secs(1);
/// Log lines sent in one `logs` message at most.
const LOG_BATCH: usize = 500;

pub async fn stream(
    State(state): State<AppState>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::bad_request("use ?logs=N"))?;
    // Subscribed before the first view and tail are taken, so nothing falls between them.
    let events = state.supervisor.events().subscribe();
    let lines = state.supervisor.logs().subscribe();
    let samples = crate::monitor::metrics::read(state.supervisor.metrics()).samples();
    let view = state.view();
    let tail = query.logs.unwrap_or(MAX_LOG_TAIL).min(MAX_LOG_TAIL);
    let logs: Vec<LogView> = state
        .supervisor
        .logs()
        .tail_all(tail)
        .iter()
        .map(|l| LogView::from(l.as_ref()))
        .collect();
    let last_seq = logs.last().map(|l| l.seq);
    let sent = serde_json::to_value(&view).unwrap_or_default();
    let hello = json_event(
        "hello",
        &Hello {
            api: API_VERSION,
            pid: std::process::id(),
            view,
            logs,
        },
    );
    let streamer = Streamer {
        state: state.clone(),
        events,
        lines,
        samples,
        sent,
        last_seq,
        batch: Vec::new(),
        batch_due: None,
        view_due: None,
        refresh: Instant::now() + REFRESH,
        ready: VecDeque::from([hello]),
    };
    let stopping = state.shutdown.clone().cancelled_owned();
    let events = stream::unfold(streamer, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(Sse::new(futures::StreamExt::take_until(events, stopping))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

struct Streamer {
    state: AppState,
    events: broadcast::Receiver<Event>,
    lines: broadcast::Receiver<std::sync::Arc<LogLine>>,
    samples: watch::Receiver<u64>,
    /// The view as the client has it.
    sent: serde_json::Value,
    /// The newest log line the client has.
    last_seq: Option<u64>,
    batch: Vec<LogView>,
    batch_due: Option<Instant>,
    view_due: Option<Instant>,
    refresh: Instant,
    ready: VecDeque<SseEvent>,
}

impl Streamer {
    /// The next message for the client; `None` ends the stream (the console is stopping).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let now = Instant::now();
            if self.batch_due.is_some_and(|due| due <= now) || self.batch.len() >= LOG_BATCH {
                self.flush_logs();
                continue;
            }
            if self.view_due.is_some_and(|due| due <= now) || self.refresh <= now {
                self.view_due = None;
                self.refresh = now + REFRESH;
                self.push_view();
                continue;
            }
            let wake = [self.batch_due, self.view_due, Some(self.refresh)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.refresh);
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) => {
                        self.ready.push_back(json_event("event", &EventView::from(&event)));
                        self.view_soon();
                    }
                    Err(RecvError::Lagged(missed)) => {
                        self.ready.push_back(lagged("events", missed));
                        self.view_soon();
                    }
                    Err(RecvError::Closed) => return None,
                },
                line = self.lines.recv() => match line {
                    Ok(line) => {
                        if self.last_seq.is_none_or(|seq| line.seq > seq) {
                            self.last_seq = Some(line.seq);
                            self.batch.push(LogView::from(line.as_ref()));
                            self.batch_due.get_or_insert(Instant::now() + LOG_BATCH_WAIT);
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        self.flush_logs();
                        self.ready.push_back(lagged("logs", missed));
                    }
                    Err(RecvError::Closed) => return None,
                },
                changed = self.samples.changed() => {
                    if changed.is_ok() {
                        self.view_soon();
                    } else {
                        // The sampler is gone (the supervisor is stopping); the refresh
                        // still runs.
                        self.samples = watch::channel(0).1;
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn view_soon(&mut self) {
        self.view_due.get_or_insert(Instant::now() + SETTLE);
    }

    fn flush_logs(&mut self) {
        self.batch_due = None;
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.ready.push_back(json_event("logs", &batch));
        }
    }

    /// Queues the view's patch, when it changed.
    fn push_view(&mut self) {
        let Ok(view) = serde_json::to_value(self.state.view()) else {
            return;
        };
        if let Some(change) = patch::diff(&self.sent, &view) {
            self.ready.push_back(json_event("patch", &change));
            self.sent = view;
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

fn lagged(what: &str, missed: u64) -> SseEvent {
    SseEvent::default()
        .event("lagged")
        .data(format!("{{\"{what}\":{missed}}}"))
}
