//! Spawning child processes from one long-lived thread.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned the child exits, not the process
//! (prctl(2)). tokio's blocking threads come and go, so every child is spawned from this one
//! thread, which lives as long as the console.
//!
//! In the child, before `exec`: a new session and process group (`setsid`), so the whole group
//! can be signalled and it has no controlling terminal; the parent-death signal, checked against
//! the race where the console died before it was set; huge pages as they were before the
//! console turned them off for itself (see [`super::huge_pages`]); the metrics segment moved
//! to fd 3; and the service's resource limits (see [`super::limits`]).

use std::{
    ffi::OsString,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    process::Stdio,
};

use tokio::{process::Child, sync::mpsc, sync::oneshot};

use super::limits::Rlimits;
use super::strays::{LINEAGE_ENV, OwnChildren};
use crate::stack::ResourceLimits;

/// The fd number the segment is inherited as.
pub const SEGMENT_FD: i32 = 3;

/// Everything needed to start one process.
#[derive(Debug)]
pub struct LaunchCommand {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// The segment's memfd, handed to the child as fd 3.
    pub segment: Option<OwnedFd>,
    /// Set with `setrlimit` in the child before exec.
    pub limits: ResourceLimits,
}

struct SpawnJob {
    command: LaunchCommand,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

/// Handle to the spawner thread. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    jobs: mpsc::Sender<SpawnJob>,
    children: OwnChildren,
}

/// Spawn requests waiting for the thread; spawning takes about a millisecond, so a full queue
/// means a burst (scale to hundreds), and senders simply wait their turn.
const QUEUE: usize = 256;

impl Spawner {
    /// Starts the spawner thread. Must be called within a tokio runtime: the children are
    /// registered with it for `wait()`.
    pub fn start() -> std::io::Result<Spawner> {
        let runtime = tokio::runtime::Handle::current();
        let (jobs, mut queue) = mpsc::channel::<SpawnJob>(QUEUE);
        let children = OwnChildren::default();
        let list = children.clone();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                while let Some(job) = queue.blocking_recv() {
                    let _ = job.reply.send(spawn(job.command, &list));
                }
            })?;
        Ok(Spawner { jobs, children })
    }

    /// The pids spawned here that are not reaped yet, with their lineages.
    pub fn children(&self) -> OwnChildren {
        self.children.clone()
    }

    pub async fn spawn(&self, command: LaunchCommand) -> std::io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(SpawnJob { command, reply })
            .await
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?
    }
}

fn spawn(launch: LaunchCommand, children: &OwnChildren) -> std::io::Result<Child> {
    // Worked out here, before the fork: the child only makes the calls.
    let rlimits = Rlimits::new(&launch.limits)?;
    let mut command = tokio::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A backstop only: the supervisor always stops and reaps explicitly.
        .kill_on_drop(true);
    if launch.segment.is_none() {
        // A console that is itself a service of another (nested stacks) has a segment of its
        // own; a plain program must not take that variable for one it was given.
        command.env_remove(switchboard_protocol::segment::SEGMENT_FD_ENV);
    }
    if let Some(cwd) = &launch.cwd {
        command.current_dir(cwd);
    }
    let segment_fd = launch.segment.as_ref().map(AsRawFd::as_raw_fd);
    let console_pid = std::process::id() as libc::pid_t;
    let restore_huge_pages = super::huge_pages::restore_in_child();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (setsid, prctl, getppid, kill, dup2, fcntl, setrlimit); it
    // allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            // The console may have died between fork and prctl: then nobody would ever send
            // the signal, so act on it now.
            if libc::getppid() != console_pid {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // The console's own choice (`huge_pages`), not the service's.
            if restore_huge_pages && libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = segment_fd {
                if fd == SEGMENT_FD {
                    // dup2 onto itself keeps FD_CLOEXEC set, so clear it explicitly.
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, SEGMENT_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            rlimits.apply()
        });
    }
    let lineage = launch
        .env
        .iter()
        .find(|(key, _)| key == LINEAGE_ENV)
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    // Held from before the fork until the pid is listed: an adoption scan in between would
    // take this child for an orphan and reap it under the runtime (see `strays`).
    let ending = ENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *ending {
        return Err(std::io::Error::other("the console is ending every process"));
    }
    let mut own = children.lock();
    let child = command.spawn().map_err(|err| named(&launch.program, err));
    if let Ok(child) = &child
        && let Some(pid) = child.id()
    {
        own.insert(pid, lineage);
    }
    drop(own);
    drop(ending);
    // The parent's copy of the memfd is no longer needed: the console reads through its own
    // mapping, and the child has its fd 3.
    drop(launch.segment);
    child
}

/// True once the console is ending every process of the stack at once (its keeper is gone):
/// no spawn may start after that, or a restart could fork a process behind the last sweep.
/// Held by a spawn from its check to its fork's end.
static ENDING: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// Refuses every spawn from now on; returns once a spawn in progress has forked, so that a
/// sweep of this process's children that follows sees every one.
pub fn refuse_spawns() {
    *ENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
}

/// A spawn error that names the program: std's says only "No such file or directory (os
/// error 2)", which leaves the operator to guess which path of which service.
fn named(program: &std::ffi::OsStr, err: std::io::Error) -> std::io::Error {
    let program = program.to_string_lossy();
    let why = match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied (not executable?)".into(),
        _ => err.to_string(),
    };
    std::io::Error::new(err.kind(), format!("{program}: {why}"))
}

/// Whether a spawn error will not go away by retrying: the program is missing or cannot be
/// executed, and nothing the supervisor does creates it.
pub fn will_not_appear(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// Sends `signal` to the process group led by `pid` (every child is a group leader).
pub fn signal_group(pid: u32, signal: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: killpg takes plain integers and has no memory-safety preconditions.
    unsafe { libc::killpg(pgid, signal) == 0 }
}
