//! Progress handles: a task slot in the segment that the console draws as a progress bar.

use crate::segment::{TaskSlot, TaskState};

/// Progress of one task. Dropping it without [`finish`](Self::finish) or
/// [`fail`](Self::fail) marks the task cancelled.
pub struct Progress {
    slot: Option<TaskSlot>,
}

impl Progress {
    pub(crate) fn new(slot: Option<TaskSlot>) -> Self {
        Progress { slot }
    }

    /// Whether the console can see this task (a slot was free).
    pub fn is_visible(&self) -> bool {
        self.slot.is_some()
    }

    /// Publishes `done` out of `total` units (`total` 0 means unknown).
    pub fn set(&self, done: u64, total: u64) {
        if let Some(slot) = &self.slot {
            slot.set(done, total);
        }
    }

    /// Adds `by` units done.
    pub fn advance(&self, by: u64) {
        if let Some(slot) = &self.slot {
            slot.advance(by);
        }
    }

    /// Changes the label, e.g. to name the current stage.
    pub fn set_label(&self, label: &str) {
        if let Some(slot) = &self.slot {
            slot.set_label(label);
        }
    }

    /// Marks the task done.
    pub fn finish(mut self) {
        if let Some(slot) = self.slot.take() {
            slot.finish(TaskState::Done);
        }
    }

    /// Marks the task failed.
    pub fn fail(mut self) {
        if let Some(slot) = self.slot.take() {
            slot.finish(TaskState::Failed);
        }
    }
}
