//! Colours, or, under NO_COLOR, a monochrome theme built from attributes (bold, reversed,
//! underlined, dim) so every state stays distinguishable without colour.

use ratatui::style::{Color, Modifier, Style};

use crate::registry::InstanceState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to anything non-empty (no-color.org).
    pub fn from_env() -> Self {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    pub fn monochrome() -> Self {
        Theme { color: false }
    }

    fn pick(&self, color: Style, mono: Style) -> Style {
        if self.color { color } else { mono }
    }

    pub fn title(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    pub fn dim(&self) -> Style {
        self.pick(
            Style::new().fg(Color::DarkGray),
            Style::new().add_modifier(Modifier::DIM),
        )
    }

    pub fn selected(&self) -> Style {
        self.pick(
            Style::new()
                .bg(Color::Blue)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        )
    }

    pub fn focused_border(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    /// The border of a pane: highlighted while it has the focus.
    pub fn pane_border(&self, focused: bool) -> Style {
        if focused {
            self.focused_border()
        } else {
            self.border()
        }
    }

    pub fn border(&self) -> Style {
        self.pick(Style::new().fg(Color::DarkGray), Style::new())
    }

    pub fn alert(&self) -> Style {
        self.pick(
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
        )
    }

    pub fn error(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Red),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    pub fn highlight(&self) -> Style {
        self.pick(
            Style::new().bg(Color::Yellow).fg(Color::Black),
            Style::new().add_modifier(Modifier::REVERSED | Modifier::UNDERLINED),
        )
    }

    pub fn key(&self) -> Style {
        self.pick(
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    /// A state's symbol and style. The symbols differ, so states read without colour too.
    pub fn state(&self, state: InstanceState) -> (&'static str, Style) {
        use InstanceState::*;
        let (symbol, color, mono) = match state {
            Ready => ("●", Color::Green, Modifier::BOLD),
            Starting => ("◐", Color::Yellow, Modifier::empty()),
            Degraded => ("◆", Color::Yellow, Modifier::BOLD | Modifier::UNDERLINED),
            Stopping => ("◑", Color::Yellow, Modifier::DIM),
            Stopped => ("○", Color::DarkGray, Modifier::DIM),
            Exited => ("◌", Color::Gray, Modifier::DIM),
            Crashed => ("✖", Color::Red, Modifier::BOLD),
            Backoff => ("↻", Color::Magenta, Modifier::ITALIC),
            Failed => ("✖", Color::Red, Modifier::BOLD | Modifier::REVERSED),
            Unreachable => ("⊘", Color::Red, Modifier::BOLD | Modifier::CROSSED_OUT),
        };
        (
            symbol,
            self.pick(Style::new().fg(color), Style::new().add_modifier(mono)),
        )
    }

    /// A stable colour per service name for the log prefix.
    pub fn service(&self, name: &str) -> Style {
        const PALETTE: [Color; 6] = [
            Color::Cyan,
            Color::Green,
            Color::Magenta,
            Color::Blue,
            Color::Yellow,
            Color::LightRed,
        ];
        let hash = name
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        self.pick(
            Style::new().fg(PALETTE[hash as usize % PALETTE.len()]),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }
}
