//! The `:` line's history: lines run before, newest last, walked with ↑ and ↓ as in a shell.
//! Bounded, so a console left open for weeks keeps only the newest [`KEPT`].

use std::collections::VecDeque;

/// Lines kept; the oldest goes first.
pub const KEPT: usize = 100;

#[derive(Debug, Clone, Default)]
pub struct History {
    lines: VecDeque<String>,
    /// While walking: the index of the line shown, and what was typed before the walk (↓ past
    /// the newest gives it back).
    walk: Option<(usize, String)>,
}

impl History {
    /// Records a line run; a repeat of the newest is kept once. Ends any walk.
    pub fn push(&mut self, line: &str) {
        self.walk = None;
        let line = line.trim();
        if line.is_empty() || self.lines.back().is_some_and(|last| last == line) {
            return;
        }
        if self.lines.len() == KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    /// ↑: the line before the one shown (the newest, from the prompt's own text), or `None`
    /// at the oldest or with no history.
    pub fn older(&mut self, typed: &str) -> Option<String> {
        let index = match &self.walk {
            Some((0, _)) => return None,
            Some((i, _)) => i - 1,
            None => self.lines.len().checked_sub(1)?,
        };
        let draft = self
            .walk
            .take()
            .map_or_else(|| typed.to_string(), |(_, d)| d);
        self.walk = Some((index, draft));
        self.lines.get(index).cloned()
    }

    /// ↓: the line after the one shown, or what was typed before the walk, past the newest.
    /// `None` when not walking.
    pub fn newer(&mut self) -> Option<String> {
        let (index, draft) = self.walk.take()?;
        if index + 1 < self.lines.len() {
            let line = self.lines.get(index + 1).cloned();
            self.walk = Some((index + 1, draft));
            line
        } else {
            Some(draft)
        }
    }

    /// Forgets the walk (the prompt closed): the next ↑ starts from the newest again.
    pub fn stop_walking(&mut self) {
        self.walk = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_walks_back_and_down_returns_to_what_was_typed() {
        let mut history = History::default();
        assert_eq!(history.older("x"), None);
        history.push("restart order");
        history.push("stop user");
        history.push("stop user");
        assert_eq!(history.older("sc").as_deref(), Some("stop user"));
        assert_eq!(history.older("").as_deref(), Some("restart order"));
        assert_eq!(history.older(""), None);
        assert_eq!(history.newer().as_deref(), Some("stop user"));
        assert_eq!(history.newer().as_deref(), Some("sc"));
        assert_eq!(history.newer(), None);
    }

    #[test]
    fn it_keeps_the_newest_hundred() {
        let mut history = History::default();
        for i in 0..KEPT + 20 {
            history.push(&format!("restart s{i}"));
        }
        assert_eq!(history.lines.len(), KEPT);
        let mut oldest = None;
        while let Some(line) = history.older("") {
            oldest = Some(line);
        }
        assert_eq!(oldest.as_deref(), Some("restart s20"));
    }
}
