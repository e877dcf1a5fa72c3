//! The signals a running stack answers: SIGINT and SIGTERM stop it; SIGHUP means its
//! terminal went away, and the stack's `[console] on_hangup` decides.

use tokio::signal::unix::{Signal as Stream, SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: stop the stack.
    Terminate(&'static str),
    /// SIGHUP: the terminal is gone.
    Hangup,
}

pub struct Signals {
    int: Stream,
    term: Stream,
    hup: Stream,
}

impl Signals {
    /// Installs the handlers; from then on these signals no longer end the process.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::Terminate("SIGINT"),
            _ = self.term.recv() => Signal::Terminate("SIGTERM"),
            _ = self.hup.recv() => Signal::Hangup,
        }
    }
}
