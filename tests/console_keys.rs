//! Overlays are modal: under help, alerts, dependencies and calls, no key reaches the table.
//! Every key is pressed under every overlay, and none may make the supervisor act or end the
//! console; Esc, `q` and the overlay's own key close it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use switchboard::{
    api::{ConsoleView, ReplicaView, ServiceRow},
    registry::InstanceState,
    supervisor::Command,
    tui::{
        action::{Action, Effect, update},
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
        KeyCode::Left,
        KeyCode::Right,
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

/// `view()` with three replicas of `alpha` (PIDs from `first_pid`), listed in `order`.
fn replicated(first_pid: u32, order: [&str; 2]) -> ConsoleView {
    let mut view = view();
    view.services[0].replicas = 3;
    view.services[0].instances = (0..3)
        .map(|i| ReplicaView {
            pid: Some(first_pid + i),
            ..ReplicaView::new(i, InstanceState::Ready)
        })
        .collect();
    view.services
        .sort_by_key(|s| order.iter().position(|n| *n == s.name));
    view
}

/// The selected line as (service, replica).
fn at(state: &UiState, view: &ConsoleView) -> (String, Option<u32>) {
    let lines = state.lines(view);
    let line = lines[state.selected_line(&lines)];
    (line.service().name.clone(), line.replica())
}

/// → expands the selected service into a line per replica, ↓ and ↑ walk through them, and ←
/// collapses it from any of its lines, the selection going back up to the service.
#[test]
fn right_expands_left_collapses_and_the_cursor_walks_replica_rows() {
    let view = replicated(100, ["alpha", "job"]);
    let mut state = UiState::new();
    assert_eq!(state.lines(&view).len(), 2);
    press(&mut state, &view, KeyCode::Right);
    assert_eq!(state.lines(&view).len(), 5, "→ did not expand");
    let mut walk = Vec::new();
    for _ in 0..4 {
        press(&mut state, &view, KeyCode::Down);
        walk.push(at(&state, &view));
    }
    let alpha = |r| ("alpha".to_string(), Some(r));
    assert_eq!(
        walk,
        [alpha(0), alpha(1), alpha(2), ("job".to_string(), None)]
    );
    press(&mut state, &view, KeyCode::Up);
    press(&mut state, &view, KeyCode::Up);
    assert_eq!(at(&state, &view), alpha(1));
    press(&mut state, &view, KeyCode::Left);
    assert_eq!(state.lines(&view).len(), 2, "← did not collapse");
    assert_eq!(at(&state, &view), ("alpha".to_string(), None));
    // ← and → belong to the table: with the logs focused they do nothing to it.
    press(&mut state, &view, KeyCode::Tab);
    press(&mut state, &view, KeyCode::Right);
    assert_eq!(state.lines(&view).len(), 2, "→ expanded from the log pane");
}

/// A key on a replica's line acts on its service: the supervisor's commands are per service.
#[test]
fn keys_on_a_replica_line_act_on_its_service() {
    let view = replicated(100, ["job", "alpha"]);
    let mut state = UiState::new();
    press(&mut state, &view, KeyCode::Down);
    press(&mut state, &view, KeyCode::Right);
    press(&mut state, &view, KeyCode::Down);
    press(&mut state, &view, KeyCode::Down);
    assert_eq!(at(&state, &view), ("alpha".to_string(), Some(1)));
    let effect = press(&mut state, &view, KeyCode::Char('r'));
    assert_eq!(
        effect,
        Some(Effect::Supervisor(Command::Restart("alpha".into())))
    );
    // A click selects a replica's line too (index among the lines).
    update(&mut state, &view, Action::Select(4));
    assert_eq!(at(&state, &view), ("alpha".to_string(), Some(2)));
}

/// Expansion and the selected replica are kept by name and number: a refresh with new PIDs
/// and another order keeps both (an attached console's view is rebuilt on every update).
#[test]
fn expansion_and_the_selected_replica_survive_a_refresh() {
    let before = replicated(100, ["alpha", "job"]);
    let mut state = UiState::new();
    press(&mut state, &before, KeyCode::Right);
    press(&mut state, &before, KeyCode::Down);
    press(&mut state, &before, KeyCode::Down);
    let after = replicated(200, ["job", "alpha"]);
    let lines = state.lines(&after);
    assert_eq!(lines.len(), 5, "the expansion was lost");
    assert_eq!(at(&state, &after), ("alpha".to_string(), Some(1)));
    // Scaled down under the cursor: the service's line is selected, not some other.
    let mut scaled = replicated(300, ["job", "alpha"]);
    scaled.services[1].instances.truncate(1);
    assert_eq!(at(&state, &scaled), ("alpha".to_string(), None));
}

/// → on a service without replicas to show says so, instead of doing nothing silently.
#[test]
fn right_on_a_service_without_replicas_says_so() {
    let view = view();
    let mut state = UiState::new();
    press(&mut state, &view, KeyCode::Right);
    assert_eq!(state.lines(&view).len(), 2);
    assert!(status(&state).contains("no replicas"), "{:?}", state.status);
}

/// `:logs NAME` selects NAME's own line, not the replica line with the number of the replica
/// selected before.
#[test]
fn logs_name_selects_the_service_s_line_not_a_replica_s() {
    let mut view = replicated(100, ["alpha", "job"]);
    view.services[1].instances = view.services[0].instances.clone();
    let mut state = UiState::new();
    state
        .expanded
        .extend(["alpha".to_string(), "job".to_string()]);
    press(&mut state, &view, KeyCode::Down);
    press(&mut state, &view, KeyCode::Down);
    assert_eq!(at(&state, &view), ("alpha".to_string(), Some(1)));
    command(&mut state, &view, "logs job");
    assert_eq!(at(&state, &view), ("job".to_string(), None));
}
