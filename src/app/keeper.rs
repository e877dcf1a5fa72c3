//! The keeper: a small parent that outlives the console, so that nothing of the stack outlives
//! either.
//!
//! `PR_SET_PDEATHSIG` reaches only a dead process's direct children: when the console is
//! SIGKILLed its services die, but their own children (a shell's `sleep &`, a double-forked
//! daemon, a `setsid env -i` escapee) are re-parented to init and run on. So before any thread
//! exists the process forks ([`keep`]):
//!
//! - The parent becomes the keeper. It is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so when
//!   the console dies, however it dies, every descendant the console leaves is re-parented to
//!   the keeper rather than to init. It kills them layer by layer until it has no child left
//!   ([`procs::end_descendants`]), then exits with the console's status. While the console
//!   lives the keeper only waits: no thread, no timer, no memory to speak of. A signal sent to
//!   it by a person or a program (`kill PID`) is passed on to the console; the ones the
//!   terminal sends to the whole foreground group (Ctrl-C, a hang-up) are not, since the
//!   console gets its own.
//! - The child runs the console. It is a subreaper too, so orphans of its services come to it
//!   while it runs (`supervisor::strays`), and its parent-death signal is [`KEEPER_GONE`]: if
//!   the keeper is SIGKILLed, the console ends every process of the stack at once and exits
//!   (`on_keeper_gone`) rather than run on without its net.
//!
//! Only killing both at once (`pkill -9 switchboard`) leaves processes behind; the next run of
//! the stack finds them by their environment and stops them (`strays::stop_leftovers`).

use std::{
    sync::atomic::{AtomicBool, AtomicI32, Ordering},
    time::Duration,
};

use crate::supervisor::procs;

/// The console's parent-death signal: the keeper is gone.
pub const KEEPER_GONE: i32 = libc::SIGUSR2;
/// How long the keeper (or a console whose keeper died) goes on killing descendants that keep
/// appearing before it gives up: only a fork bomb takes this long.
const END_LIMIT: Duration = Duration::from_secs(10);

/// The console's pid, for the keeper's signal handler.
static CONSOLE: AtomicI32 = AtomicI32::new(0);
/// This process is a console with a keeper.
static KEPT: AtomicBool = AtomicBool::new(false);

/// Forks the keeper. Returns in the child, which runs the console, with `held`; the parent
/// closes `held` (a pipe end the console alone must hold, say) and never returns. On an error
/// `held` comes back with it, and the console runs without a keeper (or, when the error came
/// after the fork, with one that cannot do all of its work).
///
/// Must be called before any thread is started: only the calling thread survives a fork.
pub fn keep<T>(held: T) -> Result<T, (std::io::Error, T)> {
    if let Err(err) = procs::become_subreaper() {
        return Err((err, held));
    }
    let keeper = std::process::id() as libc::pid_t;
    // SAFETY: the process is still single-threaded (the runtime, the logger and the UI start
    // after this), so the child is a complete copy and may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => Err((std::io::Error::last_os_error(), held)),
        0 => {
            // The subreaper flag is not inherited over fork.
            let adopting = procs::become_subreaper();
            // SAFETY: plain integers; then the race where the keeper died before prctl.
            let told = unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    KEEPER_GONE as libc::c_ulong,
                    0,
                    0,
                    0,
                )
            };
            if told == -1 {
                return Err((std::io::Error::last_os_error(), held));
            }
            KEPT.store(true, Ordering::Relaxed);
            // SAFETY: getppid and raise take no pointers.
            if unsafe { libc::getppid() } != keeper {
                unsafe { libc::raise(KEEPER_GONE) };
            }
            match adopting {
                Ok(()) => Ok(held),
                Err(err) => Err((err, held)),
            }
        }
        console => {
            drop(held);
            run_keeper(console)
        }
    }
}

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SI_USER (kill), SI_QUEUE and SI_TKILL are at or below 0; the kernel's own (the
    // terminal's Ctrl-C and hang-up) are above.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let sent_by_someone = info.is_null() || unsafe { (*info).si_code } <= 0;
    let console = CONSOLE.load(Ordering::Relaxed);
    if sent_by_someone && console > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(console, signal);
        }
    }
}

fn run_keeper(console: libc::pid_t) -> ! {
    CONSOLE.store(console, Ordering::Relaxed);
    // SAFETY: installing handlers on this single thread; `forward` only calls kill.
    unsafe {
        let _ = libc::prctl(libc::PR_SET_NAME, c"sb-keeper".as_ptr(), 0, 0, 0);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    let mut status = 0;
    loop {
        // Any child: adopted orphans that exit while the console lives are reaped here too.
        // SAFETY: waiting with a valid pointer.
        let waited = unsafe { libc::waitpid(-1, &mut status, 0) };
        if waited == console {
            break;
        }
        if waited == -1 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // ECHILD cannot happen while the console is our child; leave rather than spin.
            std::process::exit(1);
        }
    }
    // Whatever the console left is ours now.
    procs::end_descendants(END_LIMIT);
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    std::process::exit(128 + libc::WTERMSIG(status));
}

/// In a console with a keeper (see [`keep`]): starts the task that ends the stack, and this
/// process, when the keeper dies. Call it before any service starts: until then the keeper's
/// death signal simply ends the process, which has nothing to clean up yet.
pub fn watch() {
    if !KEPT.load(Ordering::Relaxed) {
        return;
    }
    let mut gone =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(KEEPER_GONE)) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(cause = %err, "cannot watch for the keeper's death");
                return;
            }
        };
    tokio::spawn(async move {
        gone.recv().await;
        let _ = tokio::task::spawn_blocking(on_keeper_gone).await;
    });
}

/// The console's keeper is gone: ends every descendant (services, their children, adopted
/// orphans) and exits. There is no graceful stop here: the process the operator started is
/// gone, and nothing would be left to stop the stack if this one died next.
fn on_keeper_gone() {
    tracing::error!("the keeper process is gone; ending every process of the stack");
    // First no more spawns: the supervisor would restart what is killed here, behind the sweep.
    crate::supervisor::spawn::refuse_spawns();
    let killed = procs::end_descendants(END_LIMIT);
    tracing::error!(killed = killed.len(), "ended the stack");
    crate::tui::terminal::leave_if_entered();
    std::process::exit(128 + libc::SIGKILL);
}
