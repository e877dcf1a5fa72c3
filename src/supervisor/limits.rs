//! A service's resource limits (`limits = { … }` in the stack file): set with `setrlimit` in
//! the child between fork and exec, and named in the exit reason of a process they ended.
//!
//! The values are worked out in the console before the fork ([`Rlimits::new`]), so that the
//! child only makes `setrlimit` calls, which are async-signal-safe; a limit above the console's
//! own hard limit (which an unprivileged process cannot raise) fails the spawn with a clear
//! error instead of an `EPERM` from the child.
//!
//! How each limit ends a process, and what the exit reason says:
//! - `cpu_time`: SIGXCPU at the limit, whose default action ends the process; a process that
//!   catches it gets SIGKILL one CPU second later (the hard limit). A SIGXCPU death reads "CPU
//!   time limit (1h) reached".
//! - `memory` (`RLIMIT_AS`): allocations fail, and what follows is up to the program: an abort
//!   (Rust, C++), a segfault, a `MemoryError` and exit 1 (Python). Nothing tells it apart from
//!   any other abort for sure, so a death by SIGABRT, SIGSEGV or SIGKILL of a process with a
//!   memory limit reads "memory limit 512MiB may have been reached".
//! - `open_files`: `open` fails with `EMFILE`; the program decides what that means.
//! - `core = false`: no core file, whatever the program does.

use std::io;

use crate::{registry::ExitStatus, stack::ResourceLimits};

/// The `setrlimit` calls to make in the child, worked out before the fork.
#[derive(Clone, Copy, Default)]
pub struct Rlimits {
    memory: Option<libc::rlimit>,
    open_files: Option<libc::rlimit>,
    cpu_time: Option<libc::rlimit>,
    core: Option<libc::rlimit>,
}

impl Rlimits {
    /// The limits for `limits`; fails when one is above the console's own hard limit.
    pub fn new(limits: &ResourceLimits) -> io::Result<Rlimits> {
        let both = |value: u64| libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        let rlimits = Rlimits {
            memory: limits.memory.map(both),
            open_files: limits.open_files.map(both),
            // The hard limit a second later: a process that handles SIGXCPU gets that second
            // to wind down, then SIGKILL.
            cpu_time: limits.cpu_time.map(|secs| libc::rlimit {
                rlim_cur: secs,
                rlim_max: secs.saturating_add(1),
            }),
            core: (limits.core == Some(false)).then(|| both(0)),
        };
        check_hard("memory", libc::RLIMIT_AS, rlimits.memory)?;
        check_hard("open_files", libc::RLIMIT_NOFILE, rlimits.open_files)?;
        check_hard("cpu_time", libc::RLIMIT_CPU, rlimits.cpu_time)?;
        Ok(rlimits)
    }

    /// Sets the limits on the calling process.
    ///
    /// # Safety
    /// Meant for a `pre_exec` closure: it calls only `setrlimit` (async-signal-safe), and
    /// allocates nothing.
    pub unsafe fn apply(&self) -> io::Result<()> {
        let set = |resource, limit: Option<libc::rlimit>| match limit {
            // SAFETY: `limit` is a valid rlimit on this stack frame.
            Some(limit) if unsafe { libc::setrlimit(resource, &limit) } == -1 => {
                Err(io::Error::last_os_error())
            }
            _ => Ok(()),
        };
        set(libc::RLIMIT_AS, self.memory)?;
        set(libc::RLIMIT_NOFILE, self.open_files)?;
        set(libc::RLIMIT_CPU, self.cpu_time)?;
        set(libc::RLIMIT_CORE, self.core)
    }
}

/// Fails when `wanted`'s hard limit is above the console's own for `resource`.
fn check_hard(
    name: &str,
    resource: libc::__rlimit_resource_t,
    wanted: Option<libc::rlimit>,
) -> io::Result<()> {
    let Some(wanted) = wanted else {
        return Ok(());
    };
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `own`, a valid rlimit.
    if unsafe { libc::getrlimit(resource, &mut own) } == -1 {
        return Err(io::Error::last_os_error());
    }
    if own.rlim_max != libc::RLIM_INFINITY && wanted.rlim_max > own.rlim_max {
        return Err(io::Error::other(format!(
            "limits.{name} ({}) is above the console's own hard limit ({})",
            wanted.rlim_max, own.rlim_max
        )));
    }
    Ok(())
}

/// Why a process of a service with `limits` ended with `status`, when a limit explains it (or
/// may); `None` otherwise. See the module's notes for what each limit looks like.
pub fn exit_reason(limits: &ResourceLimits, status: &ExitStatus) -> Option<String> {
    let ExitStatus::Signal(signal) = *status else {
        return None;
    };
    if let (libc::SIGXCPU, Some(secs)) = (signal, limits.cpu_time) {
        return Some(format!("CPU time limit ({}) reached", seconds(secs)));
    }
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        _ => return None,
    };
    let mut maybe = Vec::new();
    if let Some(bytes) = limits.memory {
        maybe.push(format!("memory limit {}", size(bytes)));
    }
    // SIGKILL is also what a process that caught SIGXCPU gets at the hard limit.
    if let (libc::SIGKILL, Some(secs)) = (signal, limits.cpu_time) {
        maybe.push(format!("CPU time limit ({})", seconds(secs)));
    }
    (!maybe.is_empty()).then(|| {
        format!(
            "killed by {name}; {} may have been reached",
            maybe.join(" or ")
        )
    })
}

/// `3600` → "1h", `90` → "90s": the largest unit that divides it.
fn seconds(secs: u64) -> String {
    match secs {
        s if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        s if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `512 << 20` → "512MiB": the largest binary unit that divides it.
fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    UNITS
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes}B"),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory: Option<u64>, cpu_time: Option<u64>) -> ResourceLimits {
        ResourceLimits {
            memory,
            cpu_time,
            ..ResourceLimits::default()
        }
    }

    #[test]
    fn a_sigxcpu_death_names_the_cpu_limit() {
        let reason = exit_reason(
            &limits(None, Some(3600)),
            &ExitStatus::Signal(libc::SIGXCPU),
        );
        assert_eq!(reason.as_deref(), Some("CPU time limit (1h) reached"));
        // Without a CPU limit, SIGXCPU came from elsewhere.
        assert_eq!(
            exit_reason(&limits(None, None), &ExitStatus::Signal(libc::SIGXCPU)),
            None
        );
    }

    #[test]
    fn an_abort_under_a_memory_limit_may_be_the_limit() {
        let memory = limits(Some(512 << 20), None);
        for (signal, name) in [
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGKILL, "SIGKILL"),
        ] {
            assert_eq!(
                exit_reason(&memory, &ExitStatus::Signal(signal)).as_deref(),
                Some(
                    format!("killed by {name}; memory limit 512MiB may have been reached").as_str()
                )
            );
        }
        assert_eq!(
            exit_reason(&memory, &ExitStatus::Signal(libc::SIGTERM)),
            None
        );
        assert_eq!(exit_reason(&memory, &ExitStatus::Code(1)), None);
        assert_eq!(
            exit_reason(
                &ResourceLimits::default(),
                &ExitStatus::Signal(libc::SIGABRT)
            ),
            None
        );
    }

    #[test]
    fn units_read_as_written() {
        assert_eq!(seconds(1), "1s");
        assert_eq!(seconds(90), "90s");
        assert_eq!(seconds(120), "2m");
        assert_eq!(size(1 << 30), "1GiB");
        assert_eq!(size(1536 << 10), "1536KiB");
        assert_eq!(size(1_000_000), "1000000B");
    }

    #[test]
    fn a_limit_above_the_hard_one_is_refused_before_the_fork() {
        let mut own = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `own`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
        if own.rlim_max == libc::RLIM_INFINITY {
            return;
        }
        let too_many = ResourceLimits {
            open_files: Some(own.rlim_max + 1),
            ..ResourceLimits::default()
        };
        let err = Rlimits::new(&too_many).err().expect("accepted");
        assert!(err.to_string().contains("open_files"), "{err}");
    }
}
