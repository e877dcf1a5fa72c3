//! Keys and mouse to actions, following htop, k9s and mprocs.

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use super::{
    action::Action,
    state::{Confirm, Focus, Overlay, Prompt, Quit, UiState},
};

/// Every key the console knows, for the help overlay: (keys, what they do).
pub const HELP: &[(&str, &str)] = &[
    ("↑ ↓ / j k", "move"),
    ("g / G", "top / bottom"),
    ("PgUp PgDn", "page"),
    ("Tab", "switch focus: services ⇄ logs"),
    ("Enter", "open detail; on a job: run it (asks parameters)"),
    (
        "→ / ←",
        "show / hide replica rows (keys on one act on its service)",
    ),
    ("r", "restart (rolling, one replica at a time)"),
    ("s", "stop or start"),
    ("X", "kill with SIGKILL (asks first)"),
    ("+ / -", "scale replicas up / down"),
    (
        "/",
        "services: filter · logs: search (the prompt says which; Tab in it switches)",
    ),
    ("n / N", "next / previous search match"),
    ("f", "follow the log tail on / off"),
    ("l", "logs of all services / of the selected one"),
    ("T", "log times on / off (UTC)"),
    ("w", "wrap long log lines on / off"),
    (
        "L",
        "log level: all, info+, warn+, errors only (read from the text)",
    ),
    (
        "v / y",
        "select log lines (↑↓ extend) / copy them to the clipboard (OSC 52, works over SSH)",
    ),
    ("o", "sort by the next column"),
    ("d", "dependency view"),
    ("t", "recent calls to and from the selected service, traced"),
    ("a", "alerts (closing acknowledges)"),
    ("z", "zoom the focused pane"),
    (
        ":",
        "command line: restart NAME, stop NAME, start NAME, kill NAME, scale NAME N, run JOB [JSON], breaker reset NAME, logs NAME; NAME may be `all` or a glob (order*) for restart, stop, start, kill; Tab completes, ↑↓ recall",
    ),
    ("?", "this help (j/k, PgUp/PgDn, Home/End scroll it)"),
    (
        "Esc",
        "close; clear the selection, then the filter, then the search",
    ),
    (
        "q",
        "quit: stop every service, or detach and leave them running",
    ),
    ("mouse", "click selects a service, wheel scrolls"),
    (
        "P99 ≤",
        "p99 is a histogram bucket's upper bound (powers of two): the true p99 is at most that",
    ),
];

/// The action for a terminal event, given what is open. `table_top` is the screen row of the
/// first table row, for clicks.
pub fn action(event: &Event, state: &UiState, table_top: Option<u16>) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind == KeyEventKind::Press => key_action(key, state),
        // Under an overlay a click would act on a table the operator cannot see.
        Event::Mouse(mouse) if state.overlay == Overlay::None => mouse_action(mouse, table_top),
        _ => None,
    }
}

fn key_action(key: &KeyEvent, state: &UiState) -> Option<Action> {
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        return Some(Action::Quit);
    }
    match &state.overlay {
        Overlay::Prompt(prompt, _) => prompt_key(key, prompt),
        Overlay::Confirm(confirm) => confirm_key(key, confirm),
        // Overlays are modal: what is on screen takes the keys, and a key meant for the table
        // (`r`, `X`, `s`…) must never act on a service the operator cannot see. Esc, `q` (as in
        // less and htop) and the overlay's own key close it; the calls overlay follows the
        // selection, so it keeps the moving keys.
        overlay @ (Overlay::Help | Overlay::Alerts | Overlay::Deps | Overlay::Calls) => {
            viewer_key(key, overlay)
        }
        Overlay::None => table_key(key, state),
    }
}

/// A prompt takes typing; the command line also completes and recalls.
fn prompt_key(key: &KeyEvent, prompt: &Prompt) -> Option<Action> {
    let switches = matches!(prompt, Prompt::Filter | Prompt::Search);
    let command = *prompt == Prompt::Command;
    match key.code {
        KeyCode::Tab | KeyCode::BackTab if switches => Some(Action::SwitchPrompt),
        KeyCode::Tab if command => Some(Action::Complete),
        KeyCode::Up if command => Some(Action::HistoryOlder),
        KeyCode::Down if command => Some(Action::HistoryNewer),
        KeyCode::Enter => Some(Action::Submit),
        KeyCode::Esc => Some(Action::Cancel),
        KeyCode::Backspace => Some(Action::Backspace),
        KeyCode::Char(c) => Some(Action::Type(c)),
        _ => None,
    }
}

/// A confirmation takes only its answers; the quit one also stop (`s`) or detach (`d`).
fn confirm_key(key: &KeyEvent, confirm: &Confirm) -> Option<Action> {
    if *confirm == Confirm::Quit {
        return match key.code {
            KeyCode::Char('y' | 'Y') | KeyCode::Enter => Some(Action::Answer(true)),
            KeyCode::Char('s' | 'S') => Some(Action::Leave(Quit::Stop)),
            KeyCode::Char('d' | 'D') => Some(Action::Leave(Quit::Detach)),
            KeyCode::Char('n' | 'N') | KeyCode::Esc => Some(Action::Answer(false)),
            _ => None,
        };
    }
    match key.code {
        KeyCode::Char('y' | 'Y') | KeyCode::Enter => Some(Action::Answer(true)),
        KeyCode::Char('n' | 'N') | KeyCode::Esc => Some(Action::Answer(false)),
        _ => None,
    }
}

/// Help, alerts, deps and calls: their own key and Esc or `q` close them.
fn viewer_key(key: &KeyEvent, overlay: &Overlay) -> Option<Action> {
    let (own, toggle) = match overlay {
        Overlay::Help => ('?', Action::Help),
        Overlay::Alerts => ('a', Action::Alerts),
        Overlay::Deps => ('d', Action::Deps),
        _ => ('t', Action::Calls),
    };
    // The calls overlay follows the selection and help scrolls, so both keep the
    // moving keys; help also pages, as it can be taller than the terminal.
    let moves = matches!(overlay, Overlay::Calls | Overlay::Help);
    let pages = *overlay == Overlay::Help;
    match key.code {
        KeyCode::Esc | KeyCode::Char('q') => Some(Action::Cancel),
        KeyCode::Char(c) if c == own => Some(toggle),
        KeyCode::Up | KeyCode::Char('k') if moves => Some(Action::Up),
        KeyCode::Down | KeyCode::Char('j') if moves => Some(Action::Down),
        KeyCode::PageUp if pages => Some(Action::PageUp),
        KeyCode::PageDown | KeyCode::Char(' ') if pages => Some(Action::PageDown),
        KeyCode::Home | KeyCode::Char('g') if pages => Some(Action::Top),
        KeyCode::End | KeyCode::Char('G') if pages => Some(Action::Bottom),
        _ => None,
    }
}

/// The table and log pane's keys, with no overlay open.
fn table_key(key: &KeyEvent, state: &UiState) -> Option<Action> {
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Char('g') | KeyCode::Home => Action::Top,
        KeyCode::Char('G') | KeyCode::End => Action::Bottom,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Tab | KeyCode::BackTab => Action::FocusNext,
        KeyCode::Enter => Action::Open,
        // Left and right are the table's (the log pane does not scroll sideways).
        KeyCode::Right if state.focus == Focus::Services => Action::Expand,
        KeyCode::Left if state.focus == Focus::Services => Action::Collapse,
        KeyCode::Char('r') => Action::Restart,
        KeyCode::Char('s') => Action::StopOrStart,
        KeyCode::Char('X') => Action::Kill,
        KeyCode::Char('+' | '=') => Action::Scale(1),
        KeyCode::Char('-') => Action::Scale(-1),
        KeyCode::Char('/') if state.focus == Focus::Logs => Action::Search,
        KeyCode::Char('/') => Action::Filter,
        KeyCode::Char('n') => Action::SearchNext,
        KeyCode::Char('N') => Action::SearchPrev,
        KeyCode::Char('f') => Action::Follow,
        KeyCode::Char('l') => Action::LogScope,
        KeyCode::Char('T') => Action::Timestamps,
        KeyCode::Char('w') => Action::Wrap,
        KeyCode::Char('L') => Action::LevelFilter,
        KeyCode::Char('v') => Action::SelectLines,
        KeyCode::Char('y') => Action::CopyLines,
        KeyCode::Char('o') => Action::Sort,
        KeyCode::Char('d') => Action::Deps,
        KeyCode::Char('t') => Action::Calls,
        KeyCode::Char('a') => Action::Alerts,
        KeyCode::Char('z') => Action::Zoom,
        KeyCode::Char(':') => Action::CommandLine,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Esc => Action::Cancel,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

fn mouse_action(mouse: &MouseEvent, table_top: Option<u16>) -> Option<Action> {
    match mouse.kind {
        MouseEventKind::ScrollUp => Some(Action::Up),
        MouseEventKind::ScrollDown => Some(Action::Down),
        MouseEventKind::Down(_) => {
            let top = table_top?;
            mouse
                .row
                .checked_sub(top)
                .map(|row| Action::Select(row as usize))
        }
        _ => None,
    }
}
