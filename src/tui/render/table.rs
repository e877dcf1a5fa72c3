//! The service table. Columns have ranks; on a narrow terminal the least important drop out
//! first. What shows trouble (state, restarts, heartbeat age, breaker) outranks every cosmetic
//! column at every width, and is never dropped in favour of a lower-ranked one. Replicas and
//! PID come next (a PID that changes is a restart); beside the side pane at 120 columns the
//! rates give way to them, the detail showing the selected service's.
//!
//! An expanded service (→) has a line per replica under it, in the same columns: a replica has
//! a state, PID, uptime, restarts, CPU and RSS, and the rest of its line is blank (see
//! [`table_lines`](crate::tui::table_lines)).

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::Style,
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Row, Table, TableState},
};

use super::{Areas, bytes, duration, p99};
use crate::{
    api::{ConsoleView, ReplicaView, ServiceRow},
    registry::InstanceState,
    tui::{
        state::{Focus, UiState},
        table_lines::TableLine,
        theme::Theme,
    },
};

struct Column {
    title: &'static str,
    width: u16,
    /// 1 is kept longest; each column has its own.
    rank: u8,
    /// It shows trouble: when it does not fit, no column ranked below it is shown either (a
    /// narrow table must not show RST and hide STATE).
    trouble: bool,
    cell: fn(&ServiceRow) -> String,
    /// The cell on a replica's line, where a replica has that figure (else blank).
    replica: Option<fn(&ReplicaView) -> String>,
}

const COLUMNS: &[Column] = &[
    Column {
        title: "SERVICE",
        width: 14,
        rank: 1,
        trouble: true,
        cell: |r| r.name.clone(),
        replica: Some(|r| format!("  #{}", r.replica)),
    },
    // Shown only when some service runs on another host than the console's.
    Column {
        title: "HOST",
        width: 8,
        rank: 6,
        trouble: false,
        cell: |r| r.host.clone().unwrap_or_default(),
        replica: None,
    },
    Column {
        title: "STATE",
        width: 10,
        rank: 2,
        trouble: true,
        cell: |_| String::new(),
        replica: Some(|_| String::new()),
    },
    Column {
        title: "PID",
        width: 7,
        rank: 8,
        trouble: false,
        cell: |r| r.pid.map_or("-".into(), |p| p.to_string()),
        replica: Some(|r| r.pid.map_or("-".into(), |p| p.to_string())),
    },
    Column {
        title: "UP",
        width: 7,
        rank: 14,
        trouble: false,
        cell: |r| r.uptime.map_or("-".into(), duration),
        replica: Some(|r| r.uptime.map_or("-".into(), duration)),
    },
    Column {
        title: "RST",
        width: 4,
        rank: 3,
        trouble: true,
        cell: |r| r.restarts.to_string(),
        replica: Some(|r| r.restarts.to_string()),
    },
    Column {
        title: "REPL",
        width: 5,
        rank: 7,
        trouble: false,
        cell: |r| format!("{}/{}", r.ready, r.replicas),
        replica: None,
    },
    Column {
        title: "CPU%",
        width: 6,
        rank: 15,
        trouble: false,
        cell: |r| format!("{:.1}", r.cpu),
        replica: Some(|r| format!("{:.1}", r.cpu)),
    },
    Column {
        title: "RSS",
        width: 7,
        rank: 16,
        trouble: false,
        cell: |r| bytes(r.rss),
        replica: Some(|r| bytes(r.rss)),
    },
    Column {
        title: "BACKLOG",
        width: 7,
        rank: 9,
        trouble: false,
        cell: |r| backlog(&r.backlog),
        // A replica's own count, no trend (the history is the service's); none without a
        // process.
        replica: Some(|r| match r.pid {
            Some(_) => count(r.backlog.waiting),
            None => "-".into(),
        }),
    },
    Column {
        title: "REQ/S",
        width: 5,
        rank: 11,
        trouble: false,
        cell: |r| request_rate(r.request_rate, r.event_rate),
        replica: None,
    },
    Column {
        title: "ERR/S",
        width: 5,
        rank: 10,
        trouble: false,
        cell: |r| error_rate(r.error_rate),
        replica: None,
    },
    Column {
        title: "P99",
        width: 7,
        rank: 12,
        trouble: false,
        cell: |r| p99(r.p99_us),
        replica: None,
    },
    Column {
        title: "AGE",
        width: 6,
        rank: 13,
        trouble: false,
        cell: |r| r.backlog.oldest_age.map_or("-".into(), duration),
        replica: Some(|r| r.backlog.oldest_age.map_or("-".into(), duration)),
    },
    Column {
        title: "HB",
        width: 6,
        rank: 4,
        trouble: true,
        cell: |r| r.heartbeat_age.map_or("-".into(), heartbeat_age),
        replica: None,
    },
    Column {
        title: "BRK",
        width: 6,
        rank: 5,
        trouble: true,
        cell: |r| breaker(&r.breaker),
        replica: None,
    },
    Column {
        title: "VERSION",
        width: 9,
        rank: 17,
        trouble: false,
        cell: |r| r.version.clone().unwrap_or_default(),
        replica: None,
    },
];

/// Items waiting, shortened to fit (`12.3k`), with the trend: ↑ rising, ↓ falling, → flat.
fn backlog(view: &crate::api::BacklogView) -> String {
    let arrow = match view.trend.as_str() {
        "rising" => "↑",
        "falling" => "↓",
        _ => "→",
    };
    format!("{}{arrow}", count(view.waiting))
}

/// A count shortened to fit six columns: `9999`, `12.3k`, `4.5M`.
fn count(n: u64) -> String {
    match n {
        n if n < 10_000 => n.to_string(),
        n if n < 1_000_000 => format!("{:.1}k", n as f64 / 1000.0),
        n => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// Requests a second in five columns. A subscriber's work is events: shown, marked `ev`, when
/// it takes no requests (in thousands from 1000, `12kev`, to fit).
fn request_rate(requests: f64, events: f64) -> String {
    if requests == 0.0 && events > 0.0 {
        if events < 999.5 {
            format!("{events:.0}ev")
        } else {
            format!("{:.0}kev", events / 1000.0)
        }
    } else if requests < 99_999.5 {
        format!("{requests:.0}")
    } else {
        format!("{:.0}k", requests / 1000.0)
    }
}

/// Errors a second in five columns: tenths while they matter, whole numbers from 100 on
/// (`1234.5` would be cut).
fn error_rate(rate: f64) -> String {
    if rate < 99.95 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// A breaker's state in its six columns: `half-open` would be cut to `half-o`.
fn breaker(state: &str) -> String {
    match state {
        "half-open" => "half".into(),
        other => other.into(),
    }
}

/// A heartbeat's age in tenths of a second while that matters (a late beat shows before the
/// service is declared hung), then as a duration that fits the column (`1234.5s` would not).
fn heartbeat_age(age: std::time::Duration) -> String {
    if age.as_secs() < 100 {
        format!("{:.1}s", age.as_secs_f32())
    } else {
        duration(age)
    }
}

/// The SERVICE column's width: its full 14 unless that would leave STATE no room.
fn service_width(budget: u16) -> u16 {
    14.min(budget.saturating_sub(12)).max(6)
}

/// Columns that fit `width`, in display order, with their widths; HOST only with `hosts`.
fn visible(width: u16, hosts: bool) -> Vec<(&'static Column, u16)> {
    let mut budget = width.saturating_sub(2);
    let mut order: Vec<usize> = (0..COLUMNS.len()).collect();
    order.sort_by_key(|&i| COLUMNS[i].rank);
    let mut keep = vec![None; COLUMNS.len()];
    for i in order {
        let column = &COLUMNS[i];
        if column.title == "HOST" && !hosts {
            continue;
        }
        let width = if column.title == "SERVICE" {
            service_width(budget)
        } else {
            column.width
        };
        // The last column needs no gap after it.
        if width <= budget {
            budget = budget.saturating_sub(width + 1);
            keep[i] = Some(width);
        } else if column.trouble {
            break;
        }
    }
    COLUMNS
        .iter()
        .zip(keep)
        .filter_map(|(c, k)| k.map(|w| (c, w)))
        .collect()
}

pub fn draw(
    frame: &mut Frame<'_>,
    area: Rect,
    view: &ConsoleView,
    state: &UiState,
    theme: &Theme,
) -> Areas {
    let hosts = view.services.iter().any(|s| s.host.is_some());
    let columns = visible(area.width, hosts);
    let lines = state.lines(view);
    let selected = state.selected_line(&lines);
    let header = Row::new(
        columns
            .iter()
            .map(|(c, _)| Cell::from(c.title).style(theme.dim())),
    );
    // Only the lines on screen are built: with hundreds of services, formatting every cell of
    // every row would dominate the frame.
    let visible_rows = usize::from(area.height.saturating_sub(3)).max(1);
    let offset = selected.saturating_sub(visible_rows - 1);
    let body: Vec<Row> = lines
        .iter()
        .skip(offset)
        .take(visible_rows)
        .map(|line| match line {
            TableLine::Service(row) => {
                service_row(row, state.expanded.contains(&row.name), &columns, theme)
            }
            TableLine::Replica(_, replica) => replica_row(replica, &columns, theme),
        })
        .collect();
    let focused = state.focus == Focus::Services;
    let services = lines
        .iter()
        .filter(|l| matches!(l, TableLine::Service(_)))
        .count();
    let title = if state.filter.is_empty() {
        format!(" services ({services}) ")
    } else {
        format!(
            " services ({services}/{}) filter: {} ",
            view.services.len(),
            state.filter
        )
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(theme.pane_border(focused));
    let table = Table::new(body, columns.iter().map(|(_, w)| Constraint::Length(*w)))
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

/// A state as the STATE column shows it. A stale heartbeat shows before it is declared hung,
/// in the style of the unhealthy. `unreachable`, the one name longer than the column, is cut
/// to `unreach.` (the detail pane and `ps` say it whole).
fn state_cell(state: InstanceState, stale: bool, theme: &Theme) -> Cell<'static> {
    let (text, (symbol, style)) = if stale && state.has_process() {
        ("stale", theme.state(InstanceState::Degraded))
    } else if state == InstanceState::Unreachable {
        ("unreach.", theme.state(state))
    } else {
        (state.as_str(), theme.state(state))
    };
    Cell::from(Line::from(Span::styled(format!("{symbol} {text}"), style)))
}

/// A service's line. With more than one replica its name is marked, ▸ collapsed or ▾ expanded,
/// so that the operator knows there is more to see (→).
fn service_row(
    row: &ServiceRow,
    expanded: bool,
    columns: &[(&Column, u16)],
    theme: &Theme,
) -> Row<'static> {
    Row::new(columns.iter().map(|(c, _)| match c.title {
        "STATE" => state_cell(row.state, row.stale, theme),
        "SERVICE" => {
            let mut name = row.name.clone();
            if row.job {
                name.push_str(" ⚙");
            }
            if expanded && !row.instances.is_empty() {
                name.push_str(" ▾");
            } else if row.instances.len() > 1 {
                name.push_str(" ▸");
            }
            Cell::from(name)
        }
        "ERR/S" if row.error_rate > 0.0 => Cell::from((c.cell)(row)).style(theme.error()),
        // Growing over its whole alert window: the operator should look.
        "BACKLOG" if row.backlog.growth_per_s.is_some() => {
            Cell::from((c.cell)(row)).style(theme.alert())
        }
        _ => Cell::from((c.cell)(row)),
    }))
}

/// A replica's line, indented under its service: the columns a replica has figures for, the
/// others blank. A failed replica says when it is tried again, beside its number.
fn replica_row(replica: &ReplicaView, columns: &[(&Column, u16)], theme: &Theme) -> Row<'static> {
    Row::new(columns.iter().map(|(c, _)| match (c.title, c.replica) {
        ("STATE", _) => state_cell(replica.state, replica.stale, theme),
        ("SERVICE", Some(cell)) => match replica.retry_in {
            Some(wait) => Cell::from(Line::from(vec![
                Span::raw(cell(replica)),
                Span::styled(format!(" retry {}", duration(wait)), theme.error()),
            ])),
            None => Cell::from(cell(replica)),
        },
        (_, Some(cell)) => Cell::from(cell(replica)),
        // Not `Cell::default()`: its column span is 0, and the cells after it would shift left.
        (_, None) => Cell::from(""),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_age_has_tenths_and_fits() {
        use std::time::Duration;
        assert_eq!(heartbeat_age(Duration::from_millis(340)), "0.3s");
        assert_eq!(heartbeat_age(Duration::from_millis(12_460)), "12.5s");
        assert!(heartbeat_age(Duration::from_secs(4000)).chars().count() <= 6);
    }

    #[test]
    fn rates_and_breakers_fit_their_columns() {
        assert_eq!(error_rate(0.0), "0.0");
        assert_eq!(error_rate(12.34), "12.3");
        assert_eq!(error_rate(1234.5), "1234");
        assert!(error_rate(99_999.0).chars().count() <= 5);
        assert_eq!(request_rate(41.0, 0.0), "41");
        assert_eq!(request_rate(0.0, 40.0), "40ev");
        assert_eq!(request_rate(0.0, 12_345.0), "12kev");
        assert!(request_rate(123_456.0, 0.0).chars().count() <= 5);
        assert_eq!(breaker("half-open"), "half");
        assert_eq!(breaker("closed"), "closed");
    }

    fn titles(width: u16) -> Vec<&'static str> {
        visible(width, false).iter().map(|(c, _)| c.title).collect()
    }

    #[test]
    fn columns_drop_by_rank() {
        // Every column but HOST, which shows only when some service is on another host.
        assert_eq!(titles(200).len(), COLUMNS.len() - 1);
        assert!(!titles(200).contains(&"HOST"));
        let with_hosts: Vec<&str> = visible(200, true).iter().map(|(c, _)| c.title).collect();
        assert_eq!(with_hosts.len(), COLUMNS.len());
        assert_eq!(with_hosts[1], "HOST", "beside the service's name");
        // Beside the side pane at 120 columns, a multi-host stack still shows where each
        // service runs, and every trouble column.
        let side: Vec<&str> = visible(74, true).iter().map(|(c, _)| c.title).collect();
        for must in ["SERVICE", "HOST", "STATE", "RST", "HB", "BRK"] {
            assert!(side.contains(&must), "{side:?}");
        }
        let narrow = titles(80);
        for must in ["SERVICE", "STATE", "PID", "RST", "REQ/S", "ERR/S"] {
            assert!(narrow.contains(&must), "{narrow:?}");
        }
        assert!(!narrow.contains(&"VERSION"));
        // The 80×24 terminal's table (no side pane).
        let used: u16 = visible(80, false).iter().map(|(_, w)| w + 1).sum();
        assert!(used <= 79);
    }

    /// What shows trouble comes before cosmetic columns at every width, and STATE is never
    /// dropped while RST shows (at 25 columns it was).
    #[test]
    fn trouble_columns_come_first_at_every_width() {
        let trouble = ["SERVICE", "STATE", "RST", "HB", "BRK"];
        for width in 10..=200 {
            let shown = titles(width);
            let cosmetic = shown.iter().any(|t| !trouble.contains(t));
            let missing: Vec<&&str> = trouble.iter().filter(|t| !shown.contains(t)).collect();
            assert!(
                !cosmetic || missing.is_empty(),
                "at {width}: {shown:?} without {missing:?}"
            );
            if shown.contains(&"RST") {
                assert!(shown.contains(&"STATE"), "at {width}: {shown:?}");
            }
            let used: u16 = visible(width, false).iter().map(|(_, w)| w + 1).sum();
            assert!(used <= width.saturating_sub(2) + 1, "at {width}: {used}");
        }
        assert_eq!(titles(25), ["SERVICE", "STATE"]);
        // Beside the side pane at 120 columns (62 % of it). The backlog outranks P99 there: a
        // queue that grows is what the operator must see first (issue 28); PID shows whether a
        // process is there and when it changed (it was left out at 120).
        let side = titles(74);
        for must in [
            "STATE", "RST", "HB", "BRK", "REPL", "PID", "BACKLOG", "ERR/S",
        ] {
            assert!(side.contains(&must), "{side:?}");
        }
    }
}
