//! Popups over the main view: help, alerts, the dependency view, confirmations.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Wrap},
};

use super::centered;
use crate::{
    registry::InstanceState,
    tui::{
        keys::HELP,
        state::{Confirm, Overlay, UiState},
        theme::Theme,
        view::ConsoleView,
    },
};

pub fn draw(frame: &mut Frame<'_>, area: Rect, view: &ConsoleView, state: &UiState, theme: &Theme) {
    let (title, lines, width): (&str, Vec<Line>, u16) = match &state.overlay {
        Overlay::None | Overlay::Prompt(..) => return,
        Overlay::Help => (
            " keys (Esc closes) ",
            HELP.iter()
                .map(|(keys, what)| {
                    Line::from(vec![
                        Span::styled(format!("{keys:>12}  "), theme.key()),
                        Span::raw(*what),
                    ])
                })
                .collect(),
            100,
        ),
        Overlay::Alerts => (
            " alerts (a or Esc acknowledges) ",
            if state.alerts.is_empty() {
                vec![Line::from("no alerts")]
            } else {
                state
                    .alerts
                    .iter()
                    .rev()
                    .map(|a| Line::from(format!("{}: {}", a.service, a.text)))
                    .collect()
            },
            90,
        ),
        Overlay::Deps => (
            " dependencies and calls (d closes) ",
            deps(view, theme),
            100,
        ),
        Overlay::Confirm(Confirm::Kill(name)) => (
            " confirm ",
            vec![Line::from(format!("Kill `{name}` with SIGKILL? y/n"))],
            44,
        ),
        Overlay::Confirm(Confirm::Quit) => (
            " confirm ",
            vec![Line::from("Quit and stop every service? y/n")],
            44,
        ),
    };
    let popup = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .border_style(theme.focused_border()),
        ),
        popup,
    );
}

/// The `depends_on` and `calls` graph with live states. A service that is down marks everything
/// depending on it, so the blast radius of a failure shows at a glance.
fn deps<'a>(view: &'a ConsoleView, theme: &Theme) -> Vec<Line<'a>> {
    let down = |name: &str| {
        view.services.iter().any(|s| {
            s.name == name
                && matches!(
                    s.state,
                    InstanceState::Failed
                        | InstanceState::Crashed
                        | InstanceState::Backoff
                        | InstanceState::Stopped
                )
        })
    };
    view.services
        .iter()
        .map(|service| {
            let (symbol, style) = theme.state(service.state);
            let mut spans = vec![Span::styled(
                format!("{symbol} {:<14}", service.name),
                style,
            )];
            for (name, condition) in &service.depends_on {
                let style = if down(name) {
                    theme.error()
                } else {
                    theme.dim()
                };
                spans.push(Span::styled(format!(" ← {name}({condition})"), style));
            }
            for name in &service.calls {
                let style = if down(name) {
                    theme.error()
                } else {
                    theme.dim()
                };
                spans.push(Span::styled(format!(" → {name}"), style));
            }
            let blocked: Vec<&str> = service
                .depends_on
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(service.calls.iter().map(String::as_str))
                .filter(|n| down(n))
                .collect();
            if !blocked.is_empty() {
                spans.push(Span::styled(
                    format!("  ⚠ affected by {}", blocked.join(", ")),
                    theme.error(),
                ));
            }
            Line::from(spans)
        })
        .collect()
}
