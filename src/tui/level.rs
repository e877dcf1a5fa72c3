//! Log levels read from a line's text, for the log pane's level filter. The common formats:
//! `level=warn` (logfmt), `"level":"warn"` (JSON), `[WARN]`, and an upper-case ` WARN ` word
//! (tracing, log4j, Python's logging). A line with none has no level.

/// A line's severity, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// The level filter's next setting: everything, then info and up, warn and up, errors
    /// only, and everything again.
    pub fn next_filter(filter: Option<Level>) -> Option<Level> {
        match filter {
            None => Some(Level::Info),
            Some(Level::Info) => Some(Level::Warn),
            Some(Level::Warn) => Some(Level::Error),
            Some(_) => None,
        }
    }

    fn from_word(word: &str) -> Option<Level> {
        Some(match word.to_ascii_lowercase().as_str() {
            "error" | "err" | "fatal" | "critical" | "crit" | "panic" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" | "notice" => Level::Info,
            "debug" | "trace" => Level::Debug,
            _ => return None,
        })
    }

    /// The level a line states, if it states one.
    pub fn of(text: &str) -> Option<Level> {
        // Only the head: a level sits near the start, and a long line costs no more.
        let head = match text.char_indices().nth(160) {
            Some((at, _)) => &text[..at],
            None => text,
        };
        let lower = head.to_ascii_lowercase();
        for key in ["level=", "lvl=", "\"level\":", "\"level\" :"] {
            if let Some(at) = lower.find(key) {
                let value = lower[at + key.len()..].trim_start().trim_start_matches('"');
                let word: String = value
                    .chars()
                    .take_while(char::is_ascii_alphabetic)
                    .collect();
                if let Some(level) = Level::from_word(&word) {
                    return Some(level);
                }
            }
        }
        // `[WARN]`, `[warn]`, and upper-case words: ` WARN `, `ERROR:` at the start.
        for word in head.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
            // Where the word sits in `head` (a subslice of it), to look at its neighbours
            // without allocating: this runs for every line the pane filters, every frame.
            let at = word.as_ptr() as usize - head.as_ptr() as usize;
            let bracketed = head[..at].ends_with('[') && head[at + word.len()..].starts_with(']');
            let word = word.trim_end_matches(':');
            let upper = !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase());
            if (bracketed || upper)
                && let Some(level) = Level::from_word(word)
            {
                return Some(level);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Level::{self, *};

    #[test]
    fn reads_the_common_formats() {
        let cases = [
            ("ts=1 level=warn msg=slow", Some(Warn)),
            ("time=1 LEVEL=ERROR x", Some(Error)),
            (r#"{"ts":1,"level":"warn","msg":"x"}"#, Some(Warn)),
            (r#"{"level": "debug"}"#, Some(Debug)),
            ("[WARN] disk almost full", Some(Warn)),
            ("12:00:01 [info] ready", Some(Info)),
            ("2024-01-01T00:00:00Z  WARN order: slow charge", Some(Warn)),
            ("ERROR: cannot connect", Some(Error)),
            ("an error happened", None),
            ("created user 17", None),
            ("INFORMATION only", None),
        ];
        for (text, level) in cases {
            assert_eq!(Level::of(text), level, "{text}");
        }
    }

    #[test]
    fn the_filter_cycles() {
        let mut filter = None;
        let mut seen = Vec::new();
        for _ in 0..4 {
            filter = Level::next_filter(filter);
            seen.push(filter);
        }
        assert_eq!(seen, [Some(Info), Some(Warn), Some(Error), None]);
    }
}
