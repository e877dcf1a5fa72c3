//! The log pane's own actions: search matches, selecting and copying lines, following,
//! times, wrapping, the level filter and the scope.

use super::{
    action::{Action, Effect},
    level::Level,
    state::{Focus, LogScope, UiState},
};

pub(super) fn apply(state: &mut UiState, action: Action) -> Option<Effect> {
    match action {
        Action::SearchNext | Action::SearchPrev => {
            if !state.search.is_empty() {
                state.follow = false;
                state.search_match = match action {
                    Action::SearchNext => state.search_match.saturating_sub(1),
                    _ => state.search_match + 1,
                };
            }
            None
        }
        Action::SelectLines => {
            state.selection = match state.selection {
                Some(_) => None,
                None => {
                    state.focus = Focus::Logs;
                    state.follow = false;
                    Some((state.log_scroll, state.log_scroll))
                }
            };
            None
        }
        Action::CopyLines => {
            let (anchor, cursor) = state.selection.take()?;
            let (newest, oldest) = (anchor.min(cursor), anchor.max(cursor));
            state.set_status(format!(
                "copied {} line(s) to the clipboard",
                oldest - newest + 1
            ));
            Some(Effect::Copy { newest, oldest })
        }
        Action::Follow => {
            state.follow = !state.follow;
            if state.follow {
                state.log_scroll = 0;
            }
            None
        }
        Action::Timestamps => {
            state.timestamps = !state.timestamps;
            state.set_status(if state.timestamps {
                "log times shown (UTC)"
            } else {
                "log times hidden"
            });
            None
        }
        Action::Wrap => {
            state.wrap = !state.wrap;
            state.set_status(if state.wrap {
                "long log lines wrap"
            } else {
                "long log lines are cut"
            });
            None
        }
        Action::LevelFilter => {
            state.level = Level::next_filter(state.level);
            state.set_status(match state.level {
                None => "logs: every level".to_string(),
                Some(Level::Error) => "logs: errors only".to_string(),
                Some(level) => format!("logs: {} and more severe", level.label()),
            });
            None
        }
        Action::LogScope => {
            state.log_scope = match state.log_scope {
                LogScope::All => LogScope::Selected,
                LogScope::Selected => LogScope::All,
            };
            None
        }
        _ => None,
    }
}
