//! Launching a job without a console: the launcher side of the protocol for a program that
//! wants to run one job and watch it (a build tool, a notebook, a GUI), in any language the
//! job is written in.
//!
//! [`Launcher::new`]`(program).spawn()` creates the sealed segment (as the console does), hands
//! it to the child as fd 3 with the environment `SPEC.md` §1 gives a service, answers the job's
//! Hello with a Welcome carrying its parameters, and reaps the child. The [`JobHandle`] it
//! returns offers the job's progress, heartbeat age, counters, exit status and result, and a
//! stream of [`Change`]s.
//!
//! - `spawn`: the child process, its environment and its fd 3.
//! - `wire`: the child's frames: the handshake, its result, and answers to what it may not do
//!   without a console (calls).
//! - [`handle`]: the handle, and the watcher thread that samples the segment and reaps.
//!
//! Threads, not tasks: a launcher must work in a program with no async runtime, and each job
//! costs two threads (its stdout and its watcher), which is nothing next to a process.

pub mod handle;
mod spawn;
mod wire;

use std::{ffi::OsString, path::PathBuf, process::Stdio, time::Duration};

pub use handle::{Change, Counters, JobExit, JobHandle};

use crate::segment::SegmentError;

/// How a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create the job's segment: {0}")]
    Segment(#[from] SegmentError),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot start a thread for the job: {0}")]
    Thread(std::io::Error),
}

/// What to run, and what to tell it. Build with [`Launcher::new`], then [`spawn`](Self::spawn).
pub struct Launcher {
    program: OsString,
    args: Vec<OsString>,
    name: String,
    params: String,
    heartbeat_ms: u32,
    dir: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    stderr: Option<Stdio>,
    sample_every: Duration,
}

impl Launcher {
    /// A launcher for `program` (looked up in `PATH` like any command), named `job`, with no
    /// parameters, a heartbeat asked every second, and the child's stderr inherited.
    pub fn new(program: impl Into<OsString>) -> Self {
        Launcher {
            program: program.into(),
            args: Vec::new(),
            name: "job".into(),
            params: String::new(),
            heartbeat_ms: 1000,
            dir: None,
            env: Vec::new(),
            stderr: None,
            sample_every: Duration::from_millis(50),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The name the job is given (`SWITCHBOARD_SERVICE`, `Welcome.service`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The job's parameters, JSON text (`Welcome.params`).
    pub fn params(mut self, json: impl Into<String>) -> Self {
        self.params = json.into();
        self
    }

    /// How often the job is asked to beat (`Welcome.heartbeat_ms`).
    pub fn heartbeat_ms(mut self, ms: u32) -> Self {
        self.heartbeat_ms = ms.max(1);
        self
    }

    /// The working directory, also given as the data, run and stack directories (§1).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the job's log lines go (inherited by default).
    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.stderr = Some(stderr.into());
        self
    }

    /// How often the watcher reads the segment for [`Change::Progress`] (default 50 ms).
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = every.max(Duration::from_millis(1));
        self
    }

    /// Starts the job. The handle reaps it; dropping the handle kills a job still running.
    pub fn spawn(self) -> Result<JobHandle, LaunchError> {
        handle::JobHandle::start(self)
    }
}
