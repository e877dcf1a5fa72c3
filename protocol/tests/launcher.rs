//! The Rust launcher with no console running: it starts the C conformance job (compiled here
//! with gcc from `sdks/`), answers its handshake, and watches its progress, heartbeat,
//! counters, result and exit; and stops it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use switchboard_protocol::{
    ErrorCode,
    launcher::{Change, Launcher},
    segment::{TaskState, Validity},
};

const LIMIT: Duration = Duration::from_secs(30);

/// The C conformance job, built once per test binary.
fn c_job() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance_c");
            let status = Command::new("gcc")
                .args(["-Wall", "-Werror", "-std=c99", "-I"])
                .arg(repo.join("sdks/c"))
                .arg(repo.join("sdks/c/examples/conformance_job.c"))
                .arg("-o")
                .arg(&out)
                .status()
                .expect("gcc must be installed");
            assert!(status.success(), "gcc failed");
            out
        })
        .clone()
}

#[test]
fn the_launcher_watches_a_c_job_to_its_result() {
    let job = Launcher::new(c_job())
        .name("crunch")
        .params(r#"{"steps": 5, "pace_ms": 150}"#)
        .heartbeat_ms(100)
        .spawn()
        .unwrap();
    let changes = job.changes();
    let mut progress: Vec<u64> = Vec::new();
    let mut hello = None;
    let mut result = None;
    loop {
        match changes.recv_timeout(LIMIT).expect("the job went quiet") {
            Change::Hello { name, version } => hello = Some((name, version)),
            Change::Progress(tasks) => {
                if let Some(task) = tasks.iter().find(|t| t.label == "conformance") {
                    progress.push(task.done);
                }
            }
            Change::Result(r) => result = Some(r),
            Change::Exited(status) => {
                assert!(status.success(), "{status}");
                break;
            }
            Change::Ready => {}
        }
    }
    assert_eq!(hello, Some(("conformance".into(), "0.1.0".into())));
    assert_eq!(
        result,
        Some(Ok(r#"{"sdk":"c","service":"crunch","steps":5}"#.to_string()))
    );
    assert!(
        progress.iter().any(|&d| d > 0 && d < 5),
        "no progress in between: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let tasks = job.progress();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(
        (tasks[0].done, tasks[0].total, tasks[0].state),
        (5, 5, TaskState::Done)
    );
    let counters = job.counters();
    assert_eq!(counters.events_published, 5);
    // Asked for a beat every 100 ms over a run of 750 ms.
    assert!(counters.heartbeat >= 3, "{counters:?}");
    assert!(job.heartbeat_age().is_some());
    let exit = job.wait();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn a_stopped_job_exits_by_itself_with_its_task_cancelled() {
    let job = Launcher::new(c_job())
        .params(r#"{"steps": 1000, "pace_ms": 50}"#)
        .spawn()
        .unwrap();
    let changes = job.changes();
    loop {
        if let Change::Progress(tasks) = changes.recv_timeout(LIMIT).expect("no progress")
            && tasks.first().is_some_and(|t| t.done >= 2)
        {
            break;
        }
    }
    job.stop();
    let exit = job.wait_timeout(LIMIT).expect("the job ignored Shutdown");
    assert_eq!(exit.status.code(), Some(1), "{exit:?}");
    let err = exit.result.unwrap().unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    assert_eq!(job.progress()[0].state, TaskState::Cancelled);
    assert!(
        changes.iter().any(|c| matches!(c, Change::Exited(_))),
        "the stream did not end with the exit"
    );
}

#[test]
fn a_program_that_cannot_start_is_an_error() {
    let err = Launcher::new("/nonexistent/job").spawn().err().unwrap();
    assert!(err.to_string().contains("/nonexistent/job"), "{err}");
}

/// A plain program that only writes its segment (no frames, so no result): the launcher still
/// watches it, and the C header cut its 101-byte label at a character boundary.
#[test]
fn the_launcher_reads_a_program_without_frames() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let program = Path::new(env!("CARGO_TARGET_TMPDIR")).join("segment_only");
    let status = Command::new("gcc")
        .args(["-Wall", "-Werror", "-std=c99", "-I"])
        .arg(repo.join("sdks/c"))
        .arg(repo.join("sdks/c/examples/segment_only.c"))
        .arg("-o")
        .arg(&program)
        .status()
        .expect("gcc must be installed");
    assert!(status.success());
    let job = Launcher::new(&program).spawn().unwrap();
    let exit = job.wait_timeout(LIMIT).expect("it did not exit");
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    assert_eq!(exit.result, None);
    let snapshot = job.snapshot();
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    let task = &snapshot.tasks[0];
    assert_eq!(task.label, format!("a{}", "é".repeat(31)));
    assert_eq!(task.validity, Validity::Valid);
    assert_eq!((task.done, task.total), (4, 9));
    assert_eq!(job.counters().heartbeat, 1);
}
