//! The log pane: every service interleaved with a coloured name prefix, or only the selected
//! one; search matches highlighted, with the current match marked.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph},
};

use crate::{
    api::{ConsoleView, LogView},
    tui::{
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
    let start = end.saturating_sub(height);
    let width = area.width.saturating_sub(2) as usize;
    let shown: Vec<Line> = lines[start..end]
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let index = start + i;
            let from_newest = lines.len() - 1 - index;
            let selected = state
                .selection
                .is_some_and(|(a, c)| (a.min(c)..=a.max(c)).contains(&from_newest));
            let mut rendered = render_line(line, &needle, Some(index) == current, theme, width);
            if selected {
                // Over each span, not under: a span's own colour (the service prefix's blue)
                // would otherwise sit on the selection's blue and vanish.
                for span in &mut rendered.spans {
                    span.style = span.style.patch(theme.selected());
                }
                rendered = rendered.style(theme.selected());
            }
            rendered
        })
        .collect();
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
    let focused = state.focus == Focus::Logs;
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.pane_border(focused));
    frame.render_widget(Paragraph::new(shown).block(block), area);
    lines.len() - end
}

fn render_line<'a>(
    line: &'a LogView,
    needle: &str,
    current: bool,
    theme: &Theme,
    width: usize,
) -> Line<'a> {
    // The current search match is marked in the prefix, so the text does not shift.
    let (marker, width_left) = if current { ("▶", 11) } else { ("", 12) };
    let prefix = format!(
        "{:>width_left$}│",
        truncate(&format!("{}#{}", line.service, line.replica), width_left)
    );
    let mut spans = vec![
        Span::styled(marker, theme.highlight()),
        Span::styled(prefix, theme.service(&line.service)),
    ];
    let text: String = line.text.chars().take(width.saturating_sub(14)).collect();
    let style = if line.console {
        theme.dim()
    } else {
        Default::default()
    };
    if needle.is_empty() {
        spans.push(Span::styled(text, style));
        return Line::from(spans);
    }
    // Highlight every case-insensitive occurrence.
    let lower = text.to_lowercase();
    if lower.len() != text.len() {
        // Lower-casing changed byte lengths (rare scripts): highlight nothing rather than
        // slicing at a wrong boundary.
        spans.push(Span::styled(text, style));
        return Line::from(spans);
    }
    let mut at = 0;
    while let Some(found) = lower[at..].find(needle) {
        let begin = at + found;
        let end = begin + needle.len();
        spans.push(Span::styled(text[at..begin].to_string(), style));
        spans.push(Span::styled(
            text[begin..end].to_string(),
            theme.highlight(),
        ));
        at = end;
    }
    spans.push(Span::styled(text[at..].to_string(), style));
    Line::from(spans)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max - 1).collect();
        format!("{cut}…")
    }
}
