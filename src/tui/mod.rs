//! The operator console: a full-screen terminal UI built for SSH.
//!
//! - [`source`]: where the UI gets the read model ([`crate::api`]) and sends commands: the
//!   supervisor in this process, or an attached instance.
//! - [`terminal`]: owning the real terminal, and surviving its loss.
//! - [`state`]: what is selected, focused, filtered and open.
//! - [`action`]: every change to that state, from keys, the mouse and the `:` command line.
//! - `command_line`: the `:` language, and its answers in words.
//! - [`history`]: the `:` line's history (↑ ↓). `completion`: its Tab completion.
//! - `targets`: `all` and globs (`order*`) as a `:` verb's target.
//! - `log_actions`: the log pane's own actions (select, copy, follow, times, wrap, level).
//! - [`stopping`]: what is left to stop after `q`, shown until the stack has stopped.
//! - [`table_lines`]: the table's lines, services and the replicas of expanded ones.
//! - [`keys`]: key and mouse bindings, and the help text.
//! - [`level`]: log levels read from a line's text, for the level filter.
//! - [`render`]: drawing, pure over view and state.
//! - [`theme`]: colours, or attributes only under NO_COLOR.
//!
//! The UI runs on its own thread: `draw` blocks on the terminal, and over a slow SSH link that
//! must never hold up routing or supervision. One loop selects over terminal input, lifecycle
//! events, new log lines, a snapshot tick and a shutdown signal, and redraws only when
//! something changed, at most [`MAX_FPS`] times a second.

pub mod action;
mod command_line;
mod completion;
pub mod history;
pub mod keys;
pub mod level;
mod log_actions;
pub mod render;
pub mod source;
pub mod state;
pub mod stopping;
pub mod table_lines;
mod targets;
pub mod terminal;
pub mod theme;

use std::{future::Future, time::Duration};

use futures::{Stream, StreamExt};
use ratatui::{Terminal, backend::Backend, crossterm::event::Event as TermEvent};
use tokio::sync::{broadcast::error::RecvError, mpsc};

pub use self::source::{ConsoleSource, EventFeed, LocalSource, LogFeed};
use self::{
    action::{Action, Effect, update},
    render::Areas,
    state::{LogScope, Overlay, Quit, UiState},
    theme::Theme,
};
use crate::api::{ConsoleView, LogView};

/// Redraws per second at most.
pub const MAX_FPS: u32 = 30;
/// How often the snapshot is rebuilt when nothing else happens (uptime, rates).
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// Log lines the pane works over (scrollback and search).
const LOG_WINDOW: usize = 5000;

/// How the console ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The operator chose to leave this way (`q`).
    Quit(Quit),
    /// Told to end (SIGTERM, the stack stopped, the attached instance went away), with why.
    Shutdown(String),
    /// The terminal is gone: its input ended or failed, or drawing failed (a dropped SSH
    /// session: `EIO`, `EPIPE`). Nothing more may be written to it.
    TerminalLost(String),
}

/// Runs the console until the operator quits, `shutdown` resolves (with how to end), or the
/// terminal goes away. A terminal error ends the UI and nothing else: it is an [`Exit`], never
/// an error. Generic over the backend so tests can drive it on a `TestBackend`.
pub async fn run<B, I, S>(
    terminal: &mut Terminal<B>,
    source: S,
    mut input: I,
    shutdown: impl Future<Output = Exit>,
    theme: Theme,
    on_subscribed: impl FnOnce(),
    clipboard: &mut dyn FnMut(&str),
) -> Exit
where
    B: Backend,
    I: Stream<Item = std::io::Result<TermEvent>> + Unpin,
    S: ConsoleSource,
{
    let mut state = UiState::new();
    let mut events = source.events();
    let mut new_logs = source.log_feed();
    let mut view_feed = source.view_feed();
    // A closed feed answers at once, every time: asked again, it would make this loop spin.
    let mut events_open = true;
    on_subscribed();
    let (results_tx, mut results) = mpsc::channel::<String>(64);
    let mut view = fresh_view(&source, &state);
    let mut logs = log_window(&source, &view, &state);
    let mut areas = Areas::default();
    let mut dirty = true;
    let mut logs_dirty = false;
    let mut snapshot_tick = tokio::time::interval(SNAPSHOT_EVERY);
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut frame_tick = tokio::time::interval(Duration::from_secs(1) / MAX_FPS);
    frame_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            exit = &mut shutdown => return exit,
            event = input.next() => match event {
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(event)) => {
                    let mut screen = Screen { state: &mut state, view: &mut view, logs: &logs, areas: &areas };
                    if let Some(refetch) = screen.input(&event, &source, &results_tx, clipboard) {
                        logs_dirty |= refetch;
                        dirty = true;
                    }
                }
                Some(Err(err)) => return Exit::TerminalLost(format!("terminal input failed: {err}")),
                None => return Exit::TerminalLost("terminal input ended".into()),
            },
            event = events.recv(), if events_open => match event {
                Ok(event) => {
                    update(&mut state, &view, Action::Lifecycle(Box::new(event)));
                    view = fresh_view(&source, &state);
                    dirty = true;
                }
                Err(RecvError::Lagged(_)) => dirty = true,
                // No more events will come; the view still refreshes on its tick.
                Err(RecvError::Closed) => events_open = false,
            },
            () = new_logs.changed() => logs_dirty = true,
            () = view_changed(&mut view_feed) => {
                view = fresh_view(&source, &state);
                dirty = true;
            },
            Some(result) = results.recv() => {
                state.set_status(result);
                dirty = true;
            },
            _ = snapshot_tick.tick() => {
                view = fresh_view(&source, &state);
                dirty = true;
            },
            _ = frame_tick.tick(), if dirty || logs_dirty => {
                if logs_dirty {
                    let fresh = log_window(&source, &view, &state);
                    keep_place(&mut state, &view, &logs, &fresh);
                    logs = fresh;
                    logs_dirty = false;
                }
                let drawn = terminal.draw(|frame| {
                    areas = render::draw(frame, &view, &state, &logs, &theme);
                });
                if let Err(err) = drawn {
                    return Exit::TerminalLost(format!("cannot draw: {err}"));
                }
                dirty = false;
            },
        }
        if let Some(how) = state.quit {
            if how == Quit::Stop && state.stopping.is_none() {
                begin_stop(&source, &mut state, &view);
                dirty = true;
            }
            // A source that shows the stop keeps the console until nothing runs.
            if state.stopping.is_none() || stopping::left(&view).is_empty() {
                return Exit::Quit(how);
            }
        }
    }
}

/// `q` chose to stop the stack: a source that can shows the progress here, so the console
/// asks it to stop and stays (else the caller stops the stack once the console has ended).
fn begin_stop(source: &impl ConsoleSource, state: &mut UiState, view: &ConsoleView) {
    if let Some(stop) = source.stop_stack() {
        state.stopping = Some(stopping::left(view).len());
        state.overlay = Overlay::None;
        tokio::spawn(stop);
    }
}

/// What one key or mouse event acts on.
struct Screen<'a> {
    state: &'a mut UiState,
    view: &'a mut ConsoleView,
    logs: &'a [LogView],
    areas: &'a Areas,
}

impl Screen<'_> {
    /// Runs the event's action and its effect. `None` when the event means nothing here;
    /// else whether the log window must be fetched again (its scope changed).
    fn input<S: ConsoleSource>(
        &mut self,
        event: &TermEvent,
        source: &S,
        results: &mpsc::Sender<String>,
        clipboard: &mut dyn FnMut(&str),
    ) -> Option<bool> {
        let mut action = keys::action(event, self.state, self.areas.table_top)?;
        if let Action::Select(row) = action {
            action = Action::Select(row + self.areas.table_offset);
        }
        let scope_before = (self.state.log_scope, self.state.selected.clone());
        // Paused, the pane's place is what is on screen: a search may have moved the view
        // away from `log_scroll`, and `v` must start on a line the operator can see.
        if let (false, Some(bottom)) = (self.state.follow, self.areas.log_bottom) {
            self.state.log_scroll = bottom;
        }
        match update(self.state, self.view, action) {
            Some(Effect::Copy { newest, oldest }) => {
                clipboard(&selected_text(
                    self.logs, self.view, self.state, newest, oldest,
                ));
            }
            Some(effect) => apply(source, effect, results.clone()),
            None => {}
        }
        let refetch = scope_before != (self.state.log_scope, self.state.selected.clone());
        // The log pane scrolls back no further than its oldest page (`g` asks for the top;
        // `k` at the top must not pile up unseen).
        let lines = render::scoped_logs(self.logs, self.view, self.state).len();
        self.state.log_scroll = self
            .state
            .log_scroll
            .min(lines.saturating_sub(self.areas.log_rows.max(1)));
        self.state.help_scroll = self.state.help_scroll.min(self.areas.help_max_scroll);
        // The calls overlay follows the selection as it moves.
        if matches!(self.state.overlay, Overlay::Calls) {
            *self.view = fresh_view(source, self.state);
        }
        Some(refetch)
    }
}

/// Keeps a paused log pane on the lines it shows as new ones arrive: its place and the
/// selection are counted from the newest line, so each line newer than the old window's newest
/// moves them back by one (otherwise `[paused]` would still scroll, and a selection would slide
/// onto lines not chosen).
fn keep_place(state: &mut UiState, view: &ConsoleView, old: &[LogView], fresh: &[LogView]) {
    let Some(newest) = render::scoped_logs(old, view, state).last().map(|l| l.seq) else {
        return;
    };
    let added: Vec<&LogView> = render::scoped_logs(fresh, view, state)
        .into_iter()
        .filter(|l| l.seq > newest)
        .collect();
    if added.is_empty() {
        return;
    }
    if let Some((anchor, cursor)) = state.selection {
        state.selection = Some((anchor + added.len(), cursor + added.len()));
    }
    if state.follow {
        return;
    }
    state.log_scroll += added.len();
    let needle = state.search.to_lowercase();
    if !needle.is_empty() {
        state.search_match += added
            .iter()
            .filter(|l| l.text.to_lowercase().contains(&needle))
            .count();
    }
}

/// Resolves when the source says its view changed; never for a source that does not say.
async fn view_changed(feed: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    let open = match feed {
        Some(changes) => changes.changed().await.is_ok(),
        None => false,
    };
    if !open {
        std::future::pending::<()>().await;
    }
}

/// Calls the calls overlay holds at most (it shows the newest that fit).
const CALLS_KEPT: usize = 200;

/// A snapshot to draw, with the recent calls of the selected service while the calls overlay
/// is open (only then: they are copied out of the router's trace buffer).
fn fresh_view(source: &impl ConsoleSource, state: &UiState) -> ConsoleView {
    let mut view = source.view();
    if matches!(state.overlay, Overlay::Calls) {
        let selected = state.selected_row(&view).map(|row| row.name.clone());
        view.calls = source.calls(selected.as_deref(), CALLS_KEPT);
        view.routes = source.routes(selected.as_deref());
    }
    view
}

/// The log lines the pane may show: the scope's tail.
fn log_window(source: &impl ConsoleSource, view: &ConsoleView, state: &UiState) -> Vec<LogView> {
    match (state.log_scope, state.selected_row(view)) {
        (LogScope::Selected, Some(row)) => source.logs(Some(&row.name), LOG_WINDOW),
        _ => source.logs(None, LOG_WINDOW),
    }
}

/// The text of log lines `newest..=oldest` (counted from the newest) of the pane's scope,
/// oldest first, one per line.
pub fn selected_text(
    logs: &[LogView],
    view: &ConsoleView,
    state: &UiState,
    newest: usize,
    oldest: usize,
) -> String {
    let lines = render::scoped_logs(logs, view, state);
    let len = lines.len();
    let first = len.saturating_sub(oldest + 1);
    let last = len.saturating_sub(newest);
    lines[first..last.max(first)]
        .iter()
        .map(|l| format!("{}#{} {}", l.service, l.replica, l.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The escape sequence that asks the terminal to put `text` on the clipboard (OSC 52). It
/// travels with the output, so it works over SSH and inside tmux (with `set-clipboard on`).
pub fn osc52(text: &str) -> String {
    use base64::Engine;
    format!(
        "\x1b]52;c;{}\x07",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// Carries out an effect without blocking the UI: the supervisor's answer comes back later as
/// a status line.
fn apply(source: &impl ConsoleSource, effect: Effect, results: mpsc::Sender<String>) {
    let command = match effect {
        Effect::Supervisor(command) => command,
        Effect::Each(commands) => {
            for command in commands {
                apply(source, Effect::Supervisor(command), results.clone());
            }
            return;
        }
        Effect::Copy { .. } => return,
    };
    let answer = source.command(command.clone());
    tokio::spawn(async move {
        let text = match answer.await {
            Ok(crate::supervisor::Reply::JobRun(run)) => format!("started run #{run}"),
            // A scale is done when the supervisor has it: say so with the number.
            Ok(crate::supervisor::Reply::Done) => match &command {
                crate::supervisor::Command::Scale(name, replicas) => {
                    format!("scaled {name} to {replicas}")
                }
                _ => return,
            },
            Err(err) => format!("{command}: {err}"),
        };
        let _ = results.send(text).await;
    });
}
