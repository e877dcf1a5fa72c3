//! Helpers shared by the integration tests: build a stack from TOML in a temporary directory,
//! run a supervisor on it, and wait for conditions with a bound.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod nats;
pub mod stack_keys;
pub mod tmux;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use switchboard::{
    event::{Event, EventKind},
    registry::{self, Registry},
    stack::{self, Stack},
    supervisor::{ShutdownReport, Supervisor, SupervisorOptions},
};
use tokio::sync::broadcast;

pub const SWITCHBOARD: &str = env!("CARGO_BIN_EXE_switchboard");

/// `toml` written to `stack.toml` in a fresh temporary directory (kept while the guard lives).
pub fn stack_file(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// Spawns `command` with no stdin and no stderr, reading its stdout on a thread until it ends,
/// so the child never blocks on a full pipe (even once the receiver is gone): the lines `keep`
/// accepts arrive on the channel, the rest are dropped.
pub fn spawn_reading_lines(
    command: &mut Command,
    keep: fn(&str) -> bool,
) -> (Child, mpsc::Receiver<String>) {
    spawn_reading(command, move |line| keep(&line).then_some(line))
}

/// [`spawn_reading_lines`], with each line turned into what `read` makes of it (on the reading
/// thread, as the line arrives); `None` drops it.
pub fn spawn_reading<T: Send + 'static>(
    command: &mut Command,
    read: impl Fn(String) -> Option<T> + Send + 'static,
) -> (Child, mpsc::Receiver<T>) {
    spawn_reading_into(command, Stdio::null(), read)
}

/// [`spawn_reading`], with the child's stderr going to `stderr` (a file, for a test that says
/// why a process ended when it fails).
pub fn spawn_reading_into<T: Send + 'static>(
    command: &mut Command,
    stderr: impl Into<Stdio>,
    read: impl Fn(String) -> Option<T> + Send + 'static,
) -> (Child, mpsc::Receiver<T>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(item) = read(line) {
                let _ = tx.send(item);
            }
        }
    });
    (child, lines)
}

/// A stack parsed from `toml`, with its data and run directories in a fresh temporary directory.
pub fn stack(toml: &str) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, toml).unwrap();
    let stack = stack::load(&path).unwrap_or_else(|diagnostics| {
        panic!(
            "bad test stack:\n{}",
            diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    (stack, dir)
}

pub fn options() -> SupervisorOptions {
    SupervisorOptions {
        builtin_exe: PathBuf::from(SWITCHBOARD),
        log_files: true,
    }
}

pub struct Running {
    pub supervisor: Supervisor,
    pub task: tokio::task::JoinHandle<ShutdownReport>,
    pub events: broadcast::Receiver<Event>,
    pub seen: Vec<Event>,
}

pub async fn start(stack: Stack) -> Running {
    let (supervisor, task) = Supervisor::start(stack, options()).unwrap();
    let events = supervisor.events().subscribe();
    supervisor.begin().await;
    Running {
        supervisor,
        task,
        events,
        seen: Vec::new(),
    }
}

impl Running {
    /// Waits until `done` holds for the registry, for at most `limit`.
    pub async fn until(&self, limit: Duration, done: impl Fn(&Registry) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(&registry::read(self.supervisor.registry())) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        done(&registry::read(self.supervisor.registry()))
    }

    /// The live handle of `service`'s first replica.
    pub fn handle(&self, service: &str) -> std::sync::Arc<registry::InstanceHandle> {
        registry::read(self.supervisor.registry())
            .service(service)
            .unwrap()
            .instances[0]
            .handle
            .clone()
            .expect("no live instance")
    }

    /// Waits until `service`'s first replica has a request in flight; fails the test after
    /// `limit`.
    pub async fn in_flight(&self, limit: Duration, service: &str) {
        let busy = self
            .until(limit, |r| {
                r.service(service)
                    .and_then(|s| s.instances.first())
                    .and_then(|i| i.handle.as_ref())
                    .is_some_and(|h| h.outstanding.load(std::sync::atomic::Ordering::Relaxed) > 0)
            })
            .await;
        assert!(busy, "{service} never had a request in flight");
    }

    /// Waits until a log line of `service` contains `text`; fails the test after `limit`.
    pub async fn logged(&self, limit: Duration, service: &str, text: &str) {
        let start = Instant::now();
        while !self
            .supervisor
            .logs()
            .tail(service, 1000)
            .iter()
            .any(|l| l.text.contains(text))
        {
            assert!(start.elapsed() < limit, "{service} never logged {text:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every one of `services` has a ready instance; fails the test after `limit`.
    pub async fn ready(&self, limit: Duration, services: &[&str]) {
        let all = self
            .until(limit, |r| {
                services
                    .iter()
                    .all(|s| r.service(s).is_some_and(|s| s.ready_instances() > 0))
            })
            .await;
        assert!(all, "services never became ready: {services:?}");
    }

    /// Waits until `service` has exactly `replicas` ready instances; false after `limit`.
    pub async fn replicas_ready(&self, limit: Duration, service: &str, replicas: usize) -> bool {
        self.until(limit, |r| {
            r.service(service)
                .is_some_and(|s| s.ready_instances() == replicas)
        })
        .await
    }

    /// The newest run of job `service`; fails the test when it has none.
    pub fn last_run(&self, service: &str) -> registry::JobRun {
        registry::read(self.supervisor.registry())
            .service(service)
            .and_then(|job| job.runs.back().cloned())
            .unwrap_or_else(|| panic!("`{service}` has no run"))
    }

    /// Waits for an event matching `wanted`, recording every event seen on the way.
    pub async fn event(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(event)) => {
                    self.seen.push(event.clone());
                    if wanted(&event) {
                        return Some(event);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
            }
        }
    }

    /// Shuts down and waits for the report, bounded.
    pub async fn stop(mut self) -> (ShutdownReport, Vec<Event>) {
        self.supervisor.shutdown().await;
        let report = tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("shutdown took too long")
            .unwrap();
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
        (report, self.seen)
    }
}

/// The JSON body of an OK answer; fails the test on anything else.
pub fn ok<T: serde::de::DeserializeOwned>(answer: &switchboard_protocol::Envelope) -> T {
    use switchboard_protocol::{Body, Kind, Status};
    assert_eq!(answer.kind, Kind::Response(Status::Ok), "{answer:?}");
    let Body::Json(bytes) = &answer.body else {
        panic!("expected JSON back: {answer:?}")
    };
    serde_json::from_slice(bytes).unwrap()
}

pub fn is_state(event: &Event, service: &str, to: switchboard::registry::InstanceState) -> bool {
    event.service == service && matches!(event.kind, EventKind::State { to: t, .. } if t == to)
}

/// Whether a process with this pid still exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    switchboard::supervisor::procs::stat(pid).is_some_and(|s| !s.is_zombie())
}

/// Waits until none of `pids` is alive, for at most `limit`.
pub async fn all_gone(pids: &[u32], limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pids.iter().all(|&pid| !alive(pid)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pids.iter().all(|&pid| !alive(pid))
}

/// (order id → event kinds, in the order recorded) from notification's SQLite file.
pub fn notifications_by_order(
    path: &std::path::Path,
) -> std::collections::HashMap<i64, Vec<String>> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut by_order: std::collections::HashMap<i64, Vec<String>> = Default::default();
    let mut statement = db
        .prepare("SELECT order_id, kind FROM notifications ORDER BY id")
        .unwrap();
    let rows = statement
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    for row in rows {
        let (order, kind) = row.unwrap();
        by_order.entry(order).or_default().push(kind);
    }
    by_order
}

/// Sends `signal` to `pid`, safely (rustix); false when the process is gone.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> bool {
    switchboard::supervisor::procs::signal(pid, signal)
}

/// The pids of live processes whose command line is exactly `args`.
pub fn processes_running(args: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    switchboard::supervisor::procs::pids()
        .into_iter()
        .filter(|&pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .filter(|&pid| alive(pid))
        .collect()
}

/// A JSON request to `service`'s `method`, as the gateway would route it.
pub fn request<T: serde::Serialize + ?Sized>(
    service: &str,
    method: &str,
    body: &T,
    deadline: Duration,
) -> switchboard_protocol::Envelope {
    use switchboard_protocol::{Body, Envelope, Kind};
    Envelope {
        id: 1,
        deadline_us: deadline.as_micros() as u64,
        kind: Kind::Request,
        destination: service.into(),
        method: method.into(),
        body: Body::Json(serde_json::to_vec(body).unwrap().into()),
        ..Envelope::default()
    }
}

/// The error code of an answer; `None` for a success. Panics on anything but a response.
pub fn code(answer: &switchboard_protocol::Envelope) -> Option<switchboard_protocol::ErrorCode> {
    error(answer).map(|(code, _)| code)
}

/// The error code and message of an answer; `None` for a success.
pub fn error(
    answer: &switchboard_protocol::Envelope,
) -> Option<(switchboard_protocol::ErrorCode, String)> {
    use switchboard_protocol::{Kind, Status};
    match &answer.kind {
        Kind::Response(Status::Error(err)) => Some((err.code, err.message.to_string())),
        Kind::Response(Status::Ok) => None,
        other => panic!("not a response: {other:?}"),
    }
}

/// The pid of `service`'s first replica, when it is ready.
pub fn ready_pid(running: &Running, service: &str) -> Option<u32> {
    let registry = registry::read(running.supervisor.registry());
    registry
        .service(service)?
        .instances
        .first()
        .filter(|i| i.state == registry::InstanceState::Ready)
        .and_then(|i| i.pid)
}

/// The `(replica, order id)` of every order some replica of `order` shows running right now,
/// read straight from their segments.
pub fn orders_running(running: &Running) -> Vec<(u32, i64)> {
    let registry = switchboard::registry::read(running.supervisor.registry());
    let Some(order) = registry.service("order") else {
        return Vec::new();
    };
    let mut seen = Vec::new();
    for instance in &order.instances {
        let Some(handle) = &instance.handle else {
            continue;
        };
        let Some(segment) = &handle.segment else {
            continue;
        };
        for task in segment.read().tasks {
            if task.state != switchboard_protocol::segment::TaskState::Running {
                continue;
            }
            let id = task
                .label
                .strip_prefix("order ")
                .and_then(|rest| rest.split(':').next())
                .and_then(|id| id.parse().ok());
            if let Some(id) = id {
                seen.push((handle.id.replica, id));
            }
        }
    }
    seen
}

/// Processes whose environment names `dir`: every process the stack started carries its data
/// directory there, including any grandchild a service might have left behind.
pub fn processes_under(dir: &Path) -> Vec<u32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.windows(needle.len()).any(|w| w == needle) {
            found.push(pid);
        }
    }
    found
}

/// The address in a headless console's `gateway on http://ADDR …` line.
pub fn gateway_address(line: &str) -> Option<std::net::SocketAddr> {
    line.split("http://")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A client of the gateway at `address` of the console whose stack lives in `dir`, with the
/// admin token it wrote to its run directory.
pub fn gateway_client(dir: &Path, address: std::net::SocketAddr) -> switchboard::client::Client {
    use switchboard::client::{Client, Endpoint, Target};
    let token = std::fs::read_to_string(
        dir.join(".switchboard/run")
            .join(switchboard::gateway::auth::TOKEN_FILE),
    )
    .expect("no token file")
    .trim()
    .to_string();
    Client::new(Target {
        address: Endpoint::Tcp(address),
        token: Some(token),
    })
}
