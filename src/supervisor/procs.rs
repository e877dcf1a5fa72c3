//! The process table, as `/proc` shows it: who is whose child, which group and session, what
//! environment, and the one loop that ends every descendant of this process.
//!
//! Every read tolerates a process that is gone or not ours to read (`None`): the table changes
//! while it is read.

use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};

/// One line of `/proc/PID/stat`, the fields containment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// `R`, `S`, `D`, `Z` (a zombie: exited, not yet reaped), ...
    pub state: u8,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        self.state == b'Z'
    }
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from its last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let (head, tail) = line.rsplit_once(')')?;
    let pid = head.split_once(" (")?.0.trim().parse().ok()?;
    let mut fields = tail.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
        session,
    })
}

pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every pid in the table.
pub fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<ProcStat> {
    pids()
        .into_iter()
        .filter_map(stat)
        .filter(|s| s.ppid == parent)
        .collect()
}

/// The environment of `pid` (NUL-separated `KEY=VALUE`), when it is ours to read.
pub fn environ(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The value of `key` in an environment image.
pub fn env_value<'a>(environ: &'a [u8], key: &str) -> Option<&'a str> {
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
        .and_then(|value| std::str::from_utf8(value).ok())
}

/// The command name of `pid` (`/proc/PID/comm`), for reports.
pub fn name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|name| name.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// SIGKILLs `pid`, and its process group when it leads one (other than ours). False when it
/// was gone already.
pub fn kill_hard(process: &ProcStat) -> bool {
    let me = rustix::process::getpgrp();
    if process.pgrp == process.pid
        && i32::try_from(process.pgrp).ok() != Some(me.as_raw_nonzero().get())
        && let Some(group) = pid(process.pgrp)
    {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
    pid(process.pid).is_some_and(|p| rustix::process::kill_process(p, Signal::KILL).is_ok())
}

/// Sends `signal` to `pid` alone.
pub fn signal(pid_: u32, signal: Signal) -> bool {
    pid(pid_).is_some_and(|p| rustix::process::kill_process(p, signal).is_ok())
}

fn pid(raw: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(raw).ok()?).filter(|p| !p.is_init())
}

/// Kills every descendant of this process and reaps them, until it has no child left.
///
/// For a subreaper: each killed child's own children are re-parented to it, so each round
/// takes the next layer, whatever sessions or environments they have. Reaps with
/// `waitpid(-1)`, so only for a process about to exit (the keeper, or a console whose
/// keeper is gone): it takes the exit status of any child, the runtime's included. Returns
/// the pids it killed. Gives up after `limit` (a fork bomb that outruns it).
///
/// "No child" is believed only after `QUIET_ROUNDS` (4) rounds in a row: seen here, a
/// grandchild re-parented by its parent's death showed up as a child some milliseconds after
/// `waitpid` had answered ECHILD.
pub fn end_descendants(limit: Duration) -> Vec<u32> {
    let me = std::process::id();
    let started = std::time::Instant::now();
    let mut killed = Vec::new();
    let mut quiet = 0;
    while quiet < QUIET_ROUNDS && started.elapsed() < limit {
        for child in children_of(me) {
            if !child.is_zombie() && kill_hard(&child) {
                killed.push(child.pid);
            }
        }
        let no_child = loop {
            match rustix::process::waitpid(None, WaitOptions::NOHANG) {
                Ok(Some(_)) | Err(rustix::io::Errno::INTR) => continue,
                // Children left, none exited yet.
                Ok(None) => break false,
                Err(rustix::io::Errno::CHILD) => break true,
                Err(_) => return killed,
            }
        };
        quiet = if no_child { quiet + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(5));
    }
    killed
}

/// See [`end_descendants`].
const QUIET_ROUNDS: u32 = 4;

/// Whether this process adopts orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub fn is_subreaper() -> bool {
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer, which is valid.
    let done = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut flag as *mut libc::c_int as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    done == 0 && flag != 0
}

/// Makes this process adopt its orphaned descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_a_name_with_spaces_and_parentheses() {
        let line = "4242 (we(ird) name) S 17 4242 4242 0 -1 4194560 100 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pid: 4242,
                state: b'S',
                ppid: 17,
                pgrp: 4242,
                session: 4242
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) "), None);
    }

    #[test]
    fn this_process_is_in_the_table_with_its_parent() {
        let me = stat(std::process::id()).expect("own stat");
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(pids().contains(&std::process::id()));
    }

    #[test]
    fn env_values_are_found_by_exact_key() {
        let image = b"PATH=/bin\0SWITCHBOARD_LINEAGE=12.0.7\0HOME=/root\0";
        assert_eq!(env_value(image, "SWITCHBOARD_LINEAGE"), Some("12.0.7"));
        assert_eq!(
            env_value(b"SWITCHBOARD_LINEAGE_X=1\0", "SWITCHBOARD_LINEAGE"),
            None
        );
    }
}
