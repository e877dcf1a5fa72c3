//! Popups over the main view: help, alerts, the dependency view, recent calls, confirmations.

use ratatui::{
    Frame,
    layout::Rect,
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Wrap},
};

use super::{centered, latency, p99};
use crate::{
    api::ConsoleView,
    registry::InstanceState,
    tui::{
        state::{Confirm, Overlay, UiState},
        theme::Theme,
    },
};

pub fn draw(frame: &mut Frame<'_>, area: Rect, view: &ConsoleView, state: &UiState, theme: &Theme) {
    let (title, lines, width): (&str, Vec<Line>, u16) = match &state.overlay {
        Overlay::None | Overlay::Prompt(..) => return,
        Overlay::Calls => {
            let selected = state.selected_row(view).map(|row| row.name.as_str());
            let title = match selected {
                Some(name) => format!(" calls to and from {name}, newest last, UTC (t closes) "),
                None => " calls, newest last, UTC (t closes) ".to_string(),
            };
            // As many of the newest as fit between the popup's borders.
            let room = usize::from(area.height.saturating_sub(4)).max(1);
            let lines = calls(view, selected, room, theme);
            return popup(frame, area, &title, lines, 120, theme);
        }
        Overlay::Help => return super::help::draw(frame, area, state, theme),
        Overlay::Alerts => (
            " alerts (a or Esc acknowledges) ",
            if state.alerts.is_empty() {
                vec![Line::from("no alerts")]
            } else {
                state
                    .alerts
                    .iter()
                    .rev()
                    .map(|a| match &a.resolved {
                        None => Line::from(format!("{}: {}", a.service, a.text)),
                        Some(by) => Line::styled(
                            format!("{}: {} (resolved: {by})", a.service, a.text),
                            theme.dim(),
                        ),
                    })
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
        Overlay::Confirm(Confirm::Quit) if view.attached.is_some() => (
            " quit ",
            vec![
                Line::from("d  detach: the stack keeps running (y)"),
                Line::from("s  stop every service of the stack"),
                Line::from("n  stay"),
            ],
            44,
        ),
        Overlay::Confirm(Confirm::Quit) => (
            " quit ",
            vec![
                Line::from("s  stop every service (y)"),
                Line::from("d  detach: leave them running, attach later"),
                Line::from("n  stay"),
            ],
            48,
        ),
    };
    popup(frame, area, title, lines, width, theme);
}

/// A bordered box of `lines`, centred in `area`.
fn popup(
    frame: &mut Frame<'_>,
    area: Rect,
    title: &str,
    lines: Vec<Line>,
    width: u16,
    theme: &Theme,
) {
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .border_style(theme.focused_border()),
        ),
        rect,
    );
}

/// The routes of the selected service with their totals (the busiest, up to a third of
/// `room`), then its newest routed calls in what is left, one a line:
/// `storefront → order.create      13340 calls     297 errors  p99 2.0ms`, then
/// `12:04:05.123  trace 4113  storefront → order.create  1.2ms  ok`.
fn calls<'a>(
    view: &ConsoleView,
    selected: Option<&str>,
    room: usize,
    theme: &Theme,
) -> Vec<Line<'a>> {
    if view.calls.is_empty() && view.routes.is_empty() {
        let whose = selected.map_or(String::new(), |name| format!(" to or from {name}"));
        return vec![Line::styled(format!("no calls{whose} yet"), theme.dim())];
    }
    let mut lines: Vec<Line<'a>> = Vec::new();
    let routes = view.routes.len().min(room / 3);
    if routes > 0 {
        lines.push(Line::styled("routes, since the start", theme.dim()));
        for route in &view.routes[..routes] {
            let errors = format!("{:>7} errors", route.errors);
            lines.push(Line::from(vec![
                Span::raw(format!(
                    "{:<32} {:>9} calls ",
                    format!("{} → {}.{}", route.from, route.to, route.method),
                    route.requests
                )),
                if route.errors > 0 {
                    Span::styled(errors, theme.error())
                } else {
                    Span::raw(errors)
                },
                Span::raw(format!("  p99 {}", p99(route.p99_us))),
            ]));
        }
        lines.push(Line::styled("recent calls", theme.dim()));
    }
    let left = room.saturating_sub(lines.len()).max(1);
    let skip = view.calls.len().saturating_sub(left);
    lines.extend(view.calls[skip..].iter().map(|call| {
        let outcome = match &call.error {
            None => Span::raw("ok"),
            Some(code) => Span::styled(code.clone(), theme.error()),
        };
        Line::from(vec![
            Span::styled(format!("{}  ", time_of_day(call.at_ms)), theme.dim()),
            Span::styled(format!("trace {:<8} ", call.trace), theme.dim()),
            Span::raw(format!(
                "{:<32} {:>8}  ",
                format!("{} → {}.{}", call.from, call.to, call.method),
                latency(Some(call.latency_us))
            )),
            outcome,
        ])
    }));
    lines
}

/// `HH:MM:SS.mmm` of a time in milliseconds since the Unix epoch, in UTC.
fn time_of_day(at_ms: u64) -> String {
    let ms = at_ms % 1000;
    let s = at_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}.{ms:03}", s / 3600, s / 60 % 60, s % 60)
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
            for dependency in &service.depends_on {
                let (name, condition) = (&dependency.name, &dependency.condition);
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
                .map(|d| d.name.as_str())
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
