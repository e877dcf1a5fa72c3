//! A service's `backlog` and `autoscale` tables: when its backlog (the work waiting inside it)
//! raises an alert, when callers are turned away, and how many replicas the console keeps to
//! hold it. The design is in `docs/backlog.md`.

use std::time::Duration;

/// `backlog = { grow_window, max_age, max_backlog }`. Every key is optional; a service without
/// the table is still watched for nothing but shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BacklogSpec {
    /// Alert when the backlog has grown for longer than this without a fall.
    pub grow_window: Option<Duration>,
    /// Alert when the oldest waiting item is older than this.
    pub max_age: Option<Duration>,
    /// Admission control: past this many waiting items, callers are answered `overloaded`.
    pub max_backlog: Option<u64>,
    /// The methods `max_backlog` refuses; empty: every method. (Reads and acknowledgements
    /// add no work: refusing them only slows the drain.)
    pub max_backlog_methods: Vec<String>,
}

/// `autoscale = { min, max, target_backlog | target_age | target_in_flight, cooldown }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoscaleSpec {
    pub min: u32,
    pub max: u32,
    /// What each replica should hold.
    pub target: ScaleTarget,
    /// The least time between two decisions for this service.
    pub cooldown: Duration,
}

/// The figure autoscaling holds at its target, per replica for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleTarget {
    /// `target_backlog`: waiting items per replica.
    Backlog(u64),
    /// `target_age`: the age of the oldest waiting item.
    OldestAge(Duration),
    /// `target_in_flight`: requests in flight per replica.
    InFlight(u64),
}

impl BacklogSpec {
    /// The bound a call to `method` is held to, if any.
    pub fn admission_bound(&self, method: &str) -> Option<u64> {
        let gated = self.max_backlog_methods.is_empty()
            || self.max_backlog_methods.iter().any(|m| m == method);
        self.max_backlog.filter(|_| gated)
    }
}

/// The cooldown when `autoscale` names none.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(30);
