//! The writer and the reader in two real processes: the reader must never accept a torn task
//! record. The test binary re-executes itself as the writer, with the segment as fd 3, the
//! way the console starts a service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashSet,
    io::Read,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use switchboard_protocol::segment::{
    SEGMENT_FD_ENV, SegmentWriter, TaskState, Validity, create_segment,
};

/// Set in the child's environment: run `writer_child` for real.
const CHILD: &str = "SEGMENT_STRESS_WRITER";
const SLOTS: u64 = 4;
const WRITE_FOR: Duration = Duration::from_millis(1500);

/// The label for value `n`: three copies spread over all eight label words, so a read mixing
/// words of two labels cannot pass for one.
fn label(n: u64) -> String {
    format!("{n:020}.{n:020}.{n:020}")
}

fn label_value(label: &str) -> Option<u64> {
    let mut parts = label.split('.');
    let first = parts.next()?;
    if label.len() != 62 || parts.clone().count() != 2 || parts.any(|p| p != first) {
        return None;
    }
    first.parse().ok()
}

/// Each slot publishes label `n` and then (done n, total 2n + 1), as two seqlocked updates.
/// A whole record therefore has total = 2·done + 1 and a label equal to done, or one step
/// ahead of it when read between the two updates: SLOTS ahead, or, before a slot's first
/// (done n, ...), its first label (1 to SLOTS) over the (label 0, done 0, total 1) it was
/// created with. A torn read breaks one of these.
fn consistent(done: u64, total: u64, label: &str) -> bool {
    total == done.wrapping_mul(2).wrapping_add(1)
        && label_value(label).is_some_and(|m| {
            m == done || m == done + SLOTS || (done == 0 && (1..=SLOTS).contains(&m))
        })
}

#[test]
fn a_slots_first_label_before_its_first_count_is_whole() {
    // Read between slot 0's first set_label(1) and set(1, 3): what CI once rejected.
    assert!(consistent(0, 1, &label(1)));
    assert!(consistent(0, 1, &label(SLOTS)));
    assert!(consistent(1, 3, &label(1 + SLOTS)));
    // A mix of two records is still refused.
    assert!(!consistent(1, 3, &label(2)));
    assert!(!consistent(5, 3, &label(5)));
    assert!(!consistent(0, 1, &label(SLOTS + 1)));
}

/// Runs only as the child: hammers several slots for a while, finishes them, exits.
#[test]
fn writer_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let writer = Arc::new(SegmentWriter::from_env().unwrap().expect("no segment fd"));
    let slots: Vec<_> = (0..SLOTS)
        .map(|_| writer.task(&label(0), 1).unwrap())
        .collect();
    let start = Instant::now();
    let mut n = 0u64;
    'run: loop {
        for _ in 0..256 {
            for slot in &slots {
                n += 1;
                slot.set_label(&label(n));
                slot.set(n, 2 * n + 1);
            }
        }
        if start.elapsed() > WRITE_FOR {
            break 'run;
        }
    }
    for slot in slots {
        slot.finish(TaskState::Done);
    }
}

/// Kills and reaps the child on every path out of the test, panics included.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
        .env(SEGMENT_FD_ENV, "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec only dup2 and fcntl run, both async-signal-safe, and
    // nothing is allocated. libc rather than rustix here because rustix's dup2 wants an
    // `OwnedFd` for the target, which would have to be conjured from a raw 3.
    unsafe {
        command.pre_exec(move || {
            // The memfd is close-on-exec. dup2 onto 3 yields a copy without the flag; if it
            // already is 3, dup2 would do nothing, so clear the flag instead.
            let ok = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) != -1
            } else {
                libc::dup2(raw, 3) != -1
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = Reaped(command.spawn().unwrap());

    let mut accepted = 0u64;
    let mut torn_reported = 0u64;
    let mut distinct = HashSet::new();
    let mut iterations = 0u64;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30) && iterations < 50_000_000,
            "the writer did not finish"
        );
        iterations += 1;
        for task in reader.read().tasks {
            match task.validity {
                Validity::Valid => {
                    assert!(
                        consistent(task.done, task.total, &task.label),
                        "accepted a torn record: {task:?}"
                    );
                    accepted += 1;
                    distinct.insert(task.done);
                }
                Validity::Torn => torn_reported += 1,
                Validity::Absurd(why) => panic!("absurd record from a well-behaved writer: {why}"),
            }
        }
    };
    let mut output = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(status.success(), "writer failed: {status}\n{output}");
    assert!(
        output.contains("1 passed"),
        "the writer test did not run:\n{output}"
    );

    let end = reader.read();
    assert_eq!(end.tasks.len(), SLOTS as usize);
    for task in &end.tasks {
        assert_eq!(task.state, TaskState::Done);
        assert_eq!(task.validity, Validity::Valid);
        assert!(consistent(task.done, task.total, &task.label), "{task:?}");
    }
    assert!(accepted > 1000, "only {accepted} records read");
    assert!(
        distinct.len() > 100,
        "the writer barely ran: {} values",
        distinct.len()
    );
    eprintln!(
        "{iterations} reads: accepted {accepted} records, {} distinct, {torn_reported} reported torn",
        distinct.len()
    );
}

#[test]
fn the_invariant_catches_mixed_records() {
    assert!(consistent(8, 17, &label(8)));
    assert!(consistent(8, 17, &label(12)));
    assert!(!consistent(8, 21, &label(8)), "numbers from two writes");
    assert!(!consistent(8, 17, &label(9)), "label from another write");
    let mut mixed = label(8);
    mixed.replace_range(30..40, &label(12)[30..40]);
    assert!(!consistent(8, 17, &mixed), "label words from two writes");
}
