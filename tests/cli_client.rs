//! The client commands (`ps`, `restart`, `stop`, `start`, `scale`, `logs`, `run`) against a
//! real headless `switchboard up` on a loopback gateway at port 0, found through the run
//! directory's gateway.json and token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{SWITCHBOARD, spawn_reading_lines, stack_file};

const STACK: &str = r#"
name = "cli"
[gateway]
request_timeout = "2s"
[services.echo]
builtin = "probe"
[services.ticker]
command = "sh"
args = ["-c", "while true; do echo tick; sleep 0.1; done"]
shutdown_grace = "300ms"
[services.count]
kind = "job"
builtin = "probe-job"
params = '{"steps": 3, "pace_ms": 50}'
"#;

/// A headless console running STACK, killed (SIGKILL) if a test fails before stopping it.
struct Console {
    child: Child,
    lines: mpsc::Receiver<String>,
    stack: PathBuf,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchboard up STACK --headless --gateway GATEWAY`, with no token in its environment, and
/// its stdout's lines.
fn headless(stack: &Path, gateway: &str) -> (Child, mpsc::Receiver<String>) {
    spawn_reading_lines(
        Command::new(SWITCHBOARD)
            .args([
                "up",
                stack.to_str().unwrap(),
                "--headless",
                "--gateway",
                gateway,
            ])
            .env_remove("SWITCHBOARD_TOKEN"),
        |_| true,
    )
}

fn console() -> Console {
    let (dir, stack) = stack_file(STACK);
    let (child, lines) = headless(&stack, "127.0.0.1:0");
    let mut console = Console {
        child,
        lines,
        stack,
        address: String::new(),
        _dir: dir,
    };
    let line = console
        .wait_line(|l| l.contains("gateway on http://"))
        .expect("the console did not print its gateway address");
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    assert!(
        address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
        "{line}"
    );
    console.address = address.to_string();
    console
}

impl Console {
    fn wait_line(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100))
                && wanted(&line)
            {
                return Some(line);
            }
        }
        None
    }

    fn run_dir(&self) -> PathBuf {
        self.stack.parent().unwrap().join(".switchboard/run")
    }

    /// Runs `switchboard ARGS --file STACK`, bounded in time.
    fn cli(&self, args: &[&str]) -> Output {
        cli_with(&self.stack, args)
    }

    /// Polls `ps` until its output satisfies `wanted`.
    fn ps_until(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self.cli(&["ps"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if wanted(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(mut self) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // 3: the shell ticker ignores stdin EOF and has to be signalled.
                assert!(
                    matches!(status.code(), Some(0 | 3)),
                    "console exit: {status}"
                );
                assert!(
                    !self.run_dir().join("gateway.json").exists(),
                    "gateway.json left behind"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the console did not stop on SIGTERM");
    }
}

fn cli_with(stack: &Path, args: &[&str]) -> Output {
    // The subcommand, then the stack file, then the rest (which may end in `-- PARAMS`).
    let mut child = Command::new(SWITCHBOARD)
        .arg(args[0])
        .args(["--file", stack.to_str().unwrap()])
        .args(&args[1..])
        .env_remove("SWITCHBOARD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchboard {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn row<'a>(ps: &'a str, service: &str) -> &'a str {
    ps.lines()
        .find(|l| l.split_whitespace().next() == Some(service))
        .unwrap_or_else(|| panic!("no row for {service}:\n{ps}"))
}

#[test]
fn client_commands_drive_a_running_headless_console() {
    let console = console();
    let discovery: serde_json::Value =
        serde_json::from_slice(&std::fs::read(console.run_dir().join("gateway.json")).unwrap())
            .unwrap();
    assert_eq!(discovery["address"], console.address.as_str());
    // The console is the child of the process started, its keeper (`app::keeper`).
    let pid = discovery["pid"].as_u64().unwrap() as u32;
    let console_parent = switchboard::supervisor::procs::stat(pid).map(|s| s.ppid);
    assert_eq!(console_parent, Some(console.child.id()));

    let ps = console.ps_until(|ps| ps.contains("echo") && row(ps, "echo").contains("ready"));
    assert!(row(&ps, "echo").contains("ready"), "{ps}");
    assert!(ps.contains(&console.address), "{ps}");
    let pid_of = |ps: &str| -> u32 {
        row(ps, "echo")
            .split_whitespace()
            .nth(3)
            .unwrap()
            .parse()
            .unwrap()
    };
    let old_pid = pid_of(&ps);

    // restart: a new process, ready again.
    let out = console.cli(&["restart", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = console.ps_until(|ps| {
        row(ps, "echo").contains("ready")
            && row(ps, "echo").split_whitespace().nth(3) != Some(&old_pid.to_string())
    });
    assert_ne!(pid_of(&ps), old_pid, "{ps}");

    // kill over TCP with the valid token (`--token` skips the socket): a new process.
    let before = pid_of(&ps);
    let token = std::fs::read_to_string(console.run_dir().join("token")).unwrap();
    let out = console.cli(&["kill", "echo", "--token", token.trim()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ps = console.ps_until(|ps| {
        row(ps, "echo").contains("ready")
            && row(ps, "echo").split_whitespace().nth(3) != Some(&before.to_string())
    });
    assert_ne!(pid_of(&ps), before, "kill did not replace echo: {ps}");

    // scale to 2, then stop and start.
    assert!(console.cli(&["scale", "echo", "2"]).status.success());
    let ps = console.ps_until(|ps| row(ps, "echo").contains(" 2/2 "));
    assert!(
        row(&ps, "echo").contains(" 2/2 "),
        "scale to 2 never took: {ps}"
    );
    assert!(console.cli(&["stop", "echo"]).status.success());
    let ps = console.ps_until(|ps| row(ps, "echo").contains("stopped"));
    assert!(row(&ps, "echo").contains("stopped"), "{ps}");
    assert!(console.cli(&["start", "echo"]).status.success());
    let ps = console.ps_until(|ps| row(ps, "echo").contains("ready"));
    assert!(row(&ps, "echo").contains("ready"), "{ps}");

    // An unknown service: a clear error and a failing exit code.
    let out = console.cli(&["restart", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named `nobody`"));

    // reset-breaker: closes echo's breaker (closed already: said, and audited all the same).
    let out = console.cli(&["reset-breaker", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: breaker closed\n"
    );
    let out = console.cli(&["reset-breaker", "nobody"]);
    assert!(!out.status.success());
    // ps says what comes next; nothing is due for a healthy service.
    let ps = console.ps_until(|ps| row(ps, "echo").contains("ready"));
    assert!(
        ps.lines().next().is_some_and(|l| l.contains("stack")),
        "{ps}"
    );
    assert!(ps.contains(" NEXT"), "{ps}");
    assert!(row(&ps, "echo").trim_end().ends_with(" -"), "{ps}");

    // logs: the tail, then following.
    let out = console.cli(&["logs", "ticker", "-n", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 3, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("ticker#0 | ")), "{text}");
    let (mut follow, followed) = spawn_reading_lines(
        Command::new(SWITCHBOARD)
            .args([
                "logs",
                "ticker",
                "-f",
                "-n",
                "0",
                "--file",
                console.stack.to_str().unwrap(),
            ])
            .env_remove("SWITCHBOARD_TOKEN"),
        |_| true,
    );
    let mut ticks = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while ticks < 3 && Instant::now() < deadline {
        if let Ok(line) = followed.recv_timeout(Duration::from_millis(100))
            && line == "ticker#0 | tick"
        {
            ticks += 1;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(ticks, 3, "logs -f did not stream new lines");

    // run: on the running instance (not a stack of its own), with KEY=VALUE parameters.
    let out = console.cli(&["run", "count", "--", "steps=4", "pace_ms=20"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("on the instance at"), "{stderr}");
    assert!(stdout.contains("count #1: done"), "{stdout}");
    // The run is in the instance's registry: seen by the console's own event output.
    assert!(
        console
            .wait_line(|l| l.contains("count") && l.contains("job run #1 succeeded"))
            .is_some(),
        "the console did not run the job"
    );

    // Everything the client did is in the console's audit log, under the socket it used and
    // its own name.
    let audit = std::fs::read_to_string(console.run_dir().join("audit.jsonl")).unwrap_or_default();
    for action in ["restart", "scale", "stop", "start", "run", "breaker reset"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("\"actor\":\"api:socket (cli ")
                    && l.contains(&format!("\"action\":\"{action}\""))),
            "{action} not audited:\n{audit}"
        );
    }
    console.stop();
}

#[test]
fn without_a_running_instance_the_client_says_so_and_run_starts_its_own_stack() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack.toml");
    std::fs::write(&stack, STACK).unwrap();
    let out = cli_with(&stack, &["ps"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no running instance"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli_with(&stack, &["run", "count", "--", "steps=2", "pace_ms=10"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("count #1: done"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("on the instance at"));
}

#[test]
fn a_wrong_token_is_refused() {
    let console = console();
    let out = cli_with(&console.stack, &["ps", "--token", "wrong"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong token"));
    console.stop();
}

#[test]
fn a_public_address_without_a_token_is_refused_and_off_means_no_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack.toml");
    std::fs::write(&stack, STACK).unwrap();
    let mut child = Command::new(SWITCHBOARD)
        .args([
            "up",
            stack.to_str().unwrap(),
            "--headless",
            "--gateway",
            "0.0.0.0:0",
        ])
        .env_remove("SWITCHBOARD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the console did not refuse 0.0.0.0 without a token");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    let run_dir = dir.path().join(".switchboard/run");
    assert!(!run_dir.join("gateway.json").exists());

    // --gateway off: the stack runs, with no gateway and nothing for a client to find.
    let (mut child, lines) = headless(&stack, "off");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline
        && !seen
            .iter()
            .any(|l: &String| l.contains("echo") && l.contains("→ ready"))
    {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("echo") && l.contains("→ ready")),
        "the stack did not run: {seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains("gateway on")), "{seen:?}");
    assert!(!run_dir.join("gateway.json").exists());
    // The keeper is gone at once; the console it leaves ends the stack and exits just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli_with(&stack, &["ps"]).status.success() {
        assert!(Instant::now() < deadline, "the console outlived its keeper");
        std::thread::sleep(Duration::from_millis(50));
    }
}
