//! The service table. Columns have priorities; on a narrow terminal the least important drop
//! out first, so 80 columns still shows what matters.

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Row, Table, TableState},
};

use super::{Areas, bytes, duration, latency};
use crate::{
    api::{ConsoleView, ServiceRow},
    tui::{
        state::{Focus, UiState},
        theme::Theme,
    },
};

struct Column {
    title: &'static str,
    width: u16,
    /// 1 is kept longest.
    priority: u8,
    cell: fn(&ServiceRow) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        title: "SERVICE",
        width: 14,
        priority: 1,
        cell: |r| r.name.clone(),
    },
    Column {
        title: "STATE",
        width: 10,
        priority: 1,
        cell: |_| String::new(),
    },
    Column {
        title: "PID",
        width: 7,
        priority: 3,
        cell: |r| r.pid.map_or("-".into(), |p| p.to_string()),
    },
    Column {
        title: "UP",
        width: 7,
        priority: 2,
        cell: |r| r.uptime.map_or("-".into(), duration),
    },
    Column {
        title: "RST",
        width: 4,
        priority: 1,
        cell: |r| r.restarts.to_string(),
    },
    Column {
        title: "REPL",
        width: 5,
        priority: 3,
        cell: |r| format!("{}/{}", r.ready, r.replicas),
    },
    Column {
        title: "CPU%",
        width: 6,
        priority: 2,
        cell: |r| format!("{:.1}", r.cpu),
    },
    Column {
        title: "RSS",
        width: 7,
        priority: 2,
        cell: |r| bytes(r.rss),
    },
    Column {
        title: "REQ/S",
        width: 7,
        priority: 1,
        cell: |r| format!("{:.0}", r.request_rate),
    },
    Column {
        title: "ERR/S",
        width: 6,
        priority: 2,
        cell: |r| format!("{:.1}", r.error_rate),
    },
    Column {
        title: "P99",
        width: 8,
        priority: 2,
        cell: |r| latency(r.p99_us),
    },
    Column {
        title: "HB",
        width: 6,
        priority: 3,
        cell: |r| {
            r.heartbeat_age
                .map_or("-".into(), |a| format!("{:.1}s", a.as_secs_f32()))
        },
    },
    Column {
        title: "BRK",
        width: 6,
        priority: 4,
        cell: |r| r.breaker.clone(),
    },
    Column {
        title: "VERSION",
        width: 9,
        priority: 4,
        cell: |r| r.version.clone().unwrap_or_default(),
    },
];

/// Columns that fit `width`, in display order.
fn visible(width: u16) -> Vec<&'static Column> {
    let mut budget = width.saturating_sub(2);
    let mut keep = vec![false; COLUMNS.len()];
    for priority in 1..=4 {
        for (i, column) in COLUMNS.iter().enumerate() {
            if column.priority == priority && column.width < budget {
                budget -= column.width + 1;
                keep[i] = true;
            }
        }
    }
    COLUMNS
        .iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

pub fn draw(
    frame: &mut Frame<'_>,
    area: Rect,
    view: &ConsoleView,
    state: &UiState,
    theme: &Theme,
) -> Areas {
    let columns = visible(area.width);
    let rows = state.rows(view);
    let selected = state.selected_index(&rows);
    let header = Row::new(
        columns
            .iter()
            .map(|c| Cell::from(c.title).style(theme.dim())),
    );
    // Only the rows on screen are built: with hundreds of services, formatting every cell of
    // every row would dominate the frame.
    let visible_rows = usize::from(area.height.saturating_sub(3)).max(1);
    let offset = selected.saturating_sub(visible_rows - 1);
    let body: Vec<Row> = rows
        .iter()
        .skip(offset)
        .take(visible_rows)
        .map(|row| {
            Row::new(columns.iter().map(|c| {
                if c.title == "STATE" {
                    // A stale heartbeat shows before it is declared hung, in the style of
                    // the unhealthy.
                    let (text, (symbol, style)) = if row.stale && row.state.has_process() {
                        (
                            "stale",
                            theme.state(crate::registry::InstanceState::Degraded),
                        )
                    } else {
                        (row.state.as_str(), theme.state(row.state))
                    };
                    Cell::from(Line::from(Span::styled(format!("{symbol} {text}"), style)))
                } else if c.title == "SERVICE" && row.job {
                    Cell::from(format!("{} ⚙", row.name))
                } else if c.title == "ERR/S" && row.error_rate > 0.0 {
                    Cell::from((c.cell)(row)).style(theme.error())
                } else {
                    Cell::from((c.cell)(row))
                }
            }))
        })
        .collect();
    let focused = state.focus == Focus::Services;
    let title = if state.filter.is_empty() {
        format!(" services ({}) ", rows.len())
    } else {
        format!(
            " services ({}/{}) filter: {} ",
            rows.len(),
            view.services.len(),
            state.filter
        )
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.pane_border(focused));
    let table = Table::new(body, columns.iter().map(|c| Constraint::Length(c.width)))
        .header(header)
        .block(block)
        .row_highlight_style(if focused {
            theme.selected()
        } else {
            Style::new()
        });
    let mut table_state = TableState::default().with_selected(Some(selected - offset));
    frame.render_stateful_widget(table, area, &mut table_state);
    Areas {
        table_top: Some(area.y + 2),
        table_offset: offset + table_state.offset(),
        ..Areas::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_drop_by_priority() {
        let wide: Vec<&str> = visible(200).iter().map(|c| c.title).collect();
        assert_eq!(wide.len(), COLUMNS.len());
        let narrow: Vec<&str> = visible(78).iter().map(|c| c.title).collect();
        for must in ["SERVICE", "STATE", "RST", "REQ/S"] {
            assert!(narrow.contains(&must), "{narrow:?}");
        }
        assert!(!narrow.contains(&"VERSION"));
        let used: u16 = visible(78).iter().map(|c| c.width + 1).sum();
        assert!(used <= 76);
    }
}
