//! One log line on screen: its time (when shown), the `name#replica` prefix in the service's
//! colour, a `!` for stderr where that tells streams apart, and the text, cut at the pane's
//! edge or wrapped onto rows of its own, with search matches highlighted.

use std::{collections::HashSet, time::UNIX_EPOCH};

use ratatui::text::{Line, Span};

use crate::{api::LogView, tui::theme::Theme};

/// The widest prefix; a longer name is cut in the middle of the name, never the replica.
const PREFIX_MAX: usize = 20;
/// `HH:MM:SS.mmm ` in front of a line when times are shown.
const TIME_WIDTH: usize = 13;

/// How the pane draws its lines: the same for every line of a frame.
pub struct Look<'a> {
    pub theme: &'a Theme,
    /// The search text, lower-cased (empty: none).
    pub needle: String,
    /// Columns of the `name#replica` prefix.
    pub prefix: usize,
    /// Columns inside the pane.
    pub width: usize,
    pub timestamps: bool,
    pub wrap: bool,
    /// Services whose stdout is a log too (plain programs): only there does a stderr mark
    /// tell anything apart. A protocol service's stdout is the protocol, and all of its log is
    /// stderr, so marking it would mark every line.
    pub two_streams: HashSet<&'a str>,
}

impl<'a> Look<'a> {
    /// For `lines` of the window `all` (filtered or not: a stdout line hidden by the level
    /// filter still makes its service's stderr worth marking).
    pub fn new(
        (all, lines): (&'a [LogView], &[&'a LogView]),
        theme: &'a Theme,
        width: usize,
        needle: String,
    ) -> Self {
        let two_streams = all
            .iter()
            .filter(|l| !l.stderr && !l.console)
            .map(|l| l.service.as_str())
            .collect();
        Look {
            theme,
            needle,
            prefix: prefix_width(lines, width),
            width,
            timestamps: false,
            wrap: false,
            two_streams,
        }
    }

    /// Columns left for a line's text.
    fn room(&self) -> usize {
        let time = if self.timestamps { TIME_WIDTH } else { 0 };
        self.width.saturating_sub(time + self.prefix + 1).max(1)
    }

    /// Screen rows `line` takes.
    pub fn rows(&self, line: &LogView) -> usize {
        if self.wrap {
            line.text.chars().count().div_ceil(self.room()).max(1)
        } else {
            1
        }
    }

    /// The rows of `line`; `current` marks the current search match.
    pub fn render(&self, line: &'a LogView, current: bool) -> Vec<Line<'a>> {
        let room = self.room();
        let chars: Vec<char> = line.text.chars().collect();
        let chunks: Vec<String> = if self.wrap && !chars.is_empty() {
            chars.chunks(room).map(|c| c.iter().collect()).collect()
        } else {
            vec![chars.iter().take(room).collect()]
        };
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let mut spans = if i == 0 {
                    self.head(line, current)
                } else {
                    // A continuation row: blank where the time and prefix were.
                    let time = if self.timestamps { TIME_WIDTH } else { 0 };
                    vec![Span::raw(format!("{:w$}│", "", w = time + self.prefix))]
                };
                spans.extend(self.text(text, line.console));
                Line::from(spans)
            })
            .collect()
    }

    /// The time, the prefix and its separator: `12:00:01.250 order#0│`, or `!` for stderr.
    fn head(&self, line: &LogView, current: bool) -> Vec<Span<'a>> {
        let theme = self.theme;
        let mut spans = Vec::new();
        if self.timestamps {
            spans.push(Span::styled(format!("{} ", time_of_day(line)), theme.dim()));
        }
        // The current search match is marked in the prefix, so the text does not shift.
        let (marker, width) = if current {
            ("▶", self.prefix.saturating_sub(1))
        } else {
            ("", self.prefix)
        };
        spans.push(Span::styled(marker, theme.highlight()));
        spans.push(Span::styled(
            format!("{:>width$}", label(&line.service, line.replica, width)),
            theme.service(&line.service),
        ));
        if line.stderr && self.two_streams.contains(line.service.as_str()) {
            spans.push(Span::styled("!", theme.error()));
        } else {
            spans.push(Span::styled("│", theme.service(&line.service)));
        }
        spans
    }

    /// The text with every case-insensitive occurrence of the search highlighted.
    fn text(&self, text: String, console: bool) -> Vec<Span<'a>> {
        let style = if console {
            self.theme.dim()
        } else {
            Default::default()
        };
        let needle = self.needle.as_str();
        let lower = text.to_lowercase();
        // Lower-casing that changed byte lengths (rare scripts): highlight nothing rather than
        // slice at a wrong boundary.
        if needle.is_empty() || lower.len() != text.len() {
            return vec![Span::styled(text, style)];
        }
        let mut spans = Vec::new();
        let mut at = 0;
        while let Some(found) = lower[at..].find(needle) {
            let begin = at + found;
            let end = begin + needle.len();
            spans.push(Span::styled(text[at..begin].to_string(), style));
            spans.push(Span::styled(
                text[begin..end].to_string(),
                self.theme.highlight(),
            ));
            at = end;
        }
        spans.push(Span::styled(text[at..].to_string(), style));
        spans
    }
}

/// `HH:MM:SS.mmm` of the line's time, in UTC.
fn time_of_day(line: &LogView) -> String {
    let ms = line
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let s = ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
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
