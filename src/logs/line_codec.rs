//! A line decoder that never fails: an over-long line is cut at the limit (at a character
//! boundary) and the rest of it is dropped. tokio-util's `LinesCodec` returns an error instead,
//! and a `FramedRead` ends at its first error, which would silence the service's log.
//!
//! Control characters are made visible here, as `cat -v` shows them (`ESC` as `^[`, NUL as
//! `^@`), before a line reaches anything: the console's screen, an attached console, headless
//! stdout or a log file. A service's output must never move the operator's cursor, clear their
//! screen or set their terminal's title. Tab stays.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Longest line kept, in bytes.
pub const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Set while dropping the tail of an over-long line.
    discarding: bool,
    /// How far the current buffer was already searched for a newline.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max: usize) -> Self {
        LineCodec {
            max: max.max(1),
            discarding: false,
            scanned: 0,
        }
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        LineCodec::new(MAX_LINE)
    }
}

fn to_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    visible(text.trim_end_matches(['\r', '\n']))
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

/// Cuts `bytes` to at most `max` bytes without splitting a UTF-8 sequence.
fn cut(bytes: &[u8], max: usize) -> String {
    let mut end = max.min(bytes.len());
    while end > 0 && end < bytes.len() && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    let mut text = to_text(&bytes[..end]);
    text.push_str(" …[truncated]");
    text
}

impl Decoder for LineCodec {
    type Item = String;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        loop {
            let newline = src[self.scanned.min(src.len())..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| p + self.scanned);
            match newline {
                Some(at) => {
                    let line = src.split_to(at + 1);
                    self.scanned = 0;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    if line.len() - 1 > self.max {
                        return Ok(Some(cut(&line, self.max)));
                    }
                    return Ok(Some(to_text(&line)));
                }
                None if self.discarding => {
                    src.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                None if src.len() > self.max => {
                    let line = cut(src, self.max);
                    src.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Ok(Some(line));
                }
                None => {
                    self.scanned = src.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        if let Some(line) = self.decode(src)? {
            return Ok(Some(line));
        }
        if src.is_empty() || self.discarding {
            src.clear();
            return Ok(None);
        }
        let line = to_text(src);
        src.clear();
        self.scanned = 0;
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent_to_a_terminal() {
        let mut codec = LineCodec::default();
        let lines = decode_all(
            &mut codec,
            &[b"\x1b[2J\x1b]0;owned\x07 a\tb \x00\x7f \xc2\x9b6n\r\nplain\n"],
        );
        assert_eq!(lines, ["^[[2J^[]0;owned^G a\tb ^@^? \\u{9b}6n", "plain"]);
        for line in &lines {
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "{line:?}"
            );
        }
    }

    fn decode_all(codec: &mut LineCodec, chunks: &[&[u8]]) -> Vec<String> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buf).unwrap() {
                out.push(line);
            }
            assert!(buf.len() <= codec.max + 1, "buffer grew past the limit");
        }
        while let Some(line) = codec.decode_eof(&mut buf).unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut codec = LineCodec::new(100);
        let lines = decode_all(&mut codec, &[b"hel", b"lo\nwor", b"ld\r\n", b"tail"]);
        assert_eq!(lines, ["hello", "world", "tail"]);
    }

    #[test]
    fn truncates_long_lines_and_keeps_going() {
        let mut codec = LineCodec::new(8);
        let long = [b'x'; 30];
        let lines = decode_all(&mut codec, &[&long[..10], &long[10..], b"\nnext\n"]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("xxxxxxxx"));
        assert!(lines[0].ends_with("[truncated]"));
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn never_splits_a_character() {
        let mut codec = LineCodec::new(5);
        let lines = decode_all(&mut codec, &["ééééé\n".as_bytes()]);
        assert!(lines[0].starts_with("éé"));
        assert!(!lines[0].contains('\u{FFFD}'));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut codec = LineCodec::new(100);
        let lines = decode_all(&mut codec, &[b"a\xffb\n"]);
        assert_eq!(lines, ["a\u{FFFD}b"]);
    }
}
