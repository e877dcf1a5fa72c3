//! The console's own state: what is selected, focused, filtered, searched and open. It changes
//! only through [`Action`](super::action::Action)s; rendering only reads it.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use super::level::Level;
use crate::api::{ConsoleView, ServiceRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Services,
    Logs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// The stack file's order.
    #[default]
    Stack,
    Name,
    State,
    Cpu,
    Memory,
    Rate,
    Restarts,
}

impl SortKey {
    pub fn next(self) -> SortKey {
        use SortKey::*;
        match self {
            Stack => Name,
            Name => State,
            State => Cpu,
            Cpu => Memory,
            Memory => Rate,
            Rate => Restarts,
            Restarts => Stack,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Stack => "stack order",
            SortKey::Name => "name",
            SortKey::State => "state",
            SortKey::Cpu => "cpu",
            SortKey::Memory => "memory",
            SortKey::Rate => "req/s",
            SortKey::Restarts => "restarts",
        }
    }
}

/// What a line of typed text is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    Filter,
    Search,
    Command,
    /// Parameters for a run of this job.
    JobParams(String),
}

/// A question the operator must answer with y or n.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    Kill(String),
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Overlay {
    #[default]
    None,
    Help,
    Alerts,
    Deps,
    /// Recent routed calls of the selected service (of all, with none selected).
    Calls,
    Confirm(Confirm),
    Prompt(Prompt, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub at: SystemTime,
    pub service: String,
    /// The replica it is about, when it is about one.
    pub replica: Option<u32>,
    pub text: String,
    /// The event's kind (`breaker`, `gave_up`, ...), for a later event that resolves it.
    pub kind: String,
    /// What resolved it (`circuit breaker closed`), once something did.
    pub resolved: Option<String>,
}

/// Which logs the log pane shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogScope {
    #[default]
    All,
    Selected,
}

#[derive(Debug, Clone, Default)]
pub struct UiState {
    pub focus: Focus,
    /// Name of the selected service (stable across re-sorting and filtering).
    pub selected: Option<String>,
    /// The selected replica line under that service, by replica number (`None`: the service's
    /// own line). See [`table_lines`](super::table_lines).
    pub selected_replica: Option<u32>,
    /// Services whose replicas show as lines under them, by name: it survives refreshes,
    /// re-sorting and filtering.
    pub expanded: BTreeSet<String>,
    pub sort: SortKey,
    pub filter: String,
    pub detail: bool,
    pub zoom: bool,
    pub overlay: Overlay,
    pub log_scope: LogScope,
    pub follow: bool,
    /// Log lines show their time (UTC).
    pub timestamps: bool,
    /// Long log lines wrap instead of being cut at the pane's edge.
    pub wrap: bool,
    /// Only log lines at this level or more severe (and the console's own) show.
    pub level: Option<Level>,
    /// Lines scrolled up from the bottom when not following.
    pub log_scroll: usize,
    pub search: String,
    /// Which match (counted from the bottom) the search is on.
    pub search_match: usize,
    pub alerts: Vec<Alert>,
    /// Lines the help overlay is scrolled down (it may be taller than the terminal).
    pub help_scroll: usize,
    /// Log lines being selected for copying: (anchor, cursor), counted from the newest line of
    /// the pane's scope (0 = the newest).
    pub selection: Option<(usize, usize)>,
    /// A short message for the operator, and when it was set.
    pub status: Option<(String, SystemTime)>,
    /// Set when the console should end, and how.
    pub quit: Option<Quit>,
    /// Set while the stack stops after `q` (the console shows the progress): how many
    /// replicas ran when the stop began.
    pub stopping: Option<usize>,
    /// Lines run in the `:` prompt, for ↑ and ↓.
    pub history: super::history::History,
    /// The Tab completion being cycled in the `:` prompt, until the operator types.
    pub completion: Option<super::completion::Cycle>,
}

/// How the operator chose to leave the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    /// Stop every service, then end.
    Stop,
    /// End the console and leave the stack running (the local console goes on headless;
    /// an attached one just disconnects).
    Detach,
}

impl UiState {
    pub fn new() -> Self {
        UiState {
            follow: true,
            ..UiState::default()
        }
    }

    /// The rows the table shows, filtered and sorted.
    pub fn rows<'v>(&self, view: &'v ConsoleView) -> Vec<&'v ServiceRow> {
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<&ServiceRow> = view
            .services
            .iter()
            .filter(|s| filter.is_empty() || s.name.to_lowercase().contains(&filter))
            .collect();
        match self.sort {
            SortKey::Stack => {}
            SortKey::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            SortKey::State => rows.sort_by_key(|r| state_rank(r)),
            SortKey::Cpu => rows.sort_by(|a, b| b.cpu.total_cmp(&a.cpu)),
            SortKey::Memory => rows.sort_by_key(|r| std::cmp::Reverse(r.rss)),
            SortKey::Rate => rows.sort_by(|a, b| b.request_rate.total_cmp(&a.request_rate)),
            SortKey::Restarts => rows.sort_by_key(|r| std::cmp::Reverse(r.restarts)),
        }
        rows
    }

    /// Index of the selected row among `rows`, defaulting to the first.
    pub fn selected_index(&self, rows: &[&ServiceRow]) -> usize {
        self.selected
            .as_ref()
            .and_then(|name| rows.iter().position(|r| &r.name == name))
            .unwrap_or(0)
    }

    pub fn selected_row<'v>(&self, view: &'v ConsoleView) -> Option<&'v ServiceRow> {
        let rows = self.rows(view);
        let index = self.selected_index(&rows);
        rows.get(index).copied()
    }

    pub fn set_status(&mut self, text: impl Into<String>) {
        self.status = Some((text.into(), SystemTime::now()));
    }

    /// The status line, if it is recent enough to show.
    pub fn current_status(&self) -> Option<&str> {
        self.status
            .as_ref()
            .filter(|(_, at)| at.elapsed().unwrap_or_default() < Duration::from_secs(6))
            .map(|(text, _)| text.as_str())
    }
}

fn state_rank(row: &ServiceRow) -> u8 {
    use crate::registry::InstanceState::*;
    match row.state {
        Unreachable | Failed => 0,
        Crashed => 1,
        Backoff => 2,
        Degraded => 3,
        Starting | Stopping => 4,
        Ready => 5,
        Exited => 6,
        Stopped => 7,
    }
}
