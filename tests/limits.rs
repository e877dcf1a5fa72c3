//! Resource limits (`limits = { memory, open_files, cpu_time, core }`) on real processes: each
//! limit is in force in the process (`/proc/PID/limits`), each bites where it should, and the
//! exit reason names the limit that ended a process. Plus `switchboard check`'s refusals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{path::Path, time::Duration};

use common::{Running, stack, start};
use switchboard::{
    event::EventKind,
    registry::{self, ExitStatus, InstanceState},
    stack::Diagnostic,
};

const LIMIT: Duration = Duration::from_secs(15);

/// Waits until `service`'s first replica has exited; returns its exit as the console shows it
/// (the detail pane's and the admin API's text) and the status.
async fn exit_of(running: &Running, service: &str) -> (String, ExitStatus) {
    let exited = running
        .until(LIMIT, |r| {
            r.service(service)
                .is_some_and(|s| !s.exits.is_empty() && !s.instances[0].state.has_process())
        })
        .await;
    assert!(exited, "`{service}` did not exit");
    let view = running.supervisor.view(std::time::Instant::now());
    let row = view.services.iter().find(|s| s.name == service).unwrap();
    let status = registry::read(running.supervisor.registry())
        .service(service)
        .unwrap()
        .exits
        .back()
        .unwrap()
        .status
        .clone();
    (row.exits[0].status.clone(), status)
}

/// The `/proc/PID/limits` line starting with `name`: its soft and hard values.
fn proc_limit(pid: u32, name: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` in {limits}"));
    let mut values = line[name.len()..].split_whitespace();
    (
        values.next().unwrap().to_string(),
        values.next().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_in_force_in_the_process() {
    let (stack, _dir) = stack(
        r#"
        name = "limits"
        [services.sleeper]
        command = "sleep"
        args = ["30"]
        limits = { memory = "256MiB", open_files = 64, cpu_time = "1m30s", core = false }
        "#,
    );
    let running = start(stack).await;
    running.ready(LIMIT, &["sleeper"]).await;
    let pid = registry::read(running.supervisor.registry())
        .service("sleeper")
        .unwrap()
        .instances[0]
        .pid
        .unwrap();
    let mib = (256u64 << 20).to_string();
    assert_eq!(
        proc_limit(pid, "Max address space"),
        (mib.clone(), mib),
        "memory"
    );
    assert_eq!(
        proc_limit(pid, "Max open files"),
        ("64".into(), "64".into())
    );
    // The hard limit a second later: SIGXCPU first, SIGKILL for one that handles it.
    assert_eq!(proc_limit(pid, "Max cpu time"), ("90".into(), "91".into()));
    assert_eq!(
        proc_limit(pid, "Max core file size"),
        ("0".into(), "0".into())
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_burning_cpu_past_its_limit_dies_and_says_why() {
    let (stack, _dir) = stack(
        r#"
        name = "limits"
        [services.burner]
        command = "python3"
        args = ["-c", "while True: pass"]
        restart = "never"
        limits = { cpu_time = "1s" }
        "#,
    );
    let mut running = start(stack).await;
    let (shown, status) = exit_of(&running, "burner").await;
    assert_eq!(status, ExitStatus::Signal(libc::SIGXCPU));
    assert_eq!(shown, "signal 24: CPU time limit (1s) reached");
    let alert = running
        .event(LIMIT, |e| {
            matches!(&e.kind, EventKind::Alert { message } if message.contains("CPU time limit"))
        })
        .await;
    assert!(alert.is_some(), "no alert: {:?}", running.seen);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stopped_by_its_cpu_limit_says_so_in_its_run() {
    let (stack, _dir) = stack(
        r#"
        name = "limits"
        [services.report]
        kind = "job"
        autostart = true
        command = "python3"
        args = ["-c", "while True: pass"]
        limits = { cpu_time = "1s" }
        "#,
    );
    let running = start(stack).await;
    let finished = running
        .until(LIMIT, |r| {
            r.service("report")
                .and_then(|job| job.runs.back())
                .is_some_and(|run| run.result.is_some())
        })
        .await;
    assert!(finished, "the run never finished");
    assert_eq!(
        running.last_run("report").result,
        Some(Err("signal 24: CPU time limit (1s) reached".to_string()))
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_allocating_past_its_memory_limit_dies_and_the_limit_is_named() {
    // The probe allocates 512 MiB once ready: under 128 MiB of address space that fails, and
    // Rust aborts.
    let (stack, _dir) = stack(
        r#"
        name = "limits"
        [services.hog]
        builtin = "probe"
        restart = "never"
        env = { PROBE_ALLOCATE_MB = "512" }
        limits = { memory = "128MiB" }
        "#,
    );
    let running = start(stack).await;
    let (shown, status) = exit_of(&running, "hog").await;
    assert_eq!(status, ExitStatus::Signal(libc::SIGABRT));
    assert_eq!(
        shown,
        "signal 6: killed by SIGABRT; memory limit 128MiB may have been reached"
    );
    let failed = running.supervisor.logs().tail("hog", 100).iter().any(|l| {
        l.text
            .contains("memory allocation of 536870912 bytes failed")
    });
    assert!(failed, "no allocation failure in the log");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_opening_too_many_files_is_refused_at_the_limit() {
    let script = "import os\n\
                  n = 0\n\
                  try:\n    \
                      while True:\n        \
                          os.open('/dev/null', os.O_RDONLY)\n        \
                          n += 1\n\
                  except OSError as e:\n    \
                      print(f'opened {n}: {e.strerror}', flush=True)\n    \
                      raise SystemExit(3)\n";
    let (stack, _dir) = stack(&format!(
        r#"
        name = "limits"
        [services.opener]
        command = "python3"
        args = ["-c", {script:?}]
        restart = "never"
        limits = {{ open_files = 32 }}
        "#
    ));
    let running = start(stack).await;
    let (shown, status) = exit_of(&running, "opener").await;
    assert_eq!(status, ExitStatus::Code(3));
    // Nothing to say about an exit code: the program chose it.
    assert_eq!(shown, "exit 3");
    let line = running
        .supervisor
        .logs()
        .tail("opener", 100)
        .iter()
        .find(|l| l.text.starts_with("opened"))
        .map(|l| l.text.clone())
        .expect("the script said nothing");
    let opened: u64 = line["opened ".len()..line.find(':').unwrap()]
        .parse()
        .unwrap();
    assert!((20..32).contains(&opened), "{line}");
    assert!(line.ends_with("Too many open files"), "{line}");
    assert!(
        running
            .until(LIMIT, |r| r.service("opener").unwrap().instances[0].state
                == InstanceState::Crashed)
            .await
    );
    running.stop().await;
}

fn errors(src: &str) -> Vec<Diagnostic> {
    switchboard::stack::parse(src, Path::new("bad.toml")).expect_err("should be rejected")
}

#[test]
fn check_rejects_bad_limits_where_they_are_written() {
    let src = "name = \"x\"\n[services.a]\ncommand = \"true\"\n\
               limits = { memory = \"512KiB\", open_files = -1, cpu_time = \"soon\", core = \"no\", stack = 1 }\n\
               [services.b]\ncommand = \"true\"\n\
               limits = { memory = -5, cpu_time = \"0s\", open_files = 2 }\n\
               [services.c]\ncommand = \"true\"\n\
               limits = { memory = \"lots\", cpu_time = 60 }\n";
    let e = errors(src);
    let at = |line: usize, fragments: &[&str]| {
        assert!(
            e.iter()
                .any(|d| d.line == line && fragments.iter().all(|f| d.message.contains(f))),
            "no error on line {line} mentioning {fragments:?}; got:\n{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    at(4, &["memory must be at least 1MiB", "524288 bytes"]);
    at(4, &["open_files must be at least 4", "-1"]);
    at(4, &["soon"]);
    at(4, &["expected true or false"]);
    at(4, &["unknown key `stack`", "in limits"]);
    at(7, &["memory must be a size", "-5"]);
    at(7, &["cpu_time must be more than zero"]);
    at(7, &["open_files must be at least 4", "2"]);
    at(10, &["lots"]);
    at(10, &["durations need a unit"]);
    // Each error points at the value: the column of `memory = "512KiB"`'s value.
    let memory = e.iter().find(|d| d.message.contains("524288")).unwrap();
    assert_eq!(memory.col, "limits = { memory = ".len() + 1);
}

#[test]
fn good_limits_are_parsed_with_their_units() {
    let stack = switchboard::stack::parse(
        "name = \"x\"\n[services.a]\ncommand = \"true\"\n\
         limits = { memory = \"512MiB\", open_files = 1024, cpu_time = \"1h\", core = false }\n\
         [services.b]\ncommand = \"true\"\nlimits = { memory = 1048576, cpu_time = \"1.5s\" }\n\
         [services.c]\ncommand = \"true\"\n",
        Path::new("good.toml"),
    )
    .unwrap();
    let a = stack.service("a").unwrap().limits;
    assert_eq!(a.memory, Some(512 << 20));
    assert_eq!(a.open_files, Some(1024));
    assert_eq!(a.cpu_time, Some(3600));
    assert_eq!(a.core, Some(false));
    let b = stack.service("b").unwrap().limits;
    assert_eq!(
        (b.memory, b.cpu_time),
        (Some(1 << 20), Some(2)),
        "rounded up"
    );
    assert!(stack.service("c").unwrap().limits.is_empty());
}
