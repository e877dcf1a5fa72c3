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
                !matches!(effect, Some(Effect::Supervisor(_))),
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
