//! Every change to the console's state is an [`Action`]. Keys, mouse clicks, the `:` command
//! line and (later) remote control all produce actions; [`update`] applies them and says what,
//! if anything, the supervisor must do.

use std::time::SystemTime;

use super::state::{Alert, Confirm, Focus, Overlay, Prompt, Quit, UiState};
use crate::{
    api::{ConsoleView, EventView},
    registry::InstanceState,
    supervisor::{Command, MAX_REPLICAS},
};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Up,
    Down,
    Top,
    Bottom,
    PageUp,
    PageDown,
    FocusNext,
    /// Enter: open the detail of a service, or run a job.
    Open,
    /// →: show the selected service's replicas as lines under it.
    Expand,
    /// ←: hide them again.
    Collapse,
    /// Show or hide the recent routed calls.
    Calls,
    Zoom,
    Help,
    Alerts,
    Deps,
    Sort,
    Restart,
    StopOrStart,
    Kill,
    Scale(i32),
    Filter,
    Search,
    SearchNext,
    SearchPrev,
    Follow,
    LogScope,
    /// Show or hide log times.
    Timestamps,
    /// Wrap long log lines, or cut them.
    Wrap,
    /// The log level filter's next setting.
    LevelFilter,
    /// Start (or leave) selecting log lines to copy.
    SelectLines,
    /// Copy the selected log lines (OSC 52, which works over SSH).
    CopyLines,
    CommandLine,
    /// A character typed into the open prompt.
    Type(char),
    /// Tab in the filter or search prompt: the text goes to the other one.
    SwitchPrompt,
    /// Tab in the `:` prompt: complete the word (again: the next candidate).
    Complete,
    /// ↑ in the `:` prompt: the line run before the one shown.
    HistoryOlder,
    /// ↓ in the `:` prompt: the line run after the one shown (past the newest: what was typed).
    HistoryNewer,
    Backspace,
    Submit,
    /// Esc: close whatever is open.
    Cancel,
    Answer(bool),
    /// Leave the console this way (the quit dialog's `s` and `d`).
    Leave(Quit),
    Quit,
    /// A click on a table line (index among the lines, replica lines included).
    Select(usize),
    /// A line of the `:` command language, e.g. `restart order`.
    Run(String),
    /// A lifecycle event arrived.
    Lifecycle(Box<EventView>),
}

/// What the supervisor must do after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Supervisor(Command),
    /// Each of these, in order: one `:` verb on `all` or a glob (`restart order*`).
    Each(Vec<Command>),
    /// Copy these log lines (counted from the newest shown, 0 = the last) to the clipboard.
    Copy {
        newest: usize,
        oldest: usize,
    },
}

/// The selected row as actions need it: name, whether a job, replicas, state.
type Selected = Option<(String, bool, u32, InstanceState)>;

/// Lines a page key moves.
const PAGE: usize = 10;

pub fn update(state: &mut UiState, view: &ConsoleView, action: Action) -> Option<Effect> {
    // A confirmation or a prompt takes the keys first.
    if !reaches(&state.overlay, &action) {
        return None;
    }
    let selected = state
        .selected_row(view)
        .map(|r| (r.name.clone(), r.job, r.replicas, r.state));
    match action {
        Action::Up
        | Action::Down
        | Action::Top
        | Action::Bottom
        | Action::PageUp
        | Action::PageDown => {
            move_cursor(state, view, &action);
            None
        }
        Action::Select(index) => {
            if let Some(line) = state.lines(view).get(index) {
                state.select_line(line);
                state.focus = Focus::Services;
            }
            None
        }
        Action::FocusNext => {
            state.focus = match state.focus {
                Focus::Services => Focus::Logs,
                Focus::Logs => Focus::Services,
            };
            None
        }
        Action::Open => open(state, view, selected),
        Action::Expand => {
            super::table_lines::expand(state, view);
            None
        }
        Action::Collapse => {
            super::table_lines::collapse(state, view);
            None
        }
        Action::Zoom => {
            state.zoom = !state.zoom;
            None
        }
        Action::Help => {
            state.help_scroll = 0;
            toggle(state, Overlay::Help)
        }
        Action::Alerts => toggle(state, Overlay::Alerts),
        Action::Deps => toggle(state, Overlay::Deps),
        Action::Calls => toggle(state, Overlay::Calls),
        Action::Sort => {
            state.sort = state.sort.next();
            state.set_status(format!("sorted by {}", state.sort.label()));
            None
        }
        Action::Restart | Action::StopOrStart | Action::Kill | Action::Scale(_) => {
            service_action(state, selected, action)
        }
        Action::Filter => open_prompt(state, Prompt::Filter),
        Action::Search => open_prompt(state, Prompt::Search),
        Action::CommandLine => open_prompt(state, Prompt::Command),
        Action::SearchNext
        | Action::SearchPrev
        | Action::SelectLines
        | Action::CopyLines
        | Action::Follow
        | Action::Timestamps
        | Action::Wrap
        | Action::LevelFilter
        | Action::LogScope => super::log_actions::apply(state, action),
        Action::Type(_) | Action::SwitchPrompt | Action::Backspace | Action::Submit => {
            state.completion = None;
            prompt_action(state, view, action)
        }
        Action::Complete | Action::HistoryOlder | Action::HistoryNewer => {
            command_prompt(state, view, &action);
            None
        }
        Action::Cancel => cancel(state),
        Action::Answer(yes) => answer(state, view, yes),
        Action::Leave(how) => {
            if state.overlay == Overlay::Confirm(Confirm::Quit) {
                state.overlay = Overlay::None;
                state.quit = Some(how);
            }
            None
        }
        Action::Quit => {
            state.overlay = Overlay::Confirm(Confirm::Quit);
            None
        }
        Action::Run(line) => super::command_line::run(state, view, &line),
        Action::Lifecycle(event) => {
            lifecycle(state, &event);
            None
        }
    }
}

/// Whether `action` reaches the console past the overlay: a confirmation takes only its
/// answer, a prompt only typing; other overlays let everything through.
fn reaches(overlay: &Overlay, action: &Action) -> bool {
    match (overlay, action) {
        (
            Overlay::Confirm(_),
            Action::Answer(_) | Action::Leave(_) | Action::Cancel | Action::Lifecycle(_),
        ) => true,
        (Overlay::Confirm(_), _) => false,
        (
            Overlay::Prompt(..),
            Action::Type(_)
            | Action::SwitchPrompt
            | Action::Complete
            | Action::HistoryOlder
            | Action::HistoryNewer
            | Action::Backspace
            | Action::Submit
            | Action::Cancel
            | Action::Lifecycle(_),
        ) => true,
        (Overlay::Prompt(..), _) => false,
        _ => true,
    }
}

/// A lifecycle event: the alerts it resolves are marked, and an alert it raises is kept.
fn lifecycle(state: &mut UiState, event: &crate::api::EventView) {
    if let Some(kind) = &event.resolves {
        for alert in state.alerts.iter_mut().filter(|a| {
            a.service == event.service
                && a.kind == *kind
                && a.resolved.is_none()
                && (event.replica.is_none() || a.replica == event.replica)
        }) {
            alert.resolved = Some(event.detail.clone());
        }
    }
    if event.alert {
        state.alerts.push(Alert {
            at: SystemTime::now(),
            service: event.service.clone(),
            replica: event.replica,
            text: event.detail.clone(),
            kind: event.kind.clone(),
            resolved: None,
        });
        // Bounded: an alert storm keeps the newest.
        if state.alerts.len() > 200 {
            state.alerts.remove(0);
        }
    }
}

/// Enter: a job asks for its parameters (last run's as the default), a service opens or
/// closes its detail.
fn open(state: &mut UiState, view: &ConsoleView, selected: Selected) -> Option<Effect> {
    let (name, job, _, _) = selected?;
    if job {
        let params = view
            .services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.runs.first().map(|r| r.params.clone()))
            .unwrap_or_default();
        state.overlay = Overlay::Prompt(Prompt::JobParams(name), params);
    } else {
        state.detail = !state.detail;
    }
    None
}

/// Tab, ↑ and ↓ in the `:` prompt: completion and history.
fn command_prompt(state: &mut UiState, view: &ConsoleView, action: &Action) {
    let Overlay::Prompt(Prompt::Command, text) = &mut state.overlay else {
        return;
    };
    let next = match action {
        Action::Complete => super::completion::complete(text, &mut state.completion, view),
        Action::HistoryOlder => state.history.older(text),
        _ => state.history.newer(),
    };
    if !matches!(action, Action::Complete) {
        state.completion = None;
    }
    if let Some(next) = next {
        *text = next;
    }
}

/// Esc: close what is open, or clear what is applied.
fn cancel(state: &mut UiState) -> Option<Effect> {
    state.completion = None;
    state.history.stop_walking();
    match std::mem::take(&mut state.overlay) {
        Overlay::Prompt(Prompt::Filter, _) => state.filter.clear(),
        Overlay::Prompt(Prompt::Search, _) => state.search.clear(),
        Overlay::Alerts => state.alerts.clear(),
        Overlay::None if state.selection.is_some() => state.selection = None,
        // An applied filter hides services: Esc shows them all again, as the help
        // says, before it closes panes.
        Overlay::None if !state.filter.is_empty() => {
            state.filter.clear();
            state.set_status("filter cleared: all services shown");
        }
        Overlay::None if !state.search.is_empty() => {
            state.search.clear();
            state.set_status("search cleared");
        }
        Overlay::None => {
            state.zoom = false;
            state.detail = false;
        }
        _ => {}
    }
    None
}

/// The answer to the open confirmation.
fn answer(state: &mut UiState, view: &ConsoleView, yes: bool) -> Option<Effect> {
    let Overlay::Confirm(question) = std::mem::take(&mut state.overlay) else {
        return None;
    };
    match (question, yes) {
        (Confirm::Kill(name), true) => {
            state.set_status(format!("killing {name} (SIGKILL)"));
            Some(Effect::Supervisor(Command::Kill(name)))
        }
        (Confirm::Quit, true) => {
            // An attached console's safe answer leaves the stack running; the local
            // console's has always been to stop it.
            state.quit = Some(if view.attached.is_some() {
                Quit::Detach
            } else {
                Quit::Stop
            });
            None
        }
        _ => None,
    }
}

/// What the operator does to the selected service: restart, stop or start, kill, scale.
fn service_action(state: &mut UiState, selected: Selected, action: Action) -> Option<Effect> {
    match action {
        Action::Restart => {
            let (name, ..) = selected?;
            state.set_status(format!("restarting {name}"));
            Some(Effect::Supervisor(Command::Restart(name)))
        }
        Action::StopOrStart => {
            let (name, _, _, current) = selected?;
            if current.has_process() || current == InstanceState::Backoff {
                state.set_status(format!("stopping {name}"));
                Some(Effect::Supervisor(Command::Stop(name)))
            } else {
                state.set_status(format!("starting {name}"));
                Some(Effect::Supervisor(Command::Start(name)))
            }
        }
        Action::Kill => {
            let (name, _, _, current) = selected?;
            if !current.has_process() {
                state.set_status(format!("{name} is not running: nothing to kill"));
                return None;
            }
            state.overlay = Overlay::Confirm(Confirm::Kill(name));
            None
        }
        Action::Scale(by) => {
            let (name, job, replicas, _) = selected?;
            if job {
                state.set_status("jobs do not scale");
                return None;
            }
            let target =
                (i64::from(replicas) + i64::from(by)).clamp(1, i64::from(MAX_REPLICAS)) as u32;
            if target == replicas {
                // Say why nothing happens: the bound, and what to do instead.
                state.set_status(if by < 0 {
                    format!("{name} has 1 replica, the fewest (s stops it)")
                } else {
                    format!("{name} has {MAX_REPLICAS} replicas, the most")
                });
                return None;
            }
            state.set_status(format!("scaling {name} to {target}"));
            Some(Effect::Supervisor(Command::Scale(name, target)))
        }
        _ => None,
    }
}

/// Typing into the open prompt, switching it, and Enter.
fn prompt_action(state: &mut UiState, view: &ConsoleView, action: Action) -> Option<Effect> {
    match action {
        Action::Type(c) => {
            if let Overlay::Prompt(prompt, text) = &mut state.overlay {
                text.push(c);
                live_prompt(prompt.clone(), text.clone(), state);
            }
            None
        }
        Action::SwitchPrompt => {
            let other = match &state.overlay {
                Overlay::Prompt(Prompt::Filter, text) => (Prompt::Search, text.clone()),
                Overlay::Prompt(Prompt::Search, text) => (Prompt::Filter, text.clone()),
                _ => return None,
            };
            // What was applied as typed goes with the text, not left behind under the
            // other name.
            state.filter.clear();
            state.search.clear();
            if other.0 == Prompt::Search {
                state.focus = Focus::Logs;
            }
            live_prompt(other.0.clone(), other.1.clone(), state);
            state.overlay = Overlay::Prompt(other.0, other.1);
            None
        }
        Action::Backspace => {
            if let Overlay::Prompt(prompt, text) = &mut state.overlay {
                text.pop();
                live_prompt(prompt.clone(), text.clone(), state);
            }
            None
        }
        Action::Submit => {
            let Overlay::Prompt(prompt, text) = std::mem::take(&mut state.overlay) else {
                return None;
            };
            match prompt {
                Prompt::Filter | Prompt::Search => None,
                Prompt::Command => {
                    state.history.push(&text);
                    super::command_line::run(state, view, &text)
                }
                Prompt::JobParams(job) => {
                    state.set_status(format!("running {job}"));
                    let params = (!text.trim().is_empty()).then_some(text);
                    Some(Effect::Supervisor(Command::RunJob(job, params)))
                }
            }
        }
        _ => None,
    }
}

fn toggle(state: &mut UiState, overlay: Overlay) -> Option<Effect> {
    if state.overlay == overlay {
        // Closing the alerts list acknowledges what it showed.
        if overlay == Overlay::Alerts {
            state.alerts.clear();
        }
        state.overlay = Overlay::None;
    } else {
        state.overlay = overlay;
    }
    None
}

fn open_prompt(state: &mut UiState, prompt: Prompt) -> Option<Effect> {
    let text = match prompt {
        Prompt::Filter => state.filter.clone(),
        Prompt::Search => state.search.clone(),
        _ => String::new(),
    };
    if prompt == Prompt::Search {
        state.focus = Focus::Logs;
    }
    state.overlay = Overlay::Prompt(prompt, text);
    None
}

/// Filter and search apply as the operator types.
fn live_prompt(prompt: Prompt, text: String, state: &mut UiState) {
    match prompt {
        Prompt::Filter => state.filter = text,
        Prompt::Search => {
            state.search = text;
            state.search_match = 0;
        }
        _ => {}
    }
}

fn move_cursor(state: &mut UiState, view: &ConsoleView, action: &Action) {
    // Help scrolls; how far is bounded by the screen, once drawn (`Areas::help_max_scroll`).
    if state.overlay == Overlay::Help {
        state.help_scroll = match action {
            Action::Up => state.help_scroll.saturating_sub(1),
            Action::Down => state.help_scroll + 1,
            Action::PageUp => state.help_scroll.saturating_sub(PAGE),
            Action::PageDown => state.help_scroll + PAGE,
            Action::Top => 0,
            _ => usize::MAX / 2,
        };
        return;
    }
    if let Some((anchor, cursor)) = state.selection {
        let cursor = match action {
            Action::Up => cursor + 1,
            Action::Down => cursor.saturating_sub(1),
            Action::PageUp => cursor + PAGE,
            Action::PageDown => cursor.saturating_sub(PAGE),
            _ => cursor,
        };
        state.selection = Some((anchor, cursor));
        // Keep the cursor on screen.
        state.log_scroll = state
            .log_scroll
            .max(cursor.saturating_sub(PAGE))
            .min(cursor);
        return;
    }
    if state.focus == Focus::Logs {
        state.follow = false;
        state.log_scroll = match action {
            Action::Up => state.log_scroll + 1,
            Action::Down => state.log_scroll.saturating_sub(1),
            Action::PageUp => state.log_scroll + PAGE,
            Action::PageDown => state.log_scroll.saturating_sub(PAGE),
            Action::Top => usize::MAX / 2,
            _ => 0,
        };
        if state.log_scroll == 0
            && matches!(action, Action::Bottom | Action::Down | Action::PageDown)
        {
            state.follow = true;
        }
        return;
    }
    // Through the table's lines, replica lines included.
    let lines = state.lines(view);
    if lines.is_empty() {
        return;
    }
    let current = state.selected_line(&lines);
    let last = lines.len() - 1;
    let next = match action {
        Action::Up => current.saturating_sub(1),
        Action::Down => (current + 1).min(last),
        Action::PageUp => current.saturating_sub(PAGE),
        Action::PageDown => (current + PAGE).min(last),
        Action::Top => 0,
        _ => last,
    };
    state.select_line(&lines[next]);
}
