//! Leaving the terminal without stopping the stack.
//!
//! - A local console runs in a child of the process the shell started ([`hold_terminal`]).
//!   The parent only waits in the foreground. When the operator detaches (`q`, then `d`) or
//!   the terminal hangs up, the child tells the parent, moves its output to
//!   `RUN_DIR/console.log` and into a session of its own ([`leave_terminal`]), and goes on
//!   supervising; the parent prints how to attach and exits 0, which gives the shell back.
//!   The services stay children of the same process throughout: nothing is restarted.
//! - `up -d` starts the instance as a new process in its own session with its output in
//!   `RUN_DIR/console.log` ([`spawn_daemon`]).

use std::{
    ffi::OsString,
    fs::File,
    io::{Read, Write},
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicI32, Ordering},
};

use rustix::pipe::{PipeFlags, pipe_with};

/// The detached console's log of its lifecycle lines (and of its own tracing).
pub const CONSOLE_LOG: &str = "console.log";
/// What the child writes to the parent when it detaches; the rest of the message is printed.
const DETACHED: &[u8] = b"detached\n";

/// The console child's line to the parent waiting in the foreground.
#[derive(Debug)]
pub struct Foreground {
    notice: Option<OwnedFd>,
}

impl Foreground {
    /// Tells the waiting parent that the console has detached: it prints `message` to the
    /// terminal (when there still is one) and exits 0.
    pub fn detached(&mut self, message: &str) {
        if let Some(fd) = self.notice.take() {
            let mut pipe = File::from(fd);
            let _ = pipe.write_all(DETACHED);
            let _ = pipe.write_all(message.as_bytes());
        }
    }
}

/// The console child's pid, for the parent's signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Forks the console: the child returns (and runs the console); the parent stays in the
/// shell's foreground until the child exits, with its exit code, or detaches, with 0.
///
/// Must be called before any thread is started: only the calling thread survives a fork.
pub fn hold_terminal() -> std::io::Result<Foreground> {
    let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
    // SAFETY: the process is still single-threaded (the runtime, the logger and the UI start
    // after this), so the child is a complete copy and may go on running Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read);
            Ok(Foreground {
                notice: Some(write),
            })
        }
        child => {
            drop(write);
            wait_in_foreground(child, read)
        }
    }
}

extern "C" fn forward(signal: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(child, signal);
        }
    }
}

fn wait_in_foreground(child: libc::pid_t, read: OwnedFd) -> ! {
    CHILD.store(child, Ordering::Relaxed);
    // SAFETY: plain handlers installed on this single thread; `forward` only calls kill.
    unsafe {
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, forward as *const () as libc::sighandler_t);
        // The child hears the hangup itself (it is in the same process group) and decides.
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let mut message = Vec::new();
    let _ = File::from(read).read_to_end(&mut message);
    if let Some(text) = message.strip_prefix(DETACHED) {
        // The terminal may be gone (a hangup): nothing to do about a failed write.
        let mut out = std::io::stdout();
        let _ = out.write_all(text);
        let _ = out.flush();
        std::process::exit(0);
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid pointer.
        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
        if waited == child {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            std::process::exit(1);
        }
    }
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    std::process::exit(128 + libc::WTERMSIG(status));
}

/// Moves this process off its terminal: stdin from a pipe nobody writes to, stdout and stderr
/// appended to `RUN_DIR/console.log`, and a session of its own, so a hangup of the old
/// terminal reaches it no more.
///
/// Not /dev/null for stdin: crossterm's input thread may still be reading it, and at EOF it
/// reads again at once, for ever (a core spent on nothing). An empty pipe just never wakes it.
pub fn leave_terminal(run_dir: &Path) -> std::io::Result<PathBuf> {
    let path = run_dir.join(CONSOLE_LOG);
    std::fs::create_dir_all(run_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let (quiet, never_written) = pipe_with(PipeFlags::CLOEXEC)?;
    rustix::stdio::dup2_stdin(&quiet)?;
    // Kept open for the life of the process, so the pipe never reports EOF.
    std::mem::forget(never_written);
    rustix::stdio::dup2_stdout(&log)?;
    rustix::stdio::dup2_stderr(&log)?;
    // Fails only for a process group leader, which the console child never is; its old
    // session then still loses it as a member that matters, since it has no tty open.
    let _ = rustix::process::setsid();
    Ok(path)
}

/// Starts `switchboard ARGS` as a daemon: a session of its own, stdin from /dev/null, and
/// stdout and stderr appended to `RUN_DIR/console.log`.
pub fn spawn_daemon(args: &[OsString], run_dir: &Path) -> std::io::Result<Child> {
    std::fs::create_dir_all(run_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join(CONSOLE_LOG))?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
    command.spawn()
}
