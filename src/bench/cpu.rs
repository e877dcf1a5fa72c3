//! Exact CPU time, for figures of CPU per message. `/proc/PID/stat` counts 10 ms ticks, too
//! coarse for runs of a second; `getrusage` and `/proc/PID/task/*/schedstat` give
//! microseconds and nanoseconds.

/// User and system CPU time, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user: f64,
    pub system: f64,
}

impl Usage {
    /// This whole process so far.
    pub fn own() -> Usage {
        Usage::of(libc::RUSAGE_SELF)
    }

    /// The calling thread so far.
    pub fn thread() -> Usage {
        Usage::of(libc::RUSAGE_THREAD)
    }

    /// Every child this process has reaped so far (and what they reaped).
    pub fn reaped_children() -> Usage {
        Usage::of(libc::RUSAGE_CHILDREN)
    }

    fn of(who: libc::c_int) -> Usage {
        // SAFETY: getrusage writes into the struct it is given and nothing else.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(who, &mut usage);
            usage
        };
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Usage {
            user: seconds(usage.ru_utime),
            system: seconds(usage.ru_stime),
        }
    }

    pub fn since(self, before: Usage) -> Usage {
        Usage {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }

    pub fn scaled(self, by: f64) -> Usage {
        Usage {
            user: self.user * by,
            system: self.system * by,
        }
    }

    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

/// Time on a CPU so far of the processes `pids`, all their threads, in ns; a process that
/// cannot be read counts 0.
pub fn processes_ns(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| process_ns(pid)).sum()
}

fn process_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}
