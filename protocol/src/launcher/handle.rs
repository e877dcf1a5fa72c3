//! The handle on a launched job, and the watcher thread that samples its segment and reaps it.

use std::{
    os::unix::process::ExitStatusExt,
    process::{Child, ChildStdin, ExitStatus},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    LaunchError, Launcher, spawn,
    wire::{self, Greeting},
};
use crate::{
    ErrorBody,
    segment::{SegmentReader, Snapshot, TaskRecord},
};

/// How many changes wait for a slow reader of [`JobHandle::changes`]. Past that, progress
/// changes are dropped (the next one carries the newer state, and [`JobHandle::progress`]
/// always has it); the job's Hello, Ready, result and exit wait for room instead.
const CHANGES_QUEUED: usize = 256;

/// The wait status reported for a job whose real one was lost: exit code 255.
const LOST_STATUS: i32 = 255 << 8;

/// How long the exit waits for the job's last frames.
const READER_GRACE: Duration = Duration::from_secs(2);

/// Something that happened to the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The job said Hello (and was answered Welcome).
    Hello { name: String, version: String },
    /// The job said Ready.
    Ready,
    /// Its tasks, as last read, whenever they differ from the previous sample.
    Progress(Vec<TaskRecord>),
    /// Its JobResult: the JSON text of the body, or the error.
    Result(Result<String, ErrorBody>),
    /// It exited and was reaped. Always the last change.
    Exited(ExitStatus),
}

/// The job's counters, read from its segment (`SPEC.md` §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub heartbeat: u64,
    pub requests_received: u64,
    pub requests_ok: u64,
    pub requests_error: u64,
    pub requests_timeout: u64,
    pub in_flight: u64,
    pub events_published: u64,
    pub events_received: u64,
}

/// How a job ended: its exit status and its result (`None` if it sent none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobExit {
    pub status: ExitStatus,
    pub result: Option<Result<String, ErrorBody>>,
}

impl JobExit {
    /// Success as the console counts it: an `Ok` result and exit status 0.
    pub fn success(&self) -> bool {
        self.status.success() && matches!(self.result, Some(Ok(_)))
    }
}

#[derive(Default)]
struct State {
    result: Option<Result<String, ErrorBody>>,
    exit: Option<ExitStatus>,
    /// The heartbeat counter and when, on our clock, it last moved.
    beat: Option<(u64, Instant)>,
    changes: Option<SyncSender<Change>>,
}

/// What the handle, the frame reader and the watcher share.
pub(super) struct Shared {
    state: Mutex<State>,
    ended: Condvar,
    stdin: Mutex<Option<ChildStdin>>,
    child: Mutex<Child>,
    next_id: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the job from being watched and reaped.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn with_stdin(&self, write: impl FnOnce(&mut ChildStdin)) {
        if let Some(stdin) = lock(&self.stdin).as_mut() {
            write(stdin);
        }
    }

    pub(super) fn close_stdin(&self) {
        lock(&self.stdin).take();
    }

    /// Sends `change` to the stream, if someone asked for it.
    pub(super) fn publish(&self, change: Change) {
        let Some(sender) = lock(&self.state).changes.clone() else {
            return;
        };
        if let Change::Progress(_) = change {
            if let Err(TrySendError::Disconnected(_)) = sender.try_send(change) {
                lock(&self.state).changes = None;
            }
        } else if sender.send(change).is_err() {
            lock(&self.state).changes = None;
        }
    }

    pub(super) fn set_result(&self, result: Result<String, ErrorBody>) {
        lock(&self.state).result = Some(result.clone());
        self.publish(Change::Result(result));
    }
}

/// A running (or finished) job. Dropping it kills the job if it is still running; it is
/// reaped either way.
pub struct JobHandle {
    shared: Arc<Shared>,
    segment: SegmentReader,
    pid: u32,
}

impl JobHandle {
    pub(super) fn start(mut launcher: Launcher) -> Result<JobHandle, LaunchError> {
        let (mut child, segment) = spawn::spawn(&mut launcher)?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            stdin: Mutex::new(stdin),
            child: Mutex::new(child),
            next_id: AtomicU64::new(1),
        });
        let handle = JobHandle {
            shared: Arc::clone(&shared),
            segment: segment.clone(),
            pid,
        };
        let mut reader = None;
        if let Some(stdout) = stdout {
            let greeting = Greeting {
                name: launcher.name.clone(),
                params: launcher.params.clone(),
                heartbeat_ms: launcher.heartbeat_ms,
            };
            let shared = Arc::clone(&shared);
            reader = Some(
                std::thread::Builder::new()
                    .name(format!("job-{pid}-frames"))
                    .spawn(move || wire::read_frames(stdout, shared, greeting))
                    .map_err(LaunchError::Thread)?,
            );
        }
        let every = launcher.sample_every;
        std::thread::Builder::new()
            .name(format!("job-{pid}-watch"))
            .spawn(move || watch(&shared, &segment, every, reader))
            .map_err(LaunchError::Thread)?;
        Ok(handle)
    }

    /// The job's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The tasks in use in the job's segment, read now.
    pub fn progress(&self) -> Vec<TaskRecord> {
        self.segment.read().tasks
    }

    /// Everything in the segment, read now (counters, histogram, tasks, problems).
    pub fn snapshot(&self) -> Snapshot {
        self.segment.read()
    }

    pub fn counters(&self) -> Counters {
        let s = self.segment.read();
        Counters {
            heartbeat: s.heartbeat,
            requests_received: s.received,
            requests_ok: s.ok,
            requests_error: s.error,
            requests_timeout: s.timeout,
            in_flight: s.in_flight,
            events_published: s.events_published,
            events_received: s.events_received,
        }
    }

    /// How long ago, on this process's clock, the heartbeat counter last moved (as the
    /// console judges it, `SPEC.md` §5); `None` before the first beat.
    pub fn heartbeat_age(&self) -> Option<Duration> {
        let now = self.segment.heartbeat().unwrap_or(0);
        let mut state = lock(&self.shared.state);
        match state.beat {
            Some((seen, at)) if seen == now => Some(at.elapsed()),
            _ if now == 0 => None,
            _ => {
                state.beat = Some((now, Instant::now()));
                Some(Duration::ZERO)
            }
        }
    }

    /// The job's result, once its JobResult arrived.
    pub fn result(&self) -> Option<Result<String, ErrorBody>> {
        lock(&self.shared.state).result.clone()
    }

    /// Its exit status, once it has exited and been reaped.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        lock(&self.shared.state).exit
    }

    /// Waits for the job to exit.
    pub fn wait(&self) -> JobExit {
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(status) = state.exit {
                return JobExit {
                    status,
                    result: state.result.clone(),
                };
            }
            state = self
                .shared
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits at most `limit` for the job to exit.
    pub fn wait_timeout(&self, limit: Duration) -> Option<JobExit> {
        let deadline = Instant::now() + limit;
        let mut state = lock(&self.shared.state);
        while state.exit.is_none() {
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .shared
                .ended
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.exit.map(|status| JobExit {
            status,
            result: state.result.clone(),
        })
    }

    /// A stream of what happens from now on, ending with [`Change::Exited`]. It starts with
    /// the current progress (and the exit, if the job has already ended). Asking again
    /// replaces the previous stream.
    pub fn changes(&self) -> Receiver<Change> {
        let (sender, receiver) = sync_channel(CHANGES_QUEUED);
        let mut state = lock(&self.shared.state);
        let _ = sender.try_send(Change::Progress(self.progress()));
        if let Some(status) = state.exit {
            let _ = sender.try_send(Change::Exited(status));
        } else {
            state.changes = Some(sender);
        }
        receiver
    }

    /// Asks the job to stop: Shutdown, then EOF on its stdin. It should exit on its own.
    pub fn stop(&self) {
        wire::shutdown(&self.shared);
    }

    /// SIGKILL, for a job that does not stop.
    pub fn kill(&self) {
        let _ = lock(&self.shared.child).kill();
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// Samples the segment every `every` until the job exits, publishing progress changes and
/// keeping the heartbeat's last move; then reaps it and publishes the exit.
fn watch(
    shared: &Shared,
    segment: &SegmentReader,
    every: Duration,
    reader: Option<JoinHandle<()>>,
) {
    let mut last: Option<Vec<TaskRecord>> = None;
    loop {
        let status = lock(&shared.child).try_wait();
        let tasks = segment.read().tasks;
        if last.as_ref() != Some(&tasks) {
            last = Some(tasks.clone());
            shared.publish(Change::Progress(tasks));
        }
        let beat = segment.heartbeat().unwrap_or(0);
        {
            let mut state = lock(&shared.state);
            if beat != 0 && state.beat.is_none_or(|(seen, _)| seen != beat) {
                state.beat = Some((beat, Instant::now()));
            }
        }
        match status {
            Ok(Some(status)) => {
                drain(reader, every);
                return exited(shared, status);
            }
            Ok(None) => std::thread::sleep(every),
            Err(err) => {
                // Only when something else in this process reaped the child (a `waitpid(-1)`,
                // SIGCHLD ignored): its status is lost, but waiters must still wake.
                tracing::warn!(cause = %err, "a launched job was reaped elsewhere");
                drain(reader, every);
                return exited(shared, ExitStatus::from_raw(LOST_STATUS));
            }
        }
    }
}

/// Waits (a bounded time: a grandchild may hold the pipe open) for the frame reader to reach
/// the end of the job's stdout, so that a result written just before the exit is recorded
/// before the exit is reported.
fn drain(reader: Option<JoinHandle<()>>, every: Duration) {
    let Some(reader) = reader else { return };
    let deadline = Instant::now() + READER_GRACE;
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(every.min(Duration::from_millis(10)));
    }
    if reader.is_finished() {
        let _ = reader.join();
    }
}

fn exited(shared: &Shared, status: ExitStatus) {
    shared.close_stdin();
    let sender = {
        let mut state = lock(&shared.state);
        state.exit = Some(status);
        state.changes.take()
    };
    shared.ended.notify_all();
    if let Some(sender) = sender {
        let _ = sender.send(Change::Exited(status));
    }
}
