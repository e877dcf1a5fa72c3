//! Overlays are modal: under help, alerts, dependencies and calls, no key reaches the table.
//! Every key is pressed under every overlay, and none may make the supervisor act or end the
//! console; Esc, `q` and the overlay's own key close it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use switchboard::{
    api::{ConsoleView, ServiceRow},
    registry::InstanceState,
    tui::{
        action::{Effect, update},
        keys,
        state::{Overlay, UiState},
    },
};

fn view() -> ConsoleView {
    ConsoleView {
        stack: "keys".into(),
        services: vec![
            ServiceRow::new("alpha", InstanceState::Ready),
            ServiceRow {
                job: true,
                ..ServiceRow::new("job", InstanceState::Stopped)
            },
        ],
        ..ConsoleView::default()
    }
}

fn every_key() -> Vec<KeyCode> {
    let mut codes: Vec<KeyCode> = (0x20u8..0x7f).map(|b| KeyCode::Char(b as char)).collect();
    codes.extend([
        KeyCode::Enter,
        KeyCode::Tab,
        KeyCode::BackTab,
        KeyCode::Backspace,
        KeyCode::Up,
        KeyCode::Down,
        KeyCode::PageUp,
        KeyCode::PageDown,
        KeyCode::Home,
        KeyCode::End,
        KeyCode::Delete,
    ]);
    codes
}

fn press(state: &mut UiState, view: &ConsoleView, code: KeyCode) -> Option<Effect> {
    let event = Event::Key(KeyEvent::new(code, KeyModifiers::NONE));
    let action = keys::action(&event, state, Some(3))?;
    update(state, view, action)
}

#[test]
fn no_key_under_an_overlay_acts_on_a_service_or_quits() {
    let view = view();
    for overlay in [
        Overlay::Help,
        Overlay::Alerts,
        Overlay::Deps,
        Overlay::Calls,
    ] {
        for code in every_key() {
            let mut state = UiState::new();
            state.overlay = overlay.clone();
            let effect = press(&mut state, &view, code);
            assert!(
                !matches!(effect, Some(Effect::Supervisor(_) | Effect::Each(_))),
                "{code:?} under {overlay:?} acted: {effect:?}"
            );
            assert_eq!(state.quit, None, "{code:?} under {overlay:?} quit");
            // Whatever it did, it opened nothing else over the overlay.
            assert!(
                state.overlay == overlay || state.overlay == Overlay::None,
                "{code:?} under {overlay:?} opened {:?}",
                state.overlay
            );
        }
    }
}

#[test]
fn esc_q_and_the_overlays_own_key_close_it() {
    let view = view();
    for (overlay, own) in [
        (Overlay::Help, '?'),
        (Overlay::Alerts, 'a'),
        (Overlay::Deps, 'd'),
        (Overlay::Calls, 't'),
    ] {
        for code in [KeyCode::Esc, KeyCode::Char('q'), KeyCode::Char(own)] {
            let mut state = UiState::new();
            state.overlay = overlay.clone();
            press(&mut state, &view, code);
            assert_eq!(
                state.overlay,
                Overlay::None,
                "{code:?} did not close {overlay:?}"
            );
        }
    }
}

#[test]
fn without_an_overlay_r_still_restarts() {
    let view = view();
    let mut state = UiState::new();
    let effect = press(&mut state, &view, KeyCode::Char('r'));
    assert!(matches!(effect, Some(Effect::Supervisor(_))), "{effect:?}");
}

fn type_text(state: &mut UiState, view: &ConsoleView, text: &str) {
    for c in text.chars() {
        press(state, view, KeyCode::Char(c));
    }
}

/// The help says Esc clears: an applied filter (typed, then Enter) goes with Esc.
#[test]
fn esc_clears_an_applied_filter() {
    let view = view();
    let mut state = UiState::new();
    press(&mut state, &view, KeyCode::Char('/'));
    type_text(&mut state, &view, "alp");
    press(&mut state, &view, KeyCode::Enter);
    assert_eq!(state.filter, "alp");
    assert_eq!(state.rows(&view).len(), 1);
    press(&mut state, &view, KeyCode::Esc);
    assert_eq!(state.filter, "", "Esc left the filter applied");
    assert_eq!(state.rows(&view).len(), 2);
}

/// `/` with the logs focused is a search, and Tab in the prompt makes it the services'
/// filter (and back), taking the typed text along.
#[test]
fn tab_in_the_slash_prompt_switches_search_and_filter() {
    use switchboard::tui::state::Prompt;
    let view = view();
    let mut state = UiState::new();
    press(&mut state, &view, KeyCode::Tab);
    press(&mut state, &view, KeyCode::Char('/'));
    type_text(&mut state, &view, "alp");
    assert_eq!(state.overlay, Overlay::Prompt(Prompt::Search, "alp".into()));
    assert_eq!(state.search, "alp");
    press(&mut state, &view, KeyCode::Tab);
    assert_eq!(state.overlay, Overlay::Prompt(Prompt::Filter, "alp".into()));
    assert_eq!((state.filter.as_str(), state.search.as_str()), ("alp", ""));
    press(&mut state, &view, KeyCode::Enter);
    assert_eq!(state.rows(&view).len(), 1);
}

fn status(state: &UiState) -> &str {
    state.current_status().unwrap_or_default()
}

fn command(state: &mut UiState, view: &ConsoleView, line: &str) -> Option<Effect> {
    press(state, view, KeyCode::Char(':'));
    type_text(state, view, line);
    let event = Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let action = keys::action(&event, state, Some(3))?;
    update(state, view, action)
}

/// Answers in words that are true: no `killed` for what was not running, the number a scale
/// goes to, the bound `-` stops at, and an error for a `:` line that did nothing.
#[test]
fn the_status_line_says_what_happened() {
    let view = view();
    let mut state = UiState::new();
    // The job is stopped: X does not ask, and says why.
    press(&mut state, &view, KeyCode::Char('j'));
    assert_eq!(press(&mut state, &view, KeyCode::Char('X')), None);
    assert_eq!(state.overlay, Overlay::None);
    assert_eq!(status(&state), "job is not running: nothing to kill");
    assert_eq!(command(&mut state, &view, "kill job"), None);
    assert_eq!(status(&state), "job is not running: nothing to kill");
    // alpha runs one replica: - says that is the fewest.
    press(&mut state, &view, KeyCode::Char('k'));
    assert_eq!(press(&mut state, &view, KeyCode::Char('-')), None);
    assert_eq!(
        status(&state),
        "alpha has 1 replica, the fewest (s stops it)"
    );
    let effect = command(&mut state, &view, "scale alpha 2");
    assert!(matches!(effect, Some(Effect::Supervisor(_))), "{effect:?}");
    assert_eq!(status(&state), "scaling alpha to 2");
    assert_eq!(command(&mut state, &view, "logs nosuch"), None);
    assert_eq!(status(&state), "no service named `nosuch`");
    command(&mut state, &view, "sort");
    assert_eq!(status(&state), "sorted by name");
}

fn prompt_text(state: &UiState) -> &str {
    match &state.overlay {
        Overlay::Prompt(_, text) => text,
        _ => "",
    }
}

/// ↑ and ↓ in the `:` prompt walk the lines run before, and give back what was typed.
#[test]
fn up_and_down_recall_command_lines() {
    let view = view();
    let mut state = UiState::new();
    command(&mut state, &view, "sort");
    command(&mut state, &view, "restart alpha");
    press(&mut state, &view, KeyCode::Char(':'));
    type_text(&mut state, &view, "lo");
    press(&mut state, &view, KeyCode::Up);
    assert_eq!(prompt_text(&state), "restart alpha");
    press(&mut state, &view, KeyCode::Up);
    assert_eq!(prompt_text(&state), "sort");
    press(&mut state, &view, KeyCode::Down);
    press(&mut state, &view, KeyCode::Down);
    assert_eq!(prompt_text(&state), "lo");
    // A recalled line runs as typed.
    press(&mut state, &view, KeyCode::Up);
    let effect = press(&mut state, &view, KeyCode::Enter);
    assert!(matches!(effect, Some(Effect::Supervisor(_))), "{effect:?}");
    assert_eq!(status(&state), "restarting alpha");
}

/// Tab completes the verb, then the name; again, it cycles.
#[test]
fn tab_completes_verbs_and_names() {
    let view = view();
    let mut state = UiState::new();
    press(&mut state, &view, KeyCode::Char(':'));
    type_text(&mut state, &view, "rest");
    press(&mut state, &view, KeyCode::Tab);
    assert_eq!(prompt_text(&state), "restart ");
    press(&mut state, &view, KeyCode::Tab);
    assert_eq!(prompt_text(&state), "restart all");
    press(&mut state, &view, KeyCode::Tab);
    assert_eq!(prompt_text(&state), "restart alpha");
    press(&mut state, &view, KeyCode::Tab);
    assert_eq!(prompt_text(&state), "restart job");
    // Typing ends the cycle: the next Tab completes what is there.
    press(&mut state, &view, KeyCode::Backspace);
    press(&mut state, &view, KeyCode::Backspace);
    press(&mut state, &view, KeyCode::Tab);
    assert_eq!(prompt_text(&state), "restart job ");
}

/// `all` and globs name many services for restart, stop, start and kill.
#[test]
fn all_or_a_glob_is_a_target() {
    let view = view();
    let mut state = UiState::new();
    let Some(Effect::Each(all)) = command(&mut state, &view, "restart all") else {
        panic!("restart all: {}", status(&state));
    };
    assert_eq!(all.len(), 2);
    assert_eq!(status(&state), "restarting 2 services: alpha, job");
    let Some(Effect::Each(glob)) = command(&mut state, &view, "stop a*") else {
        panic!("stop a*: {}", status(&state));
    };
    assert_eq!(glob.len(), 1);
    assert_eq!(status(&state), "stopping alpha");
    // Only what runs is killed.
    let Some(Effect::Each(killed)) = command(&mut state, &view, "kill *") else {
        panic!("kill *: {}", status(&state));
    };
    assert_eq!(killed.len(), 1);
    assert_eq!(command(&mut state, &view, "start z*"), None);
    assert_eq!(status(&state), "no service matches `z*`");
    assert_eq!(command(&mut state, &view, "scale all 2"), None);
    assert_eq!(status(&state), "`scale` takes one service, not `all`");
}
