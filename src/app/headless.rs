//! Headless mode: the same supervisor with no terminal UI. It prints lifecycle events and
//! prefixed service logs (within the stack's output budget, [`super::log_output`]), for
//! servers, systemd units and CI; a detached instance (`up -d`, or a console whose terminal
//! went away) prints its lifecycle events to `RUN_DIR/console.log`.

use std::{io::Write, sync::Arc, time::SystemTime};

use tokio::sync::{broadcast, broadcast::error::RecvError};

use crate::{
    app::{
        App, AppError,
        log_output::LogOutput,
        signals::{Signal, Signals},
    },
    event::Event,
    gateway::Bind,
    logs::LogLine,
    stack::{OnHangup, Stack},
    supervisor::{ShutdownReport, SupervisorOptions},
};

/// What a headless instance prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Lifecycle events and every service's log lines (`--headless` in a terminal or a unit).
    EventsAndLogs,
    /// Lifecycle events only: a detached instance, whose output is `RUN_DIR/console.log` (the
    /// services' lines are in their own log files already).
    Events,
}

/// Runs `stack`, with the HTTP gateway on `bind`, until SIGINT or SIGTERM (or a SIGHUP, when
/// the stack's `on_hangup` says stop) or until it is stopped through the admin API, then stops
/// everything gracefully. Returns the shutdown report; the caller turns it into an exit code.
pub async fn run(
    stack: Stack,
    options: SupervisorOptions,
    bind: Bind,
    output: Output,
) -> Result<ShutdownReport, AppError> {
    let mut signals = Signals::install().map_err(AppError::Supervisor)?;
    let services = stack.services.len();
    let name = stack.name.clone();
    let log_dir = stack.run_dir.join("logs");
    let app = App::start(stack, options, bind).await?;
    let events = app.supervisor.events().subscribe();
    let logs = (output == Output::EventsAndLogs).then(|| app.supervisor.logs().subscribe());
    app.begin().await;
    print_line(&format!(
        "switchboard: stack `{name}`, {services} services, pid {}; log files in {}",
        std::process::id(),
        log_dir.display()
    ));
    announce(&app);
    watch(app, events, logs, &mut signals).await
}

/// Says where the instance can be reached.
pub fn announce(app: &App) {
    if let Some(socket) = app.socket() {
        print_line(&format!(
            "switchboard: admin socket {}",
            socket.path().display()
        ));
    }
    match app.gateway() {
        Some(gateway) => {
            let token = match &gateway.token_file {
                Some(file) => format!("admin token in {}", file.display()),
                None => "admin token from the environment".to_string(),
            };
            print_line(&format!(
                "switchboard: gateway on http://{} ({token})",
                gateway.address()
            ));
        }
        None => match app.gateway_problem() {
            Some(problem) => print_line(&format!("switchboard: {problem}")),
            None => print_line("switchboard: no HTTP gateway (off)"),
        },
    }
}

/// Prints lifecycle events (and log lines, with `logs`) of a running stack until a signal
/// or the admin API stops it, then stops everything gracefully. A hangup moves the output to
/// `RUN_DIR/console.log` and goes on, unless the stack's `on_hangup` says stop.
pub async fn watch(
    mut app: App,
    mut events: broadcast::Receiver<Event>,
    mut logs: Option<broadcast::Receiver<Arc<LogLine>>>,
    signals: &mut Signals,
) -> Result<ShutdownReport, AppError> {
    let on_hangup = app.supervisor.stack().console.on_hangup;
    let run_dir = app.supervisor.stack().run_dir.clone();
    let output = LogOutput::new(app.supervisor.stack().console.output_budget);
    loop {
        let report_due = output.report_due();
        tokio::select! {
            () = app.ended() => {
                print_line("switchboard: stopped through the admin API");
                break;
            }
            signal = signals.next() => match signal {
                Signal::Hangup if on_hangup == OnHangup::Detach => {
                    match crate::app::detach::leave_terminal(&run_dir) {
                        Ok(path) => print_line(&format!("switchboard: terminal hung up; going on, output in {}", path.display())),
                        Err(err) => tracing::warn!(cause = %err, "cannot move the output off the terminal"),
                    }
                }
                Signal::Hangup => {
                    print_line("switchboard: terminal hung up; stopping (on_hangup = \"stop\")");
                    break;
                }
                Signal::Terminate(name) => {
                    print_line(&format!("switchboard: {name}: shutting down"));
                    break;
                }
            },
            event = events.recv() => match event {
                Ok(event) => print_event(&event),
                Err(RecvError::Lagged(missed)) => print_line(&format!("switchboard: {missed} events not shown (output too slow)")),
                Err(RecvError::Closed) => {}
            },
            line = next_line(&mut logs) => match line {
                Ok(line) => print_log(&output, &line),
                Err(RecvError::Lagged(missed)) => print_line(&format!("switchboard: {missed} log lines not shown (output too slow)")),
                Err(RecvError::Closed) => logs = None,
            },
            () = sleep_until(report_due), if report_due.is_some() => report_not_printed(&output, false),
        }
    }
    // Lines of services that are stopping are still printed: the stop runs beside this.
    let stopping = app.stop();
    tokio::pin!(stopping);
    let report = loop {
        let report_due = output.report_due();
        tokio::select! {
            report = &mut stopping => break report,
            event = events.recv() => if let Ok(event) = event { print_event(&event) },
            line = next_line(&mut logs) => if let Ok(line) = line { print_log(&output, &line) },
            () = sleep_until(report_due), if report_due.is_some() => report_not_printed(&output, false),
        }
    };
    drain(&mut events, &mut logs, &output);
    report_not_printed(&output, true);
    let report = report?;
    let verdict = if report.clean() {
        "clean".to_string()
    } else {
        format!("forced: {}", report.forced.join(", "))
    };
    print_line(&format!("switchboard: stopped ({verdict})"));
    flush_output();
    Ok(report)
}

async fn next_line(
    logs: &mut Option<broadcast::Receiver<Arc<LogLine>>>,
) -> Result<Arc<LogLine>, RecvError> {
    match logs {
        Some(logs) => logs.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Prints what is still queued when the supervisor ends.
fn drain(
    events: &mut broadcast::Receiver<Event>,
    logs: &mut Option<broadcast::Receiver<Arc<LogLine>>>,
    output: &LogOutput,
) {
    while let Some(Ok(line)) = logs.as_mut().map(broadcast::Receiver::try_recv) {
        print_log(output, &line);
    }
    while let Ok(event) = events.try_recv() {
        print_event(&event);
    }
}

/// `HH:MM:SS.mmm` (UTC), the milliseconds cut, not rounded: rounding printed 59.9996 s as
/// `60.000`.
pub(super) fn clock(at: SystemTime) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// An event's text can carry a service's words (a probe's output, made harmless where it is
/// read); they are made visible here too, as a log line's are, so that no event added later
/// can pass a service's control characters to the operator's terminal.
pub fn print_event(event: &Event) {
    print_line(&format!(
        "{} ● {}",
        clock(event.at),
        crate::logs::line_codec::visible(&event.to_string())
    ));
}

fn print_log(output: &LogOutput, line: &LogLine) {
    if let Some(text) = output.admit(line, std::time::Instant::now()) {
        print_line(&text);
    }
}

/// Says how many log lines the output budget kept from stdout, when that is due.
fn report_not_printed(output: &LogOutput, at_end: bool) {
    if let Some(text) = output.report(std::time::Instant::now(), at_end) {
        print_line(&text);
    }
}

/// Lines waiting for the printer thread. When stdout is slower than the services (a paused
/// pager, a slow SSH link), lines beyond this are dropped and counted, never waited for: the
/// supervisor and the router share one thread, and printing must not stall them.
const PRINT_QUEUE: usize = 8192;

enum Printed {
    Line(String),
    /// Answer once everything queued before has been written.
    Flush(std::sync::mpsc::Sender<()>),
}

struct Printer {
    queue: std::sync::mpsc::SyncSender<Printed>,
    dropped: std::sync::atomic::AtomicU64,
}

fn printer() -> &'static Printer {
    static PRINTER: std::sync::OnceLock<Printer> = std::sync::OnceLock::new();
    PRINTER.get_or_init(|| {
        let (queue, outputs) = std::sync::mpsc::sync_channel::<Printed>(PRINT_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("headless-output".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                for output in outputs {
                    match output {
                        // A closed stdout (piped into `head`) must not take anything down.
                        Printed::Line(line) => {
                            let _ = writeln!(stdout.lock(), "{line}");
                        }
                        Printed::Flush(done) => {
                            let _ = stdout.lock().flush();
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(cause = %err, "cannot start the output thread");
        }
        Printer {
            queue,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    })
}

pub fn print_line(text: &str) {
    use std::sync::atomic::Ordering;
    let printer = printer();
    let dropped = printer.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let notice = format!("switchboard: {dropped} lines not shown (output too slow)");
        if printer.queue.try_send(Printed::Line(notice)).is_err() {
            printer.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }
    if printer
        .queue
        .try_send(Printed::Line(text.to_string()))
        .is_err()
    {
        printer.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits (at most two seconds) until everything queued is on stdout, before the process exits.
pub fn flush_output() {
    let (done, written) = std::sync::mpsc::channel();
    if printer().queue.send(Printed::Flush(done)).is_ok() {
        let _ = written.recv_timeout(std::time::Duration::from_secs(2));
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL only");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// Makes a stack that runs only `job` and what it needs: its dependencies and the services it
/// may call, transitively.
pub fn stack_for_job(stack: &Stack, job: &str) -> Option<Stack> {
    stack.service(job)?;
    let mut keep = vec![job.to_string()];
    let mut i = 0;
    while i < keep.len() {
        if let Some(spec) = stack.service(&keep[i]) {
            for name in spec
                .depends_on
                .iter()
                .map(|d| d.name.clone())
                .chain(spec.calls.iter().cloned())
            {
                if !keep.contains(&name) {
                    keep.push(name);
                }
            }
        }
        i += 1;
    }
    let mut only = stack.clone();
    only.services.retain(|s| keep.contains(&s.name));
    Some(only)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::clock;

    #[test]
    fn the_clock_never_shows_sixty_seconds() {
        let at = |secs: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs);
        assert_eq!(clock(at(59.9996)), "00:00:59.999");
        assert_eq!(clock(at(3599.9999)), "00:59:59.999");
        assert_eq!(clock(at(86_400.0 + 3661.5)), "01:01:01.500");
    }
}
