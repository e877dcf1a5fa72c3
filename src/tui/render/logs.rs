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
    let prefix = prefix_width(&lines, width);
    let shown: Vec<Line> = lines[start..end]
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let index = start + i;
            let from_newest = lines.len() - 1 - index;
            let selected = state
                .selection
                .is_some_and(|(a, c)| (a.min(c)..=a.max(c)).contains(&from_newest));
            let current = Some(index) == current;
            let mut rendered = render_line(line, &needle, current, theme, (prefix, width));
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

/// Columns for the `name#replica` prefix: the longest in the scope (all of it, so the text
/// does not shift as lines scroll by), at most [`PREFIX_MAX`] and a third of the pane.
fn prefix_width(lines: &[&LogView], width: usize) -> usize {
    let longest = lines
        .iter()
        .map(|l| l.service.chars().count() + 1 + digits(l.replica))
        .max()
        .unwrap_or(0);
    longest.min(PREFIX_MAX).min(width / 3).max(4)
}

/// The widest prefix; a longer name is cut in the middle of the name, never the replica.
const PREFIX_MAX: usize = 20;

fn digits(n: u32) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// `name#replica` in `width` columns at most: the name is cut (`notificat…#1`), the replica
/// kept, as it tells the lines of a scaled service apart.
fn label(service: &str, replica: u32, width: usize) -> String {
    let full = format!("{service}#{replica}");
    if full.chars().count() <= width {
        return full;
    }
    let suffix = format!("#{replica}");
    let room = width.saturating_sub(suffix.len() + 1);
    let name: String = service.chars().take(room).collect();
    format!("{name}…{suffix}")
}

/// One log line; `columns` is (the prefix's width, the pane's).
fn render_line<'a>(
    line: &'a LogView,
    needle: &str,
    current: bool,
    theme: &Theme,
    columns: (usize, usize),
) -> Line<'a> {
    let (prefix_width, width) = columns;
    // The current search match is marked in the prefix, so the text does not shift.
    let (marker, width_left) = if current {
        ("▶", prefix_width.saturating_sub(1))
    } else {
        ("", prefix_width)
    };
    let prefix = format!(
        "{:>width_left$}│",
        label(&line.service, line.replica, width_left)
    );
    let mut spans = vec![
        Span::styled(marker, theme.highlight()),
        Span::styled(prefix, theme.service(&line.service)),
    ];
    let text: String = line
        .text
        .chars()
        .take(width.saturating_sub(prefix_width + 1))
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_label_keeps_the_replica() {
        assert_eq!(label("notification", 1, 14), "notification#1");
        assert_eq!(label("notification", 1, 12), "notificat…#1");
        assert_eq!(
            label("inventory-reconciler", 12, 20),
            "inventory-reconc…#12"
        );
        assert_eq!(digits(0), 1);
        assert_eq!(digits(10), 2);
    }
}
