//! The table's lines: each service, and under an expanded one a line per replica (k9s-style,
//! → expands and ← collapses). Selection moves through both kinds; what a key does on a replica
//! line it does to the replica's service, as the supervisor's commands are per service.
//!
//! Expansion and selection are kept by service name and replica number, never by position, so
//! they survive snapshot refreshes, re-sorting, filtering and scaling, and need nothing but the
//! read model (an attached console works the same).

use super::state::UiState;
use crate::api::{ConsoleView, ReplicaView, ServiceRow};

/// One line of the service table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TableLine<'v> {
    Service(&'v ServiceRow),
    /// A replica of an expanded service, drawn indented under it.
    Replica(&'v ServiceRow, &'v ReplicaView),
}

impl<'v> TableLine<'v> {
    /// The service the line belongs to (itself, or the replica's).
    pub fn service(&self) -> &'v ServiceRow {
        match self {
            TableLine::Service(row) | TableLine::Replica(row, _) => row,
        }
    }

    /// The replica number of a replica line.
    pub fn replica(&self) -> Option<u32> {
        match self {
            TableLine::Service(_) => None,
            TableLine::Replica(_, replica) => Some(replica.replica),
        }
    }
}

impl UiState {
    /// The table's lines: the filtered, sorted services, each expanded one followed by its
    /// replicas in replica order.
    pub fn lines<'v>(&self, view: &'v ConsoleView) -> Vec<TableLine<'v>> {
        let mut lines = Vec::new();
        for row in self.rows(view) {
            lines.push(TableLine::Service(row));
            if self.expanded.contains(&row.name) {
                lines.extend(row.instances.iter().map(|r| TableLine::Replica(row, r)));
            }
        }
        lines
    }

    /// Index of the selected line among `lines`: the selected replica's, else (collapsed, or
    /// scaled away) its service's, else the first.
    pub fn selected_line(&self, lines: &[TableLine<'_>]) -> usize {
        let Some(name) = &self.selected else {
            return 0;
        };
        let at = |replica: Option<u32>| {
            lines
                .iter()
                .position(|l| &l.service().name == name && l.replica() == replica)
        };
        self.selected_replica
            .and_then(|r| at(Some(r)))
            .or_else(|| at(None))
            .unwrap_or(0)
    }

    /// Selects this line (a click, or the cursor landing on it).
    pub fn select_line(&mut self, line: &TableLine<'_>) {
        self.selected = Some(line.service().name.clone());
        self.selected_replica = line.replica();
    }
}

/// →: the selected service's replicas as lines under it.
pub(super) fn expand(state: &mut UiState, view: &ConsoleView) {
    let Some(row) = state.selected_row(view) else {
        return;
    };
    if row.instances.is_empty() {
        // Said, so that a key that seems to do nothing is not a mystery.
        state.set_status(format!("{} has no replicas to show", row.name));
        return;
    }
    state.selected = Some(row.name.clone());
    state.expanded.insert(row.name.clone());
}

/// ←: hide the selected service's replica lines; the selection goes up to the service.
pub(super) fn collapse(state: &mut UiState, view: &ConsoleView) {
    let Some(row) = state.selected_row(view) else {
        return;
    };
    state.selected = Some(row.name.clone());
    state.selected_replica = None;
    state.expanded.remove(&row.name);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::InstanceState;

    fn replica(replica: u32) -> ReplicaView {
        ReplicaView {
            pid: Some(100 + replica),
            ..ReplicaView::new(replica, InstanceState::Ready)
        }
    }

    fn view(replicas: u32) -> ConsoleView {
        let mut order = ServiceRow::new("order", InstanceState::Ready);
        order.instances = (0..replicas).map(replica).collect();
        ConsoleView {
            services: vec![order, ServiceRow::new("user", InstanceState::Ready)],
            ..ConsoleView::default()
        }
    }

    #[test]
    fn a_scaled_away_replica_selects_its_service() {
        let mut state = UiState::new();
        state.expanded.insert("order".into());
        let three = view(3);
        state.select_line(&state.lines(&three)[3]);
        assert_eq!(state.selected_line(&state.lines(&three)), 3);
        let one = view(1);
        assert_eq!(state.selected_line(&state.lines(&one)), 0);
    }
}
