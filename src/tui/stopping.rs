//! Quitting shows progress: after `q` stops the stack, the console stays on screen and says
//! what is being stopped and what is left, until nothing runs.

use crate::api::ConsoleView;

/// The replicas that still have a process, as `name#replica`: those being stopped first, then
/// the rest in the stack's order.
pub fn left(view: &ConsoleView) -> Vec<String> {
    let mut stopping = Vec::new();
    let mut running = Vec::new();
    for row in &view.services {
        for replica in row.instances.iter().filter(|r| r.state.has_process()) {
            let name = format!("{}#{}", row.name, replica.replica);
            if replica.state == crate::registry::InstanceState::Stopping {
                stopping.push(name);
            } else {
                running.push(name);
            }
        }
        // A row without its replicas listed (an older attached instance) counts as one.
        if row.instances.is_empty() && row.state.has_process() {
            running.push(row.name.clone());
        }
    }
    stopping.extend(running);
    stopping
}

/// `stopping: 3 of 7 left: order#0, user#0, …`; `total` is how many ran when the stop began.
pub fn progress(view: &ConsoleView, total: usize) -> String {
    const SHOWN: usize = 4;
    let left = left(view);
    let mut names = left
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if left.len() > SHOWN {
        names.push_str(", …");
    }
    format!(
        "stopping: {} of {} left: {names}",
        left.len(),
        total.max(left.len())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{ReplicaView, ServiceRow},
        registry::InstanceState,
    };

    fn replica(replica: u32, state: InstanceState) -> ReplicaView {
        ReplicaView::new(replica, state)
    }

    #[test]
    fn progress_names_what_is_being_stopped_first() {
        let mut order = ServiceRow::new("order", InstanceState::Ready);
        order.instances = vec![
            replica(0, InstanceState::Ready),
            replica(1, InstanceState::Stopping),
        ];
        let mut user = ServiceRow::new("user", InstanceState::Stopped);
        user.instances = vec![replica(0, InstanceState::Stopped)];
        let view = ConsoleView {
            services: vec![order, user],
            ..ConsoleView::default()
        };
        assert_eq!(left(&view), ["order#1", "order#0"]);
        assert_eq!(
            progress(&view, 3),
            "stopping: 2 of 3 left: order#1, order#0"
        );
    }
}
