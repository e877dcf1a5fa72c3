//! The real binary in a real terminal: tmux runs `switchboard` on a test stack; the test
//! restarts a service with `r`, kills one with `X` and confirms, shows a service's calls with
//! `t`, and quits with `q`, reading
//! the screen with `capture-pane` and checking that no service process is left.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{SWITCHBOARD, alive, tmux::Tmux};

const STACK: &str = r#"
name = "tmux"
[services.alpha]
builtin = "probe"
shutdown_grace = "2s"
[services.beta]
command = "sh"
args = ["-c", "echo started; read x"]
shutdown_grace = "1s"
[services.gamma]
builtin = "probe"
calls = ["alpha"]
env = { PROBE_LOAD_TARGET = "alpha.echo", PROBE_LOAD_RATE = "20" }
"#;

/// Writes `toml` to `dir` and starts `SWITCHBOARD stack.toml` (followed by `after`, a shell
/// snippet) in a 100×30 terminal.
fn launch_stack(dir: &std::path::Path, name: &str, after: &str, toml: &str) -> Tmux {
    std::fs::write(dir.join("stack.toml"), toml).unwrap();
    Tmux::start(
        name,
        dir,
        &format!("{SWITCHBOARD} stack.toml{after}"),
        (100, 30),
    )
}

fn launch(dir: &std::path::Path, name: &str, after: &str) -> Tmux {
    launch_stack(dir, name, after, STACK)
}

/// The number in the RST column of `service`'s row.
fn restarts(screen: &str, service: &str) -> Option<u32> {
    let header = screen
        .lines()
        .find(|l| l.contains("SERVICE") && l.contains("RST"))?;
    let column = header.find("RST")?;
    let row = screen.lines().find(|l| {
        l.split('│')
            .nth(1)
            .is_some_and(|c| c.trim_start().starts_with(service))
    })?;
    // Columns are laid out in characters; the screen has multi-byte symbols.
    let chars: Vec<char> = row.chars().collect();
    let header_chars = header[..column].chars().count();
    let cell: String = chars.get(header_chars..header_chars + 4)?.iter().collect();
    cell.trim().parse().ok()
}

fn descendants(root: u32) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        // Children are listed per thread, and the console spawns from a thread of its own.
        let threads = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for thread in threads {
            if let Ok(children) = std::fs::read_to_string(thread.path().join("children")) {
                found.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

#[test]
fn restart_kill_and_quit_from_the_keyboard() {
    let dir = tempfile::tempdir().unwrap();
    let tmux = launch(dir.path(), "keys", "");

    let (ok, screen) = tmux.wait(Duration::from_secs(20), |s| {
        s.matches("● ready").count() >= 2 && restarts(s, "alpha").is_some()
    });
    assert!(ok, "services never became ready:\n{screen}");
    assert_eq!(restarts(&screen, "alpha"), Some(0), "{screen}");
    let console_pid = tmux.pane_pid();

    // r restarts the selected (first) service; its restart count rises on screen.
    tmux.keys("r");
    let (ok, screen) = tmux.wait(Duration::from_secs(15), |s| {
        restarts(s, "alpha") == Some(1) && s.matches("● ready").count() >= 2
    });
    assert!(ok, "restart not seen:\n{screen}");
    // The keyboard action is in the audit log.
    let audit = dir.path().join(".switchboard/run/audit.jsonl");
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(
        text.lines().any(|l| l.contains("\"actor\":\"console\"")
            && l.contains("\"action\":\"restart\"")
            && l.contains("alpha")),
        "no audit entry in {}: {text}",
        audit.display()
    );

    // X on the second service asks first; y kills it, and the restart policy brings it back.
    tmux.keys("j");
    tmux.keys("X");
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| s.contains("SIGKILL? y/n"));
    assert!(ok, "no confirmation:\n{screen}");
    assert!(screen.contains("Kill `beta`"), "{screen}");
    tmux.keys("y");
    let (ok, screen) = tmux.wait(Duration::from_secs(15), |s| {
        restarts(s, "beta") == Some(1) && s.matches("● ready").count() >= 2
    });
    assert!(ok, "kill and restart not seen:\n{screen}");

    let services = descendants(console_pid);
    assert!(
        services.len() >= 2,
        "expected service processes: {services:?}"
    );

    // t shows the calls of the selected service: gamma calls alpha twenty times a second.
    tmux.keys("k");
    tmux.keys("t");
    let (ok, screen) = tmux.wait(Duration::from_secs(10), |s| {
        s.contains("calls to and from alpha")
            && s.contains("routes, since the start")
            && s.contains("gamma → alpha.echo")
    });
    assert!(ok, "no calls shown:\n{screen}");
    tmux.keys("t");
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| !s.contains("calls to and from"));
    assert!(ok, "t did not close the calls:\n{screen}");

    // q asks (stop, detach or stay), y stops everything gracefully.
    tmux.keys("q");
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| {
        s.contains("stop every service") && s.contains("detach")
    });
    assert!(ok, "no quit confirmation:\n{screen}");
    tmux.keys("y");
    let start = Instant::now();
    while alive(console_pid) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(console_pid), "console did not exit");
    let left: Vec<u32> = services.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "service processes left behind: {left:?}");
}

#[test]
fn a_dropped_ssh_session_with_on_hangup_stop_stops_every_service_gracefully() {
    // `tmux kill-session` hangs the terminal up as a dropped SSH session does. With
    // `on_hangup = "stop"` the console stops every service gracefully (with no escalation) and
    // leaves nothing behind.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!("{STACK}\n[console]\non_hangup = \"stop\"\n");
    let tmux = launch_stack(dir.path(), "hup", "", &toml);
    let (ok, screen) = tmux.wait(Duration::from_secs(20), |s| {
        s.matches("● ready").count() >= 3
    });
    assert!(ok, "services never became ready:\n{screen}");
    let shell = tmux.pane_pid();
    let services: Vec<u32> = descendants(shell)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("service") || c.starts_with("sh"))
        })
        .collect();
    assert!(services.len() >= 3, "{services:?}");
    tmux.hang_up();
    let start = Instant::now();
    while services.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = services.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "service processes left behind: {left:?}");
    // The protocol services exited by themselves on Shutdown, never by a signal; beta, a plain
    // program, was asked with its stop signal (SIGTERM) and needed nothing more.
    // The log files are written by the console's own thread, a moment after the exits.
    let read = |service: &str| {
        let log = dir
            .path()
            .join(format!(".switchboard/run/logs/{service}.log"));
        std::fs::read_to_string(&log).unwrap_or_default()
    };
    let start = Instant::now();
    while ["alpha", "beta", "gamma"]
        .iter()
        .any(|s| !read(s).contains("stopping → stopped"))
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for service in ["alpha", "gamma"] {
        let text = read(service);
        assert!(
            text.contains("exited (exit ") && !text.contains("sent SIG"),
            "{service} did not stop cleanly: {text}"
        );
    }
    let beta = read("beta");
    assert!(
        beta.contains("sent SIGTERM to the process group") && !beta.contains("SIGKILL"),
        "beta was not asked with SIGTERM alone: {beta}"
    );
}

/// With `NO_COLOR` the console draws no colour (bold and reverse only), and a SIGTERM (sent
/// to the process the shell started, which passes it on) leaves the terminal as it found it:
/// the same `stty` settings, the main screen, the cursor shown.
#[test]
fn no_color_draws_no_colour_and_sigterm_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stack.toml"), STACK).unwrap();
    let tmux = Tmux::start(
        "nocolor",
        dir.path(),
        &format!(
            "stty -g > before.stty; NO_COLOR=1 {SWITCHBOARD} stack.toml; stty -g > after.stty; echo restored; sleep 60"
        ),
        (100, 30),
    );
    let (ok, screen) = tmux.wait(Duration::from_secs(20), |s| {
        s.matches("● ready").count() >= 3
    });
    assert!(ok, "services never became ready:\n{screen}");
    let painted = tmux.run(&["capture-pane", "-e", "-p", "-t", "main"]);
    let colours: Vec<&str> = painted
        .split('\x1b')
        .filter_map(|seq| seq.strip_prefix('['))
        .filter_map(|seq| seq.split_once('m').map(|(params, _)| params))
        .filter(|params| {
            params.split(';').any(|p| {
                matches!(
                    p.parse::<u32>(),
                    Ok(30..=38 | 40..=48 | 90..=97 | 100..=107)
                )
            })
        })
        .collect();
    assert!(colours.is_empty(), "colour under NO_COLOR: {colours:?}");

    let keeper = descendants(tmux.pane_pid())
        .into_iter()
        .find(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sb-keeper")
        })
        .expect("the keeper runs");
    assert!(common::signal(keeper, rustix::process::Signal::TERM));
    let (ok, screen) = tmux.wait(Duration::from_secs(20), |s| s.contains("restored"));
    assert!(ok, "the console did not end on SIGTERM:\n{screen}");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(
        read("before.stty"),
        read("after.stty"),
        "stty settings changed"
    );
    assert_eq!(
        tmux.run(&["display", "-p", "-t", "main", "#{alternate_on}"])
            .trim(),
        "0"
    );
    assert_eq!(
        tmux.run(&["display", "-p", "-t", "main", "#{cursor_flag}"])
            .trim(),
        "1"
    );
}

/// `q`, then `y`: the console stays on screen while the stack stops and says what is left
/// (a program that ignores SIGTERM, so it takes its 2 s grace and a SIGKILL to go), then exits
/// once nothing runs.
#[test]
fn quitting_shows_what_is_left_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
name = "slowquit"
[services.slow]
command = "sh"
args = ["-c", "trap '' TERM; echo started; while :; do sleep 1; done"]
shutdown_grace = "2s"
"#;
    let tmux = launch_stack(dir.path(), "slowquit", "", toml);
    let (ok, screen) = tmux.wait(Duration::from_secs(20), |s| s.contains("● ready"));
    assert!(ok, "slow never became ready:\n{screen}");
    let console_pid = tmux.pane_pid();
    tmux.keys("q");
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| s.contains("stop every service"));
    assert!(ok, "no quit confirmation:\n{screen}");
    tmux.keys("y");
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| {
        s.contains("stopping: 1 of 1 left: slow#0")
    });
    assert!(ok, "no stop progress on screen:\n{screen}");
    let start = Instant::now();
    while alive(console_pid) && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(console_pid), "console did not exit");
}

/// The real binary's → and ← (escape sequences through a real terminal): → shows a line per
/// replica under the service, each with its own PID; ← hides them again.
#[test]
fn right_shows_a_line_per_replica_and_left_hides_them() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
name = "pairs"
[services.pair]
builtin = "probe"
replicas = 2
shutdown_grace = "2s"
"#;
    let tmux = launch_stack(dir.path(), "pairs", "", toml);
    let (ok, screen) = tmux.wait(Duration::from_secs(20), |s| s.contains("2/2"));
    assert!(ok, "pair never became ready:\n{screen}");
    tmux.keys("Right");
    let replica_pid = |s: &str, n: u32| -> Option<u32> {
        let line = s.lines().find(|l| l.contains(&format!("  #{n} ")))?;
        line.split_whitespace().find_map(|w| w.parse().ok())
    };
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| {
        s.contains("pair ▾") && replica_pid(s, 0).is_some() && replica_pid(s, 1).is_some()
    });
    assert!(ok, "→ showed no replica lines:\n{screen}");
    assert_ne!(replica_pid(&screen, 0), replica_pid(&screen, 1), "{screen}");
    tmux.keys("Left");
    let (ok, screen) = tmux.wait(Duration::from_secs(5), |s| {
        s.contains("pair ▸") && !s.contains("  #0 ")
    });
    assert!(ok, "← did not hide them:\n{screen}");
    tmux.keys("q");
    tmux.keys("y");
}
