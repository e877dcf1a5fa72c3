//! The local console: the UI on this terminal over this process's stack.
//!
//! The UI ends one of four ways, and only one of them stops the stack without being asked:
//! - `q`, then `s` (or `y`): stop every service, the UI showing what is left, then exit;
//! - `q`, then `d`: detach. The process leaves the terminal ([`detach`]) and
//!   goes on supervising headless; `switchboard attach` shows it again;
//! - the terminal goes away (SIGHUP, `EIO` on a write, input ends): as the stack's
//!   `[console] on_hangup` says, detach (the default) or stop gracefully;
//! - SIGINT or SIGTERM, or `switchboard down`: stop.

use std::io::Write;

use tokio::sync::oneshot;

use super::{
    App, AppError,
    detach::{self, Foreground},
    headless,
    signals::{Signal, Signals},
};
use crate::{
    gateway::{Bind, Gateway},
    stack::{OnHangup, Stack},
    supervisor::{ShutdownReport, SupervisorOptions},
    tui::{self, Exit, LocalSource, state::Quit},
};

/// What the console does once its UI has ended.
enum Next {
    Stop(String),
    /// `q` asked to stop while the UI stays to show the progress.
    StopShown,
    Detach(String),
}

/// Runs `stack` under the console UI, with the HTTP gateway on `bind`, until the operator
/// quits or detaches and the stack is stopped (see the module docs). `foreground` is the
/// parent waiting in the shell ([`detach::hold_terminal`]), when there is one.
pub async fn run(
    stack: Stack,
    options: SupervisorOptions,
    bind: Bind,
    foreground: Option<Foreground>,
) -> Result<ShutdownReport, AppError> {
    let mut signals = Signals::install().map_err(AppError::Supervisor)?;
    let on_hangup = stack.console.on_hangup;
    let mut app = App::start(stack, options, bind).await?;
    let (stop_tx, mut stop_asked) = tokio::sync::mpsc::channel::<()>(1);
    let source = LocalSource::new(app.supervisor.clone())
        .with_gateway(app.gateway().map(Gateway::address))
        .with_gateway_taken(app.gateway_taken())
        .with_stop(stop_tx);
    let (end_ui, ui_ends) = oneshot::channel::<Exit>();
    let (subscribed_tx, subscribed) = oneshot::channel::<()>();
    let ui = tui::terminal::spawn(
        source,
        async move {
            ui_ends
                .await
                .unwrap_or_else(|_| Exit::Shutdown("stopping".into()))
        },
        move || {
            let _ = subscribed_tx.send(());
        },
    )
    .map_err(AppError::Supervisor)?;
    // An error means the UI thread ended before subscribing: then nothing is started.
    if subscribed.await.is_ok() {
        app.begin().await;
    }
    let ui = tokio::task::spawn_blocking(move || ui.join());
    tokio::pin!(ui);
    let hangup = |why: String| match on_hangup {
        OnHangup::Detach => Next::Detach(format!("{why}; detached")),
        OnHangup::Stop => Next::Stop(format!("{why}; stopping (on_hangup = \"stop\")")),
    };
    // Tells the UI to end and waits for it (bounded: a UI stuck on a dead terminal's write
    // must not hold the stack).
    let end = async |exit: Exit, ui: &mut std::pin::Pin<&mut _>| {
        let _ = end_ui.send(exit);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ui).await;
    };
    let next = tokio::select! {
        exit = &mut ui => match exit {
            Ok(Ok(Exit::Quit(Quit::Stop))) => Next::Stop("quit".into()),
            Ok(Ok(Exit::Quit(Quit::Detach))) => Next::Detach("detached".into()),
            Ok(Ok(Exit::TerminalLost(why))) => hangup(why),
            Ok(Ok(Exit::Shutdown(why))) => Next::Stop(why),
            // A bug in the UI must not take the stack down with it.
            _ => Next::Detach("the console UI failed".into()),
        },
        signal = signals.next() => match signal {
            Signal::Hangup => {
                end(Exit::TerminalLost("hangup".into()), &mut ui).await;
                hangup("the terminal hung up".into())
            }
            Signal::Terminate(name) => {
                end(Exit::Shutdown(name.into()), &mut ui).await;
                Next::Stop(format!("{name}: shutting down"))
            }
        },
        () = app.ended() => {
            end(Exit::Shutdown("stopped".into()), &mut ui).await;
            Next::Stop("stopped through the admin API".into())
        }
        Some(()) = stop_asked.recv() => Next::StopShown,
    };
    match next {
        Next::StopShown => {
            // The UI owns the terminal until nothing runs (it ends by itself then): nothing
            // may be written to it before. Bounded, as above, should the UI be stuck.
            let report = app.stop().await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut ui).await;
            if let Ok(report) = &report {
                let _ = writeln!(
                    std::io::stderr(),
                    "switchboard: quit; stopped ({})",
                    verdict(report)
                );
            }
            report
        }
        Next::Stop(why) => stop(app, &why).await,
        Next::Detach(why) => detach(app, &why, foreground, &mut signals).await,
    }
}

/// The console has given the terminal back: stops the stack, saying so on stderr.
async fn stop(app: App, why: &str) -> Result<ShutdownReport, AppError> {
    let _ = writeln!(std::io::stderr(), "switchboard: {why}; stopping services…");
    let report = app.stop().await;
    if let Ok(report) = &report {
        let _ = writeln!(
            std::io::stderr(),
            "switchboard: stopped ({})",
            verdict(report)
        );
    }
    report
}

/// The console has gone (`q` `d`, or a hang-up): the shell gets its prompt back, output moves
/// to `RUN_DIR/console.log`, and this process supervises on, headless, until it is stopped.
async fn detach(
    app: App,
    why: &str,
    mut foreground: Option<Foreground>,
    signals: &mut Signals,
) -> Result<ShutdownReport, AppError> {
    let run_dir = app.supervisor.stack().run_dir.clone();
    if let Some(foreground) = &mut foreground {
        foreground.detached(&detached_message(&app, why));
    }
    if let Err(err) = detach::leave_terminal(&run_dir) {
        tracing::warn!(cause = %err, "cannot move the output off the terminal");
    }
    headless::print_line(&format!(
        "switchboard: {why}; pid {} goes on supervising",
        std::process::id()
    ));
    let events = app.supervisor.events().subscribe();
    headless::watch(app, events, None, signals).await
}

fn verdict(report: &ShutdownReport) -> String {
    if report.clean() {
        "clean".to_string()
    } else {
        format!("forced: {}", report.forced.join(", "))
    }
}

/// What the shell shows when the console detaches.
fn detached_message(app: &App, why: &str) -> String {
    let stack = &app.supervisor.stack();
    let file = stack
        .source
        .as_ref()
        .map_or(String::new(), |f| format!(" {}", f.display()));
    format!(
        "switchboard: {why}: stack `{}` keeps running as pid {}\n  attach: switchboard attach{file}\n  stop:   switchboard down{file}\n",
        stack.name,
        std::process::id()
    )
}
