//! Drawing the console from a [`ConsoleView`] and the [`UiState`]. Pure: it reads both and
//! writes only the frame.
//!
//! Layout, top to bottom: header, alert line (when there are alerts), the service table, the
//! detail pane (beside the table on wide terminals; below it on narrow ones, or when opened with
//! Enter), the log pane, and the footer. At 80×24 table columns drop by priority and the detail
//! pane shares the space.

mod detail;
mod help;
mod log_line;
mod logs;

pub use logs::scoped as scoped_logs;
mod overlay;
mod table;

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::Style,
    text::{Line, Span},
    widgets::Paragraph,
};

use super::{
    state::{Focus, Overlay, Prompt, UiState},
    theme::Theme,
};
use crate::{
    api::{ConsoleView, LogView},
    registry::InstanceState,
};

/// Where things landed on screen, for mouse clicks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    /// Screen row of the first table row.
    pub table_top: Option<u16>,
    /// Index of the first visible table row.
    pub table_offset: usize,
    /// Log lines the log pane shows at once (how far it can scroll back is the rest).
    pub log_rows: usize,
    /// The log pane's bottom line on screen, counted from the newest (`None`: not drawn).
    pub log_bottom: Option<usize>,
    /// How far the help overlay can scroll on this screen.
    pub help_max_scroll: usize,
}

pub fn draw(
    frame: &mut Frame<'_>,
    view: &ConsoleView,
    state: &UiState,
    logs: &[LogView],
    theme: &Theme,
) -> Areas {
    let area = frame.area();
    let alert_line = u16::from(!state.alerts.is_empty());
    let [header, alerts, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(alert_line),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(header_line(view, state, theme, header.width), header);
    if alert_line > 0 {
        frame.render_widget(alert_text(state, theme), alerts);
    }
    let mut areas = Areas::default();
    let mut log_rows = 0;
    let mut log_bottom = None;
    let mut logs_in = |frame: &mut Frame<'_>, area: Rect| {
        log_rows = area.height.saturating_sub(2) as usize;
        log_bottom = Some(logs::draw(frame, area, view, state, logs, theme));
    };
    if state.zoom {
        match state.focus {
            Focus::Services if state.detail => detail::draw(frame, body, view, state, theme),
            Focus::Services => areas = table::draw(frame, body, view, state, theme),
            Focus::Logs => logs_in(frame, body),
        }
    } else {
        // Replica lines of expanded services included.
        let rows = u16::try_from(state.lines(view).len()).unwrap_or(u16::MAX);
        let wide = body.width >= 120;
        // The table takes what its rows need, up to half the body; logs get the rest.
        let table_height = rows.saturating_add(3).min(body.height / 2).max(4);
        let [top, bottom] =
            Layout::vertical([Constraint::Length(table_height), Constraint::Min(3)]).areas(body);
        // A wide terminal always has the detail beside the table, as tall as the table; Enter
        // opens it below the table instead, at half the logs' room, where all of a busy
        // service's tasks fit.
        if wide && !state.detail {
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)])
                    .areas(top);
            areas = table::draw(frame, left, view, state, theme);
            detail::draw(frame, right, view, state, theme);
            logs_in(frame, bottom);
        } else if state.detail {
            let [detail_area, log_area] =
                Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
                    .areas(bottom);
            areas = table::draw(frame, top, view, state, theme);
            detail::draw(frame, detail_area, view, state, theme);
            logs_in(frame, log_area);
        } else {
            areas = table::draw(frame, top, view, state, theme);
            logs_in(frame, bottom);
        }
    }
    areas.log_rows = log_rows;
    areas.log_bottom = log_bottom;
    areas.help_max_scroll = help::max_scroll(area);
    frame.render_widget(footer_line(view, state, theme, footer.width), footer);
    overlay::draw(frame, area, view, state, theme);
    areas
}

fn header_line<'a>(view: &'a ConsoleView, state: &UiState, theme: &Theme, width: u16) -> Line<'a> {
    let up = view
        .services
        .iter()
        .filter(|s| matches!(s.state, InstanceState::Ready | InstanceState::Degraded))
        .count();
    let down = view
        .services
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                InstanceState::Failed | InstanceState::Crashed | InstanceState::Backoff
            )
        })
        .count();
    let rate: f64 = view.services.iter().map(|s| s.request_rate).sum();
    let errors: f64 = view.services.iter().map(|s| s.error_rate).sum();
    let mut spans = vec![Span::styled(format!(" {} ", view.stack), theme.title())];
    // An attached console says so first, and loudly when its link is down: then every
    // figure on screen is as of the last update.
    if let Some(attached) = &view.attached {
        let mode = if attached.read_only {
            ", read-only"
        } else {
            ""
        };
        match (&attached.problem, attached.connected) {
            (Some(problem), false) => spans.push(Span::styled(
                format!("attached to {}{mode}: {problem} ", attached.to),
                theme.error(),
            )),
            _ => spans.push(Span::styled(
                format!("attached to {}{mode} ", attached.to),
                theme.title(),
            )),
        }
    }
    spans.push(Span::raw(format!("up {} ", duration(view.uptime))));
    if let Some(gateway) = &view.gateway {
        spans.push(Span::styled(format!("http://{gateway} "), theme.dim()));
    } else if let Some(taken) = &view.gateway_taken {
        // Loud: routes that do not answer would otherwise be a mystery (the alert says how
        // to choose another address).
        spans.push(Span::styled(
            format!("no gateway: {taken} taken "),
            theme.error(),
        ));
    }
    spans.push(Span::raw(format!("│ {up} up ")));
    spans.push(Span::styled(
        format!("{down} down "),
        if down > 0 {
            theme.error()
        } else {
            Style::new()
        },
    ));
    spans.push(Span::raw(format!("│ {rate:.0} req/s ")));
    spans.push(Span::styled(
        format!("{errors:.1} err/s "),
        if errors > 0.0 {
            theme.error()
        } else {
            Style::new()
        },
    ));
    if width >= 100 {
        spans.push(Span::styled(
            format!(
                "│ console {:.1}% {} ",
                view.console_cpu,
                bytes(view.console_rss)
            ),
            theme.dim(),
        ));
    }
    // Resolved alerts stay listed until acknowledged, but only open ones are counted.
    let open = state.alerts.iter().filter(|a| a.resolved.is_none()).count();
    if open > 0 {
        spans.push(Span::styled(
            format!(" {open} alert{} ", plural(open)),
            theme.alert(),
        ));
    }
    Line::from(spans)
}

fn alert_text<'a>(state: &'a UiState, theme: &Theme) -> Paragraph<'a> {
    let latest = state.alerts.last();
    let text = latest.map_or(String::new(), |a| match &a.resolved {
        None => format!(" ⚠ {}: {}  (a: list and acknowledge)", a.service, a.text),
        Some(by) => format!(
            " ✓ {}: {}, resolved: {by}  (a: list and acknowledge)",
            a.service, a.text
        ),
    });
    let style = if latest.is_some_and(|a| a.resolved.is_some()) {
        theme.dim()
    } else {
        theme.alert()
    };
    Paragraph::new(Line::styled(text, style))
}

fn footer_line<'a>(view: &ConsoleView, state: &'a UiState, theme: &Theme, width: u16) -> Line<'a> {
    if let Some(total) = state.stopping {
        return Line::styled(
            format!(" {}", super::stopping::progress(view, total)),
            theme.alert(),
        );
    }
    if let Overlay::Prompt(prompt, text) = &state.overlay {
        return prompt_line(prompt, text, theme, usize::from(width));
    }
    if let Some(status) = state.current_status() {
        return Line::styled(format!(" {status}"), theme.title());
    }
    let hints: &[(&str, &str)] = match state.focus {
        Focus::Services => &[
            ("?", "help"),
            ("r", "restart"),
            ("s", "stop/start"),
            ("X", "kill"),
            ("+-", "scale"),
            ("⏎", "detail/run"),
            ("/", "filter"),
            ("Tab", "logs"),
            ("q", "quit"),
        ],
        // The log pane's newer keys where they fit (80 columns has room for the first).
        Focus::Logs if width >= 110 => &[
            ("?", "help"),
            ("/", "search"),
            ("n/N", "match"),
            ("f", "follow"),
            ("l", "scope"),
            ("T", "time"),
            ("L", "level"),
            ("w", "wrap"),
            ("v", "select"),
            ("z", "zoom"),
            ("Tab", "services"),
            ("q", "quit"),
        ],
        Focus::Logs => &[
            ("?", "help"),
            ("/", "search"),
            ("n/N", "match"),
            ("f", "follow"),
            ("l", "scope"),
            ("z", "zoom"),
            ("Tab", "services"),
            ("q", "quit"),
        ],
    };
    let mut spans = Vec::new();
    for (key, what) in hints {
        spans.push(Span::styled(format!(" {key}"), theme.key()));
        spans.push(Span::raw(format!(" {what}")));
    }
    Line::from(spans)
}

/// The open prompt: its label, then the typed text scrolled so the cursor stays on screen
/// (JSON parameters easily outgrow 80 columns); `…` says where text is out of view.
fn prompt_line<'a>(prompt: &Prompt, text: &'a str, theme: &Theme, width: usize) -> Line<'a> {
    let mut label = match prompt {
        // `/` means one or the other by focus: the prompt says which, and how to switch.
        Prompt::Filter => "filter services (Tab: search logs): ".to_string(),
        Prompt::Search => "search logs (Tab: filter services): ".to_string(),
        Prompt::Command => ":".to_string(),
        Prompt::JobParams(job) => {
            format!("run {job} with parameters (JSON, Enter for defaults): ")
        }
    };
    // A long label leaves the text at least 20 columns.
    if label.chars().count() + 20 > width {
        let short = match prompt {
            Prompt::JobParams(job) => format!("run {job}: "),
            Prompt::Filter => "filter: ".to_string(),
            Prompt::Search => "search: ".to_string(),
            Prompt::Command => ":".to_string(),
        };
        label = short;
    }
    // Room for the text: the line less the label and the cursor.
    let room = width.saturating_sub(label.chars().count() + 1);
    let count = text.chars().count();
    let shown = if count <= room {
        Span::raw(text)
    } else {
        let tail: String = text.chars().skip(count + 1 - room.max(1)).collect();
        Span::raw(format!("…{tail}"))
    };
    Line::from(vec![
        Span::styled(label, theme.key()),
        shown,
        Span::styled("█", theme.dim()),
    ])
}

pub use crate::api::human::{bytes, duration};

/// A p99 as what it is: the upper bound of a power-of-two histogram bucket, so the true p99
/// is at most that (`≤1.0ms`), not exactly it.
pub fn p99(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        some => format!("≤{}", latency(some)),
    }
}

pub fn latency(us: Option<u64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1000 => format!("{us}µs"),
        Some(us) if us < 1_000_000 => format!("{:.1}ms", us as f64 / 1000.0),
        Some(us) => format!("{:.1}s", us as f64 / 1e6),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A rectangle of `width`×`height` centred in `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}
