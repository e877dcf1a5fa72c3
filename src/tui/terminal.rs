//! Owning the real terminal: raw mode, the alternate screen and the mouse on the way in, each
//! undone on the way out and on a panic.
//!
//! A terminal can vanish under the console (a dropped SSH session): writes then fail with
//! `EIO` and restoring fails too. Nothing here panics or prints when that happens; ratatui's
//! own `init`/`restore` are not used because their panic hook `eprintln!`s, which panics
//! again on a dead stderr and aborts the process (and with it, supervision).

use std::{
    future::Future,
    io::{Stdout, Write, stdout},
    thread::JoinHandle,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        event::{DisableMouseCapture, EnableMouseCapture, EventStream},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};

use futures::StreamExt;

use super::{ConsoleSource, Exit, theme::Theme};

/// Runs the console UI against `source` on the real terminal, on a thread of its own: `draw`
/// blocks on the terminal, and over a slow link that must never hold up routing or
/// supervision. `subscribed` is called once the UI listens for events (start the stack
/// after it, so no early alert is missed). The thread ends with how the UI ended.
pub fn spawn<S: ConsoleSource>(
    source: S,
    shutdown: impl Future<Output = Exit> + Send + 'static,
    subscribed: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<Exit>> {
    std::thread::Builder::new()
        .name("console-ui".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => return Exit::TerminalLost(format!("cannot start the UI: {err}")),
            };
            let mut terminal = match enter() {
                Ok(terminal) => terminal,
                Err(err) => {
                    leave();
                    return Exit::TerminalLost(format!("cannot set up the terminal: {err}"));
                }
            };
            let exit = runtime.block_on(super::run(
                &mut terminal,
                source,
                EventStream::new().inspect(injected_fault),
                shutdown,
                Theme::from_env(),
                subscribed,
                &mut |text| {
                    let mut out = stdout();
                    let _ = out.write_all(super::osc52(text).as_bytes());
                    let _ = out.flush();
                },
            ));
            // A lost terminal must not be written to again (not even to restore it): on a
            // hung-up tty every write fails, and on a reused one it would land elsewhere.
            // ratatui's `Terminal` shows the cursor when dropped and `eprintln!`s when that
            // fails, which panics on a dead stderr: so it is not dropped.
            if matches!(exit, Exit::TerminalLost(_)) {
                std::mem::forget(terminal);
            } else {
                leave();
            }
            exit
        })
}

/// Raw mode, the alternate screen and mouse capture; a panic hook that undoes them.
fn enter() -> std::io::Result<Terminal<CrosstermBackend<Stdout>>> {
    // crossterm's bare reset sequence also cancels bold and reverse; forcing colour output
    // keeps the NO_COLOR theme's attributes intact.
    ratatui::crossterm::style::force_color_output(true);
    install_panic_hook();
    enable_raw_mode()?;
    ENTERED.store(true, std::sync::atomic::Ordering::Relaxed);
    execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)?;
    Terminal::new(CrosstermBackend::new(stdout()))
}

/// Undoes what the UI set up (raw mode, the alternate screen, the mouse), step by step, ignoring what fails: the terminal may be gone.
pub fn leave() {
    ENTERED.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = execute!(stdout(), DisableMouseCapture, LeaveAlternateScreen);
    let _ = disable_raw_mode();
    let _ = execute!(stdout(), ratatui::crossterm::cursor::Show);
}

/// Whether the UI holds the terminal now (raw mode set, not left yet).
static ENTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`leave`], when the UI holds the terminal; for a process about to exit from elsewhere.
pub fn leave_if_entered() {
    if ENTERED.load(std::sync::atomic::Ordering::Relaxed) {
        leave();
    }
}

/// A fault for the tests, in debug builds only: with `SWITCHBOARD_TEST_UI_PANIC` set, F12
/// panics the UI thread, so a test can show the real terminal restored and the stack kept
/// (tests/attach.rs). Release builds compile this to nothing.
fn injected_fault(event: &std::io::Result<ratatui::crossterm::event::Event>) {
    #[cfg(debug_assertions)]
    {
        use ratatui::crossterm::event::{Event, KeyCode};
        if let Ok(Event::Key(key)) = event
            && key.code == KeyCode::F(12)
            && std::env::var_os("SWITCHBOARD_TEST_UI_PANIC").is_some()
        {
            panic!("a fault injected for a test (SWITCHBOARD_TEST_UI_PANIC)");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = event;
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave();
            // std's default hook ignores a failed write to stderr.
            previous(info);
        }));
    });
}
