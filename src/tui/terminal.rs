//! Owning the real terminal: raw mode and the alternate screen on the way in, restored on the
//! way out, on a panic (ratatui's hook), and on SIGTERM or SIGHUP (the loop ends, then restore).

use std::io::stdout;

use ratatui::crossterm::{
    event::{DisableMouseCapture, EnableMouseCapture, EventStream},
    execute,
};

use super::theme::Theme;
use crate::{
    gateway::{Bind, Gateway},
    headless::termination_signal,
    stack::Stack,
    supervisor::{ShutdownReport, Supervisor, SupervisorOptions},
};

/// Runs the stack under the console UI, with the HTTP gateway on `gateway`; when the UI ends,
/// stops the gateway and then every service gracefully.
pub async fn run(
    stack: Stack,
    options: SupervisorOptions,
    gateway: Bind,
) -> std::io::Result<ShutdownReport> {
    let (supervisor, task) = Supervisor::start(stack, options)?;
    let gateway = match Gateway::start(&supervisor, gateway).await {
        Ok(gateway) => gateway,
        Err(err) => {
            // Nothing was started yet; stop the supervisor's own tasks before failing.
            supervisor.shutdown().await;
            let _ = task.await;
            return Err(std::io::Error::other(err.to_string()));
        }
    };
    let address = gateway.as_ref().map(Gateway::address);
    // The UI subscribes to events on its own thread; a barrier makes sure it has before any
    // service starts, so no early alert is missed.
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel::<()>();
    let ui_supervisor = supervisor.clone();
    let ui = std::thread::Builder::new()
        .name("console-ui".into())
        .spawn(move || -> std::io::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // crossterm's bare reset sequence also cancels bold and reverse; forcing colour
            // output keeps the NO_COLOR theme's attributes intact.
            ratatui::crossterm::style::force_color_output(true);
            let mut terminal = ratatui::init();
            let _ = execute!(stdout(), EnableMouseCapture);
            let result = runtime.block_on(super::run(
                &mut terminal,
                super::LocalSource::new(ui_supervisor).with_gateway(address),
                EventStream::new(),
                termination_signal(),
                Theme::from_env(),
                move || {
                    let _ = subscribed_tx.send(());
                },
                &mut |text| {
                    use std::io::Write;
                    let mut out = stdout();
                    let _ = out.write_all(super::osc52(text).as_bytes());
                    let _ = out.flush();
                },
            ));
            let _ = execute!(stdout(), DisableMouseCapture);
            ratatui::restore();
            result
        })?;
    // An error means the UI thread ended before subscribing: then nothing is started.
    if subscribed.await.is_ok() {
        supervisor.begin().await;
    }
    let ui_result = tokio::task::spawn_blocking(move || ui.join())
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    eprintln!("switchboard: stopping services…");
    if let Some(gateway) = gateway {
        gateway.stop().await;
    }
    supervisor.shutdown().await;
    let report = task
        .await
        .map_err(|err| std::io::Error::other(format!("supervisor failed: {err}")))?;
    match ui_result {
        Ok(Ok(())) => {}
        Ok(Err(err)) => eprintln!("switchboard: console error: {err}"),
        Err(_) => eprintln!("switchboard: the console UI panicked"),
    }
    eprintln!(
        "switchboard: stopped ({})",
        if report.clean() {
            "clean".to_string()
        } else {
            format!("forced: {}", report.forced.join(", "))
        }
    );
    Ok(report)
}
