//! Headless mode: the same supervisor with no terminal UI. It prints lifecycle events and
//! prefixed service logs, for servers, systemd units and CI.

use std::{future::Future, io::Write, sync::Arc, time::SystemTime};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    event::Event,
    gateway::{Bind, Gateway},
    logs::{LogLine, Stream},
    stack::Stack,
    supervisor::{ShutdownReport, Supervisor, SupervisorOptions},
};

/// Runs `stack`, with the HTTP gateway on `gateway`, until `shutdown` resolves, then stops the
/// gateway and everything else gracefully. Returns the shutdown report; the caller turns it
/// into an exit code.
pub async fn run(
    stack: Stack,
    options: SupervisorOptions,
    bind: Bind,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<ShutdownReport> {
    let services = stack.services.len();
    let name = stack.name.clone();
    let log_dir = stack.run_dir.join("logs");
    let (supervisor, mut task) = Supervisor::start(stack, options)?;
    let mut events = supervisor.events.subscribe();
    let mut logs = supervisor.logs.subscribe();
    let mut gateway = match Gateway::start(&supervisor, bind).await {
        Ok(gateway) => gateway,
        Err(err) => {
            // Nothing was started yet; stop the supervisor's own tasks before failing.
            supervisor.shutdown().await;
            let _ = task.await;
            return Err(std::io::Error::other(err.to_string()));
        }
    };
    supervisor.begin().await;
    print_line(&format!(
        "switchboard: stack `{name}`, {services} services; log files in {}",
        log_dir.display()
    ));
    match &gateway {
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
        None if bind != Bind::Off => {
            print_line("switchboard: no gateway: its address is taken (see the warning above)");
        }
        None => {}
    }

    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        tokio::select! {
            report = &mut task => {
                if let Some(gateway) = gateway.take() {
                    gateway.stop().await;
                }
                drain(&mut events, &mut logs);
                let report = report.map_err(|err| std::io::Error::other(format!("supervisor failed: {err}")))?;
                let verdict = if report.clean() { "clean".to_string() } else { format!("forced: {}", report.forced.join(", ")) };
                print_line(&format!("switchboard: stopped ({verdict})"));
                flush_output();
                return Ok(report);
            }
            () = &mut shutdown, if !stopping => {
                stopping = true;
                print_line("switchboard: shutting down");
                // The gateway first: no new requests for services that are stopping.
                if let Some(gateway) = gateway.take() {
                    gateway.stop().await;
                }
                supervisor.shutdown().await;
            }
            event = events.recv() => match event {
                Ok(event) => print_event(&event),
                Err(RecvError::Lagged(missed)) => print_line(&format!("switchboard: {missed} events not shown (output too slow)")),
                Err(RecvError::Closed) => {}
            },
            line = logs.recv() => match line {
                Ok(line) => print_log(&line),
                Err(RecvError::Lagged(missed)) => print_line(&format!("switchboard: {missed} log lines not shown (output too slow)")),
                Err(RecvError::Closed) => {}
            },
        }
    }
}

/// Prints what is still queued when the supervisor ends.
fn drain(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    logs: &mut tokio::sync::broadcast::Receiver<Arc<LogLine>>,
) {
    while let Ok(line) = logs.try_recv() {
        print_log(&line);
    }
    while let Ok(event) = events.try_recv() {
        print_event(&event);
    }
}

fn clock(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let day = secs % 86_400.0;
    format!(
        "{:02}:{:02}:{:06.3}",
        (day / 3600.0) as u32,
        ((day % 3600.0) / 60.0) as u32,
        day % 60.0
    )
}

fn print_event(event: &Event) {
    print_line(&format!("{} ● {event}", clock(event.at)));
}

fn print_log(line: &LogLine) {
    // Lifecycle lines are printed as events already.
    if line.stream == Stream::Console {
        return;
    }
    print_line(&format!(
        "{} {}#{} | {}",
        clock(line.at),
        line.service,
        line.replica,
        line.text
    ));
}

/// Lines waiting for the printer thread. When stdout is slower than the services (a paused
/// pager, a slow SSH link), lines beyond this are dropped and counted, never waited for: the
/// supervisor and the router share one thread, and printing must not stall them.
const PRINT_QUEUE: usize = 8192;

enum Output {
    Line(String),
    /// Answer once everything queued before has been written.
    Flush(std::sync::mpsc::Sender<()>),
}

struct Printer {
    queue: std::sync::mpsc::SyncSender<Output>,
    dropped: std::sync::atomic::AtomicU64,
}

fn printer() -> &'static Printer {
    static PRINTER: std::sync::OnceLock<Printer> = std::sync::OnceLock::new();
    PRINTER.get_or_init(|| {
        let (queue, outputs) = std::sync::mpsc::sync_channel::<Output>(PRINT_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("headless-output".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                for output in outputs {
                    match output {
                        // A closed stdout (piped into `head`) must not take anything down.
                        Output::Line(line) => {
                            let _ = writeln!(stdout.lock(), "{line}");
                        }
                        Output::Flush(done) => {
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

fn print_line(text: &str) {
    use std::sync::atomic::Ordering;
    let printer = printer();
    let dropped = printer.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let notice = format!("switchboard: {dropped} lines not shown (output too slow)");
        if printer.queue.try_send(Output::Line(notice)).is_err() {
            printer.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }
    if printer
        .queue
        .try_send(Output::Line(text.to_string()))
        .is_err()
    {
        printer.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits (at most two seconds) until everything queued is on stdout, before the process exits.
fn flush_output() {
    let (done, written) = std::sync::mpsc::channel();
    if printer().queue.send(Output::Flush(done)).is_ok() {
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
