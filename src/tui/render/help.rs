//! The help overlay: every key with its description word-wrapped to the box, so the box is as
//! tall as the wrapped text (not the number of entries), and scrolled with j/k, PgUp/PgDn,
//! Home/End when the terminal is shorter than that.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph},
};

use super::centered;
use crate::tui::{keys::HELP, state::UiState, theme::Theme};

/// Columns of the keys, right-aligned, and the gap after them.
const KEY_COLUMN: usize = 14;
/// The box's width on a terminal wide enough.
const WIDTH: u16 = 100;

/// The help text for a box `inner` columns wide: (keys, description) a line; a description's
/// continuation lines have empty keys, so they sit under the description.
fn wrapped(inner: usize) -> Vec<(String, String)> {
    let room = inner.saturating_sub(KEY_COLUMN).max(8);
    let mut lines = Vec::new();
    for (keys, what) in HELP {
        for (i, part) in wrap(what, room).into_iter().enumerate() {
            let keys = if i == 0 { *keys } else { "" };
            lines.push((format!("{keys:>12}  "), part));
        }
    }
    lines
}

/// Word-wraps `text` to `width` columns; a word longer than that is split.
fn wrap(text: &str, width: usize) -> Vec<String> {
    // A zero width would split nothing off a long word, forever.
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = line.chars().count();
            let gap = usize::from(used > 0);
            if used + gap + word.len() <= width {
                if gap > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word wider than the whole line: split it.
            let rest = word.split_off(width.min(word.len()));
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The box for `area`, its wrapped lines, and how far it can scroll.
fn layout(area: Rect) -> (Rect, Vec<(String, String)>, usize) {
    let width = WIDTH.min(area.width);
    let lines = wrapped(usize::from(width.saturating_sub(2)));
    let rect = centered(area, width, (lines.len() as u16).saturating_add(2));
    let room = usize::from(rect.height.saturating_sub(2));
    let max_scroll = lines.len().saturating_sub(room);
    (rect, lines, max_scroll)
}

/// How far the help can scroll on a screen of `area` (0 when it all fits).
pub fn max_scroll(area: Rect) -> usize {
    layout(area).2
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, state: &UiState, theme: &Theme) {
    let (rect, lines, max_scroll) = layout(area);
    let room = usize::from(rect.height.saturating_sub(2));
    let top = state.help_scroll.min(max_scroll);
    let shown: Vec<Line> = lines
        .into_iter()
        .skip(top)
        .take(room)
        .map(|(keys, what)| Line::from(vec![Span::styled(keys, theme.key()), Span::raw(what)]))
        .collect();
    let mut block = Block::default()
        .borders(Borders::ALL)
        .title(" keys (Esc closes) ")
        .border_style(theme.focused_border());
    if max_scroll > 0 {
        // Say that there is more, and how to get to it: the last lines (`q`, the mouse) are
        // the ones a short terminal hides.
        let below = max_scroll - top;
        let more = match (top, below) {
            (0, _) => format!(" ↓ {below} more: j/k PgDn End "),
            (_, 0) => format!(" ↑ {top} above: k PgUp Home "),
            _ => format!(" ↑ {top} above · ↓ {below} more: j/k "),
        };
        block = block.title_bottom(Line::styled(more, theme.key()));
    }
    frame.render_widget(Clear, rect);
    frame.render_widget(Paragraph::new(shown).block(block), rect);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_words_and_splits_long_ones() {
        assert_eq!(wrap("one two three", 7), ["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), [""]);
    }

    #[test]
    fn the_box_counts_wrapped_lines() {
        let narrow = wrapped(78);
        assert!(narrow.len() > HELP.len(), "nothing wrapped at 78 columns");
        assert!(
            narrow
                .iter()
                .all(|(k, w)| k.chars().count() + w.chars().count() <= 78)
        );
        assert_eq!(max_scroll(Rect::new(0, 0, 120, 40)), 0);
        assert!(max_scroll(Rect::new(0, 0, 80, 24)) > 0);
    }
}
