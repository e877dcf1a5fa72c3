//! The detail pane of the selected service: request-rate sparkline and latency, task progress
//! gauges (with a job's runs and results), dependencies and calls, recent exits.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph, Sparkline, Wrap},
};

use super::{bytes, duration, p99};
use crate::{
    api::{ConsoleView, ServiceRow, TaskView},
    tui::{state::UiState, theme::Theme},
};

/// A task's label is cut to this many characters, its replica included.
const MAX_LABEL: usize = 28;

pub fn draw(frame: &mut Frame<'_>, area: Rect, view: &ConsoleView, state: &UiState, theme: &Theme) {
    let Some(row) = state.selected_row(view) else {
        return;
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(format!(
            " {}{} ",
            row.name,
            row.version
                .as_ref()
                .map_or(String::new(), |v| format!(" v{v}"))
        ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let lines = text_lines(row, state.selected_replica, theme);
    let spark_height: u16 = if inner.height >= 4 { 2 } else { 1 };
    // Tasks come first (they are what moves), but leave the text a few lines: up to a third
    // of the room, so a busy service's dependencies and exits are not pushed out entirely.
    let room = usize::from(inner.height - spark_height);
    let for_text = lines.len().min(room / 3);
    let gauges = row.tasks.len().min(room - for_text);
    let [spark_area, gauges_area, text_area] = Layout::vertical([
        Constraint::Length(spark_height),
        Constraint::Length(gauges as u16),
        Constraint::Min(0),
    ])
    .areas(inner);

    draw_rates(frame, spark_area, row, theme);
    draw_tasks(frame, gauges_area, row, theme);
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text_area);
}

/// The rates and p99 beside a sparkline of the last minutes' request rate.
fn draw_rates(frame: &mut Frame<'_>, spark_area: Rect, row: &ServiceRow, theme: &Theme) {
    // The rates beside the sparkline: the label widens for a caller's calls, so nothing is cut.
    let rates = rates(row);
    let label_width = (rates.chars().count() as u16 + 1)
        .max(18)
        .min(spark_area.width);
    // Sparkline of the last minutes' request rate, newest on the right.
    let width = spark_area.width.saturating_sub(label_width) as usize;
    let history: Vec<u64> = row
        .rate_history
        .iter()
        .skip(row.rate_history.len().saturating_sub(width))
        .copied()
        .collect();
    let [label, spark] =
        Layout::horizontal([Constraint::Length(label_width), Constraint::Min(0)]).areas(spark_area);
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(rates),
            Line::from(format!("p99 {}", p99(row.p99_us))),
        ]),
        label,
    );
    frame.render_widget(
        Sparkline::default().data(&history).style(theme.title()),
        spark,
    );
}

/// A progress bar per task, as many as fit, and how many do not.
fn draw_tasks(frame: &mut Frame<'_>, gauges_area: Rect, row: &ServiceRow, theme: &Theme) {
    // The layout may give the gauges fewer lines than asked (a short pane beside a short
    // table); drawing past them would write over the border and the pane below. When tasks do
    // not all fit, the last line says how many are not shown.
    let rows = usize::from(gauges_area.height);
    let shown = if row.tasks.len() > rows {
        rows.saturating_sub(1)
    } else {
        row.tasks.len()
    };
    let line_at = |i: usize| Rect {
        y: gauges_area.y + i as u16,
        height: 1,
        ..gauges_area
    };
    let labels: Vec<String> = row.tasks.iter().take(shown).map(task_label).collect();
    // Padded to the widest, so that the bars start in one column.
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    for (i, (task, label)) in row.tasks.iter().zip(&labels).enumerate() {
        let line = line_at(i);
        let label = format!("{label:<label_width$}");
        frame.render_widget(
            Paragraph::new(task_line(task, label, line.width, theme)),
            line,
        );
    }
    if shown < row.tasks.len() && rows > 0 {
        let hidden = row.tasks.len() - shown;
        let noun = if hidden == 1 { "task" } else { "tasks" };
        let more = if shown == 0 {
            format!("{hidden} {noun}")
        } else {
            format!("… {hidden} more {noun}")
        };
        frame.render_widget(
            Paragraph::new(Line::styled(more, theme.dim())),
            line_at(shown),
        );
    }
}

/// "backlog 152 rising, oldest 4s, +28.0/s · autoscale 1–4", while anything waits or the
/// service autoscales (a quiet service gets no line).
fn backlog_line<'a>(row: &ServiceRow, theme: &Theme) -> Option<Line<'a>> {
    let backlog = &row.backlog;
    if backlog.waiting == 0 && backlog.autoscale.is_none() {
        return None;
    }
    let mut text = format!("backlog {} {}", backlog.waiting, backlog.trend);
    if !backlog.published {
        text.push_str(" (seen by the console)");
    }
    if let Some(age) = backlog.oldest_age {
        text.push_str(&format!(", oldest {}", duration(age)));
    }
    if let Some(rate) = backlog.growth_per_s {
        text.push_str(&format!(", +{rate:.1}/s"));
    }
    if let Some((min, max)) = backlog.autoscale {
        text.push_str(&format!(" · autoscale {min}–{max}"));
    }
    Some(if backlog.growth_per_s.is_some() {
        Line::styled(text, theme.alert())
    } else {
        Line::from(text)
    })
}

/// The detail's text. `selected` is the replica whose line is selected in the table: its
/// number is drawn as selected here too, so the operator sees which one the table points at.
fn text_lines<'a>(row: &ServiceRow, selected: Option<u32>, theme: &Theme) -> Vec<Line<'a>> {
    let mut lines = Vec::new();
    // With more than one replica, a line each: the row in the table sums them up.
    if row.instances.len() > 1 {
        lines.extend(
            row.instances
                .iter()
                .map(|replica| replica_line(replica, selected, theme)),
        );
    }
    if let Some(line) = backlog_line(row, theme) {
        lines.push(line);
    }
    if let Some(retry_in) = row.retry_in {
        lines.push(Line::styled(
            format!("failed: next try in {}", duration(retry_in)),
            theme.error(),
        ));
    }
    if row.stale {
        lines.push(Line::styled(
            "heartbeat stale: declared hung if it stays still",
            theme.error(),
        ));
    }
    if let Some(left) = row.breaker_cooldown {
        lines.push(Line::styled(
            format!("breaker open: probes in {}", duration(left)),
            theme.error(),
        ));
    }
    if !row.depends_on.is_empty() {
        let deps: Vec<String> = row
            .depends_on
            .iter()
            .map(|d| format!("{} ({})", d.name, d.condition))
            .collect();
        lines.push(Line::from(vec![
            Span::styled("depends on ", theme.dim()),
            Span::raw(deps.join(", ")),
        ]));
    }
    if !row.waiting_on.is_empty() {
        lines.push(Line::styled(
            format!("waiting for {}", row.waiting_on.join(", ")),
            theme.error(),
        ));
    }
    if !row.calls.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("calls ", theme.dim()),
            Span::raw(row.calls.join(", ")),
        ]));
    }
    for run in row.runs.iter().take(3) {
        let outcome = match &run.outcome {
            None => "running".to_string(),
            Some(Ok(result)) => format!("ok {result}"),
            Some(Err(err)) => format!("failed: {err}"),
        };
        let took = run
            .duration
            .map_or(String::new(), |d| format!(" in {}", duration(d)));
        lines.push(Line::from(format!("run #{}{took}: {outcome}", run.run)));
    }
    for exit in row.exits.iter().take(3) {
        lines.push(Line::styled(
            format!(
                "#{} {}, {} ago",
                exit.replica,
                exit.status,
                duration(exit.ago)
            ),
            theme.dim(),
        ));
    }
    lines
}

/// One replica: its number (highlighted when selected), state, pid, uptime, CPU and memory,
/// and what is wrong with it.
fn replica_line<'a>(
    replica: &crate::api::ReplicaView,
    selected: Option<u32>,
    theme: &Theme,
) -> Line<'a> {
    let (symbol, style) = theme.state(replica.state);
    let mut text = format!(" {:<9}", replica.state.as_str());
    if let Some(pid) = replica.pid {
        text.push_str(&format!(
            " pid {pid:<7} up {:<7} {:>4.1}% {:>6}",
            replica.uptime.map_or("-".to_string(), duration),
            replica.cpu,
            bytes(replica.rss),
        ));
    }
    if replica.restarts > 0 {
        text.push_str(&format!("  {} restarts", replica.restarts));
    }
    if replica.stale {
        text.push_str("  heartbeat stale");
    }
    if let Some(retry_in) = replica.retry_in {
        text.push_str(&format!("  next try in {}", duration(retry_in)));
    }
    let number = if selected == Some(replica.replica) {
        theme.selected()
    } else {
        style
    };
    Line::from(vec![
        Span::styled(format!("#{}", replica.replica), number),
        Span::styled(format!(" {symbol}"), style),
        Span::raw(text),
    ])
}

/// `label ▕██████░░░░▏ 45/120 running`: a bar that reads the same with or without colour.
fn task_line<'a>(task: &TaskView, label: String, width: u16, theme: &Theme) -> Line<'a> {
    let counts = if task.total == 0 {
        format!(" {} {}", task.done, task.state)
    } else {
        format!(" {}/{} {}", task.done, task.total, task.state)
    };
    let room = (width as usize).saturating_sub(label.chars().count() + counts.chars().count() + 2);
    let bar = room.min(40);
    let filled = if task.total == 0 {
        0
    } else {
        ((task.done.min(task.total) as f64 / task.total as f64) * bar as f64).round() as usize
    };
    Line::from(vec![
        Span::raw(label),
        Span::styled("▕", theme.dim()),
        Span::styled("█".repeat(filled), theme.title()),
        Span::styled("░".repeat(bar - filled), theme.dim()),
        Span::styled("▏", theme.dim()),
        Span::raw(counts),
    ])
}

/// `#0 order 17: charge `, cut to [`MAX_LABEL`] characters.
fn task_label(task: &TaskView) -> String {
    format!("#{} {} ", task.replica, task.label)
        .chars()
        .take(MAX_LABEL)
        .collect()
}

/// `41 req/s`, then the events a subscriber takes and the calls a caller makes, when there are
/// any: `0 req/s · 40 ev/s`, `20 req/s · 41 calls/s`.
fn rates(row: &ServiceRow) -> String {
    let mut text = format!("{:.0} req/s", row.request_rate);
    if row.event_rate > 0.0 {
        text.push_str(&format!(" · {:.0} ev/s", row.event_rate));
    }
    if row.call_rate > 0.0 {
        text.push_str(&format!(" · {:.0} calls/s", row.call_rate));
    }
    text
}
