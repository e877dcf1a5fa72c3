//! The writer and the reader in two real processes: the reader must never accept a torn task
//! record. The test binary re-executes itself as the writer, with the segment as fd 3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use switchboard_protocol::segment::{SegmentWriter, Validity, create_segment};

const CHILD: &str = "SEGMENT_STRESS_WRITER";
const SLOTS: usize = 4;

/// The invariant every consistent record satisfies; a torn read mixes two writes and breaks it.
fn consistent(done: u64, total: u64, label: &str) -> bool {
    total == 2 * done + 1 && label == format!("t{done}")
}

/// Runs only as the child: hammers several slots until killed.
#[test]
fn writer_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let writer = Arc::new(SegmentWriter::from_env().unwrap().expect("no segment fd"));
    let slots: Vec<_> = (0..SLOTS)
        .map(|i| writer.task(&format!("t{i}"), 1).unwrap())
        .collect();
    let mut n = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for slot in &slots {
            n += 1;
            // Label and numbers change together, in one seqlocked update each.
            slot.set_label(&format!("t{n}"));
            slot.set(n, 2 * n + 1);
        }
    }
}

#[test]
fn no_torn_record_is_ever_accepted() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let (fd, reader) = create_segment("stress").unwrap();
    let raw = fd.as_raw_fd();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("SWITCHBOARD_SEGMENT_FD", "3")
        .stdout(Stdio::null());
    // SAFETY: only dup2 and fcntl, which are async-signal-safe, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if raw == 3 {
                if libc_fcntl_clear_cloexec(3) {
                    return Ok(());
                }
                return Err(std::io::Error::last_os_error());
            }
            if dup2(raw, 3) {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().unwrap();

    let mut accepted = 0u64;
    let mut distinct = HashSet::new();
    let mut torn_reported = 0u64;
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < Duration::from_millis(1500) && iterations < 5_000_000 {
        iterations += 1;
        for task in reader.read().tasks {
            match task.validity {
                Validity::Valid => {
                    // Labels are set in a separate update from the numbers, so a valid record
                    // may pair the newest label with the previous numbers; both updates are
                    // whole, so the record is one of the two consistent states.
                    let ok = consistent(task.done, task.total, &task.label)
                        || task
                            .label
                            .strip_prefix('t')
                            .and_then(|n| n.parse::<u64>().ok())
                            .is_some_and(|n| n > task.done && task.total == 2 * task.done + 1);
                    assert!(ok, "accepted a torn record: {task:?}");
                    accepted += 1;
                    distinct.insert(task.done);
                }
                Validity::Torn => torn_reported += 1,
                Validity::Absurd(why) => panic!("absurd record from a well-behaved writer: {why}"),
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(accepted > 1000, "only {accepted} records read");
    assert!(
        distinct.len() > 100,
        "the writer barely ran: {} values",
        distinct.len()
    );
    eprintln!(
        "accepted {accepted} records, {} distinct, {torn_reported} reported torn",
        distinct.len()
    );
}

fn dup2(from: i32, to: i32) -> bool {
    // SAFETY: plain syscall on integers.
    unsafe { libc::dup2(from, to) != -1 }
}

fn libc_fcntl_clear_cloexec(fd: i32) -> bool {
    // SAFETY: plain syscall on an integer.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) != -1 }
}
