//! The SDK conformance suite: the same job (`conformance`, see `sdks/README.md`) written with
//! each SDK — C, Java, Node, Python and Rust — runs under the real console (a supervisor on a
//! stack with the job), and every one must pass the same checks:
//!
//! - handshake: the console recorded its Hello (version `0.1.0`, protocol 1), and the result
//!   names the service as the Welcome called it;
//! - heartbeat: the segment's counter moved while it ran;
//! - progress 0..N: one task "conformance" seen in between and ending `done` at N/N;
//! - counters: one `events_published` per step;
//! - result: the JobResult body (long enough to need several COBS blocks), and exit status 0;
//! - graceful stop: stopped mid-run, it exits by itself (no signal) with the task cancelled and
//!   an `unavailable` result.
//!
//! This is the reference for a new SDK (SPEC.md points here). The tools each SDK needs (gcc,
//! javac/java, node, python3, cargo) must be installed; `.ci/run` installs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command as Process,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use common::{Running, stack, start};
use switchboard::transport::Segment;
use switchboard::{
    registry::{ExitStatus, Registry},
    supervisor::Command,
};
use switchboard_protocol::segment::TaskState;

const STEPS: u64 = 6;
const PAD: usize = 700;
const LIMIT: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where built jobs go; kept for the whole test binary.
fn build_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn run_tool(command: &mut Process) {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?} (is it installed?): {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The C job, compiled as the header asks of its users: C99, every warning an error.
pub fn c_job() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = build_dir().join("conformance_c");
            run_tool(
                Process::new("gcc")
                    .args(["-Wall", "-Wextra", "-Werror", "-std=c99", "-I"])
                    .arg(repo().join("sdks/c"))
                    .arg(repo().join("sdks/c/examples/conformance_job.c"))
                    .arg("-o")
                    .arg(&out),
            );
            out
        })
        .clone()
}

fn java_classes() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = build_dir().join("java");
            run_tool(
                Process::new("javac")
                    .args(["-Xlint:all", "-Werror", "-d"])
                    .arg(&out)
                    .arg(repo().join("sdks/java/Switchboard.java"))
                    .arg(repo().join("sdks/java/ConformanceJob.java")),
            );
            out
        })
        .clone()
}

/// The Rust job is an example of the protocol crate; `cargo test` does not build another
/// package's examples, so build it here (a no-op when it is fresh).
fn rust_job() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run_tool(
                Process::new(cargo)
                    .args([
                        "build",
                        "--quiet",
                        "-p",
                        "switchboard-protocol",
                        "--example",
                        "conformance_job",
                    ])
                    .current_dir(repo()),
            );
            let debug = Path::new(common::SWITCHBOARD).parent().unwrap();
            debug.join("examples/conformance_job")
        })
        .clone()
}

/// The `[services.NAME]` lines that start `sdk`'s conformance job.
fn job_table(sdk: &str) -> String {
    let quote = |p: PathBuf| format!("{:?}", p.to_str().unwrap());
    let (command, args, env) = match sdk {
        "c" => (quote(c_job()), "[]".to_string(), String::new()),
        "java" => (
            "\"java\"".into(),
            format!("[\"-cp\", {}, \"ConformanceJob\"]", quote(java_classes())),
            String::new(),
        ),
        "node" => (
            "\"node\"".into(),
            format!("[{}]", quote(repo().join("sdks/node/conformance_job.js"))),
            String::new(),
        ),
        "python" => (
            "\"python3\"".into(),
            format!(
                "[{}]",
                quote(repo().join("services/python/examples/conformance_job.py"))
            ),
            format!(
                "env = {{ PYTHONPATH = {} }}",
                quote(repo().join("services/python"))
            ),
        ),
        "rust" => (quote(rust_job()), "[]".to_string(), String::new()),
        other => panic!("no SDK {other}"),
    };
    format!(
        "name = \"conformance\"\n\n[services.{sdk}job]\nkind = \"job\"\ncommand = {command}\n\
         args = {args}\nprotocol = true\nheartbeat_timeout = \"2s\"\nshutdown_grace = \"10s\"\n{env}\n"
    )
}

/// What was seen of one run, sampled from the registry while it ran.
#[derive(Default)]
struct Seen {
    /// The job's segment, kept past its exit (the mapping lives as long as this reader).
    segment: Option<Segment>,
    /// The `done` values of the task "conformance", in the order seen.
    done: Vec<u64>,
    first_heartbeat: Option<u64>,
    hello: Option<(String, u32)>,
}

impl Seen {
    fn sample(&mut self, registry: &Registry, job: &str) {
        let Some(instance) = registry.service(job).and_then(|s| s.instances.first()) else {
            return;
        };
        if let (Some(version), Some(protocol)) = (&instance.version, instance.protocol_version) {
            self.hello = Some((version.clone(), protocol));
        }
        if self.segment.is_none() {
            self.segment = instance.handle.as_ref().and_then(|h| h.segment.clone());
        }
        if let Some(segment) = &self.segment {
            let snapshot = segment.read();
            self.first_heartbeat.get_or_insert(snapshot.heartbeat);
            if let Some(task) = snapshot.tasks.iter().find(|t| t.label == "conformance")
                && self.done.last() != Some(&task.done)
            {
                self.done.push(task.done);
            }
        }
    }
}

/// Starts a run of `job` with `params` and samples it until `until` holds (or the run ends).
async fn watch(
    running: &Running,
    job: &str,
    params: String,
    until: impl Fn(&Seen) -> bool,
) -> Seen {
    running
        .supervisor
        .command(Command::RunJob(job.into(), Some(params)))
        .await
        .unwrap();
    let seen = Mutex::new(Seen::default());
    let done = running
        .until(LIMIT, |registry| {
            let mut seen = seen.lock().unwrap();
            seen.sample(registry, job);
            let ended = registry
                .service(job)
                .and_then(|s| s.runs.back())
                .is_some_and(|run| run.exit.is_some());
            ended || until(&seen)
        })
        .await;
    assert!(done, "{job}: nothing happened within {LIMIT:?}");
    seen.into_inner().unwrap()
}

async fn run_ended(running: &Running, job: &str) {
    let ended = running
        .until(LIMIT, |r| {
            r.service(job)
                .and_then(|s| s.runs.back())
                .is_some_and(|run| run.exit.is_some() && run.result.is_some())
        })
        .await;
    assert!(ended, "{job}: the run never ended with a result");
}

/// A full run: handshake, heartbeat, progress 0..N, counters, result, exit 0.
async fn check_full_run(running: &Running, sdk: &str, job: &str) {
    // The padding makes the result frame span several full COBS blocks.
    let params = format!(r#"{{"steps": {STEPS}, "pace_ms": 200, "pad": {PAD}}}"#);
    let seen = watch(running, job, params, |_| false).await;
    run_ended(running, job).await;
    let run = running.last_run(job);
    let result = run.result.clone().unwrap();
    let result: serde_json::Value =
        serde_json::from_str(&result.unwrap_or_else(|err| panic!("{sdk}: failed: {err}")))
            .unwrap_or_else(|err| panic!("{sdk}: result is not JSON: {err}"));
    assert_eq!(
        result,
        serde_json::json!({"sdk": sdk, "service": job, "steps": STEPS, "pad": "x".repeat(PAD)}),
        "{sdk}: wrong result"
    );
    assert!(
        run.exit.as_ref().is_some_and(|e| e.success()),
        "{sdk}: exit {:?}",
        run.exit
    );
    assert_eq!(
        seen.hello,
        Some(("0.1.0".to_string(), 1)),
        "{sdk}: no Hello seen"
    );

    let segment = seen.segment.expect("no segment seen");
    let last = segment.read();
    let task = last
        .tasks
        .iter()
        .find(|t| t.label == "conformance")
        .unwrap_or_else(|| panic!("{sdk}: no task: {last:?}"));
    assert_eq!(
        (task.done, task.total, &task.state),
        (STEPS, STEPS, &TaskState::Done),
        "{sdk}: {task:?}"
    );
    assert!(
        seen.done.windows(2).all(|w| w[0] < w[1]),
        "{sdk}: progress went back: {:?}",
        seen.done
    );
    assert!(
        seen.done.iter().any(|&d| d > 0 && d < STEPS),
        "{sdk}: no progress seen in between: {:?}",
        seen.done
    );
    assert_eq!(last.events_published, STEPS, "{sdk}: events_published");
    // Welcome asks for a beat every 400 ms (a fifth of 2 s); the run lasts 1.2 s.
    assert!(
        last.heartbeat >= seen.first_heartbeat.unwrap_or(0) + 2,
        "{sdk}: heartbeat {} (first seen {:?})",
        last.heartbeat,
        seen.first_heartbeat
    );
    let problems: BTreeSet<&String> = last.problems.iter().collect();
    assert!(problems.is_empty(), "{sdk}: {problems:?}");
}

/// A stop mid-run: the job exits by itself, its task cancelled, its result `unavailable`.
async fn check_graceful_stop(running: &Running, sdk: &str, job: &str) {
    let params = r#"{"steps": 1000, "pace_ms": 50}"#.to_string();
    let seen = watch(running, job, params, |seen| {
        seen.done.last().is_some_and(|&d| d >= 2)
    })
    .await;
    assert!(
        seen.done.last().is_some_and(|&d| d >= 2),
        "{sdk}: the long run ended early: {:?}",
        running.last_run(job)
    );
    running
        .supervisor
        .command(Command::Stop(job.into()))
        .await
        .unwrap();
    run_ended(running, job).await;
    let run = running.last_run(job);
    let exit = run.exit.clone().unwrap();
    // A job that ignored Shutdown and EOF would be ended by SIGTERM after the 10 s grace.
    assert!(
        matches!(exit, ExitStatus::Code(_)),
        "{sdk}: killed by a signal: {exit:?}"
    );
    let err = run
        .result
        .clone()
        .unwrap()
        .expect_err("a stopped run succeeded");
    assert!(err.starts_with("unavailable"), "{sdk}: {err}");
    let last = seen.segment.unwrap().read();
    let task = last
        .tasks
        .iter()
        .find(|t| t.label == "conformance")
        .unwrap();
    assert_eq!(task.state, TaskState::Cancelled, "{sdk}: {task:?}");
    assert!(task.done < 1000, "{sdk}: {task:?}");
}

async fn conforms(sdk: &str) {
    let job = format!("{sdk}job");
    let (stack, _dir) = stack(&job_table(sdk));
    let running = start(stack).await;
    check_full_run(&running, sdk, &job).await;
    check_graceful_stop(&running, sdk, &job).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_job_conforms() {
    conforms("c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_job_conforms() {
    conforms("java").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_job_conforms() {
    conforms("node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_job_conforms() {
    conforms("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_job_conforms() {
    conforms("rust").await;
}

/// The C job under the real binary, as an operator runs it: `switchboard run` prints the
/// progress it reads from the job's segment, then the job's result.
#[test]
fn c_job_under_switchboard_run_shows_progress_and_result() {
    let (_dir, path) = common::stack_file(&job_table("c"));
    let (mut child, lines) = common::spawn_reading_lines(
        Process::new(common::SWITCHBOARD)
            .args(["run", "cjob", "-f", path.to_str().unwrap(), "--"])
            .args(["steps=4", "pace_ms=200"]),
        |_| true,
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            child.kill().unwrap();
            panic!("`switchboard run` did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed: Vec<String> = lines.iter().collect();
    assert!(status.success(), "{printed:#?}");
    let progress: Vec<u64> = printed
        .iter()
        .filter_map(|l| {
            l.split_once("conformance ")?
                .1
                .strip_suffix("/4")?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        progress.iter().any(|&d| d > 0 && d < 4),
        "no progress printed: {printed:#?}"
    );
    assert_eq!(
        printed.last().map(String::as_str),
        Some(r#"cjob #1: done: {"sdk":"c","service":"cjob","steps":4}"#),
        "{printed:#?}"
    );
}
