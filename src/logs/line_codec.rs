//! Bytes to log lines. [`Lines`] splits what a pipe gives, a chunk at a time, and never fails:
//! an over-long line is cut at the limit (at a character boundary) and the rest of it is
//! skipped. Its caller decides line by line what to keep, and can drop the rest of a chunk
//! unlooked-at (only its newlines are counted): a flood beyond the log budget costs a `memchr`
//! over its bytes, not a `String` per line.
//!
//! Control characters are made visible here, as `cat -v` shows them (`ESC` as `^[`, NUL as
//! `^@`), before a line reaches anything: the console's screen, an attached console, headless
//! stdout or a log file. A service's output must never move the operator's cursor, clear their
//! screen or set their terminal's title. Tab stays.

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 8 * 1024;

/// One line as found in the pipe: its bytes without the newline, at most the limit.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// It was longer than the limit, and this is its start.
    pub cut: bool,
}

impl Line<'_> {
    /// The line as text: invalid UTF-8 replaced, control characters made visible, a cut marked.
    pub fn text(&self) -> String {
        if !self.cut {
            return to_text(self.bytes);
        }
        let mut text = to_text(whole_chars(self.bytes));
        text.push_str(" …[truncated]");
        text
    }
}

/// What the caller wants after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    More,
    /// Drop the rest of this chunk, counting its lines only.
    DropRest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    No,
    /// The rest of a line already handed over cut.
    Cut,
    /// The rest of a line dropped with [`Next::DropRest`]: counted when it ends.
    Dropped,
}

/// Splits a byte stream, a chunk at a time, into lines. Holds at most one line's bytes between
/// chunks: the one still open.
#[derive(Debug)]
pub struct Lines {
    max: usize,
    open: Vec<u8>,
    skip: Skip,
}

impl Default for Lines {
    fn default() -> Self {
        Lines::new(MAX_LINE)
    }
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Lines {
            max: max.max(1),
            open: Vec::new(),
            skip: Skip::No,
        }
    }

    /// Hands every line that ends in `chunk` to `take`, and an over-long one as soon as it
    /// passes the limit. Returns the lines dropped after `take` said [`Next::DropRest`].
    pub fn feed(&mut self, mut chunk: &[u8], mut take: impl FnMut(Line<'_>) -> Next) -> u64 {
        let mut unseen = 0;
        while !chunk.is_empty() {
            let (piece, ends) = match memchr::memchr(b'\n', chunk) {
                Some(at) => {
                    let piece = &chunk[..at];
                    chunk = &chunk[at + 1..];
                    (piece, true)
                }
                None => (std::mem::take(&mut chunk), false),
            };
            match (self.skip, ends) {
                (Skip::No, _) => {}
                (_, false) => continue,
                (Skip::Cut, true) => {
                    self.skip = Skip::No;
                    continue;
                }
                (Skip::Dropped, true) => {
                    self.skip = Skip::No;
                    unseen += 1;
                    continue;
                }
            }
            let room = self.max - self.open.len();
            let next = if piece.len() > room {
                let next = self.hand_over(&piece[..room], true, &mut take);
                if !ends {
                    self.skip = Skip::Cut;
                }
                next
            } else if ends {
                self.hand_over(piece, false, &mut take)
            } else {
                self.open.extend_from_slice(piece);
                Next::More
            };
            if next == Next::DropRest {
                return unseen + self.drop_rest(chunk);
            }
        }
        unseen
    }

    /// At the end of the stream: hands over the last line if it had no newline. Returns 1 when
    /// that line was being dropped (it is counted now), else 0.
    pub fn finish(&mut self, mut take: impl FnMut(Line<'_>) -> Next) -> u64 {
        let skip = std::mem::replace(&mut self.skip, Skip::No);
        if skip == Skip::Dropped {
            return 1;
        }
        if skip == Skip::No && !self.open.is_empty() {
            self.hand_over(&[], false, &mut take);
        }
        self.open.clear();
        0
    }

    /// The open line's bytes plus `tail`, handed to `take`; the open line is then empty.
    fn hand_over(
        &mut self,
        tail: &[u8],
        cut: bool,
        take: &mut impl FnMut(Line<'_>) -> Next,
    ) -> Next {
        let next = if self.open.is_empty() {
            take(Line { bytes: tail, cut })
        } else {
            self.open.extend_from_slice(tail);
            take(Line {
                bytes: &self.open,
                cut,
            })
        };
        self.open.clear();
        next
    }

    /// Counts the lines that end in `rest`; one still open at its end is counted when it ends.
    fn drop_rest(&mut self, rest: &[u8]) -> u64 {
        if rest.last().is_some_and(|&b| b != b'\n') {
            self.skip = Skip::Dropped;
        }
        memchr::memchr_iter(b'\n', rest).count() as u64
    }
}

fn to_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    visible(&String::from_utf8_lossy(bytes))
}

/// `bytes` without a last UTF-8 sequence that the cut left incomplete.
fn whole_chars(bytes: &[u8]) -> &[u8] {
    for back in 1..=bytes.len().min(4) {
        let at = bytes.len() - back;
        let lead = bytes[at];
        if lead & 0xC0 == 0x80 {
            continue;
        }
        let wants = match lead {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if wants > back { &bytes[..at] } else { bytes };
    }
    bytes
}

/// `text` with every control character but tab written as `^X` (C0 and DEL) or `\u{80}`..
/// (C1), so none reaches a terminal. Most lines have none and are copied as they are.
pub fn visible(text: &str) -> String {
    let is_control = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `chunks`, as text, and what was dropped; `keep` says how many lines to take
    /// before dropping the rest of each chunk.
    fn split(max: usize, chunks: &[&[u8]], keep: usize) -> (Vec<String>, u64) {
        let mut lines = Lines::new(max);
        let mut out = Vec::new();
        let mut dropped = 0;
        for chunk in chunks {
            let mut taken = 0;
            let mut refused = 0;
            dropped += lines.feed(chunk, |line| {
                if taken == keep {
                    refused += 1;
                    return Next::DropRest;
                }
                taken += 1;
                out.push(line.text());
                Next::More
            });
            dropped += refused;
            assert!(lines.open.len() <= max, "the open line grew past the limit");
        }
        dropped += lines.finish(|line| {
            out.push(line.text());
            Next::More
        });
        (out, dropped)
    }

    #[test]
    fn every_budget_can_keep_the_longest_line() {
        assert!(MAX_LINE as u64 <= crate::stack::LogBudget::MIN_BYTES);
    }

    #[test]
    fn control_characters_are_shown_not_sent_to_a_terminal() {
        let (lines, _) = split(
            MAX_LINE,
            &[b"\x1b[2J\x1b]0;owned\x07 a\tb \x00\x7f \xc2\x9b6n\r\nplain\n"],
            usize::MAX,
        );
        assert_eq!(lines, ["^[[2J^[]0;owned^G a\tb ^@^? \\u{9b}6n", "plain"]);
        for line in &lines {
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "{line:?}"
            );
        }
    }

    #[test]
    fn splits_lines_across_chunks() {
        let (lines, dropped) = split(100, &[b"hel", b"lo\nwor", b"ld\r\n", b"tail"], 9);
        assert_eq!(lines, ["hello", "world", "tail"]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn truncates_long_lines_and_keeps_going() {
        let long = [b'x'; 30];
        let (lines, _) = split(8, &[&long[..10], &long[10..], b"\nnext\n"], 9);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("xxxxxxxx"));
        assert!(lines[0].ends_with("[truncated]"));
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn never_splits_a_character() {
        let (lines, _) = split(5, &["ééééé\n".as_bytes()], 9);
        assert!(lines[0].starts_with("éé"));
        assert!(!lines[0].contains('\u{FFFD}'));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (lines, _) = split(100, &[b"a\xffb\n"], 9);
        assert_eq!(lines, ["a\u{FFFD}b"]);
    }

    #[test]
    fn dropping_the_rest_counts_every_line_once() {
        // Two lines kept per chunk, the third refused (counted by the caller), the rest dropped
        // unseen, with the line left open at a chunk's end counted when it ends.
        let (lines, dropped) = split(100, &[b"a\nb\nc\nd\ne", b"e\nf\ng\nh\ni\n", b"j"], 2);
        assert_eq!(lines, ["a", "b", "f", "g", "j"]);
        // c refused, d and e dropped; h refused, i dropped.
        assert_eq!(dropped, 5);
        let (lines, dropped) = split(100, &[b"a\nb\nc\nd"], 1);
        assert_eq!(lines, ["a"]);
        // b refused, c dropped, d dropped at the end of the stream.
        assert_eq!(dropped, 3);
    }
}
