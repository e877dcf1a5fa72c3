//! One actor task per child process. It owns the `Child`, its three pipes and its segment, and
//! it is the only place the process is signalled or reaped.
//!
//! Inside: a writer task feeding stdin from the instance's bounded inbox; a reader for a
//! protocol service's stdout (frames, `stdout.rs`); a heartbeat check; a liveness probe when
//! the service has one ([`super::probe`]); and the main select over the child's
//! exit and the supervisor's commands. Log pipes (stderr, and a plain program's stdout) are
//! read on the log-ingest thread, off this runtime ([`crate::logs::ingest`]).
//!
//! The stop sequence: a protocol service is sent Shutdown (and stdin closed), then SIGTERM, then
//! SIGKILL, a grace period apart; a plain program its `stop_signal`, then SIGKILL. After the child is reaped the group is SIGKILLed once
//! more, so a grandchild it left behind does not outlive it.
//!
//! A protocol service that closes its stdout but keeps running can never answer again: its
//! callers would only time out. Unless it exits within [`STDOUT_CLOSED_GRACE`], its group is
//! SIGKILLed and it is reported as crashed, so the restart policy decides what follows.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::BytesMut;
use switchboard_protocol::{Envelope, Kind, Welcome};
use tokio::{
    io::AsyncWriteExt,
    process::{Child, ChildStdin},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use super::{
    InstanceEvent,
    probe::Prober,
    spawn::signal_group,
    stdout::{ReaderSignals, StdoutReader},
    strays::Sweeper,
};
use crate::{
    logs::{LogStore, ReadyLine, Source, Stream},
    registry::{ExitStatus, InstanceHandle},
    router::Router,
    stack::{LogBudget, StopSignal},
    transport::InboxReceiver,
};

/// What the supervisor tells an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The graceful stop sequence, with this grace period per step; `signal` asks a plain
    /// program to stop.
    Stop { grace: Duration, signal: StopSignal },
    /// SIGKILL the process group now.
    Kill,
    /// Declared hung by the heartbeat check: kill, then report.
    Hung,
}

/// How long the readers may take to see EOF after the child was reaped and its group killed.
const READER_DRAIN: Duration = Duration::from_millis(500);
/// How long a protocol service may run on after closing its stdout: a process that exits
/// closes stdout a moment before it can be reaped, which is no reason to kill it.
pub const STDOUT_CLOSED_GRACE: Duration = Duration::from_millis(500);

pub struct InstanceTask {
    pub handle: Arc<InstanceHandle>,
    pub child: Child,
    pub inbox: Option<InboxReceiver>,
    pub control: mpsc::Receiver<Control>,
    pub events: mpsc::Sender<InstanceEvent>,
    pub logs: Arc<LogStore>,
    pub router: Router,
    pub protocol: bool,
    pub ready_line: Option<String>,
    /// Shared by every replica of the service and both pipes; see [`crate::logs::ingest`].
    pub log_budget: LogBudget,
    pub welcome: Welcome,
    pub heartbeat_timeout: Option<Duration>,
    /// The heartbeat check starts at the handshake, or this long after the spawn for a service
    /// that never shakes hands (see `HeartbeatWatch`).
    pub startup_timeout: Duration,
    /// In the environment of the process and its descendants; see [`super::strays`].
    pub lineage: String,
    pub sweeper: Sweeper,
    /// The liveness probe, when the service has one.
    pub probe: Option<Prober>,
}

impl InstanceTask {
    pub async fn run(mut self) {
        let id = self.handle.id;
        let close_stdin = CancellationToken::new();
        let stdout_closed = CancellationToken::new();
        let handshake = CancellationToken::new();
        let stdin = self.child.stdin.take();
        let stdout = self.child.stdout.take();
        let stderr = self.child.stderr.take();

        let writer = stdin.zip(self.inbox.take()).map(|(stdin, inbox)| {
            tokio::spawn(write_stdin(
                stdin,
                inbox,
                close_stdin.clone(),
                self.handle.clone(),
            ))
        });
        // A plain program's ready line may come on either pipe; the first sighting counts.
        let (ready_seen, mut ready) = mpsc::channel(1);
        let ready_line = || {
            self.ready_line
                .clone()
                .filter(|_| !self.protocol)
                .map(|text| ReadyLine {
                    text,
                    seen: ready_seen.clone(),
                })
        };
        let (stdout_ready, stderr_ready) = (ready_line(), ready_line());
        drop(ready_seen);
        let stdout_reader = stdout.and_then(|stdout| {
            if self.protocol {
                let reader = StdoutReader {
                    handle: self.handle.clone(),
                    events: self.events.clone(),
                    logs: self.logs.clone(),
                    router: self.router.clone(),
                    welcome: self.welcome.clone(),
                    signals: ReaderSignals {
                        closed: stdout_closed.clone(),
                        handshake: handshake.clone(),
                    },
                };
                Some(tokio::spawn(reader.run(stdout)))
            } else {
                self.read_log(stdout.into_owned_fd(), Stream::Stdout, stdout_ready)
            }
        });
        let stderr_reader = stderr
            .and_then(|stderr| self.read_log(stderr.into_owned_fd(), Stream::Stderr, stderr_ready));
        let events = self.events.clone();
        let ready_watch = tokio::spawn(async move {
            // Ends without a word when both pipes end without the line.
            if ready.recv().await.is_some() {
                let _ = events.send(InstanceEvent::Ready { id }).await;
            }
        });

        let probe_failed = CancellationToken::new();
        let probe_stop = CancellationToken::new();
        if let Some(probe) = self.probe.take() {
            tokio::spawn(probe.run(probe_failed.clone(), probe_stop.clone()));
        }
        let status = self
            .supervise(&close_stdin, &stdout_closed, &handshake, &probe_failed)
            .await;
        probe_stop.cancel();

        // Reaped: now nothing in its group may outlive it, nor anything of its lineage that
        // left the group.
        signal_group(self.handle.pid, libc::SIGKILL);
        self.sweeper
            .reaped(self.handle.pid, std::mem::take(&mut self.lineage));
        self.handle.routable.store(false, Ordering::Release);
        close_stdin.cancel();
        for task in [stdout_reader, stderr_reader].into_iter().flatten() {
            if tokio::time::timeout(READER_DRAIN, task).await.is_err() {
                tracing::debug!(?id, "a reader did not finish after exit");
            }
        }
        if let Some(writer) = writer {
            writer.abort();
        }
        ready_watch.abort();
        self.router.instance_gone(&self.handle);
        let _ = self.events.send(InstanceEvent::Exited { id, status }).await;
    }

    /// Waits for the child to exit, acting on commands and on the heartbeat check meanwhile.
    async fn supervise(
        &mut self,
        close_stdin: &CancellationToken,
        stdout_closed: &CancellationToken,
        handshake: &CancellationToken,
        probe_failed: &CancellationToken,
    ) -> ExitStatus {
        let pid = self.handle.pid;
        let watch_stdout = self.protocol;
        let check_every = self
            .heartbeat_timeout
            // Half the heartbeat period (timeout / 5): a hang is then declared at most one
            // heartbeat period after the timeout, counting the lag in seeing the last beat.
            .map(|timeout| (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        let mut heartbeat = HeartbeatWatch::new(Instant::now().checked_add(self.startup_timeout));
        let mut check = tokio::time::interval(check_every.unwrap_or(Duration::from_secs(3600)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                status = self.child.wait() => return wait_status(status),
                control = self.control.recv() => match control {
                    Some(Control::Stop { grace, signal }) => return self.stop(grace, signal, close_stdin).await,
                    Some(Control::Kill | Control::Hung) | None => {
                        signal_group(pid, libc::SIGKILL);
                        return wait_status(self.child.wait().await);
                    }
                },
                // Reported by the probe task; a hang like a silent heartbeat.
                () = probe_failed.cancelled() => {
                    self.handle.routable.store(false, Ordering::Release);
                    signal_group(pid, libc::SIGKILL);
                    return wait_status(self.child.wait().await);
                }
                () = stdout_closed.cancelled(), if watch_stdout => {
                    if let Ok(status) = tokio::time::timeout(STDOUT_CLOSED_GRACE, self.child.wait()).await {
                        return wait_status(status);
                    }
                    self.handle.routable.store(false, Ordering::Release);
                    self.logs.push(
                        &self.handle.service,
                        self.handle.id.replica,
                        Stream::Console,
                        "stdout closed while the process runs on: killed, it cannot answer".to_string(),
                    );
                    signal_group(pid, libc::SIGKILL);
                    return wait_status(self.child.wait().await);
                }
                _ = check.tick(), if check_every.is_some() => {
                    let (Some(timeout), Some(segment)) = (self.heartbeat_timeout, &self.handle.segment) else {
                        continue;
                    };
                    // A wrong header reads as a heartbeat stuck at 0, as in a full read.
                    let Some(silent_for) = heartbeat.observe(segment.heartbeat().unwrap_or(0), handshake.is_cancelled()) else {
                        continue;
                    };
                    if let Some(stale) = heartbeat.stale_changed(silent_for, timeout) {
                        let _ = self.events.send(InstanceEvent::Stale { id: self.handle.id, stale, silent_for }).await;
                    }
                    if silent_for >= timeout {
                        let _ = self.events.send(InstanceEvent::Hung { id: self.handle.id, silent_for }).await;
                        signal_group(pid, libc::SIGKILL);
                        return wait_status(self.child.wait().await);
                    }
                }
            }
        }
    }

    /// The stop sequence. A protocol service is asked with Shutdown (and stdin closed), then
    /// SIGTERM, then SIGKILL, `grace` apart: it drains in-flight work first. A plain program
    /// is asked the way supervisord, systemd and Docker ask: its `stop_signal` at once, then
    /// SIGKILL after `grace`. Only the steps after the asking count as forcing it.
    async fn stop(
        &mut self,
        grace: Duration,
        stop_signal: StopSignal,
        close_stdin: &CancellationToken,
    ) -> ExitStatus {
        self.handle.routable.store(false, Ordering::Release);
        if self.protocol {
            // Best effort: a congested inbox still gets its stdin closed below.
            let _ = self.handle.link.try_send(&Envelope {
                kind: Kind::Shutdown,
                ..Envelope::default()
            });
        } else {
            self.signal(stop_signal.name(), stop_signal.number(), false)
                .await;
        }
        close_stdin.cancel();
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return wait_status(status);
        }
        if !self.protocol {
            self.signal("SIGKILL", libc::SIGKILL, true).await;
            return wait_status(self.child.wait().await);
        }
        self.signal("SIGTERM", libc::SIGTERM, true).await;
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return wait_status(status);
        }
        self.signal("SIGKILL", libc::SIGKILL, true).await;
        wait_status(self.child.wait().await)
    }

    /// Reads a log pipe on the log-ingest thread, within the service's budget. The pipe is
    /// read there to its end; `None` (said in the log) when it cannot be.
    fn read_log(
        &self,
        pipe: std::io::Result<std::os::fd::OwnedFd>,
        stream: Stream,
        ready_line: Option<ReadyLine>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let source = Source {
            service: self.handle.service.clone(),
            replica: self.handle.id.replica,
            stream,
            budget: self.log_budget,
            ready_line,
        };
        let reading = pipe
            .map_err(|err| err.to_string())
            .and_then(|pipe| self.logs.read(pipe, source).map_err(|err| err.to_string()));
        match reading {
            Ok(task) => Some(task),
            Err(cause) => {
                tracing::error!(service = %self.handle.service, %cause, ?stream, "cannot read a log pipe");
                self.logs.push(
                    &self.handle.service,
                    self.handle.id.replica,
                    Stream::Console,
                    format!("its {stream:?} cannot be read: {cause}"),
                );
                None
            }
        }
    }

    /// One step of the stop sequence: report it, then signal the process group. `forced`:
    /// an escalation (the program did not stop when asked), which makes the stop unclean.
    async fn signal(&self, name: &'static str, signal: i32, forced: bool) {
        // Signalled first, reported after: the report waits its turn in the supervisor's
        // queue, behind every other instance's (500 stopping at once), and the signal must
        // not wait with it. The exit this instance reports later still comes after it.
        signal_group(self.handle.pid, signal);
        let _ = self
            .events
            .send(InstanceEvent::Signalled {
                id: self.handle.id,
                signal: name,
                forced,
            })
            .await;
    }
}

fn wait_status(status: std::io::Result<std::process::ExitStatus>) -> ExitStatus {
    match status {
        Ok(status) => ExitStatus::from_std(status),
        Err(err) => ExitStatus::SpawnFailed(format!("wait failed: {err}")),
    }
}

/// Judges heartbeat staleness on the console's own clock: when the counter last moved, never a
/// time the service wrote.
///
/// The clock starts at the handshake, not at the spawn: the service learns its heartbeat
/// period from the Welcome, so before it a slow starter (loading data, waiting on a disk) is
/// silent without being hung. One that never shakes hands is watched from `start_by` on.
struct HeartbeatWatch {
    /// `None`: a startup timeout too long to reach.
    start_by: Option<Instant>,
    started: bool,
    last_value: Option<u64>,
    last_moved: Instant,
    /// Whether the instance was last reported stale.
    stale: bool,
}

impl HeartbeatWatch {
    fn new(start_by: Option<Instant>) -> Self {
        HeartbeatWatch {
            start_by,
            started: false,
            last_value: None,
            last_moved: Instant::now(),
            stale: false,
        }
    }

    /// Records the counter's current value and returns how long it has been still, or `None`
    /// while the clock has not started (no handshake yet, and `start_by` still ahead).
    fn observe(&mut self, value: u64, shook_hands: bool) -> Option<Duration> {
        if !self.started {
            if !shook_hands && self.start_by.is_none_or(|by| Instant::now() < by) {
                return None;
            }
            self.started = true;
            self.last_value = Some(value);
            self.last_moved = Instant::now();
        }
        if self.last_value != Some(value) {
            self.last_value = Some(value);
            self.last_moved = Instant::now();
        }
        Some(self.last_moved.elapsed())
    }

    /// Whether the heartbeat just became stale (still for half the timeout: shown before it
    /// is declared hung) or fresh again; `None` when that did not change.
    fn stale_changed(&mut self, silent_for: Duration, timeout: Duration) -> Option<bool> {
        let stale = silent_for >= timeout / 2;
        (stale != self.stale).then(|| {
            self.stale = stale;
            stale
        })
    }
}

/// Feeds stdin from the inbox, one write per batch. Ends when told to close stdin (after
/// writing what was queued), or when the child stops reading and the pipe breaks.
async fn write_stdin(
    mut stdin: ChildStdin,
    mut inbox: InboxReceiver,
    close: CancellationToken,
    handle: Arc<InstanceHandle>,
) {
    let mut batch = BytesMut::new();
    loop {
        let more = tokio::select! {
            biased;
            more = inbox.ready() => more,
            () = close.cancelled() => {
                inbox.close();
                inbox.ready().await
            }
        };
        if !more {
            break;
        }
        // One turn of the scheduler first: tasks already woken (HTTP connections, other
        // readers) may add to this batch, so one write and one wakeup of the service carry
        // more messages.
        behind_runnable_tasks().await;
        inbox.take(&mut batch);
        if let Err(err) = stdin.write_all(&batch).await {
            tracing::debug!(service = %handle.service, cause = %err, "stdin closed");
            return;
        }
        handle.congested.store(false, Ordering::Relaxed);
    }
    // Dropping the writer closes the pipe: EOF tells the service to exit.
}

/// Returns once the tasks that are runnable now have had their turn. Unlike `yield_now`, which
/// waits for the runtime to poll for I/O (an `epoll_wait` per batch written, a tenth of the
/// console's system calls with one request in flight), it puts the task at the back of the run
/// queue and nothing more. I/O still gets polled every few dozen tasks, by the runtime.
fn behind_runnable_tasks() -> impl std::future::Future<Output = ()> {
    let mut queued = false;
    std::future::poll_fn(move |cx| {
        if std::mem::replace(&mut queued, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}
