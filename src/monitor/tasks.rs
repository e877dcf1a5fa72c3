//! Which task slots the console lists. A running task is listed while it runs; a finished one
//! (done, failed or cancelled) for [`FINISHED_KEPT`] after the console first saw it finished,
//! then no more, even while its slot waits to be reused: a service that ran a task an hour ago
//! should not show it for ever. The clock is the console's, as for heartbeats: a service
//! writes no times.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use switchboard_protocol::segment::{TaskRecord, TaskState};

/// How long a finished task stays listed.
pub const FINISHED_KEPT: Duration = Duration::from_secs(60);

/// When the console first saw each finished task of one instance, by (slot, task id).
#[derive(Debug, Default)]
pub struct FinishedTasks {
    seen: HashMap<(usize, u64), Instant>,
}

impl FinishedTasks {
    /// The records of `tasks` to list at `now`; remembers when each finished one was first
    /// seen, and forgets the tasks no longer in the segment.
    pub fn visible(&mut self, tasks: Vec<TaskRecord>, now: Instant) -> Vec<TaskRecord> {
        self.seen.retain(|(slot, id), _| {
            tasks
                .iter()
                .any(|t| t.slot == *slot && t.id == *id && finished(t.state))
        });
        tasks
            .into_iter()
            .filter(|task| {
                if !finished(task.state) {
                    return true;
                }
                let since = *self.seen.entry((task.slot, task.id)).or_insert(now);
                now.saturating_duration_since(since) < FINISHED_KEPT
            })
            .collect()
    }
}

fn finished(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Done | TaskState::Failed | TaskState::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use switchboard_protocol::segment::Validity;

    use super::*;

    fn task(slot: usize, id: u64, state: TaskState) -> TaskRecord {
        TaskRecord {
            slot,
            id,
            label: format!("task {id}"),
            done: 1,
            total: 2,
            state,
            validity: Validity::Valid,
        }
    }

    fn ids(tasks: &[TaskRecord]) -> Vec<u64> {
        tasks.iter().map(|t| t.id).collect()
    }

    #[test]
    fn a_finished_task_leaves_the_list_a_minute_after_it_was_first_seen_finished() {
        let start = Instant::now();
        let mut finished = FinishedTasks::default();
        let running = vec![
            task(0, 1, TaskState::Running),
            task(1, 2, TaskState::Running),
        ];
        assert_eq!(ids(&finished.visible(running, start)), [1, 2]);
        // Task 1 finishes at 10 s; task 2 runs on.
        let later = |secs| start + Duration::from_secs(secs);
        let now = || vec![task(0, 1, TaskState::Done), task(1, 2, TaskState::Running)];
        assert_eq!(ids(&finished.visible(now(), later(10))), [1, 2]);
        assert_eq!(ids(&finished.visible(now(), later(69))), [1, 2]);
        assert_eq!(ids(&finished.visible(now(), later(70))), [2]);
        // A running task is never hidden, however long it runs.
        assert_eq!(ids(&finished.visible(now(), later(10_000))), [2]);
    }

    #[test]
    fn a_reused_slot_starts_a_fresh_clock_and_gone_tasks_are_forgotten() {
        let start = Instant::now();
        let mut finished = FinishedTasks::default();
        finished.visible(vec![task(0, 1, TaskState::Failed)], start);
        let later = start + Duration::from_secs(61);
        // The slot now holds task 3, cancelled: first seen now, so listed.
        let reused = vec![task(0, 3, TaskState::Cancelled)];
        assert_eq!(ids(&finished.visible(reused, later)), [3]);
        assert_eq!(finished.seen.len(), 1, "task 1 is forgotten");
    }
}
