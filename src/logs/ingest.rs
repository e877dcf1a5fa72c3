//! Log ingestion, off the routing path. Every log pipe (stderr, and stdout of plain programs)
//! is read on one thread of its own, `log-ingest`, with its own runtime and its own epoll: a
//! service that floods its log costs that thread, never the thread that routes requests and
//! reads frames.
//!
//! A read takes up to [`READ_CHUNK`] bytes, and its lines go through the service's
//! [`Budget`] before any work is done on them: a line within budget becomes text and goes to the
//! store; once the budget refuses one, the rest of the read is only counted (a `memchr` over
//! it). The count shows in `/metrics`, and in the log as a "N lines dropped" line at most once
//! a second per service.
//!
//! The pipe is always read, whatever the budget says: a service must never block on a full
//! pipe because the console stopped reading it. But while a pipe's lines are being dropped, the
//! reader pauses [`DRAIN_PAUSE`] after each read, so a flood costs a bounded amount whatever
//! its pace: at most one pipe's capacity (64 KiB) per pause, and a hundred wakeups a second,
//! of this thread and of whoever watches the log (the console's log pane, headless output, an
//! attached console), who then get the lines kept in batches instead of one at a time. A
//! service that writes more than that (6 MB/s of log: six times the default budget's bytes, and
//! with 100-byte lines thirty times its lines) waits on its pipe between reads, as it would on
//! a slow terminal, and is never left waiting longer than the pause.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::{
    net::unix::pipe,
    runtime::Handle,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    budget::{self, Budget},
    line_codec::{Lines, Next},
    store::{LogStore, Stream},
};
use crate::stack::LogBudget;

/// Bytes asked for per read: a pipe's default capacity, so one read empties a full pipe.
pub const READ_CHUNK: usize = 64 * 1024;
/// The pause between reads while a pipe's lines are being dropped. At 1 ms two `yes` floods
/// cost 5–6 % of a core on this thread, woke whoever watches the log a thousand times a second
/// each, and moved the routed p50 by up to 2× (`switchboard bench --only noisy`); at 10 ms
/// 1.4–2.2 %, and the p50 moves no more than this machine's noise (docs/performance.md).
pub const DRAIN_PAUSE: Duration = Duration::from_millis(10);

/// Where a pipe's lines go, and under which budget.
#[derive(Debug)]
pub struct Source {
    pub service: Arc<str>,
    pub replica: u32,
    pub stream: Stream,
    pub budget: LogBudget,
    /// Plain programs: told once a line contains this text.
    pub ready_line: Option<ReadyLine>,
}

#[derive(Debug)]
pub struct ReadyLine {
    pub text: String,
    /// Sent to (never waited on) when the line is seen.
    pub seen: mpsc::Sender<()>,
}

/// The `log-ingest` thread and the services' budgets.
pub struct Ingest {
    /// `None` when the thread could not be started: readers then run on the caller's runtime.
    runtime: Option<Handle>,
    /// Dropping it ends the thread, and with it any reader left (a pipe a stray process holds).
    _stop: Option<oneshot::Sender<()>>,
    budgets: Mutex<HashMap<Arc<str>, Arc<Budget>>>,
}

impl Ingest {
    pub fn start() -> Ingest {
        let (runtime, stop) = match spawn_thread() {
            Ok((runtime, stop)) => (Some(runtime), Some(stop)),
            Err(err) => {
                tracing::warn!(cause = %err, "no log-ingest thread; logs are read on the main one");
                (None, None)
            }
        };
        Ingest {
            runtime,
            _stop: stop,
            budgets: Mutex::new(HashMap::new()),
        }
    }

    /// Starts reading `pipe` into `store`; the task ends at the pipe's end.
    pub fn read(
        &self,
        store: Arc<LogStore>,
        pipe: OwnedFd,
        source: Source,
    ) -> Result<JoinHandle<()>, tokio::runtime::TryCurrentError> {
        let budget = self.budget(&source.service, source.budget);
        let runtime = match &self.runtime {
            Some(runtime) => runtime.clone(),
            None => Handle::try_current()?,
        };
        Ok(runtime.spawn(read(store, pipe, source, budget)))
    }

    /// Lines of `service` dropped over its budget since the console started.
    pub fn dropped(&self, service: &str) -> u64 {
        self.lock().get(service).map_or(0, |b| b.dropped())
    }

    /// The service's budget, shared by its replicas and pipes; a new rate (a changed stack)
    /// starts a new bucket and keeps the count.
    fn budget(&self, service: &Arc<str>, rate: LogBudget) -> Arc<Budget> {
        let mut budgets = self.lock();
        let budget = budgets
            .entry(service.clone())
            .or_insert_with(|| Arc::new(Budget::new(rate)));
        if budget.rate() != rate {
            *budget = Arc::new(Budget::carrying(rate, budget.dropped()));
        }
        budget.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Budget>>> {
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn spawn_thread() -> std::io::Result<(Handle, oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("log-ingest".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

thread_local! {
    /// The log-ingest thread's read buffer, shared by every pipe it reads (one at a time).
    static CHUNK: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_CHUNK]);
}

/// Reads one pipe to its end.
async fn read(store: Arc<LogStore>, pipe: OwnedFd, mut source: Source, budget: Arc<Budget>) {
    // Registered here, with this thread's epoll.
    let pipe = match pipe::Receiver::from_owned_fd(pipe) {
        Ok(pipe) => pipe,
        Err(err) => {
            tracing::error!(service = %source.service, cause = %err, "cannot read a log pipe");
            store.push(
                &source.service,
                source.replica,
                Stream::Console,
                format!("its {:?} cannot be read: {err}", source.stream),
            );
            return;
        }
    };
    let mut lines = Lines::default();
    let mut kept = Vec::new();
    loop {
        let due = budget.report_due();
        let readable = tokio::select! {
            readable = pipe.readable() => readable,
            () = sleep_until(due), if due.is_some() => {
                report(&store, &source, &budget, false);
                continue;
            }
        };
        if let Err(err) = readable {
            tracing::debug!(service = %source.service, cause = %err, "log pipe failed");
            break;
        }
        // Read into the thread's one chunk, with no await until its lines are taken: a quiet
        // pipe holds no buffer of its own (500 of them held 64 MiB).
        let read = CHUNK.with_borrow_mut(|chunk| {
            let n = pipe.try_read(chunk)?;
            let dropped = intake(&mut lines, &chunk[..n], &budget, &mut source, &mut kept);
            Ok::<_, std::io::Error>((n, dropped))
        });
        let dropped = match read {
            Ok((0, _)) => break,
            Ok((_, dropped)) => dropped,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => {
                tracing::debug!(service = %source.service, cause = %err, "log pipe read failed");
                break;
            }
        };
        for text in kept.drain(..) {
            store.push(&source.service, source.replica, source.stream, text);
        }
        report(&store, &source, &budget, false);
        if dropped > 0 {
            tokio::time::sleep(DRAIN_PAUSE).await;
        }
    }
    let mut gate = budget.gate(Instant::now());
    let mut last = None;
    let dropped = lines.finish(|line| {
        if gate.admit(line.bytes.len()) {
            last = Some(line.text());
        } else {
            gate.refused(1);
        }
        Next::More
    });
    gate.refused(dropped);
    drop(gate);
    if let Some(text) = last {
        store.push(&source.service, source.replica, source.stream, text);
    }
    report(&store, &source, &budget, true);
}

/// Puts the lines of one read through the budget: those kept, as text, into `kept`. Returns
/// how many were dropped.
fn intake(
    lines: &mut Lines,
    chunk: &[u8],
    budget: &Budget,
    source: &mut Source,
    kept: &mut Vec<String>,
) -> u64 {
    let mut gate = budget.gate(Instant::now());
    let mut refused = 0;
    let unseen = lines.feed(chunk, |line| {
        // While the ready line is awaited every line is looked at, kept or not: a flood at
        // start must not hide it.
        if let Some(ready) = &source.ready_line
            && memchr::memmem::find(line.bytes, ready.text.as_bytes()).is_some()
        {
            // Full: it was seen already, by the other pipe.
            let _ = ready.seen.try_send(());
            source.ready_line = None;
        }
        if gate.admit(line.bytes.len()) {
            kept.push(line.text());
            return Next::More;
        }
        refused += 1;
        if source.ready_line.is_some() {
            Next::More
        } else {
            Next::DropRest
        }
    });
    gate.refused(refused + unseen);
    refused + unseen
}

/// Writes the "N lines dropped" line when one is due (at the pipe's end, whenever any wait).
fn report(store: &LogStore, source: &Source, budget: &Budget, at_end: bool) {
    if let Some(lines) = budget.report(Instant::now(), at_end) {
        store.push(
            &source.service,
            source.replica,
            Stream::Dropped,
            budget::dropped_note(lines, budget.rate()),
        );
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A pipe whose write end gets `text` from a thread (more than a pipe holds), then closes.
    fn pipe_with(text: String) -> OwnedFd {
        let (read, write) = rustix::pipe::pipe().expect("pipe");
        std::thread::spawn(move || {
            let mut write = std::fs::File::from(write);
            let _ = write.write_all(text.as_bytes());
        });
        read
    }

    #[tokio::test]
    async fn a_flood_is_kept_to_its_budget_counted_noted_and_its_ready_line_seen() {
        const LINES: u64 = 20_000;
        let mut text: String = (0..LINES).map(|i| format!("line {i}\n")).collect();
        // Deep in the flood, long past the budget.
        text.insert_str(text.len() / 2, "listening on :8080\n");
        let store = LogStore::new(None);
        let service: Arc<str> = Arc::from("flood");
        let (seen, mut ready) = mpsc::channel(1);
        let reader = store
            .read(
                pipe_with(text),
                Source {
                    service: service.clone(),
                    replica: 0,
                    stream: Stream::Stderr,
                    budget: LogBudget {
                        lines: 100,
                        bytes: 1 << 20,
                    },
                    ready_line: Some(ReadyLine {
                        text: "listening on".into(),
                        seen,
                    }),
                },
            )
            .expect("a runtime");
        reader.await.expect("the reader ended");
        assert_eq!(ready.try_recv(), Ok(()), "the ready line was not seen");
        let lines = store.tail("flood", usize::MAX);
        let kept = lines.iter().filter(|l| l.stream == Stream::Stderr).count() as u64;
        let dropped = store.dropped_lines("flood");
        // A second's worth, and what the time the test took earned.
        assert!((100..1000).contains(&kept), "kept {kept}");
        assert_eq!(kept + dropped, LINES + 1, "every line kept or counted");
        // The notes add up to the count: the last one is written at the pipe's end.
        let noted: u64 = lines
            .iter()
            .filter(|l| l.stream == Stream::Dropped)
            .map(|l| {
                assert!(
                    l.text
                        .ends_with("over the log budget of 100 lines/s, 1MiB/s")
                );
                l.text
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(noted, dropped);
        assert_eq!(lines[0].text, "line 0");
    }
}
