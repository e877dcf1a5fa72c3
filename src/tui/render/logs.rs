//! The log pane: every service interleaved with a coloured name prefix, or only the selected
//! one; filtered by level, search matches highlighted, with the current match marked. How a
//! line looks is [`super::log_line`].

use ratatui::{
    Frame,
    layout::Rect,
    text::Line,
    widgets::{Block, Borders, Paragraph},
};

use super::log_line::Look;
use crate::{
    api::{ConsoleView, LogView},
    tui::{
        level::Level,
        state::{Focus, LogScope, UiState},
        theme::Theme,
    },
};

/// The lines the pane shows for the current scope.
pub fn scoped<'l>(logs: &'l [LogView], view: &ConsoleView, state: &UiState) -> Vec<&'l LogView> {
    let selected = state.selected_row(view).map(|r| r.name.as_str());
    logs.iter()
        .filter(|line| match (state.log_scope, selected) {
            (LogScope::Selected, Some(name)) => line.service == name,
            _ => true,
        })
        // The level filter keeps the console's own lines (spawned, exited): they say why a
        // service's lines stopped.
        .filter(|line| {
            state.level.is_none_or(|min| {
                line.console || Level::of(&line.text).is_some_and(|level| level <= min)
            })
        })
        .collect()
}

/// Draws the pane; returns its bottom line on screen, counted from the newest of the scope
/// (0 = the newest), which a search may have moved away from `state.log_scroll`.
pub fn draw(
    frame: &mut Frame<'_>,
    area: Rect,
    view: &ConsoleView,
    state: &UiState,
    logs: &[LogView],
    theme: &Theme,
) -> usize {
    let lines = scoped(logs, view, state);
    let height = area.height.saturating_sub(2) as usize;
    let needle = state.search.to_lowercase();
    let matches: Vec<usize> = if needle.is_empty() {
        Vec::new()
    } else {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.text.to_lowercase().contains(&needle))
            .map(|(i, _)| i)
            .collect()
    };
    // Searching scrolls to the current match (counted from the newest).
    let current = matches
        .len()
        .checked_sub(1 + state.search_match.min(matches.len().saturating_sub(1)))
        .and_then(|i| matches.get(i).copied());
    let end = match (current, state.follow) {
        (Some(line), false) => (line + height / 2 + 1).min(lines.len()),
        _ if state.follow => lines.len(),
        _ => lines.len().saturating_sub(state.log_scroll),
    }
    .max(height.min(lines.len()));
    let width = area.width.saturating_sub(2) as usize;
    let mut look = Look::new((logs, &lines), theme, width, needle.clone());
    look.timestamps = state.timestamps;
    look.wrap = state.wrap;
    // Back from `end` while the lines' rows fit (one row each unless wrapping).
    let mut start = end;
    let mut rows = 0;
    while start > 0 && rows + look.rows(lines[start - 1]) <= height {
        rows += look.rows(lines[start - 1]);
        start -= 1;
    }
    let mut shown: Vec<Line> = Vec::new();
    for (index, line) in lines.iter().enumerate().take(end).skip(start) {
        let from_newest = lines.len() - 1 - index;
        let selected = state
            .selection
            .is_some_and(|(a, c)| (a.min(c)..=a.max(c)).contains(&from_newest));
        for mut row in look.render(line, Some(index) == current) {
            if selected {
                // Over each span, not under: a span's own colour (the service prefix's blue)
                // would otherwise sit on the selection's blue and vanish.
                for span in &mut row.spans {
                    span.style = span.style.patch(theme.selected());
                }
                row = row.style(theme.selected());
            }
            shown.push(row);
        }
    }
    let scope = match state.log_scope {
        LogScope::All => "all services".to_string(),
        LogScope::Selected => state
            .selected_row(view)
            .map_or("all services".into(), |r| r.name.clone()),
    };
    let mut title = format!(" logs: {scope} ");
    if let Some((anchor, cursor)) = state.selection {
        let count = anchor.abs_diff(cursor) + 1;
        title.push_str(&format!(
            "[selecting {count} line(s): ↑↓ extend, y copies, Esc cancels] "
        ));
    } else if !state.follow {
        title.push_str("[paused, f follows] ");
    }
    if !needle.is_empty() {
        title.push_str(&format!("/{} ({} matches) ", state.search, matches.len()));
    }
    match state.level {
        Some(Level::Error) => title.push_str("[errors only, L: all] "),
        Some(level) => title.push_str(&format!("[{}+, L: next] ", level.label())),
        None => {}
    }
    let focused = state.focus == Focus::Logs;
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.pane_border(focused));
    frame.render_widget(Paragraph::new(shown).block(block), area);
    lines.len() - end
}
