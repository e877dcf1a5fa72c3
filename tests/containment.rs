//! Nothing outlives the stack: whatever its services start (a shell's background jobs, a
//! double-forked daemon, a `setsid env -i` escapee) is gone soon after the console is
//! SIGKILLed, after its keeper is SIGKILLed, and when its own service exits; and what a run
//! killed beyond all rescue left behind is found and stopped by the next run.
//!
//! Every test marks its processes with `sleep` durations no other test uses, and finds them
//! by their exact command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::{Child, Command},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, alive, processes_running, signal, spawn_reading_lines, stack_file};
use rustix::process::Signal;

/// A stack whose three services leave grandchildren of every kind behind: `first..first+5`
/// are the marker durations (two background jobs, a double-forked daemon, an escapee that
/// scrubs its environment and leaves its session, and the escapee's sibling).
fn forking_stack(name: &str, first: u32) -> String {
    let [a, b, c, d, e] = [first, first + 1, first + 2, first + 3, first + 4];
    format!(
        r#"
name = "{name}"
[gateway]
bind = "127.0.0.1:0"
[services.forker]
command = "sh"
args = ["-c", "sleep {a} & sleep {b} & wait"]
[services.daemon]
command = "sh"
args = ["-c", "(setsid sh -c 'sleep {c}' &) ; exec sleep 600"]
[services.escapee]
command = "sh"
args = ["-c", "setsid env -i sleep {d} & sleep {e}"]
"#
    )
}

/// Marker pids of `first..first+count`, each of which must be running.
fn markers(first: u32, count: u32) -> Vec<u32> {
    (first..first + count)
        .flat_map(|d| processes_running(&["sleep", &d.to_string()]))
        .collect()
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

struct Headless {
    keeper: Child,
    lines: mpsc::Receiver<String>,
    _dir: Option<tempfile::TempDir>,
}

/// `switchboard up FILE --headless`; the process started is the keeper.
fn headless(toml: &str) -> Headless {
    let (dir, path) = stack_file(toml);
    let mut run = headless_at(&path);
    run._dir = Some(dir);
    run
}

fn headless_at(path: &std::path::Path) -> Headless {
    let (keeper, lines) = spawn_reading_lines(
        Command::new(SWITCHBOARD).args(["up", path.to_str().unwrap(), "--headless"]),
        |_| true,
    );
    Headless {
        keeper,
        lines,
        _dir: None,
    }
}

impl Headless {
    /// The console's pid, from its first line ("switchboard: stack `x`, N services, pid P; ...").
    fn console_pid(&self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if let Some((_, rest)) = line.split_once(" services, pid ") {
                return rest.split(';').next().unwrap().trim().parse().unwrap();
            }
        }
        panic!("the console never said its pid");
    }

    fn line_containing(&self, text: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200))
                && line.contains(text)
            {
                return Some(line);
            }
        }
        None
    }
}

impl Drop for Headless {
    fn drop(&mut self) {
        let _ = self.keeper.kill();
        let _ = self.keeper.wait();
    }
}

fn tag() -> u32 {
    // Distinct durations per test and per run: nothing else here sleeps this long.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    3_000_000 + (std::process::id() % 1000) * 1000 + nanos % 997
}

fn all_markers_running(first: u32) -> Vec<u32> {
    let mut found = Vec::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            found = markers(first, 5);
            found.len() == 5
        }),
        "the services did not start all their processes: {found:?}"
    );
    found
}

fn survivors(pids: &[u32], limit: Duration) -> Vec<u32> {
    wait_for(limit, || pids.iter().all(|&p| !alive(p)));
    pids.iter().copied().filter(|&p| alive(p)).collect()
}

#[test]
fn nothing_survives_the_console_being_killed() {
    let first = tag();
    let stack = headless(&forking_stack("kill-console", first));
    let console = stack.console_pid();
    let pids = all_markers_running(first);
    assert!(signal(console, Signal::KILL));
    let started = Instant::now();
    // The target is 1 s; the bound is looser for a loaded CI machine.
    let left = survivors(&pids, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "survivors of the console's SIGKILL: {left:?}"
    );
    eprintln!(
        "all gone {:?} after the console's SIGKILL",
        started.elapsed()
    );
}

#[test]
fn nothing_survives_the_keeper_being_killed() {
    let first = tag() + 10;
    let mut stack = headless(&forking_stack("kill-keeper", first));
    let console = stack.console_pid();
    let pids = all_markers_running(first);
    stack.keeper.kill().unwrap();
    let started = Instant::now();
    let left = survivors(&pids, Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "survivors of the keeper's SIGKILL: {left:?}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || !alive(console)),
        "the console runs on without its keeper"
    );
    eprintln!(
        "all gone {:?} after the keeper's SIGKILL",
        started.elapsed()
    );
}

#[test]
fn an_escapee_is_stopped_with_the_service_it_came_from() {
    let first = tag() + 20;
    let stack = headless(&format!(
        r#"
name = "escapee"
[services.quitter]
command = "sh"
args = ["-c", "setsid env -i sleep {first} & sleep 1"]
restart = "never"
[services.stays]
command = "sleep"
args = ["{}"]
"#,
        first + 1
    ));
    let console = stack.console_pid();
    let mut escapee = Vec::new();
    assert!(
        wait_for(Duration::from_secs(20), || {
            escapee = processes_running(&["sleep", &first.to_string()]);
            !escapee.is_empty()
        }),
        "the escapee never started"
    );
    // `quitter` exits after a second; its escapee, re-parented to the console, goes with it.
    let left = survivors(&escapee, Duration::from_secs(10));
    assert!(
        left.is_empty(),
        "the escapee outlived its service: {left:?}"
    );
    assert!(alive(console), "the console stopped");
    assert_eq!(
        processes_running(&["sleep", &(first + 1).to_string()]).len(),
        1,
        "a service that kept running was stopped"
    );
}

#[test]
fn leftovers_of_a_run_killed_beyond_rescue_are_stopped_by_the_next() {
    let first = tag() + 30;
    let (dir, path) = stack_file(&forking_stack("leftovers", first));
    let mut run = headless_at(&path);
    let console = run.console_pid();
    let pids = all_markers_running(first);
    // Both at once, the console unable to act: nothing is left to clean up.
    assert!(signal(console, Signal::STOP));
    run.keeper.kill().unwrap();
    run.keeper.wait().unwrap();
    assert!(signal(console, Signal::KILL));
    std::thread::sleep(Duration::from_millis(300));
    let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    // Only the escapee (`setsid env -i`) carries no trace of the stack.
    assert!(left.len() >= 4, "expected leftovers, found {left:?}");

    let next = headless_at(&path);
    let report = next
        .line_containing("left running by an earlier run", Duration::from_secs(20))
        .expect("the next run did not report the leftovers");
    let named = left
        .iter()
        .filter(|p| report.contains(&format!("pid {p})")))
        .count();
    assert!(named >= 4, "leftovers not named in {report:?}");
    let still = survivors(&left, Duration::from_secs(10));
    // The escapee's leftover is out of reach (it says so in `supervisor::strays`); kill it here.
    let unknown: Vec<u32> = still
        .iter()
        .copied()
        .filter(|p| !report.contains(&format!("pid {p})")))
        .collect();
    for &p in &unknown {
        signal(p, Signal::KILL);
    }
    assert_eq!(
        still, unknown,
        "leftovers the next run named are still running"
    );
    drop(next);
    drop(dir);
}

/// A service that restarts as fast as it can, leaving a grandchild each time: when the keeper
/// dies, the console stops spawning before it sweeps, so no restart lands behind the sweep.
#[test]
fn nothing_survives_the_keeper_being_killed_mid_restart_storm() {
    let mark = tag() + 40;
    let mut stack = headless(&format!(
        r#"
name = "storm"
[gateway]
bind = "127.0.0.1:0"
[services.storm]
command = "sh"
args = ["-c", "(setsid sleep {mark} &); sleep 0.01; exit 1"]
backoff = {{ initial = "1ms", max = "1ms", jitter = 0.0 }}
restart_limit = {{ count = 100000, window = "1s" }}
"#
    ));
    let console = stack.console_pid();
    // Each exit stops the last one's grandchild (adopted, unclaimed): one or two at a time.
    assert!(
        wait_for(Duration::from_secs(20), || {
            !processes_running(&["sleep", &mark.to_string()]).is_empty()
        }),
        "the storm never started"
    );
    std::thread::sleep(Duration::from_millis(300));
    stack.keeper.kill().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || !alive(console)),
        "the console runs on without its keeper"
    );
    // The grandchildren: killed by the sweep, or re-parented to init and left over.
    let left = {
        let pids = processes_running(&["sleep", &mark.to_string()]);
        survivors(&pids, Duration::from_secs(2))
    };
    for &pid in &left {
        signal(pid, Signal::KILL);
    }
    assert!(
        left.is_empty(),
        "grandchildren outlived the stack: {left:?}"
    );
}
